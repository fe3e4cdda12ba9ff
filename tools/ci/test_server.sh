#!/usr/bin/env bash
# `make test-server`: caption and embed against a real OpenAI-compatible
# server (llama-cpp-python's llama_cpp.server serving the bundled SmolLM2).
# Opt-in, not part of `make test`: the first run compiles llama.cpp into
# .cache/llama-server-venv (~13 min on 2 cores); later runs take minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
LLAMA_VENV=${LLAMA_VENV:-.cache/llama-server-venv}
tools/ci/server_venv.sh "$LLAMA_VENV"
GPT4IMAGE_LLAMA_VENV="$(cd "$LLAMA_VENV" && pwd)" HF_HUB_OFFLINE=1 \
    "$VENV/bin/pytest" -q -s -rs tests/test_server_llama.py
