#!/usr/bin/env bash
# The qwen2.5-coder-0.5b experts and their LoRA baselines, then their held-out test evaluations and
# paired tests (docs/RESULTS.md §0). Every line is the exact command of one artefact.
#
# SVF: the paper's objective — REINFORCE with the KL term (λ 0.1) — 4 prompts × 4 sampled rollouts
# per iteration (temperature 0.8, group-mean baseline), 120 iterations, lr 1e-2, validation on the
# first 50 validation items every 10 iterations; the best validation score is registered.
# LoRA: the paper's LoRA baseline (rank 16 on the same MLP matrices, SFT on the task's reference
# answers) with the same data, prompts per iteration, iterations and validation schedule; its
# learning rate is LORA_LR (default 2e-4, PEFT's usual; the run directory names it), chosen on the
# validation split: at 1e-3 (5× that, as the smollm2 baselines) GSM8K validation fell from 22% to 6%.
# Machine: 2 CPU cores, one job per core (OMP_NUM_THREADS=1). A new training run starts in bfloat16
# (the reference implementation's training dtype) where the CPU has AMX bfloat16 units, where it is
# about twice as fast as float32, and in float32 elsewhere (bfloat16 is emulated, ~3x slower); a run
# that continues from its checkpoint keeps the dtype it began with (its config.json), so `math` and
# `code`, begun on a CPU without those units, stay float32. A test evaluation runs in the dtype of
# the base model's report it is paired with (float32 for the 0.5B, bfloat16 for the 1.5B's rows).
# MODEL (default qwen2.5-coder-0.5b) and ITERS (default 120) choose another embedded model and budget:
# the 1.5B's `math` expert on CPU is `MODEL=qwen2.5-coder-1.5b ITERS=40 docs/run_qwen_experts.sh svf math`
# (its runs: bench/runs/qwen1.5b-*).
# A run whose run directory holds a checkpoint continues from it (--resume): commit
# bench/runs/<run>/ after each session and the next session, on any machine, goes on.
# Test subsets: the first 200 items of each task's test split, never used to choose anything;
# the base model's reports are docs/run_qwen_base_evals.sh's.
# Usage: docs/run_qwen_experts.sh svf|lora math|code|reasoning
#        docs/run_qwen_experts.sh svf cls               (the dispatch classifier; SVF only; it learns the
#                                                        registered experts' domains: train it after them)
#        docs/run_qwen_experts.sh eval math|code|reasoning   (SVF and LoRA on test, then t2 compare)
#        docs/run_qwen_experts.sh eval cls              (base and the classifier on the cls test set)
#        docs/run_qwen_experts.sh interim math|code|reasoning|cls   (register an SVF run's best so far)
#        docs/run_qwen_experts.sh eval-interim math|code|reasoning  (that expert on test, against base)
#        docs/run_qwen_experts.sh eval-lora math|code|reasoning     (the LoRA baseline on test, against base)
# An SVF run registers its expert in registry/ when it ends, replacing the interim one that
# `interim` registers (the best validation state so far of a run still going on; its recipe
# records the iterations done) — so a long run's expert can be evaluated and shipped as it goes.
# A test report's directory names the iteration whose state the expert is (…-rl-iteration-N), and
# the report names the expert's tensor hash: when the run ends with the same best state as the
# interim expert, `eval` finds that report and reuses it; when the best state changed, the results
# check flags the old report, which then moves beside the run in bench/runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
MODEL=${MODEL:-qwen2.5-coder-0.5b}
RUNS=bench/runs/${MODEL/qwen2.5-coder-/qwen}  # + -<expert>-rl or -<expert>-lora-lr<lr>
COMMON="-m $MODEL --iters ${ITERS:-120} -b 4 --val-limit 50 --eval-every 10 --checkpoint-every 1 \
  --micro-batch 4 --grad-checkpointing --generation-batch-size 16"
SVF="--objective rl --kl 0.1 -k 4 --temperature 0.8 --lr 1e-2 --registry registry --overwrite"
LORA_LR=${LORA_LR:-2e-4}
LORA="--method lora --objective sft --lr $LORA_LR"

task_of() {
  case "$1" in
    math)  # the 0.5B's run named its budget (320, the task's and the model's own); others take their own
      if [ "$MODEL" = qwen2.5-coder-0.5b ]; then echo "gsm8k --max-new-tokens 320"; else echo gsm8k; fi ;;
    code) echo "mbpp-plus" ;;
    reasoning) echo "arc-easy" ;;  # 512 new tokens: the model's ARC budget (t2cli.embedded)
    cls) echo "cls" ;;
    *) echo "unknown expert $1 (math, code, reasoning, cls)" >&2; exit 2 ;;
  esac
}

