"""Paired comparison of two evaluation reports of one task: which items each got right, and
whether the difference could be chance.

Both runs answered the same items, so the right test is paired: only the items one run got right
and the other wrong (the discordant pairs) carry information. Under "no difference" each discordant
item is equally likely to favour either run, so the exact two-sided p-value is a binomial tail
(McNemar's exact test). Pure Python: no model, no torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from t2cli.errors import T2Error

REPORT_FILE, SAMPLES_FILE = "report.json", "samples.jsonl"


class CompareError(T2Error):
    """Two reports cannot be compared (missing files, other tasks, no common items)."""


@dataclass(frozen=True)
class Run:
    """One evaluation report: its label, summary and {item id: correct}."""

    label: str
    summary: dict
    correct: dict[str, bool]


@dataclass(frozen=True)
class Comparison:
    task: str
    split: str
    a: str
    b: str
    n: int  # items both reports scored (the first `n` of the split when one report has a smaller --limit)
    a_correct: int
    b_correct: int
    both: int
    only_a: int
    only_b: int
    p_value: float  # exact two-sided McNemar test on the discordant items

    @property
    def a_accuracy(self) -> float:
        return self.a_correct / self.n

    @property
    def b_accuracy(self) -> float:
        return self.b_correct / self.n


def load_run(directory: str | Path, label: str | None = None) -> Run:
    """Read `report.json` + `samples.jsonl` written by `t2 eval --out DIR`."""
    directory = Path(directory)
    summary_path, samples_path = directory / REPORT_FILE, directory / SAMPLES_FILE
    if not summary_path.is_file() or not samples_path.is_file():
        raise CompareError(
            f"{directory} is not an evaluation report: it needs {REPORT_FILE} and {SAMPLES_FILE} "
            "(written by `t2 eval --out DIR`)"
        )
    try:
        summary = json.loads(summary_path.read_text())
        correct = {}
        for line in samples_path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                correct[str(row["id"])] = bool(row["correct"])
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise CompareError(f"{directory}: unreadable report ({type(error).__name__}: {error})") from error
    if not isinstance(summary, dict) or "task" not in summary:
        raise CompareError(f"{summary_path} has no task field: not a `t2 eval` report")
    return Run(label or default_label(directory, summary), summary, correct)


def default_label(directory: Path, summary: dict) -> str:
    """The expert's name (LoRA reports name theirs "lora-…"), else the base model's."""
    return summary.get("expert") or f"{summary.get('model', 'model')} (base)"


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact p-value: P(a split of the discordant items at least this uneven | p = ½)."""
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    low = min(only_a, only_b)
    tail = sum(math.comb(discordant, k) for k in range(low + 1)) / 2**discordant
    return min(1.0, 2 * tail)


def compare(a: Run, b: Run) -> Comparison:
    """Pair two runs of one task and split on the items both scored."""
    for key in ("task", "split"):
        if a.summary.get(key) != b.summary.get(key):
            raise CompareError(
                f"the reports are of different {key}s ({a.summary.get(key)} vs {b.summary.get(key)}); "
                "compare runs of one task split"
            )
    common = [item for item in a.correct if item in b.correct]
    if not common:
        raise CompareError("the reports share no item ids; were they made with other data files?")
    both = sum(a.correct[i] and b.correct[i] for i in common)
    only_a = sum(a.correct[i] and not b.correct[i] for i in common)
    only_b = sum(b.correct[i] and not a.correct[i] for i in common)
    return Comparison(
        task=a.summary["task"],
        split=a.summary.get("split", "?"),
        a=a.label,
        b=b.label,
        n=len(common),
        a_correct=both + only_a,
        b_correct=both + only_b,
        both=both,
        only_a=only_a,
        only_b=only_b,
        p_value=mcnemar_exact(only_a, only_b),
    )
