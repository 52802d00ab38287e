"""Scoring outputs and predictions files (the engine of `t2 score`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2cli.errors import T2Error
from t2cli.scoring import (
    PredictionsError,
    ScoreReport,
    load_predictions,
    match_predictions,
    reference_predictions,
    score_outputs,
    score_predictions,
)
from t2cli.tasks import get_task


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_score_outputs_rows_and_accuracy() -> None:
    task = get_task("gsm8k")
    examples = task.load("test").examples[:4]
    outputs = ["So she makes $18.", "The answer is 3", "", "He runs 9 * 60 = 500 meters."]
    report = score_outputs(task, examples, outputs)
    assert isinstance(report, ScoreReport)
    assert (report.task, report.n, report.correct, report.accuracy) == ("gsm8k", 4, 2, 0.5)
    assert [(r.id, r.extracted, r.correct) for r in report.rows[:3]] == [
        ("test-0", "18", True),
        ("test-1", "3", True),
        ("test-2", None, False),
    ]
    assert report.to_dict()["rows"][0] == {"id": "test-0", "extracted": "18", "correct": True}


def test_score_outputs_empty_and_mismatch() -> None:
    task = get_task("gsm8k")
    assert score_outputs(task, [], []).accuracy == 0.0
    with pytest.raises(ValueError, match="1 outputs for 0 examples"):
        score_outputs(task, [], ["x"])


def test_score_outputs_code_task_reports_extracted_program() -> None:
    task = get_task("mbpp")
    example = task.load("test").examples[0]
    report = score_outputs(task, [example, example], [task.reference_output(example), "no code"], max_workers=2)
    assert [r.correct for r in report.rows] == [True, False]
    assert report.rows[0].extracted.startswith("def remove_Occ") and report.rows[1].extracted is None


def test_load_predictions(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", [{"id": "test-0", "output": "18", "extra": 1}, "", {"id": 11, "output": ""}])
    assert load_predictions(path) == [
        {"id": "test-0", "output": "18", "line": 1},
        {"id": "11", "output": "", "line": 3},
    ]


def test_load_predictions_names_every_bad_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "output": "x"},
            "{oops",
            {"id": "b"},
            {"output": "x"},
            {"id": "c", "output": 5},
            ["id", "output"],
            {"id": "a", "output": "again"},
            {"id": True, "output": "x"},
        ],
    )
    with pytest.raises(PredictionsError) as info:
        load_predictions(path)
    message = str(info.value)
    assert "invalid JSON on line 2" in message
    assert 'missing or non-string "output" on lines 3, 5' in message
    assert 'missing or invalid "id" on lines 4, 8' in message
    assert "not a JSON object on line 6" in message
    assert "duplicate id on line 7" in message
    assert isinstance(info.value, T2Error) and isinstance(info.value, ValueError)


def test_load_predictions_lists_at_most_ten_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", ["{bad"] * 15)
    with pytest.raises(PredictionsError, match=r"lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \(and 5 more\)"):
        load_predictions(path)


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_load_predictions_empty_file(tmp_path: Path, content: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(PredictionsError, match="holds no predictions"):
        load_predictions(path)


def test_load_predictions_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="Cannot read predictions file"):
        load_predictions(tmp_path / "absent.jsonl")


def test_match_predictions_unknown_ids_name_lines() -> None:
    examples = [{"id": "x"}, {"id": "y"}, {"id": "z"}]
    predictions = [
        {"id": "y", "output": "1", "line": 1},
        {"id": "nope", "output": "", "line": 2},
        {"id": "x", "output": "2", "line": 3},
        {"id": "gone", "output": "", "line": 5},
    ]
    with pytest.raises(
        PredictionsError,
        match=r"ids not in the examples of task 'gsm8k' split 'test' "
        r"\(e\.g\. 'nope'; valid ids look like 'x'\) on lines 2, 5\.",
    ):
        match_predictions(examples, predictions, task="gsm8k", split="test")
    matched, outputs, missing = match_predictions(examples, [predictions[0], predictions[2]])
    assert [ex["id"] for ex in matched] == ["y", "x"] and outputs == ["1", "2"] and missing == 1


def test_score_predictions_end_to_end(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.jsonl",
        [{"id": "test-0", "output": "The answer is 18."}, {"id": "test-1", "output": "The answer is 2."}],
    )
    report = score_predictions(get_task("gsm8k"), path, split="test")
    assert (report.n, report.correct, report.missing) == (2, 1, 1317)
    with pytest.raises(PredictionsError, match="split 'train' .* on lines 1, 2"):
        score_predictions(get_task("gsm8k"), path, split="train")


def test_reference_predictions_score_full_marks(tmp_path: Path) -> None:
    task = get_task("humaneval")
    examples = task.load("test").examples[:6]
    path = _write(tmp_path / "ref.jsonl", reference_predictions(task, examples))
    report = score_predictions(task, path, max_workers=2)
    assert (report.n, report.accuracy, report.missing) == (6, 1.0, 158)


def test_score_predictions_reports_format_and_id_problems_together(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "p.jsonl", [{"id": "nope", "output": "x"}, {"id": "test-0"}, {"id": "test-1", "output": ""}]
    )
    with pytest.raises(PredictionsError) as info:
        score_predictions(get_task("gsm8k"), path)
    message = str(info.value)
    assert 'missing or non-string "output" on line 2' in message
    assert "ids not in the examples of task 'gsm8k' split 'test' (e.g. 'nope'" in message and "on line 1" in message
