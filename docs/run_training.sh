#!/usr/bin/env bash
# The shipped domain experts (SVF) and their LoRA baselines on smollm2-135m, then their test
# evaluations, as reported in docs/RESULTS.md §5. Every line is the exact command of one artefact.
# Same budget for both methods per task: objective (SFT on the task's reference answers), data,
# batch, iterations, validation subset and schedule; each method its own learning rate (SVF moves
# one scale per singular value: 5e-2; LoRA 1e-3, 5× PEFT's usual 2e-4 so 40 steps can move it).
# Machine: 2 CPU cores, at most two jobs at a time, OMP_NUM_THREADS=1 each.
# An interrupted SVF run continues with the same command plus --resume (LoRA runs restart).
# Usage: docs/run_training.sh svf|lora|eval arc|gsm8k|mbpp
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
SVF="--objective sft --lr 5e-2 --registry registry --checkpoint-every 10"
LORA="--method lora --objective sft --lr 1e-3"
ARC="--task arc-easy --iters 40 --batch-size 16 --eval-every 10 --val-limit 64 --max-new-tokens 64"
GSM8K="--task gsm8k --iters 40 --batch-size 8 --eval-every 20 --val-limit 32 --max-new-tokens 256"
MBPP="--task mbpp-plus --iters 40 --batch-size 8 --eval-every 20 --val-limit 32 --max-new-tokens 256"

case "${1:?svf|lora|eval} ${2:?arc|gsm8k|mbpp}" in
  "svf arc")    $T2 train $ARC $SVF --name reasoning --out runs/train-reasoning "${@:3}" ;;
  "svf gsm8k")  $T2 train $GSM8K $SVF --name math --out runs/train-math "${@:3}" ;;
  "svf mbpp")   $T2 train $MBPP $SVF --name code --out runs/train-code "${@:3}" ;;
  "lora arc")   $T2 train $ARC $LORA --name arc-easy-lora --out runs/train-arc-easy-lora ;;
  "lora gsm8k") $T2 train $GSM8K $LORA --name gsm8k-lora --out runs/train-gsm8k-lora ;;
  "lora mbpp")  $T2 train $MBPP $LORA --name mbpp-plus-lora --out runs/train-mbpp-plus-lora ;;
  "eval arc")
    $T2 eval --task arc-easy --limit 300 --expert reasoning --out docs/results/svf/arc-easy
    $T2 eval --task arc-easy --limit 300 --lora runs/train-arc-easy-lora/adapter --out docs/results/lora/arc-easy ;;
  "eval gsm8k")
    $T2 eval --task gsm8k --limit 100 --expert math --out docs/results/svf/gsm8k
    $T2 eval --task gsm8k --limit 100 --lora runs/train-gsm8k-lora/adapter --out docs/results/lora/gsm8k ;;
  "eval mbpp")
    $T2 eval --task mbpp-plus --expert code --out docs/results/svf/mbpp-plus
    $T2 eval --task mbpp-plus --lora runs/train-mbpp-plus-lora/adapter --out docs/results/lora/mbpp-plus ;;
  *) echo "unknown step: $*" >&2; exit 2 ;;
esac
