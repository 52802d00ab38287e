#!/usr/bin/env bash
# Re-score the committed code samples with `t2 score` and print each next to its report.json count.
# Run from the repository root: OMP_NUM_THREADS=1 bash docs/reliability/rescore.sh
set -euo pipefail
T2=${T2:-t2}
for spec in base/mbpp:mbpp base/mbpp-heldout:mbpp svf/mbpp-heldout:mbpp \
            base/mbpp-plus:mbpp-plus svf/mbpp-plus:mbpp-plus lora/mbpp-plus:mbpp-plus \
            base/humaneval:humaneval adaptive/humaneval-cls:humaneval adaptive/humaneval-loglik-cls:humaneval; do
  dir=docs/results/${spec%%:*}
  task=${spec##*:}
  shipped=$(python3 -c "import json; r = json.load(open('$dir/report.json')); print(f\"{r['correct']} / {r['n']}\")")
  rescored=$(COLUMNS=200 $T2 score --task "$task" -p "$dir/samples.jsonl" | grep -oE '[0-9]+ / [0-9]+' | head -1)
  echo "$dir: shipped $shipped, rescored $rescored $([ "$shipped" == "$rescored" ] && echo same || echo MOVED)"
done
