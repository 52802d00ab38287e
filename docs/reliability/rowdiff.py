"""Re-score a committed samples.jsonl and list the rows whose verdict differs from the recorded one.

Run from the repository root: OMP_NUM_THREADS=1 python docs/reliability/rowdiff.py SAMPLES TASK
(prints nothing but the header when every row agrees).
"""

import json
import sys

from t2cli.scoring import score_predictions
from t2cli.tasks import get_task

path, task = sys.argv[1], sys.argv[2]
recorded = {row["id"]: row["correct"] for row in map(json.loads, open(path, encoding="utf-8"))}
print(f"== {path}")
for row in score_predictions(get_task(task), path).rows:
    if row.correct != recorded[row.id]:
        print(f"DIFF {row.id}: recorded {recorded[row.id]}, now {row.correct}")