run_dtype() {  # run_dtype RUN_DIR: the dtype a checkpointed run began in (its config.json)
  .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["dtype"])' "$1/config.json"
}

train() {  # train RUN_DIR ARGS...: start the run, or continue it from its checkpoint in its own dtype
  local out=$1
  shift
  local resume=() dtype=float32
  grep -q amx_bf16 /proc/cpuinfo 2>/dev/null && dtype=bfloat16
  if [ -f "$out/checkpoint.pt" ]; then
    resume=(--resume)
    dtype=$(run_dtype "$out")
  fi
  $T2 train "$@" --dtype "$dtype" --out "$out" "${resume[@]}"
}

evaluate() {  # evaluate OUT ARGS...: one test evaluation, continued (--resume) where a cut-off one left answers
  local out=$1
  shift
  local resume=()
  [ -f "$out/predictions.partial.jsonl" ] && resume=(--resume)
  $T2 eval -m $MODEL "$@" --split test --limit 200 --dtype "$(base_dtype)" --batch-size 16 --out "$out" "${resume[@]}"
}

base_dtype() {  # the dtype of the base model's test report this task's evaluations are paired with
  local base="docs/results/base-models/$MODEL/$test_task/report.json"
  if [ -f "$base" ]; then
    .venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1])).get("provenance", {}).get("dtype", "float32"))' "$base"
  else
    echo float32
  fi
}

svf_report_dir() {  # the test report directory of the registered expert: it names the iteration of its state
  local best
  best=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["provenance"]["metrics"]["best_iteration"])' \
    "registry/$MODEL/$name/expert.json")
  echo "docs/results/svf/$MODEL/$test_task-rl-iteration-$best"
}

expert=${2:?math|code|reasoning|cls}
read -r -a task <<<"$(task_of "$expert")"
name=$expert
[ "$expert" != cls ] || name=dispatch-cls  # the registry name of the classifier that serves pass 1
test_task=${task[0]}
case "$1" in
  svf) train "$RUNS-$expert-rl" $COMMON $SVF --task "${task[@]}" --name "$name" ;;
  interim)
    run="$RUNS-$expert-rl"
    $T2 train $COMMON $SVF --task "${task[@]}" --name "$name" --dtype "$(run_dtype "$run")" --out "$run" --resume --save-best ;;
  eval-interim)
    base="docs/results/base-models/$MODEL/$test_task"
    [ -f "$base/report.json" ] || { echo "no base report at $base: run docs/run_qwen_base_evals.sh $MODEL" >&2; exit 2; }
    svf=$(svf_report_dir)
    [ -f "$svf/report.json" ] || evaluate "$svf" --task "${task[@]}" --expert "$name"
    $T2 compare "$base" "$svf" ;;
  eval-lora)
    base="docs/results/base-models/$MODEL/$test_task"
    [ -f "$base/report.json" ] || { echo "no base report at $base: run docs/run_qwen_base_evals.sh $MODEL" >&2; exit 2; }
    lora="docs/results/lora/$MODEL/$test_task"
    [ -f "$lora/report.json" ] || evaluate "$lora" --task "${task[@]}" --lora "$RUNS-$expert-lora-lr$LORA_LR/adapter"
    $T2 compare "$base" "$lora" ;;
  lora)
    [ "$expert" != cls ] || { echo "the dispatch classifier has no LoRA baseline" >&2; exit 2; }
    train "$RUNS-$expert-lora-lr$LORA_LR" $COMMON $LORA --task "${task[@]}" --name "$expert-lora" ;;
  eval)
    if [ "$expert" = cls ]; then  # against the base model on the classification test set; no LoRA baseline
      base="docs/results/base-models/$MODEL/cls"
      svf=$(svf_report_dir)
      [ -f "$base/report.json" ] || evaluate "$base" --task cls
      [ -f "$svf/report.json" ] || evaluate "$svf" --task cls --expert "$name"
      $T2 compare "$base" "$svf"
      exit 0
    fi
    base="docs/results/base-models/$MODEL/$test_task"
    [ -f "$base/report.json" ] || { echo "no base report at $base: run docs/run_qwen_base_evals.sh $MODEL" >&2; exit 2; }
    svf=$(svf_report_dir)
    lora="docs/results/lora/$MODEL/$test_task"
    [ -f "$svf/report.json" ] || evaluate "$svf" --task "${task[@]}" --expert "$name"
    [ -f "$lora/report.json" ] || evaluate "$lora" --task "${task[@]}" --lora "$RUNS-$expert-lora-lr$LORA_LR/adapter"
    $T2 compare "$base" "$svf"
    $T2 compare "$lora" "$svf" ;;
  *) echo "usage: $0 svf|lora|eval|interim|eval-interim|eval-lora EXPERT" >&2; exit 2 ;;
esac
