"""The named answer checks of data-file tasks, on tables of outputs and answers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from t2cli.tasks import answer_checks
from t2cli.tasks.answer_checks import answer_check
from t2cli.tasks.base import TaskSpecError
from t2cli.tasks.example import Example


def verdict(checker: str, answer, output: str, row: dict | None = None, choices_field: str | None = None) -> bool:
    check = answer_check(checker, choices_field)
    example = Example("x", **check.prepare(answer, row or {}))
    return bool(check.is_correct(check.extractor(output, example), example))


@pytest.mark.parametrize(
    ("checker", "answer", "output", "correct"),
    [
        ("number", "72", "48 + 24 = 72. The answer is 72.", True),
        ("number", "1,000", "So she pays $1,000.00.", True),
        ("number", "#### 18", "The answer is 18", True),  # a GSM8K-style solution as the answer
        ("number", 7, "The answer is 7.", True),  # JSON numbers
        ("number", "72", "The answer is 27.", False),
        ("number", "72", "I do not know.", False),
        ("exact", "Paris", "The capital is big.\nThe answer is: **Paris.**", True),
        ("exact", "Paris", "paris", True),  # the last line when no "answer is"
        ("exact", "Paris", "The answer is: Paris, France", False),
        ("contains", "blue whale", "I think it is the Blue Whale.", True),
        ("contains", "cat", "a category", False),  # whole words only
        ("regex:Final: (\\w+)", "42", "Work... Final: 41\nFinal: 42", True),
        ("regex:Final: (\\w+)", "42", "The answer is 42", False),  # nothing matched
        ("regex:\\d+", "7", "7 apples", True),  # no group: the whole match
        ("choice", "B", "Plants need light. The answer is (B).", True),
        ("choice", "(b)", "The answer is (B).", True),
        ("choice", "B", "The answer is (C).", False),
    ],
)
def test_checks(checker: str, answer, output: str, correct: bool) -> None:
    assert verdict(checker, answer, output) is correct


def test_choice_with_options_accepts_the_answer_as_text_or_label() -> None:
    row = {"options": ["red", "green", "blue"]}
    assert verdict("choice", "green", "The answer is (B).", row, "options")
    assert verdict("choice", "C", "The answer is (C).", row, "options")
    assert not verdict("choice", "green", "The answer is (A).", row, "options")
    arc_row = {"choices": {"label": ["1", "2"], "text": ["yes", "no"]}}
    assert verdict("choice", "no", "The answer is (2).", arc_row, "choices")
    check = answer_check("choice", "options")
    with pytest.raises(ValueError, match="neither a label"):
        check.prepare("purple", row)


@pytest.mark.parametrize(
    ("checker", "answer", "why"),
    [
        ("number", "many", "no number"),
        ("exact", "", "empty"),
        ("choice", "maybe", "not an option label"),
        ("python-tests", "assert (", "not valid Python"),
        ("exact", ["a"], "string or a number"),
    ],
)
def test_unreadable_answers_make_the_row_malformed(checker: str, answer, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        answer_check(checker).prepare(answer, {})


def test_python_tests_run_in_the_sandbox_and_need_a_target_for_sft() -> None:
    check = answer_check("python-tests")
    fields = check.prepare(["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], {})
    assert fields["entry_point"] == "add" and fields["example_test"] == "assert add(1, 2) == 3"
    example = Example("x", **fields)
    from t2cli.checkers.code import run_check_programs

    good = "```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a - b\n```"
    programs = [check.test_program(check.extractor(out, example), example) for out in (good, bad, "no code")]
    assert run_check_programs(programs) == [True, False, False]
    with pytest.raises(TaskSpecError, match="--target-field"):
        check.reference(example)
    assert "def add" in check.reference(Example("y", target="def add(a, b):\n    return a + b", **fields))


def test_unknown_checkers_and_bad_patterns_are_named() -> None:
    with pytest.raises(ValueError, match="valid checkers: exact, number"):
        answer_check("numbers")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        answer_check("regex:(")
    with pytest.raises(ValueError, match="needs a pattern"):
        answer_check("regex:")


def test_checks_are_built_from_the_checkers_not_from_the_benchmarks() -> None:
    tree = ast.parse(Path(answer_checks.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {module for module in imported if module.startswith("t2cli.")} == {"t2cli.checkers", "t2cli.tasks.base"}
