"""A task defined outside the package is first-class once registered: get_task, evaluation, `t2 eval`.

The toy task lives in this file only; nothing in t2cli/ names it.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from t2cli.tasks import TASKS, Example, Task, TaskData, UnknownTaskError, get_task, register_task, unregister_task

ROWS = [{"id": f"echo-{i}", "word": w} for i, w in enumerate(["apple", "river", "stone", "cloud", "maple", "tiger"])]


def echo_task(name: str = "echo", aliases: tuple[str, ...] = ()) -> Task:
    """Say the word back; correct when the output contains it."""
    return Task(
        name=name,
        domain="echo",
        description="Repeat a word (a toy task defined in a test).",
        to_example=lambda row, fallback_id: Example(row.get("id") or fallback_id, word=row["word"]),
        prompt=lambda example: f"Say the word {example['word']}.",
        extractor=lambda output, example=None: output.strip() or None,
        is_correct=lambda answer, example: answer is not None and example["word"] in answer,
        reference=lambda example: example["word"],
        loader=lambda split, data_dir=None: TaskData(list(ROWS), 0, "inline rows"),
        splits=("train", "validation", "test"),
        max_new_tokens=4,
        aliases=aliases,
    )


@pytest.fixture
def echo():
    task = register_task(echo_task(aliases=("say-it",)))
    yield task
    if "echo" in TASKS:
        unregister_task("echo")


def test_a_registered_task_is_found_by_name_and_alias_and_then_forgotten(echo) -> None:
    assert get_task("echo") is echo and get_task("Say_It") is echo and TASKS["echo"] is echo
    assert get_task("mbpp-pro") is TASKS["mbpp-plus"]  # the built-in aliases still work
    assert register_task(echo) is echo  # the same object again: harmless
    assert unregister_task("say-it") is echo
    with pytest.raises(UnknownTaskError, match="valid tasks: .*gsm8k"):
        get_task("echo")
    with pytest.raises(UnknownTaskError, match="no registered task"):
        unregister_task("echo")


def test_names_and_aliases_are_not_taken_silently(echo) -> None:
    with pytest.raises(UnknownTaskError, match="'gsm8k' by task 'gsm8k' is taken"):
        register_task(echo_task("gsm8k"))
    with pytest.raises(UnknownTaskError, match="'mbpp-pro' by task 'mbpp-plus'"):
        register_task(echo_task("other", aliases=("mbpp-pro",)))
    with pytest.raises(UnknownTaskError, match="'echo' by task 'echo'"):
        register_task(echo_task())  # another task object under a registered name
    replacement = register_task(echo_task(), replace=True)
    assert get_task("echo") is replacement and replacement is not echo
    with pytest.raises(UnknownTaskError, match="lower case"):
        register_task(echo_task("Echo Task"))


def test_a_registered_task_runs_through_evaluation(echo, llama) -> None:
    from t2cli.evaluate import evaluate
    from t2cli.generation import GenerationConfig

    report = evaluate(llama, get_task("echo"), split="test", limit=4, generation=GenerationConfig(max_new_tokens=3))
    assert report.task == "echo" and report.n == 4 and [s["id"] for s in report.samples] == [r["id"] for r in ROWS[:4]]
    assert report.correct == sum(s["correct"] for s in report.samples)
    assert report.cut_off == sum(s["cut_off"] for s in report.samples) == 4  # 3 tokens end every answer
    assert report.summary()["cut_off_share"] == 1.0
    scored = echo.check_many(["apple!", "no"], echo.load("test").examples[:2])
    assert scored == [True, False]  # the task's own checker decides


def test_t2_eval_task_finds_a_registered_task(echo, llama, tmp_path) -> None:
    from t2cli.cli.app import app

    model_dir = tmp_path / "tiny"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "out"
    args = [
        "eval",
        "--task",
        "echo",
        "--model",
        str(model_dir),
        "--limit",
        "2",
        "--max-new-tokens",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "echo" and report["n"] == 2
