#!/usr/bin/env bash
# `t2 eval --resume` on a real model: an unbroken evaluation, then the same one killed (SIGTERM, as
# a session's end kills it) once its first batch is kept and continued with --resume; the answers
# must be identical. Prints what was kept and whether every answer matches.
#   bench/eval_resume_check.sh [MODEL]      default qwen2.5-coder-0.5b (any embedded model works)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-qwen2.5-coder-0.5b}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
args=(-m "$model" --task gsm8k --split test --limit 6 --batch-size 2 --max-new-tokens 64 --dtype float32)
.venv/bin/t2 eval "${args[@]}" --out "$work/unbroken" > "$work/unbroken.log" 2>&1
.venv/bin/t2 eval "${args[@]}" --out "$work/cut" > "$work/cut.log" 2>&1 &
pid=$!
kept=$work/cut/predictions.partial.jsonl
until [ -f "$kept" ] && [ "$(wc -l < "$kept")" -ge 2 ]; do sleep 0.2; done
kill -TERM $pid
wait $pid || echo "killed after its first batch (exit $?): $(wc -l < "$kept") answers kept"
.venv/bin/t2 eval "${args[@]}" --out "$work/cut" --resume > "$work/resumed.log" 2>&1
grep -a "resuming" "$work/resumed.log"
.venv/bin/python - "$work" <<'PY'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
unbroken = [json.loads(line)["output"] for line in (work / "unbroken/samples.jsonl").read_text().splitlines()]
resumed = [json.loads(line)["output"] for line in (work / "cut/samples.jsonl").read_text().splitlines()]
same = sum(a == b for a, b in zip(unbroken, resumed))
print(f"answers identical to the unbroken run's: {same} of {len(unbroken)}")
sys.exit(0 if same == len(unbroken) == len(resumed) else 1)
PY
