#!/usr/bin/env bash
# Base smollm2-135m accuracy per task, as reported in docs/RESULTS.md (greedy, batch 16, CPU).
# Each line is the exact command for one row; outputs go to docs/results/base/<task>/.
# Subsets (first N of the split) keep the whole run near an hour on a 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
T2=.venv/bin/t2
$T2 eval --task cls           --split test             --out docs/results/base/cls
$T2 eval --task mbpp-plus     --split test             --out docs/results/base/mbpp-plus
$T2 eval --task arc-easy      --split test --limit 300 --out docs/results/base/arc-easy
$T2 eval --task humaneval     --split test --limit 100 --out docs/results/base/humaneval
$T2 eval --task gsm8k         --split test --limit 100 --out docs/results/base/gsm8k
$T2 eval --task arc-challenge --split dev  --limit 150 --out docs/results/base/arc-challenge-dev
$T2 eval --task mbpp          --split test --limit 100 --out docs/results/base/mbpp
$T2 eval --task math          --split test --limit 50  --out docs/results/base/math
