"""Write a data directory whose MBPP test split keeps only the problems the `code` expert never saw.

The `code` expert trained (and was validated) on the paper's MBPP+ train/validation pool
(t2cli/data/mbpp_plus/sakana_trainval.jsonl, 300 problems); MBPP+ problems come from every MBPP
split, so 239 of the 500 original MBPP test problems are in that pool. The other 261 are a held-out,
same-domain test with 2.6× the items of the MBPP+ test split.

    .venv/bin/python docs/mbpp_heldout.py runs/data-mbpp-heldout
    .venv/bin/t2 eval --task mbpp --data-dir runs/data-mbpp-heldout --out …
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "t2cli" / "data"


def main(out: Path) -> None:
    pool = DATA / "mbpp_plus" / "sakana_trainval.jsonl"
    seen = {int(str(json.loads(line)["task_id"]).rsplit("/", 1)[-1]) for line in pool.read_text().splitlines() if line}
    rows = [line for line in (DATA / "mbpp" / "test.jsonl").read_text().splitlines() if line]
    kept = [line for line in rows if json.loads(line)["task_id"] not in seen]
    (out / "mbpp").mkdir(parents=True, exist_ok=True)
    (out / "mbpp" / "test.jsonl").write_text("".join(line + "\n" for line in kept))
    print(f"{len(kept)} of {len(rows)} MBPP test problems are outside the code expert's training pool -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/data-mbpp-heldout"))
