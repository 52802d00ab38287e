#!/usr/bin/env bash
# Base accuracy of the three embedded instruct models on every task: the same prompts, subsets and
# answer checks for each (greedy, batch 16). Each row is one `t2 eval`; its report and
# every sample go to docs/results/base-models/<model>/<task>/. A row whose report exists is skipped,
# and a row cut off part way (its answers kept batch by batch) continues with --resume, so the
# script goes on where an earlier (cut-off) session stopped.
#   docs/run_qwen_base_evals.sh [MODEL ...]     default: qwen2.5-coder-0.5b qwen2.5-coder-1.5b smollm2-135m
# Token budgets: each model's own per task (t2cli.embedded, chosen on validation by bench/token_budget.py),
# else the task's limit. Subsets: the first N of the split, N = 200 where the split has them.
# dtype: DTYPE (default float32; each report's provenance records it). A CPU without bfloat16 units
# runs bfloat16 about 3× slower than float32; one with them (AMX: `amx_bf16` in /proc/cpuinfo) about
# 3.4× faster (the 1.5B, one core: bench/results/qwen/dtype-speed-qwen2.5-coder-1.5b-amx.txt), so
# there DTYPE=bfloat16. A row cut off part way continues only in the dtype it started in (its answer journal refuses another).
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
DTYPE=${DTYPE:-float32}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(qwen2.5-coder-0.5b qwen2.5-coder-1.5b smollm2-135m)
rows=(  # ARC last: its budgets are the model's own, chosen on validation first (bench/token_budget.py)
  "gsm8k test 200"
  "mbpp-plus test 200"
  "humaneval test 200"
  "math test 200"
  "arc-easy test 200"
  "arc-challenge dev 200"
)
for model in "${models[@]}"; do
  for row in "${rows[@]}"; do
    read -r task split limit <<<"$row"
    out="docs/results/base-models/$model/$task"
    [ -f "$out/report.json" ] && { echo "skip $model $task (done)"; continue; }
    resume=()
    [ -f "$out/predictions.partial.jsonl" ] && resume=(--resume)
    echo "$model $task $split --limit $limit --dtype $DTYPE ${resume[*]}"
    $T2 eval -m "$model" --task "$task" --split "$split" --limit "$limit" --dtype "$DTYPE" --batch-size 16 --out "$out" \
      "${resume[@]}"
  done
done
