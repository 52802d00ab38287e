"""A task from a data file, end to end on a tiny model: `t2 eval/train --data`, task files, `t2 tasks`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from t2cli.cli.app import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "data"
DATA = DOCS / "arithmetic.jsonl"
FIELDS = ["--prompt-field", "problem", "--answer-field", "answer", "--checker", "number"]
ONE_TINY_ITERATION = ["--iters", "1", "--batch-size", "2", "--val-limit", "2", "--max-new-tokens", "3"]


def run(*args, **env):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **env})
    return result.exit_code, result.output


@pytest.fixture
def model_dir(tmp_path, llama):
    directory = tmp_path / "tiny-model"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    return directory


def test_eval_data_scores_a_file_it_has_never_seen(model_dir, tmp_path):
    out = tmp_path / "out"
    code, text = run(
        "eval", "--data", DATA, *FIELDS, "--model", model_dir, "--limit", "3", "--max-new-tokens", "4", "--out", out
    )
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert report["task"] == "arithmetic" and report["split"] == "test" and report["n"] == 3
    assert [s["id"] for s in samples] == ["arith-0", "arith-1", "arith-2"]
    assert "Solve the problem step by step" in samples[0]["prompt"]
    code, text = run(
        "eval",
        "--data",
        DATA,
        *FIELDS,
        "--model",
        model_dir,
        "--split",
        "validation",
        "--limit",
        "2",
        "--max-new-tokens",
        "2",
        "--out",
        tmp_path / "val",
    )
    assert code == 0, text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--data", DATA, "--prompt-field", "question", "--answer-field", "answer"],
            "no field 'question' for the prompt field (--prompt-field); available fields: answer, id, problem",
        ),
        (["--data", DATA, "--prompt-field", "problem"], "--answer-field is missing"),
        (["--data", DATA, "--task", "gsm8k", "--answer-field", "answer"], "not --task and --data"),
        (["--task", "gsm8k", "--prompt-field", "problem"], "--prompt-field applies to --data FILE"),
        ([], "give one of --task NAME, --task-file FILE or --data FILE"),
        (["--data", DATA, *FIELDS[:4], "--checker", "numbr"], "unknown checker 'numbr'; valid checkers"),
    ],
)
def test_bad_data_options_give_one_line_and_exit_2(model_dir, args, message):
    code, text = run("eval", *args, "--model", model_dir, "--limit", "1")
    assert code == 2 and message in " ".join(text.split()), text
    assert "Traceback" not in text


def test_train_data_registers_an_expert_with_its_domain_and_task(model_dir, tmp_path):
    registry = tmp_path / "registry"
    code, text = run(
        "train",
        "--data",
        DATA,
        *FIELDS,
        "--domain",
        "arithmetic",
        "--model",
        model_dir,
        *ONE_TINY_ITERATION,
        "--name",
        "mine",
        "--out",
        tmp_path / "run",
        T2_REGISTRY=str(registry),
    )
    assert code == 0, text
    meta = json.loads((registry / "tiny-model" / "mine" / "expert.json").read_text())
    assert meta["domain"] == "arithmetic" and meta["provenance"]["task"] == "arithmetic"
    spec = meta["provenance"]["task_spec"]  # enough to rebuild the task
    assert spec == {
        "data": str(DATA),
        "prompt_field": "problem",
        "answer_field": "answer",
        "checker": "number",
        "domain": "arithmetic",
    }
    from t2cli.tasks.datafile import task_from_spec

    rebuilt = task_from_spec(spec)
    assert rebuilt.name == "arithmetic" and rebuilt.domain == "arithmetic" and len(rebuilt.load("train")) == 48
    assert meta["provenance"]["metrics"]["train_examples"] == 48 and meta["provenance"]["metrics"]["val_examples"] == 2
    code, text = run("experts", "list", T2_REGISTRY=str(registry))
    assert code == 0 and "mine" in text and "arithmetic" in text, text


def test_task_files_directly_or_added_by_name(model_dir, tmp_path, isolated_home):
    code, text = run(
        "eval",
        "--task-file",
        DOCS / "arithmetic.toml",
        "--model",
        model_dir,
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
        "--out",
        tmp_path / "a",
    )
    assert code == 0, text
    code, text = run("eval", "--task", "arithmetic", "--model", model_dir, "--limit", "1")
    assert code == 2 and "t2 tasks add FILE" in " ".join(text.split())
    code, text = run("tasks", "add", DOCS / "arithmetic.toml")
    assert code == 0 and "--task arithmetic" in text, text
    code, text = run("tasks", "list")
    assert code == 0 and "arithmetic" in text and "gsm8k" in text
    code, text = run(
        "eval",
        "--task",
        "arithmetic",
        "--model",
        model_dir,
        "--limit",
        "1",
        "--max-new-tokens",
        "2",
        "--out",
        tmp_path / "b",
    )
    assert code == 0, text
    assert json.loads((tmp_path / "b" / "report.json").read_text())["task"] == "arithmetic"
    code, text = run("tasks", "add", DOCS / "arithmetic.toml")
    assert code == 2 and "already added" in text
    broken = isolated_home / "tasks" / "broken.toml"
    broken.write_text('data = "gone.jsonl"\n')
    code, text = run("tasks", "list")
    assert code == 0 and "unusable" in text and "arithmetic" in text  # one broken file hides nothing
    broken.unlink()
    code, text = run("tasks", "remove", "arithmetic")
    assert code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('data = "x.jsonl"\nprompt_feild = "problem"\nanswer_field = "answer"\n')
    code, text = run("tasks", "add", bad)
    assert code == 2 and "did you mean 'prompt_field'" in text


def test_train_sft_on_a_data_file_learns_from_the_target_field(model_dir, tmp_path):
    rows = [
        {"q": f"What is {i} + 1?", "a": str(i + 1), "sol": f"{i} + 1 = {i + 1}. The answer is {i + 1}."}
        for i in range(10)
    ]
    data = tmp_path / "sums.csv"
    data.write_text("q,a,sol\n" + "".join(f'"{r["q"]}",{r["a"]},"{r["sol"]}"\n' for r in rows))
    registry = tmp_path / "registry"
    code, text = run(
        "train",
        "--data",
        data,
        "--prompt-field",
        "q",
        "--answer-field",
        "a",
        "--target-field",
        "sol",
        "--checker",
        "number",
        "--objective",
        "sft",
        "--model",
        model_dir,
        *ONE_TINY_ITERATION,
        "--name",
        "sums-sft",
        "--out",
        tmp_path / "run",
        T2_REGISTRY=str(registry),
    )
    assert code == 0, text
    meta = json.loads((registry / "tiny-model" / "sums-sft" / "expert.json").read_text())
    assert meta["provenance"]["objective"] == "sft" and meta["provenance"]["task_spec"]["target_field"] == "sol"
    assert meta["domain"] == "other"  # no --domain given
