"""Write predictions files for `t2 score` self-checks: the tasks' reference answers, and wrong ones.

    .venv/bin/python docs/make_reference_predictions.py OUT_DIR [TASK ...]

For each task (default: mbpp, mbpp-plus, humaneval; test split) writes OUT_DIR/<task>-reference.jsonl
(the reference solution of every example: must score 100%) and OUT_DIR/<task>-wrong.jsonl (a
function stub that returns None: must score 0%).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from t2cli.scoring import reference_predictions
from t2cli.tasks import get_task

WRONG = "```python\ndef {name}(*args, **kwargs):\n    return None\n```"


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[2:] or ["mbpp", "mbpp-plus", "humaneval"]:
        task = get_task(name)
        examples = task.load("test").examples
        rows = reference_predictions(task, examples)
        (out / f"{name}-reference.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        wrong = [
            {"id": str(ex["id"]), "output": WRONG.format(name=ex.get("entry_point") or "solution")} for ex in examples
        ]
        (out / f"{name}-wrong.jsonl").write_text("".join(json.dumps(r) + "\n" for r in wrong))


if __name__ == "__main__":
    main()
