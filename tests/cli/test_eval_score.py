"""`t2 score` on reference and wrong predictions; `t2 eval` end to end on a tiny model."""

import json

import pytest
from typer.testing import CliRunner

from t2cli.cli.app import app
from t2cli.scoring import reference_predictions
from t2cli.tasks import get_task

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", ["mbpp", "mbpp-plus", "humaneval", "gsm8k", "arc-easy", "math"])
def test_score_references_100_and_wrong_0(tmp_path, name):
    task = get_task(name)
    examples = task.load("test").examples[:12]
    references = write(tmp_path / "ref.jsonl", reference_predictions(task, examples))
    code, out = run("score", "--task", name, "--predictions", references)
    assert code == 0, out
    assert "100.00%" in out and "12 / 12" in out
    wrong = write(
        tmp_path / "wrong.jsonl", [{"id": ex["id"], "output": "def f():\n    return None"} for ex in examples]
    )
    code, out = run("score", "--task", name, "--predictions", wrong)
    assert code == 0, out
    assert "0.00%" in out and "0 / 12" in out


def test_score_bad_files_give_one_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "11", "output": "x"}\nnot json\n{"id": "nope", "output": "x"}\n')
    code, out = run("score", "--task", "mbpp", "--predictions", bad)
    assert code == 2
    assert "line 2" in out and "line 3" in out
    code, out = run("score", "--task", "no-such-task", "--predictions", bad)
    assert code == 2 and "valid tasks" in out


def test_eval_on_a_tiny_model_writes_report_and_samples(tmp_path, llama):
    model_dir = tmp_path / "tiny"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "out"
    code, text = run(
        "eval", "--task", "arc-easy", "--model", model_dir, "--limit", "3", "--max-new-tokens", "4", "--out", out
    )
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert report["n"] == 3 and report["task"] == "arc-easy" and 0.0 <= report["accuracy"] <= 1.0
    assert report["correct"] == sum(s["correct"] for s in samples)
    assert {"id", "prompt", "output", "extracted", "correct"} <= set(samples[0])
    code, text = run("eval", "--task", "arc-challenge", "--model", model_dir, "--split", "test", "--limit", "1")
    assert code == 2 and "--data-dir" in text
