#!/usr/bin/env bash
# Two-pass self-adaptation on smollm2-135m with the shipped experts (docs/RESULTS.md §6).
# Each line is the exact command of one row; outputs under docs/results/adaptive/ and bench/results/.
#   dispatch   pass-1 accuracy and cost of every method on the cls test split (all 200 prompts)
#   unseen     tasks no expert was trained on, each prompt dispatched on its own; the base rows are
#              docs/results/base/ (same subsets: arc-challenge dev first 150, math first 50,
#              humaneval first 100). ARC-Challenge's test split is not in ../shared/data, so the
#              official validation split ("dev") stands in; with the test file, add --data-dir DIR
#              --split test.
#   cem        few-shot CEM stability (bench/cem.py): seeds × fitness × shots on ARC-Challenge dev
#              (first 50 items), shots from its TRAIN split, α over the shipped experts; every cell
#              appends one JSON line to bench/results/cem*.jsonl (resumable); the table: --summary.
#              (The earlier single run, docs/results/adaptive/arc-challenge-dev-cem, was made with the
#              first `math` expert and is superseded by this bench.)
# (`prompt` is measured on the cls split only: the base model never writes a label, so it routes
# every prompt to "other" = the base model.)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
OUT=docs/results/adaptive
case "${1:?which step: dispatch | unseen-arc | unseen-arc-truncated | unseen-math | unseen-humaneval | cem}" in
  dispatch)
    # settings (how many of the request's last tokens to read) are chosen on the validation split
    .venv/bin/python bench/dispatch.py --split validation --methods loglik-cls \
      --out bench/results/dispatch-validation.json
    .venv/bin/python bench/dispatch.py
    # pass 1 on a bfloat16 copy of the model beside float32 (pays off only on CPUs with bfloat16 units)
    .venv/bin/python bench/dispatch.py --methods loglik-cls --request-tokens 12 --pass1-dtypes float32,bfloat16 \
      --out bench/results/dispatch-bfloat16.json ;;
  unseen-arc-truncated)  # only the rows that read the last N request tokens (part of unseen-arc)
    for n in 16 12 8; do
      $T2 eval --task arc-challenge --split dev --limit 150 --adapt loglik-cls --pass1-tokens $n \
        --out $OUT/arc-challenge-dev-loglik-cls-${n}tok
    done ;;
  unseen-arc)
    for s in cls loglik-cls; do
      $T2 eval --task arc-challenge --split dev --limit 150 --adapt $s --out $OUT/arc-challenge-dev-$s
    done
    for n in 16 12 8; do
      $T2 eval --task arc-challenge --split dev --limit 150 --adapt loglik-cls --pass1-tokens $n \
        --out $OUT/arc-challenge-dev-loglik-cls-${n}tok
    done ;;
  unseen-math)
    for s in cls loglik-cls; do
      $T2 eval --task math --limit 50 --adapt $s --out $OUT/math-$s
    done ;;
  unseen-humaneval)
    for s in cls loglik-cls; do
      $T2 eval --task humaneval --limit 100 --adapt $s --out $OUT/humaneval-$s
    done ;;
  cem)
    PYTHONPATH=. .venv/bin/python bench/cem.py
    PYTHONPATH=. .venv/bin/python bench/cem.py --summary ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
