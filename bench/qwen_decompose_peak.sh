#!/usr/bin/env bash
# The 1.5B's decomposition peak, planned (`t2 info --memory`) against measured (/usr/bin/time's
# maximum resident set), on the MLP matrices of its first two layers: the peak is one matrix and its
# factors whatever the count (the matrices stream one at a time), so these measure the whole run's
# peak without the 28 minutes of all 84 (and without the one-time GGUF conversion, which a first
# `t2 decompose` also pays). Needs the model converted once (any t2 command on it).
#   bench/qwen_decompose_peak.sh [MODEL]   → bench/results/qwen/decompose-peak-MODEL.json
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-qwen2.5-coder-1.5b}"
targets='model\.layers\.[01]\.mlp\..*'
out="bench/results/qwen/decompose-peak-$model.json"
mkdir -p "$(dirname "$out")"
plan=$(.venv/bin/t2 info "$model" --memory --dtype bfloat16 --targets "$targets" --json)
home=$(mktemp -d)
mkdir -p "$home/models" && ln -s "${T2_HOME:-$HOME/.cache/t2}/models/$model" "$home/models/$model"
log=$(mktemp)
T2_HOME="$home" /usr/bin/time -v .venv/bin/t2 decompose "$model" --dtype bfloat16 --targets "$targets" 2>"$log" >/dev/null
python3 - "$plan" "$log" "$out" "$model" "$targets" <<'PY'
import json, re, sys
plan, log, out, model, targets = sys.argv[1:]
stage = next(s for s in json.loads(plan)["memory"]["stages"] if s["name"] == "decompose")
text = open(log).read()
peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) * 1024
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
record = {"model": model, "targets": targets, "dtype": "bfloat16", "plan_bytes": stage["total_bytes"],
          "measured_peak_rss_bytes": peak, "measured_over_plan": round(peak / stage["total_bytes"], 3),
          "wall": wall, "command": "bench/qwen_decompose_peak.sh " + model}
open(out, "w").write(json.dumps(record, indent=2) + "\n")
print(f"plan {stage['total_bytes'] / 2**30:.2f} GiB, measured {peak / 2**30:.2f} GiB ({record['measured_over_plan']}x), {wall}")
PY
rm -rf "$home" "$log"
