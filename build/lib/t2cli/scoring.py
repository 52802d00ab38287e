"""Score model outputs against a task's split: the engine behind ``t2 score`` and evaluation.

A predictions file is JSON lines, one ``{"id": ..., "output": ...}`` per line; ids are the task's
example ids (``t2 score`` matches them against the chosen split). Every problem in the file is
reported at once, by line number.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from t2cli.errors import T2Error
from t2cli.tasks.base import Task

MAX_LISTED = 10  # problems named in one error message


class PredictionsError(T2Error, ValueError):
    """A predictions file is unreadable, malformed, or does not match the task's split."""


@dataclass(frozen=True)
class ScoreRow:
    id: str
    extracted: str | None
    correct: bool


@dataclass(frozen=True)
class ScoreReport:
    """Accuracy over ``n`` scored examples, with one row per example (in input order)."""

    task: str
    n: int
    correct: int
    accuracy: float
    rows: list[ScoreRow] = field(default_factory=list)
    missing: int = 0  # split examples without a prediction (score_predictions only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_outputs(
    task: Task, examples: Sequence[dict], outputs: Sequence[str], *, max_workers: int | None = None
) -> ScoreReport:
    """Extract and check every output with the task's own extractor and checker."""
    if len(examples) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs for {len(examples)} examples")
    verdicts = task.check_many(outputs, examples, max_workers=max_workers)
    rows = [ScoreRow(str(ex["id"]), task.extract(out, ex), ok) for ex, out, ok in zip(examples, outputs, verdicts)]
    correct = sum(verdicts)
    return ScoreReport(task.name, len(rows), correct, correct / len(rows) if rows else 0.0, rows)


def _problems(kind: str, lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:MAX_LISTED])) + (
        f" (and {len(lines) - MAX_LISTED} more)" if len(lines) > MAX_LISTED else ""
    )
    return f"{kind} on line{'s' if len(lines) > 1 else ''} {shown}"


def _parse_predictions(path: Path) -> tuple[list[dict], dict[str, list[int]]]:
    """The well-formed rows of a predictions file and the line numbers of each kind of problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PredictionsError(f"Cannot read predictions file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    rows: list[dict] = []
    bad: dict[str, list[int]] = {}
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad.setdefault("invalid JSON", []).append(number)
            continue
        if not isinstance(row, dict):
            bad.setdefault("not a JSON object", []).append(number)
            continue
        example_id = row.get("id")
        if isinstance(example_id, bool) or not isinstance(example_id, (str, int)) or str(example_id) == "":
            bad.setdefault('missing or invalid "id"', []).append(number)
            continue
        if not isinstance(row.get("output"), str):
            bad.setdefault('missing or non-string "output"', []).append(number)
            continue
        if str(example_id) in seen:
            bad.setdefault("duplicate id", []).append(number)
            continue
        seen.add(str(example_id))
        rows.append({"id": str(example_id), "output": row["output"], "line": number})
    return rows, bad


def _check_parsed(path: Path, rows: list[dict], bad: dict[str, list[int]]) -> None:
    if bad:
        details = "; ".join(_problems(kind, lines) for kind, lines in bad.items())
        raise PredictionsError(f'{path}: {details}. Each line must be {{"id": ..., "output": "..."}}.')
    if not rows:
        raise PredictionsError(f'{path} holds no predictions (expected JSON lines with "id" and "output").')


def load_predictions(path: str | Path) -> list[dict]:
    """Rows ``{"id": str, "output": str, "line": int}`` of a JSONL predictions file.

    Integer ids are accepted and turned into strings. Raises `PredictionsError` naming every bad
    line (not JSON, not an object, no "id", no string "output", duplicate id).
    """
    rows, bad = _parse_predictions(Path(path))
    _check_parsed(Path(path), rows, bad)
    return rows


def _unknown_ids(examples: Sequence[dict], predictions: Sequence[dict], task: str, split: str) -> dict[str, list[int]]:
    """{description: line numbers} for predictions whose id is not an example id (or {})."""
    known = {str(ex["id"]) for ex in examples}
    unknown = [p for p in predictions if p["id"] not in known]
    if not unknown:
        return {}
    where = f" of task {task!r} split {split!r}" if task else ""
    sample = min(known) if known else "?"
    kind = f"ids not in the examples{where} (e.g. {unknown[0]['id']!r}; valid ids look like {sample!r})"
    return {kind: [p.get("line", i + 1) for i, p in enumerate(unknown)]}


def match_predictions(
    examples: Sequence[dict], predictions: Sequence[dict], *, task: str = "", split: str = ""
) -> tuple[list[dict], list[str], int]:
    """(examples, outputs, missing): the split's examples that have a prediction, in prediction
    order, with their outputs, and how many split examples have none. Unknown ids raise
    `PredictionsError` naming their lines."""
    unknown = _unknown_ids(examples, predictions, task, split)
    if unknown:
        kind, lines = next(iter(unknown.items()))
        raise PredictionsError(_problems(kind, lines) + ".")
    by_id = {str(ex["id"]): ex for ex in examples}
    matched = [by_id[p["id"]] for p in predictions]
    return matched, [p["output"] for p in predictions], len(by_id) - len({p["id"] for p in predictions})


def reference_predictions(task: Task, examples: Sequence[dict]) -> list[dict]:
    """``{"id", "output"}`` rows holding the task's reference answers: a predictions file that
    must score 100% (a self-check of data, extractor, checker and sandbox)."""
    return [{"id": str(ex["id"]), "output": task.reference_output(ex)} for ex in examples]


def score_predictions(
    task: Task,
    path: str | Path,
    *,
    split: str = "test",
    data_dir: str | Path | None = None,
    max_workers: int | None = None,
) -> ScoreReport:
    """Load a predictions file, match it to ``split`` of ``task`` and score it."""
    path = Path(path)
    predictions, bad = _parse_predictions(path)
    data = task.load(split, data_dir)
    bad.update(_unknown_ids(data.examples, predictions, task.name, split))  # one error for all problems
    _check_parsed(path, predictions, bad)
    examples, outputs, missing = match_predictions(data.examples, predictions, task=task.name, split=split)
    report = score_outputs(task, examples, outputs, max_workers=max_workers)
    return ScoreReport(report.task, report.n, report.correct, report.accuracy, report.rows, missing)
