"""How much of a two-pass row's difference is the batch, not the weights.

A two-pass row answers each prompt with the expert pass 1 chose, in batches of the prompts that
went to that expert; the single-expert rows (and the base row) answer every prompt with one set of
weights, in the base row's batches. For each two-pass row of a Table-2 folder this compares every
item with the single-expert row of the expert it went to (`other`: the base row) — the same
weights, other batch-mates — and prints how many answers are identical and how many items only the
two-pass row (+) or only the single-expert row (−) got right.

    .venv/bin/python docs/batch_noise.py [FOLDER]   (default: the 0.5B's bfloat16 Table-2 rows)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FOLDER = Path(__file__).parent / "results" / "adaptive" / "qwen2.5-coder-0.5b-bfloat16"
SINGLE = {"math": "expert-math", "code": "expert-code", "reasoning": "expert-reasoning", "other": "base"}
STRATEGIES = ("prompt", "cls", "loglik-cls", "centroid")


def samples(folder: Path) -> dict[str, dict] | None:
    path = folder / "samples.jsonl"
    if not (folder / "report.json").exists():
        return None
    return {row["id"]: row for row in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def main(folder: Path) -> None:
    print("| row | answers identical to the same weights' single-expert row | + / − items | routed |")
    print("|---|---|---|---|")
    for task in ("arc-challenge", "humaneval", "math"):
        singles = {label: samples(folder / f"{task}-{row}") for label, row in SINGLE.items()}
        for strategy in STRATEGIES:
            row = samples(folder / f"{task}-{strategy}")
            if row is None:
                continue
            same = plus = minus = 0
            routed: dict[str, int] = {}
            for item, answer in row.items():
                single = singles[answer["label"]]
                if single is None:
                    raise SystemExit(f"{task}-{SINGLE[answer['label']]} has no report yet: run it first")
                reference = single[item]
                same += answer["output"] == reference["output"]
                plus += answer["correct"] and not reference["correct"]
                minus += reference["correct"] and not answer["correct"]
                routed[answer["label"]] = routed.get(answer["label"], 0) + 1
            labels = ", ".join(f"{label} {n}" for label, n in sorted(routed.items(), key=lambda kv: -kv[1]))
            print(f"| {task} {strategy} | {same} of {len(row)} | +{plus} / −{minus} | {labels} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER)
