"""Tasks from data files and task files: formats, splits, fields, validation messages, added tasks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from t2cli.tasks import TASKS, get_task
from t2cli.tasks.base import MissingSplitError, TaskSpecError, UnknownSplitError
from t2cli.tasks.datafile import (
    DataTaskSpec,
    add_task_file,
    build_task,
    data_task,
    load_task_file,
    read_task_file,
    remove_task_file,
    task_file_names,
)

ROWS = [
    {"problem": f"What is {i} + {i}?", "answer": str(2 * i), "solution": f"{i} + {i} = {2 * i}."} for i in range(20)
]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((json.dumps(r) if not isinstance(r, str) else r) + "\n" for r in rows))
    return path


def arithmetic(tmp_path: Path, **settings) -> object:
    data = write_jsonl(tmp_path / "sums.jsonl", ROWS)
    return data_task(
        {"data": str(data), "prompt_field": "problem", "answer_field": "answer", "checker": "number", **settings}
    )


def test_a_pooled_file_holds_out_a_seeded_validation_fraction(tmp_path) -> None:
    task = arithmetic(tmp_path, domain="arithmetic", system="Be brief.")
    assert task.name == "sums" and task.domain == "arithmetic" and task.splits == ("train", "validation", "test")
    train, val, test = (task.load(split) for split in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (16, 4, 20)  # val_fraction 0.2; test = every row
    assert {e.id for e in train.examples}.isdisjoint(e.id for e in val.examples) and len(
        {e.id for e in test.examples}
    ) == 20
    assert [e.id for e in val.examples] == [e.id for e in arithmetic(tmp_path).load("validation").examples]  # seeded
    assert [e.id for e in val.examples] != [e.id for e in arithmetic(tmp_path, seed=1).load("validation").examples]
    example = test.examples[3]
    assert example.id == "sums-3" and example["answer"] == "6"
    messages = task.messages(example)
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[1]["content"].startswith("What is 3 + 3?\n\nSolve the problem step by step.")
    assert task.reference_output(example) == "The answer is 6."
    assert task.check_many(["The answer is 6.", "The answer is 7."], [example, example]) == [True, False]
    assert task.spec == {
        "data": str(tmp_path / "sums.jsonl"),
        "prompt_field": "problem",
        "answer_field": "answer",
        "checker": "number",
        "domain": "arithmetic",
        "system": "Be brief.",
    }


def test_a_split_field_decides_and_a_missing_split_is_named(tmp_path) -> None:
    rows = [dict(row, part=["train", "train", "dev", "test"][i % 4]) for i, row in enumerate(ROWS)]
    data = write_jsonl(tmp_path / "parts.jsonl", rows)
    task = data_task({"data": str(data), "prompt_field": "problem", "answer_field": "answer", "split_field": "part"})
    assert [len(task.load(s)) for s in ("train", "validation", "test")] == [10, 5, 5]
    only_train = write_jsonl(tmp_path / "only.jsonl", [dict(row, part="train") for row in ROWS])
    task = data_task(
        {
            "data": str(only_train),
            "prompt_field": "problem",
            "answer_field": "answer",
            "split_field": "part",
            "val_fraction": 0.25,
        }
    )
    assert [len(task.load(s)) for s in ("train", "validation")] == [15, 5]  # validation held out of train
    with pytest.raises(MissingSplitError, match="no row has part = 'test'"):
        task.load("test")
    with pytest.raises(UnknownSplitError, match="valid splits: train, validation, test"):
        task.load("dev")


def test_template_target_field_and_malformed_rows(tmp_path) -> None:
    rows = [*ROWS[:4], {"problem": "No answer"}, {"problem": "What?", "answer": "lots"}, "not json"]
    data = write_jsonl(tmp_path / "t.jsonl", rows)
    task = data_task(
        {
            "data": str(data),
            "template": "Q: {problem}\nA:",
            "answer_field": "answer",
            "target_field": "solution",
            "checker": "number",
        }
    )
    test = task.load("test")
    assert len(test) == 4 and test.skipped == 3  # no answer, no number in the answer, not an object
    assert task.messages(test.examples[1]) == [{"role": "user", "content": "Q: What is 1 + 1?\nA:"}]
    assert task.reference_output(test.examples[1]) == "1 + 1 = 2."  # the target field is the SFT target


@pytest.mark.parametrize("fmt", ["json", "json-object", "csv", "tsv", "parquet"])
def test_every_format_gives_the_same_examples(tmp_path, fmt: str) -> None:
    if fmt == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(ROWS))
    elif fmt == "json-object":
        path = tmp_path / "d.json"
        path.write_text(json.dumps({"version": 1, "data": ROWS}))
    elif fmt in ("csv", "tsv"):
        path = tmp_path / f"d.{fmt}"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(ROWS[0]), delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(ROWS)
    else:
        import pyarrow
        import pyarrow.parquet

        path = tmp_path / "d.parquet"
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(ROWS), path)
    task = data_task({"data": str(path), "prompt_field": "problem", "answer_field": "answer", "checker": "number"})
    examples = task.load("test").examples
    assert [e["answer"] for e in examples] == [r["answer"] for r in ROWS] and examples[2].id == "d-2"


def test_wrong_fields_name_the_expected_and_the_available_ones(tmp_path) -> None:
    task = arithmetic(tmp_path, prompt_field="question")
    with pytest.raises(
        TaskSpecError,
        match=r"no field 'question' for the prompt field \(--prompt-field\); "
        r"available fields: answer, problem, solution",
    ):
        task.load("test")
    task = data_task({"data": str(tmp_path / "sums.jsonl"), "template": "{question}", "answer_field": "answer"})
    with pytest.raises(TaskSpecError, match="no field 'question' for the template"):
        task.load("train")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"prompt_field": "problem"}, "--answer-field is missing"),
        ({"answer_field": "answer"}, "exactly one of --prompt-field .* and --template"),
        ({"answer_field": "answer", "prompt_field": "p", "template": "{p}"}, "exactly one of"),
        ({"answer_field": "answer", "prompt_field": "p", "checker": "numbers"}, "--checker: unknown checker"),
        ({"answer_field": "answer", "prompt_field": "p", "val_fraction": 1.5}, "--val-fraction must be between"),
        ({"answer_field": "answer", "prompt_field": "p", "promt_field": "p"}, "did you mean '--prompt-field'"),
        ({"answer_field": "answer", "template": "no fields"}, "--template: the template uses no"),
    ],
)
def test_bad_settings_give_one_clear_error(tmp_path, settings: dict, message: str) -> None:
    with pytest.raises(TaskSpecError, match=message):
        data_task({"data": str(write_jsonl(tmp_path / "d.jsonl", ROWS)), **settings})


def test_a_data_file_may_not_take_a_builtin_name_and_an_unknown_format_is_named(tmp_path) -> None:
    data = write_jsonl(tmp_path / "gsm8k.jsonl", ROWS)
    with pytest.raises(TaskSpecError, match="task name .gsm8k. is taken by a registered task: rename the file.*name ="):
        data_task({"data": str(data), "prompt_field": "problem", "answer_field": "answer"})
    odd = tmp_path / "d.txt"
    odd.write_text("x")
    with pytest.raises(TaskSpecError, match="unknown data format '.txt'; use one of .jsonl"):
        data_task({"data": str(odd), "prompt_field": "problem", "answer_field": "answer"}).load("test")


def test_task_files_validate_with_the_key_names(tmp_path) -> None:
    write_jsonl(tmp_path / "sums.jsonl", ROWS)
    good = tmp_path / "sums.toml"
    good.write_text(
        'name = "sums"\ndata = "sums.jsonl"\nprompt_field = "problem"\nanswer_field = "answer"\n'
        'checker = "number"\ndomain = "arithmetic"\nval_fraction = 0.25\n'
    )
    task = load_task_file(good)
    assert task.name == "sums" and task.domain == "arithmetic" and len(task.load("validation")) == 5
    cases = {
        'data = "sums.jsonl"\nprompt_field = "problem"\nanswer_feild = "answer"\n': "unknown key 'answer_feild'; "
        "did you mean 'answer_field'",
        'data = "sums.jsonl"\nprompt_field = "problem"\nanswer_field = 3\n': "answer_field must be a string, not 3",
        'data = "sums.jsonl"\nprompt_field = "problem"\nanswer_field = "answer"\nseed = "x"\n': "seed must be an "
        "integer",
        'data = "sums.jsonl"\nprompt_field = "problem"\nanswer_field = "answer"\nname = "My Task"\n': "name takes "
        "lower case",
        'data = "sums.jsonl\nprompt_field = 1': "not valid TOML",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(TaskSpecError, match=message):
            read_task_file(bad)
    with pytest.raises(TaskSpecError, match="named \\*.toml"):
        read_task_file(tmp_path / "sums.jsonl")


def test_added_task_files_are_found_by_name_until_removed(tmp_path, isolated_home) -> None:
    spec, kept = add_task_file(DOCS / "arithmetic.toml")
    assert kept == isolated_home / "tasks" / "arithmetic.toml" and task_file_names() == ["arithmetic"]
    task = get_task("arithmetic")  # found without registering anything in this process
    assert task.domain == "arithmetic" and "arithmetic" not in TASKS and len(task.load("test")) == 60
    assert read_task_file(kept).data == str(DOCS / "arithmetic.jsonl")  # the data path was made absolute
    with pytest.raises(TaskSpecError, match="already added"):
        add_task_file(DOCS / "arithmetic.toml")
    assert remove_task_file("arithmetic") == kept and task_file_names() == []
    with pytest.raises(TaskSpecError, match="no added task"):
        remove_task_file("arithmetic")


def test_the_committed_example_data_is_what_its_script_writes(tmp_path) -> None:
    import runpy
    import shutil

    script = tmp_path / "make_arithmetic.py"
    shutil.copy(DOCS / "make_arithmetic.py", script)
    runpy.run_path(str(script), run_name="__main__")
    assert (tmp_path / "arithmetic.jsonl").read_text() == (DOCS / "arithmetic.jsonl").read_text()


def test_build_task_reads_rows_only_when_a_split_is_loaded(tmp_path) -> None:
    task = build_task(DataTaskSpec(data=str(tmp_path / "later.jsonl"), answer_field="answer", prompt_field="problem"))
    with pytest.raises(MissingSplitError, match="not found"):
        task.load("test")
    write_jsonl(tmp_path / "later.jsonl", ROWS)
    assert len(task.load("test")) == 20


def test_a_hub_dataset_id_is_loaded_through_datasets_and_offline_is_one_clear_error() -> None:
    task = data_task({"data": "someone/word-problems:main", "prompt_field": "q", "answer_field": "a"})
    assert task.name == "someone-word-problems" and task.spec["data"] == "someone/word-problems:main"
    with pytest.raises(MissingSplitError, match="Hub dataset someone/word-problems:main could not be loaded"):
        task.load("train")  # the tests run with HF_HUB_OFFLINE=1


def test_a_python_tests_file_checks_code_in_the_sandbox_like_mbpp(tmp_path) -> None:
    rows = [
        {
            "text": "Add two numbers.",
            "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
            "code": "def add(a, b):\n    return a + b",
        },
        {
            "text": "Double a number.",
            "tests": "assert double(2) == 4\nassert double(-1) == -2",
            "code": "def double(x):\n    return 2 * x",
        },
    ]
    data = write_jsonl(tmp_path / "code.jsonl", rows)
    task = data_task(
        {
            "data": str(data),
            "prompt_field": "text",
            "answer_field": "tests",
            "target_field": "code",
            "checker": "python-tests",
            "domain": "code",
        }
    )
    examples = task.load("test").examples
    prompt = task.messages(examples[0])[-1]["content"]
    assert prompt.startswith("Add two numbers.\n\nYour code should pass this test:\nassert add(1, 2) == 3\n")
    references = [task.reference_output(e) for e in examples]
    assert references[0].startswith("```python\ndef add")
    assert task.check_many(references, examples) == [True, True]
    assert task.check_many(references[::-1], examples) == [False, False]
