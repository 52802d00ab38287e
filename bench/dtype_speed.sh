#!/usr/bin/env bash
# Greedy generation speed of one model in float32 and in bfloat16 on this CPU, side by side in one
# run: the same 16 GSM8K validation prompts, one batch of 16, 64 new tokens, one thread each.
# Chooses the dtype of long CPU evaluations: a CPU with bfloat16 matrix units (AMX, `amx_bf16` in
# /proc/cpuinfo) runs bfloat16 faster, one without them slower.
#   bench/dtype_speed.sh [MODEL]     default qwen2.5-coder-1.5b; prints one line per dtype and the ratio
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-qwen2.5-coder-1.5b}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); bfloat16 units: $(grep -q amx_bf16 /proc/cpuinfo && echo amx_bf16 || echo none)"
for dtype in float32 bfloat16; do
  OMP_NUM_THREADS=1 .venv/bin/t2 eval -m "$model" --task gsm8k --split validation --limit 16 --max-new-tokens 64 \
    --dtype "$dtype" --batch-size 16 --out "$work/$dtype" >/dev/null
done
.venv/bin/python - "$work" "$model" <<'PY'
import json, sys
work, model = sys.argv[1], sys.argv[2]
speed = {d: json.load(open(f"{work}/{d}/report.json"))["tokens_per_s"] for d in ("float32", "bfloat16")}
for dtype, tokens_per_s in speed.items():
    print(f"{model} {dtype}: {tokens_per_s:.2f} new tokens/s")
print(f"bfloat16 / float32: {speed['bfloat16'] / speed['float32']:.2f}x")
PY
