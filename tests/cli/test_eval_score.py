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


@pytest.fixture
def tiny_dir(tmp_path, llama):
    directory = tmp_path / "tiny"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    return directory


def test_score_json_and_per_item_out(tmp_path):
    task = get_task("gsm8k")
    examples = task.load("test").examples[:4]
    rows = reference_predictions(task, examples)
    rows[1] = {"id": rows[1]["id"], "output": "no idea"}
    predictions = write(tmp_path / "p.jsonl", rows)
    out = tmp_path / "items.jsonl"
    result = runner.invoke(
        app, ["score", "--task", "gsm8k", "--predictions", str(predictions), "--json", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # stdout is the JSON document and nothing else
    assert document["n"] == 4 and document["correct"] == 3 and document["accuracy"] == 0.75
    items = [json.loads(line) for line in out.read_text().splitlines()]
    assert [item["correct"] for item in items] == [True, False, True, True]
    assert [item["id"] for item in items] == [str(ex["id"]) for ex in examples]


def test_eval_json_is_one_document(tmp_path, tiny_dir):
    out = tmp_path / "out"
    args = [
        "eval",
        "--task",
        "arc-easy",
        "--model",
        str(tiny_dir),
        "--limit",
        "2",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["n"] == 2 and document["samples_path"] == str(out / "samples.jsonl")
    assert not (out / "predictions.partial.jsonl").exists()  # the report holds the answers now


def test_ctrl_c_during_eval_keeps_the_finished_answers(tmp_path, tiny_dir, monkeypatch):
    import t2cli.evaluate

    real_generate = t2cli.evaluate.generate

    def interrupted_after_one_batch(loaded, prompts, config, progress=None, on_batch=None):
        def then_interrupt(indices, completions):
            on_batch(indices, completions)
            raise KeyboardInterrupt

        return real_generate(loaded, prompts, config, progress=progress, on_batch=then_interrupt)

    monkeypatch.setattr(t2cli.evaluate, "generate", interrupted_after_one_batch)
    out = tmp_path / "out"
    code, text = run(
        "eval",
        "--task",
        "arc-easy",
        "--model",
        tiny_dir,
        "--limit",
        "5",
        "--batch-size",
        "2",
        "--max-new-tokens",
        "3",
        "--out",
        out,
    )
    assert code == 130, text
    assert "interrupted" in text and "2 finished answers" in text and "--resume continues" in text
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    answers = [json.loads(line) for line in (out / "predictions.partial.jsonl").read_text().splitlines()]
    assert len(samples) == len(answers) == 2 and {"id", "output", "correct"} <= set(samples[0])

    monkeypatch.undo()
    again = ["eval", "--task", "arc-easy", "--model", tiny_dir, "--limit", "5", "--batch-size", "2"]
    code, text = run(*again, "--max-new-tokens", "3", "--out", out)
    assert code == 2 and "holds 2 answers of an evaluation that did not finish: add --resume" in text
    code, text = run(*again, "--max-new-tokens", "4", "--out", out, "--resume")
    assert code == 2 and "generation.max_new_tokens 3 there, 4 now" in text
    code, text = run(*again, "--max-new-tokens", "3", "--out", out, "--resume")
    assert code == 0, text
    assert "resuming: 2 answers kept" in text
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert report["n"] == len(samples) == 5 and report["config"]["resumed_answers"] == 2
    outputs = {s["id"]: s["output"] for s in samples}
    assert all(outputs[a["id"]] == a["output"] for a in answers)  # the kept answers, unchanged
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "samples.jsonl"]
    code, text = run(*again, "--max-new-tokens", "3", "--out", out, "--resume")
    assert code == 2 and "nothing to resume" in text and "report.json is finished" in text


def test_a_data_file_with_the_wrong_fields_names_the_expected_fields(tmp_path, tiny_dir):
    data = tmp_path / "data"
    write_dir = data / "gsm8k"
    write_dir.mkdir(parents=True)
    write(write_dir / "test.jsonl", [{"problem": "1+1?", "solution": "2"}] * 3)
    code, text = run("eval", "--task", "gsm8k", "--model", tiny_dir, "--data-dir", data, "--limit", "2")
    assert code == 2, text
    assert "no usable examples" in text and '"question" and "answer"' in text and "3 rows skipped" in text


def test_ctrl_c_during_a_two_pass_eval_keeps_the_finished_answers(tmp_path, tiny_dir, monkeypatch):
    """Pass 2 hands each expert group's answers over as they finish: an interrupt keeps them."""
    from t2cli.answer_journal import AnswerJournal

    real_add = AnswerJournal.add

    def add_then_interrupt(self, examples, completions):
        real_add(self, examples, completions)
        raise KeyboardInterrupt

    monkeypatch.setattr(AnswerJournal, "add", add_then_interrupt)
    out = tmp_path / "out"
    code, text = run(
        "eval", "--task", "arc-easy", "--model", tiny_dir, "--limit", "3", "--adapt", "none",
        "--max-new-tokens", "3", "--out", out,
    )  # fmt: skip
    assert code == 130, text
    assert "interrupted" in text and "3 finished answers" in text
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and {"id", "output", "correct"} <= set(samples[0])
