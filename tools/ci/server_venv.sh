#!/usr/bin/env bash
# Builds llama-cpp-python's OpenAI-compatible server in its own venv (one-off:
# it compiles llama.cpp, ~13 min on 2 cores). Kept apart from .venv so the
# project's pins never meet the server's. Usage: tools/ci/server_venv.sh [DIR]
set -euo pipefail
VENV_DIR=${1:-.cache/llama-server-venv}
# The version the figures in docs/captioning.md were measured with; pinned so
# they stay reproducible.
LLAMA_CPP_VERSION=0.3.36
PYTHON=${PYTHON:-python3}
if [ -x "$VENV_DIR/bin/python" ] && "$VENV_DIR/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    echo "llama-cpp-python server already in $VENV_DIR"
    exit 0
fi
"$PYTHON" -m venv "$VENV_DIR"
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$VENV_DIR/bin/pip" install "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
"$VENV_DIR/bin/python" -c "import llama_cpp.server; print('llama-cpp-python server ready')"
