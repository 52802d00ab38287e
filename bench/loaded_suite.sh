#!/usr/bin/env bash
# The test suite on a loaded machine: ROUNDS rounds, each running two full suites at once (the
# README's test command) in two clean clones of HEAD. A round passes when both suites pass; the
# summary line of each suite, its wall time and the load average go to the log.
#   bash bench/loaded_suite.sh [ROUNDS] > bench/results/loaded-suite.log 2>&1
set -uo pipefail
ROUNDS="${1:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
echo "commit $(git -C "$ROOT" rev-parse --short HEAD); $(nproc --all)-core CPU; $(free -g | awk '/Mem/ {print $2}') GiB; $ROUNDS rounds of two suites at once"
for side in a b; do
  git clone -q "$ROOT" "$WORK/$side"
  (cd "$WORK/$side" && scripts/install.sh --dev > "$WORK/install-$side.log" 2>&1) &
done
wait
for side in a b; do [ -x "$WORK/$side/.venv/bin/python" ] || { echo "install failed in $side"; tail -5 "$WORK/install-$side.log"; exit 1; }; done
failed=0
for round in $(seq 1 "$ROUNDS"); do
  started=$(date +%s)
  for side in a b; do
    (cd "$WORK/$side" && .venv/bin/python -m pytest > "$WORK/round$round-$side.log" 2>&1; echo $? > "$WORK/round$round-$side.rc") &
  done
  peak_load=0
  while [ "$(jobs -r | wc -l)" -gt 0 ]; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    peak_load=$(python3 -c "print(max($peak_load, $load))")
    sleep 10
  done
  wait
  for side in a b; do
    rc=$(cat "$WORK/round$round-$side.rc")
    [ "$rc" = 0 ] || failed=1
    echo "round $round suite $side: exit $rc — $(tail -1 "$WORK/round$round-$side.log")"
    [ "$rc" = 0 ] || grep -E "^(FAILED|ERROR)" "$WORK/round$round-$side.log"
  done
  echo "round $round: $(( $(date +%s) - started )) s wall, peak 1-min load average $peak_load"
done
echo "logs: $WORK"
exit $failed
