#!/usr/bin/env bash
# Re-score the committed multiple-choice reports with today's choice checker (a label counts only
# where the answer states it: "The answer is (X)", "(X) is the correct answer", \boxed{X}, or an
# answer that is only the label), from their saved outputs; no model is loaded.
# Prints: report folder, correct/n as recorded, correct/n today.
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
for folder in $(ls -d docs/results/{base,svf,lora}/arc-* docs/results/adaptive/arc-* 2>/dev/null); do
  [ -f "$folder/report.json" ] || continue
  split=test; task=arc-easy
  case "$folder" in *arc-challenge*) task=arc-challenge; split=dev ;; esac
  recorded=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['correct']}/{r['n']}\")" "$folder/report.json")
  today=$($T2 score --task "$task" --split "$split" --predictions "$folder/samples.jsonl" --json 2>/dev/null \
    | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"{r['correct']}/{r['n']}\")")
  printf '%-58s %9s %9s\n' "$folder" "$recorded" "$today"
done
