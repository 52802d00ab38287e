#!/usr/bin/env bash
# The shipped domain experts (SVF) and their LoRA baselines on smollm2-135m, then their test
# evaluations, as reported in docs/RESULTS.md §5. Every line is the exact command of one artefact.
# Same budget for both methods per task: objective (SFT on the task's reference answers), data,
# batch, iterations, validation subset and schedule; each method its own learning rate (SVF moves
# one scale per singular value: 5e-2; LoRA 1e-3, 5× PEFT's usual 2e-4 so 40 steps can move it).
# Machine: 2 CPU cores, at most two jobs at a time, OMP_NUM_THREADS=1 each.
# An interrupted SVF run continues with the same command plus --resume (LoRA runs restart); add
# --overwrite to replace an expert already in registry/.
# Usage: docs/run_training.sh svf|lora|eval arc|gsm8k|mbpp|cls (cls: the dispatch classifier, SVF only)
#        docs/run_training.sh lora gsm8k150 (the LoRA baseline on the shipped math expert's budget)
#        docs/run_training.sh svf gsm8k-rl | eval gsm8k400 | eval mbpp-heldout
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SVF="--objective sft --lr 5e-2 --registry registry --checkpoint-every 10"
LORA="--method lora --objective sft --lr 1e-3"
ARC="--task arc-easy --iters 40 --batch-size 16 --eval-every 10 --val-limit 64 --max-new-tokens 64"
GSM8K="--task gsm8k --iters 40 --batch-size 8 --eval-every 20 --val-limit 32 --max-new-tokens 256"
# The shipped math expert: the GSM8K budget above did not beat the base model (1/100 on test), so a
# longer run with a lower rate replaced it (150 iterations, validation on 100 items; 3/100 on test,
# still below the base model's 4/100). Its LoRA baseline ran the 40-iteration budget above.
GSM8K_SVF="--task gsm8k --iters 150 --batch-size 8 --eval-every 50 --val-limit 100 --max-new-tokens 256 \
  --objective sft --lr 2e-2 --registry registry --checkpoint-every 10"
# The LoRA baseline on the shipped math expert's budget (150 iterations, validation on 100 items every 50).
GSM8K_LORA150="--task gsm8k --iters 150 --batch-size 8 --eval-every 50 --val-limit 100 --max-new-tokens 256"
# RL after SFT (not shipped: no iteration beat its starting expert `math` on validation; RESULTS §5):
# REINFORCE with 4 sampled rollouts per prompt and a group-mean baseline, on the 748 training items
# whose reference solution is at most 60 tokens (the easiest, where the model earns some reward).
GSM8K_RL="--task gsm8k --objective rl --init-expert math --rollouts-per-prompt 4 --temperature 0.7 \
  --batch-size 8 --max-reference-tokens 60 --iters 16 --lr 1e-2 --eval-every 8 --val-limit 100 \
  --max-new-tokens 192 --registry registry --checkpoint-every 4"
CLS="--task cls --objective sft --iters 20 --batch-size 16 --lr 5e-2 --eval-every 5 --val-limit 60 \
  --registry registry --checkpoint-every 5"
MBPP="--task mbpp-plus --iters 40 --batch-size 8 --eval-every 20 --val-limit 32 --max-new-tokens 256"

case "${1:?svf|lora|eval} ${2:?arc|gsm8k|mbpp|cls}" in
  "svf arc")    $T2 train $ARC $SVF --name reasoning --out runs/train-reasoning "${@:3}" ;;
  "svf gsm8k")  $T2 train $GSM8K_SVF --name math --out runs/train-math-v2 "${@:3}" ;;
  "svf gsm8k-rl") $T2 train $GSM8K_RL --name math-rl --out runs/train-math-rl "${@:3}" ;;
  "svf cls")    $T2 train $CLS --name dispatch-cls --out runs/train-dispatch-cls-v2 "${@:3}" ;;
  "svf mbpp")   $T2 train $MBPP $SVF --name code --out runs/train-code "${@:3}" ;;
  "lora arc")   $T2 train $ARC $LORA --name arc-easy-lora --out runs/train-arc-easy-lora ;;
  "lora gsm8k") $T2 train $GSM8K $LORA --name gsm8k-lora --out runs/train-gsm8k-lora ;;
  "lora gsm8k150") $T2 train $GSM8K_LORA150 $LORA --name gsm8k-lora150 --out runs/train-gsm8k-lora150 ;;
  "lora mbpp")  $T2 train $MBPP $LORA --name mbpp-plus-lora --out runs/train-mbpp-plus-lora ;;
  "eval arc")
    $T2 eval --task arc-easy --limit 300 --expert reasoning --out docs/results/svf/arc-easy
    $T2 eval --task arc-easy --limit 300 --lora runs/train-arc-easy-lora/adapter --out docs/results/lora/arc-easy ;;
  "eval gsm8k")
    $T2 eval --task gsm8k --limit 100 --expert math --out docs/results/svf/gsm8k
    $T2 eval --task gsm8k --limit 100 --lora runs/train-gsm8k-lora/adapter --out docs/results/lora/gsm8k ;;
  "eval gsm8k400")  # the first 400 test items: base and the shipped math expert (compare: t2 compare A B)
    $T2 eval --task gsm8k --limit 400 --out docs/results/base/gsm8k-test400
    $T2 eval --task gsm8k --limit 400 --expert math --out docs/results/svf/gsm8k-test400
    $T2 eval --task gsm8k --limit 400 --lora runs/train-gsm8k-lora150/adapter --out docs/results/lora/gsm8k-test400 ;;
  "eval mbpp-heldout")  # the 261 MBPP test problems outside the code expert's training pool
    .venv/bin/python docs/mbpp_heldout.py runs/data-mbpp-heldout
    $T2 eval --task mbpp --data-dir runs/data-mbpp-heldout --out docs/results/base/mbpp-heldout
    $T2 eval --task mbpp --data-dir runs/data-mbpp-heldout --expert code --out docs/results/svf/mbpp-heldout ;;
  "eval cls")
    $T2 eval --task cls --split test --expert dispatch-cls --out docs/results/svf/cls-dispatch-cls ;;
  "eval mbpp")
    $T2 eval --task mbpp-plus --expert code --out docs/results/svf/mbpp-plus
    $T2 eval --task mbpp-plus --lora runs/train-mbpp-plus-lora/adapter --out docs/results/lora/mbpp-plus ;;
  *) echo "unknown step: $*" >&2; exit 2 ;;
esac
