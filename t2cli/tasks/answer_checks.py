"""Named answer checks for tasks from data files: ``exact``, ``number``, ``choice``, ``contains``,
``regex:PATTERN`` and ``python-tests``.

Each is assembled from the extractors, checkers and instructions in `t2cli.checkers` that the
built-in tasks use (``number`` is GSM8K's, ``choice`` ARC's, ``python-tests`` MBPP's sandboxed
asserts), so a task from a data file is rewarded in training and scored in evaluation by the same
functions.

A check says how to read the reference answer of a row (``prepare``: a row whose answer cannot be
read is malformed and skipped), what to append to the prompt so the model answers in a readable
form, how to extract the answer from an output, how to compare it, and what a model-style
reference answer looks like (the SFT target when no full solution is given).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from t2cli.checkers import (
    CHOICE_INSTRUCTION,
    DIGIT_LABELS,
    LETTER_LABELS,
    NUMBER_INSTRUCTION,
    TEXT_INSTRUCTION,
    CheckProgram,
    check_program,
    choice_correct,
    contains_text,
    entry_point_of,
    example_test_instruction,
    extract_choice,
    extract_final_text,
    extract_hash_answer,
    extract_last_number,
    extract_solution,
    fenced,
    normalize_text,
    numbers_equal,
    parse_number,
    stated_choice,
    stated_number,
    stated_text,
    texts_equal,
)
from t2cli.tasks.base import TaskSpecError

CHECK_NAMES = ("exact", "number", "choice", "contains", "regex:PATTERN", "python-tests")


@dataclass(frozen=True)
class AnswerCheck:
    """How one kind of answer is prompted for, read, compared and written."""

    name: str
    instruction: str  # appended to a --prompt-field prompt ("" = nothing)
    max_new_tokens: int
    prepare: Callable[[Any, Mapping[str, Any]], dict[str, Any]]  # (answer field, row) -> example fields
    extractor: Callable[[str, Mapping[str, Any] | None], str | None]
    reference: Callable[[Mapping[str, Any]], str]
    is_correct: Callable[[str | None, Mapping[str, Any]], bool] | None = None
    test_program: Callable[[str | None, Mapping[str, Any]], CheckProgram | None] | None = None


def _text(value: Any, what: str = "answer") -> str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise ValueError(f"the {what} must be a string or a number, not {value!r}")
    text = str(value).strip()
    if not text:
        raise ValueError(f"the {what} is empty")
    return text


# -- exact, contains, regex -----------------------------------------------------------------


def _exact() -> AnswerCheck:
    return AnswerCheck(
        name="exact",
        instruction=TEXT_INSTRUCTION,
        max_new_tokens=256,
        prepare=lambda value, row: {"answer": _text(value)},
        extractor=lambda output, example=None: extract_final_text(output),
        is_correct=lambda answer, example: texts_equal(answer, example["answer"]),
        reference=lambda example: stated_text(example["answer"]),
    )


def _contains() -> AnswerCheck:
    return AnswerCheck(
        name="contains",
        instruction="",
        max_new_tokens=256,
        prepare=lambda value, row: {"answer": _text(value)},
        extractor=lambda output, example=None: output.strip() or None,
        is_correct=lambda answer, example: contains_text(answer, example["answer"]),
        reference=lambda example: str(example["answer"]),
    )


def _regex(pattern: str) -> AnswerCheck:
    compiled = re.compile(pattern)

    def extract(output: str, example: Mapping[str, Any] | None = None) -> str | None:
        matches = list(compiled.finditer(output or ""))
        if not matches:
            return None
        last = matches[-1]
        return last.group(1) if compiled.groups else last.group(0)

    return AnswerCheck(
        name=f"regex:{pattern}",
        instruction="",
        max_new_tokens=256,
        prepare=lambda value, row: {"answer": _text(value)},
        extractor=extract,
        is_correct=lambda answer, example: texts_equal(answer, example["answer"]),
        reference=lambda example: str(example["answer"]),
    )


# -- number (GSM8K's) -----------------------------------------------------------------------


def _number_answer(value: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    text = _text(value)
    answer = extract_hash_answer(text) if "####" in text else None
    if answer is None:
        answer = text.replace(",", "") if parse_number(text) is not None else extract_last_number(text)
    if answer is None:
        raise ValueError(f"the answer {text!r} holds no number")
    return {"answer": answer}


def _number() -> AnswerCheck:
    return AnswerCheck(
        name="number",
        instruction=NUMBER_INSTRUCTION,
        max_new_tokens=320,
        prepare=_number_answer,
        extractor=lambda output, example=None: extract_last_number(output),
        is_correct=lambda answer, example: numbers_equal(answer, example["answer"]),
        reference=lambda example: stated_number(example["answer"]),
    )


# -- choice (ARC's) -------------------------------------------------------------------------


def choice_options(value: Any) -> tuple[list[str], list[str]]:
    """(labels, option texts) from a choices field: a list of texts (labelled A, B, …) or ARC's
    ``{"label": [...], "text": [...]}``."""
    if isinstance(value, Mapping) and "text" in value:
        texts = [str(t).strip() for t in value["text"]]
        labels = [str(label).strip() for label in value.get("label", LETTER_LABELS[: len(texts)])]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        texts = [str(t).strip() for t in value]
        labels = list(LETTER_LABELS[: len(texts)])
    else:
        raise ValueError("choices must be a list of option texts or {'label': [...], 'text': [...]}")
    if len(texts) < 2 or len(texts) > len(LETTER_LABELS) and "label" not in value:
        raise ValueError(f"choices must hold 2 to {len(LETTER_LABELS)} options")
    if len(labels) != len(texts) or len(set(labels)) != len(labels):
        raise ValueError("choices must pair distinct labels with texts")
    return labels, texts


def _choice_answer(value: Any, row: Mapping[str, Any], choices_field: str | None) -> dict[str, Any]:
    text = _text(value)
    if choices_field is not None:
        labels, options = choice_options(row[choices_field])
        by_label = {label.upper(): label for label in labels}
        if text.strip("() ").upper() in by_label:
            answer = by_label[text.strip("() ").upper()]
        elif normalize_text(text) in map(normalize_text, options):
            answer = labels[[normalize_text(o) for o in options].index(normalize_text(text))]
        else:
            raise ValueError(f"the answer {text!r} is neither a label ({', '.join(labels)}) nor an option's text")
        return {"answer": answer, "labels": labels, "options": options}
    label = text.strip("() ").upper()
    if label not in LETTER_LABELS and not label.isdigit():
        raise ValueError(f"the answer {text!r} is not an option label (A, B, …): give a choices field for texts")
    return {"answer": label, "labels": list(LETTER_LABELS) if not label.isdigit() else list(DIGIT_LABELS)}


def _choice(choices_field: str | None) -> AnswerCheck:
    return AnswerCheck(
        name="choice",
        instruction=CHOICE_INSTRUCTION,
        max_new_tokens=192,
        prepare=lambda value, row: _choice_answer(value, row, choices_field),
        extractor=lambda output, example=None: (
            extract_choice(output, example["labels"]) if example else extract_choice(output)
        ),
        is_correct=lambda answer, example: choice_correct(answer, example["answer"], example["labels"]),
        reference=lambda example: stated_choice(example["answer"]),
    )


# -- python-tests (MBPP's) ------------------------------------------------------------------


def _tests_answer(value: Any, row: Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, str):
        tests = [line for line in value.replace("\r\n", "\n").split("\n") if line.strip()]
    elif isinstance(value, Sequence) and value and all(isinstance(t, str) for t in value):
        tests = list(value)
    else:
        raise ValueError("the tests must be a string of assert statements or a list of them")
    code = "\n".join(tests)
    try:
        ast.parse(code)
    except SyntaxError as exc:
        raise ValueError(f"the tests are not valid Python: {exc}") from exc
    if not tests:
        raise ValueError("no tests")
    return {"tests": code, "example_test": tests[0], "entry_point": entry_point_of(code)}


def _tests_program(solution: str | None, example: Mapping[str, Any]) -> CheckProgram | None:
    return None if solution is None else check_program(solution, example["tests"])


def _python_tests() -> AnswerCheck:
    def reference(example: Mapping[str, Any]) -> str:
        if not example.get("target"):
            raise TaskSpecError(
                "python-tests has no reference answer to train on: give the field of full solutions "
                "(--target-field, or target_field in a task file), or train with the rl objective"
            )
        return fenced(example["target"])

    return AnswerCheck(
        name="python-tests",
        instruction=example_test_instruction("{example_test}"),  # formatted with the row's fields
        max_new_tokens=320,
        prepare=_tests_answer,
        extractor=lambda output, example=None: extract_solution(
            output, example.get("entry_point") if example else None
        ),
        test_program=_tests_program,
        reference=reference,
    )


def answer_check(name: str, choices_field: str | None = None) -> AnswerCheck:
    """The check called ``name`` (one of `CHECK_NAMES`; ``regex:`` takes a Python pattern whose
    first group, or whole match, is the answer). Raises ValueError with the valid names."""
    if name.startswith("regex:"):
        pattern = name[len("regex:") :]
        if not pattern:
            raise ValueError("regex: needs a pattern, e.g. regex:Answer: (\\w+)")
        try:
            return _regex(pattern)
        except re.error as exc:
            raise ValueError(f"the pattern {pattern!r} is not a valid regular expression ({exc})") from exc
    makers: dict[str, Callable[[], AnswerCheck]] = {
        "exact": _exact,
        "number": _number,
        "choice": lambda: _choice(choices_field),
        "contains": _contains,
        "python-tests": _python_tests,
    }
    if name not in makers:
        raise ValueError(f"unknown checker {name!r}; valid checkers: {', '.join(CHECK_NAMES)}")
    return makers[name]()
