"""Numeric answers (GSM8K) on tables of hand-written model outputs."""

from __future__ import annotations

import pytest

from t2cli.checkers.numbers import (
    NUMBER_INSTRUCTION,
    extract_hash_answer,
    extract_last_number,
    numbers_equal,
    parse_number,
    stated_number,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18.", "18"),
        ("She makes 9 * 2 = $18 every day.", "18"),
        ("She has $1,234.50 left", "1234.50"),
        ("The answer is 1,000,000.", "1000000"),
        ("It drops to -5 degrees", "-5"),
        ("Answer is -0.25", "-0.25"),
        ("10-3=7", "7"),
        ("so 10 - 3 is 7", "7"),
        ("answer: 1,000", "1000"),
        ("That is 50% of the class", "50"),
        ("x=3.", "3"),
        ("12 apples and 5 pears", "5"),
        ("3/4 of them", "4"),
        (".5 of a pie", ".5"),
        ("The answer is 0.5.", "0.5"),
        ("First 2, then 3.\n\nThe answer is 42", "42"),
        ("He paid $ 20", "20"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_last_number(text: str, expected: str | None) -> None:
    assert extract_last_number(text) == expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("#### -3", "-3"),
        ("no hashes 5", None),
        ("####", None),
    ],
)
def test_extract_hash_answer(solution: str, expected: str | None) -> None:
    assert extract_hash_answer(solution) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$1,000.00", 1000.0),
        ("50%", 50.0),
        ("-3.", -3.0),
        (".5", 0.5),
        (" 7 ", 7.0),
        ("x", None),
        (None, None),
        ("", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_number(text: str | None, value: float | None) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("1,000.00", "1000", True),
        ("1000", "1000", True),
        ("18.0", "18", True),
        ("0.5", ".5", True),
        ("-4", "-4", True),
        ("4", "-4", False),
        ("18.0000001", "18", True),
        ("18.001", "18", False),
        ("17", "18", False),
        (None, "18", False),
        ("eighteen", "18", False),
    ],
)
def test_numbers_equal(pred: str | None, ref: str, equal: bool) -> None:
    assert numbers_equal(pred, ref) is equal


def test_the_stated_answer_is_read_back() -> None:
    assert "The answer is N." in NUMBER_INSTRUCTION
    assert extract_last_number("3 + 4 = 7. " + stated_number("1,000")) == "1000"
