#!/usr/bin/env bash
# Two-pass adaptation on tasks no qwen2.5-coder-0.5b expert was trained on, as the paper's Table 2
# (docs/RESULTS.md §0): ARC-Challenge (dev, first 200), HumanEval (all 164) and MATH (first 200),
# each with every single shipped expert and every pass-1 strategy over the shipped experts, with
# the same prompts, subsets, budgets and greedy decoding as the base rows
# (docs/run_qwen_base_evals.sh, whose reports are the base column). A row whose report exists is
# skipped and a row cut off part way continues (--resume), so the script goes on where an earlier
# session stopped; t2 compare gives McNemar's p
# of each row against the base model.
#   docs/run_qwen_unseen.sh [TASK ...]      default: arc-challenge humaneval math
#   docs/run_qwen_unseen.sh --compare       every finished row against its base report
# Machine: CPU, one thread per job. dtype: DTYPE (default float32, whose base column is the base
# table's reports). DTYPE=bfloat16 is about 3x faster where the CPU has AMX bfloat16 units (and ~3x
# slower where it has none): its rows go to docs/results/adaptive/<model>-bfloat16/ beside their own
# base rows (<task>-base), since greedy answers differ between dtypes and a paired test needs both
# runs in one. A row cut off part way continues only in the dtype it started in.
# cem: its default fitness (loglik) and shot count (32 of the evaluated split, never scored), the
# paper's population (32); at most CEM_GENERATIONS generations (default 10, for time: the paper's
# bound is 50, at 8-10 min a generation on one core), stopped earlier once the elites' mixtures
# (each expert's share αₖ/Σα) agree to within CEM_TOLERANCE (default 0.01). Its search keeps its
# state in the row's folder after each generation, so a cut-off search goes on from its last one
# (and a larger CEM_GENERATIONS continues a finished search).
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
MODEL=qwen2.5-coder-0.5b
EXPERTS=(math code reasoning)
STRATEGIES=(prompt cls loglik-cls centroid cem)
CEM_GENERATIONS=${CEM_GENERATIONS:-10}
CEM_TOLERANCE=${CEM_TOLERANCE:-0.01}
DTYPE=${DTYPE:-float32}
OUT=docs/results/adaptive/$MODEL
[ "$DTYPE" = float32 ] || OUT=$OUT-$DTYPE

base_of() {  # the base model's report folder that a row of TASK is paired with
  if [ "$DTYPE" = float32 ]; then echo "docs/results/base-models/$MODEL/$1"; else echo "$OUT/$1-base"; fi
}

row() {  # row OUT ARGS...: one evaluation, continued where a cut-off one left its answers
  local out=$1
  shift
  [ -f "$out/report.json" ] && return
  local resume=()
  [ -f "$out/predictions.partial.jsonl" ] && resume=(--resume)
  $T2 eval "$@" --out "$out" "${resume[@]}"
}

split_of() { case "$1" in arc-challenge) echo "dev 200" ;; humaneval) echo "test 164" ;; math) echo "test 200" ;; esac; }

if [ "${1:-}" = --compare ]; then
  for report in "$OUT"/*/report.json; do
    row=$(dirname "$report")
    task=$(basename "$row" | cut -d- -f1)
    [ "$task" = arc ] && task=arc-challenge
    [ "$row" = "$(base_of "$task")" ] || $T2 compare "$(base_of "$task")" "$row"
  done
  exit 0
fi

tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(arc-challenge humaneval math)
for task in "${tasks[@]}"; do
  read -r split limit <<<"$(split_of "$task")"
  [ -n "${split:-}" ] || { echo "unknown task $task (arc-challenge, humaneval, math)" >&2; exit 2; }
  args=(-m $MODEL --task "$task" --split "$split" --limit "$limit" --dtype "$DTYPE" --batch-size 16)
  row "$(base_of "$task")" "${args[@]}"
  for expert in "${EXPERTS[@]}"; do
    row "$OUT/$task-expert-$expert" "${args[@]}" --expert "$expert"
  done
  for strategy in "${STRATEGIES[@]}"; do
    extra=()
    [ "$strategy" = cem ] && extra=(--cem-generations "$CEM_GENERATIONS" --cem-tolerance "$CEM_TOLERANCE")
    row "$OUT/$task-$strategy" "${args[@]}" --adapt "$strategy" "${extra[@]}"
  done
done
