"""Paired comparison of two eval reports: counts on the common items and McNemar's exact p."""

import json

import pytest
from typer.testing import CliRunner

from t2cli.cli.app import app
from t2cli.compare import CompareError, compare, load_run, mcnemar_exact


def write_report(directory, correct, task="gsm8k", split="test", expert=None):
    directory.mkdir(parents=True)
    summary = {
        "task": task,
        "split": split,
        "model": "tiny",
        "expert": expert,
        "n": len(correct),
        "correct": sum(correct),
    }
    (directory / "report.json").write_text(json.dumps(summary))
    (directory / "samples.jsonl").write_text(
        "".join(json.dumps({"id": f"test-{i}", "output": "", "correct": c}) + "\n" for i, c in enumerate(correct))
    )
    return directory


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32) == mcnemar_exact(5, 0)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * (1 + 10) / 1024)
    assert mcnemar_exact(40, 80) < 0.001


def test_compare_counts_the_items_both_reports_scored(tmp_path):
    base = load_run(write_report(tmp_path / "base", [True, False, False, True, False, True]))
    expert = load_run(write_report(tmp_path / "svf", [True, True, True, False], expert="math"))
    result = compare(base, expert)  # the expert's report has a smaller --limit: 4 common items
    assert (result.n, result.a_correct, result.b_correct) == (4, 2, 3)
    assert (result.both, result.only_a, result.only_b) == (1, 1, 2)
    assert result.p_value == pytest.approx(mcnemar_exact(1, 2))
    assert (result.a, result.b) == ("tiny (base)", "math")


def test_compare_refuses_other_tasks_missing_files_and_disjoint_ids(tmp_path):
    gsm = load_run(write_report(tmp_path / "gsm", [True]))
    with pytest.raises(CompareError, match="different tasks"):
        compare(gsm, load_run(write_report(tmp_path / "arc", [True], task="arc-easy")))
    with pytest.raises(CompareError, match="not an evaluation report"):
        load_run(tmp_path / "nowhere")
    other = write_report(tmp_path / "other", [True])
    (other / "samples.jsonl").write_text(json.dumps({"id": "x", "correct": True}) + "\n")
    with pytest.raises(CompareError, match="share no item ids"):
        compare(gsm, load_run(other))


def test_cli_compare_prints_the_table_and_p_value(tmp_path):
    a = write_report(tmp_path / "a", [False] * 10)
    b = write_report(tmp_path / "b", [True] * 10, expert="math")
    result = CliRunner().invoke(app, ["compare", str(a), str(b)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "10 items scored by both" in result.output and "p = 0.00195" in result.output
    bad = CliRunner().invoke(app, ["compare", str(a), str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "not an evaluation report" in bad.output
