#!/usr/bin/env bash
# One prepared check on a machine with one NVIDIA GPU and this project copied onto it (torch,
# transformers, accelerate present; no network; `datasets` and `gguf` not needed on these paths).
#
#   bash bench/gpu_check.sh                 # on the GPU machine: install, GPU tests, the 8B-shape rows
#   bash bench/gpu_check.sh --cpu-dry-run   # here: the same steps on the CPU with a tiny shape
#
# Steps (each under its own time limit, the whole under 8 minutes):
#   1. install t2 without network: `pip install --no-index --find-links bench/wheels --target`
#      (setuptools, pytest and its two small dependencies travel as wheels in bench/wheels);
#      if pip cannot build, the checkout itself is put on PYTHONPATH (said in the log)
#   2. the GPU tests (tests/gpu: bf16 exactness, revert, factorised = dense, a training step,
#      the SVD on the GPU, the memory plan against the measured CUDA peak)
#   3. `t2 info --memory` for Llama-3-8B's config (bf16, batch 16, 512 new tokens, 48 GiB)
#   4. the 8B-shape rows of bench/scaling.py (random weights at Llama-3-8B's shape with the
#      SmolLM2 tokenizer): decompose, eval (tok/s base vs adapted, compose, revert), one RL and one
#      SFT iteration at batch 16 × 512 new tokens (micro-batch 4, activation checkpointing,
#      originals kept in pinned host memory) → bench/results/scaling-gpu.json
# Everything it writes outside the checkout goes to $WORK (default /tmp/t2-gpu-check).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/t2-gpu-check}
DRY=0
[[ "${1:-}" == "--cpu-dry-run" ]] && DRY=1
mkdir -p "$WORK"
START=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*"; }

say "python: $($PYTHON -c 'import sys; print(sys.version.split()[0])')"
$PYTHON - <<'EOF'
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
if [[ $DRY == 0 ]]; then
  $PYTHON -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: use --cpu-dry-run")'
fi

# 1. install without network
SITE="$WORK/site"
rm -rf "$SITE"
if timeout 180 $PYTHON -m pip install --quiet --no-index --find-links bench/wheels --no-deps --target "$SITE" \
     . pytest pluggy iniconfig > "$WORK/install.log" 2>&1; then
  say "installed t2 and pytest into $SITE (no network)"
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  T2=("$PYTHON" -m t2cli.cli.app)
else
  say "pip could not install (see $WORK/install.log); using the checkout on PYTHONPATH"
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  T2=("$PYTHON" -m t2cli.cli.app)
fi
(cd "$WORK" && $PYTHON -c 'import t2cli, pytest; print("t2cli from", t2cli.__file__)')
export T2_HOME="$WORK/t2home" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# 2. the GPU tests (skipped cleanly without CUDA), from outside the checkout so the installed t2 is used
say "GPU tests"
(cd "$WORK" && timeout 240 $PYTHON -m pytest "$ROOT/tests/gpu" "$ROOT/tests/test_memory.py" -q -p no:cacheprovider \
   --rootdir "$ROOT") || { say "tests FAILED"; exit 1; }

# 3. the plan for Llama-3-8B's config
say "memory plan for Llama-3-8B (config only)"
timeout 300 "${T2[@]}" info bench/configs/llama-3-8b --memory --dtype bfloat16 --device cuda --gpu-memory 48 \
  --batch-size 16 --max-new-tokens 512

# 4. the 8B-shape rows of the scaling bench
if [[ $DRY == 1 ]]; then
  say "scaling bench, tiny shape on the CPU (dry run)"
  timeout 600 $PYTHON bench/scaling.py --cpu-dry-run --work "$WORK/bench" --train-batch 4 --micro-batch 2 \
    --checkpointing --keep files
  OUT="$WORK/bench/dry-run.json"
else
  say "scaling bench, Llama-3-8B shape on the GPU"
  OUT=bench/results/scaling-gpu.json
  timeout 420 $PYTHON bench/scaling.py --sizes 8b --device cuda --dtype bfloat16 --work "$WORK/bench" \
    --train-batch 16 --new-tokens 512 --micro-batch 4 --checkpointing --keep cpu --out "$OUT" --force \
    || say "the bench stopped (time limit or error): rows so far are in $OUT"
fi
$PYTHON - "$OUT" <<'EOF'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
for key, row in rows.items():
    gib = lambda b: f"{b / 2**30:.2f} GiB" if b else "-"
    print(key, "complete" if row.get("complete") else "INCOMPLETE")
    if "decompose" in row:
        print(f"  decompose {row['decompose']['seconds']:.0f} s, peak RSS {gib(row['decompose']['peak_rss_bytes'])}")
    if "eval" in row:
        e = row["eval"]
        print(f"  tok/s base {e['base_tok_s']:.1f} adapted {e['adapted_tok_s']:.1f} "
              f"(ratio {e['adapted_tok_s'] / e['base_tok_s']:.3f}); compose {e['compose_all_s']:.2f} s")
    for stage in ("eval", "rl", "sft"):
        if stage in row:
            s = row[stage]
            print(f"  {stage}: {s.get('iteration_s', s['wall_s']):.1f} s, peak RSS {gib(s['peak_rss_bytes'])}, "
                  f"CUDA peak {gib(s.get('cuda_peak_bytes'))}, plan {gib(row.get('plan', {}).get(stage))}")
EOF
say "done"
