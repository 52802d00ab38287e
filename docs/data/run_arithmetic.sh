#!/usr/bin/env bash
# A task from a data file, end to end on the default model (smollm2-135m), as in the README:
# score a file t2 has never seen, train an expert on it, list it. The expert goes to a temporary
# registry. Run from the repository root:  bash docs/data/run_arithmetic.sh > docs/data/run_arithmetic.txt 2>&1
set -euo pipefail
export OMP_NUM_THREADS=1
export T2_REGISTRY="${T2_REGISTRY:-$(mktemp -d)}"
T2="${T2:-t2}"
F=docs/data/arithmetic.jsonl
OUT="$(mktemp -d)"
echo "machine: $(nproc --all)-core CPU; T2_REGISTRY=$T2_REGISTRY"
set -x
time $T2 eval --data $F --prompt-field problem --answer-field answer --checker number --limit 20 --out "$OUT/eval"
time $T2 train --data $F --prompt-field problem --answer-field answer --checker number --domain arithmetic \
  --iters 2 --batch-size 4 --val-limit 8 --max-new-tokens 96 --eval-every 2 --name mine --out "$OUT/train-mine"
$T2 experts list
python -c "import json,sys; m=json.load(open(sys.argv[1])); print(m['domain'], m['provenance']['task'], m['provenance']['task_spec'], m['provenance']['command'])" "$T2_REGISTRY/smollm2-135m/mine/expert.json"
