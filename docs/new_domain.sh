#!/usr/bin/env bash
# A new domain routed, end to end on the default model (smollm2-135m), 2-core CPU: a fourth domain
# expert from a data file (geography), the classifier retrained with one command, and routing
# accuracy per domain on held-out prompts (bench/results/new-domain-*.json, docs/RESULTS.md §6).
# The experts go to a fresh registry (never the repository's registry/). Run from the repository root:
#   bash docs/new_domain.sh > docs/new_domain.txt 2>&1
set -euo pipefail
export OMP_NUM_THREADS=1
export T2_REGISTRY="${T2_REGISTRY:-$(mktemp -d)}"
T2="${T2:-t2}"
PY="${PY:-python}"
OUT="$(mktemp -d)"
echo "machine: $(nproc --all)-core CPU; T2_REGISTRY=$T2_REGISTRY"
set -x
$PY docs/data/make_geography.py   # seeded: 120 rows; without a split field, 20% (24 rows) are held out as validation
# 1. The fourth domain expert (2 iterations: its quality is irrelevant to routing)
time $T2 train --data docs/data/geography.jsonl --prompt-field question --answer-field answer --checker exact \
  --domain geography --objective sft --iters 2 -b 4 --max-new-tokens 16 --val-limit 8 --name geography \
  --out "$OUT/train-geography"
# 2. The classifier, retrained with one command: its set is the training prompts of the registered
#    domain experts' tasks (now four), labelled with their domains (the shipped dispatch-cls recipe:
#    20 iterations of batch 16, validation on 60 items every 5)
time $T2 train --task cls --objective sft --iters 20 -b 16 --lr 5e-2 --eval-every 5 --val-limit 60 \
  --checkpoint-every 5 --name dispatch-cls-4 --out "$OUT/train-dispatch-cls-4"
$T2 experts list
# 3. Routing accuracy per domain: the cls test split of the four experts' tasks (the old three's 200
#    prompts + 19 geography training-split prompts the classifier did not see) and geography's 24
#    validation rows (no expert or classifier saw them), as the task prompts them and bare (the
#    question alone, as typed in a chat)
$PY bench/dispatch.py --experts code,math,reasoning,geography --held-out geography,geography:validation:bare \
  --methods centroid --request-tokens 8,32 --skip-full --out bench/results/new-domain-centroid.json
$PY bench/dispatch.py --experts code,math,reasoning,geography --held-out geography,geography:validation:bare \
  --methods loglik-cls --classifiers dispatch-cls-4,dispatch-cls --request-tokens 8 --skip-full \
  --out bench/results/new-domain-loglik-cls.json
$PY bench/dispatch.py --experts code,math,reasoning,geography --held-out geography,geography:validation:bare \
  --methods loglik-cls --classifiers dispatch-cls-4,dispatch-cls --request-tokens 32 --skip-full \
  --out bench/results/new-domain-loglik-cls-32.json
# whole prompts (slow: several s/prompt here), the retrained classifier, the first 24 cls test prompts
$PY bench/dispatch.py --experts code,math,reasoning,geography --limit 24 --methods loglik-cls \
  --classifiers dispatch-cls-4 --request-tokens "" --out bench/results/new-domain-loglik-cls-full24.json
$PY docs/new_domain_calibration.py > bench/results/new-domain-calibration.txt   # the calibration prior vs the raw argmax
