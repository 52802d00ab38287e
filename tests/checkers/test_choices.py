"""Lettered choices (ARC) on tables of hand-written model outputs."""

from __future__ import annotations

import random

import pytest

from t2cli.checkers.choices import (
    CHOICE_INSTRUCTION,
    choice_correct,
    choice_instruction,
    extract_choice,
    option_lines,
    stated_choice,
)

LETTERS = ("A", "B", "C", "D")
DIGITS = ("1", "2", "3", "4")


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("Plants need light. The answer is (B).", LETTERS, "B"),
        ("The answer is B", LETTERS, "B"),
        ("The answer is: (B)", LETTERS, "B"),
        ("Answer: C", LETTERS, "C"),
        ("answer: (d)", LETTERS, "D"),
        ("**Answer: B**", LETTERS, "B"),
        ("So the correct option is (A) because", LETTERS, "A"),
        ("A plant needs water. The answer is (D)", LETTERS, "D"),
        ("The answer is (B). Wait, no: the answer is (C).", LETTERS, "C"),
        ("The final answer is $\\boxed{B}$", LETTERS, "B"),
        ("so \\boxed{\\text{(C)}}", LETTERS, "C"),
        ("(C) is the correct answer.", LETTERS, "C"),
        ("Therefore, B is the best option.", LETTERS, "B"),
        ("The correct answer is: (A) Evaporation.", LETTERS, "A"),
        ("B.", LETTERS, "B"),
        ("(D)", LETTERS, "D"),
        ("The answer is A", LETTERS, "A"),
        ("The answer is (2)", DIGITS, "2"),
        ("Answer: 3", DIGITS, "3"),
        ("4", DIGITS, "4"),
        ("The answer is (E)", ("A", "B", "C", "D", "E"), "E"),
        # strict: a label that is discussed, not stated as the answer -> None
        ("(A) Water evaporates.\n(D) Sunlight is converted to sugar. This step is not first.", LETTERS, None),
        ("Between the options I pick (C)", LETTERS, None),
        ("so (C)", LETTERS, None),
        ("I think B is right", LETTERS, None),
        ("so (4)", DIGITS, None),
        ("b", LETTERS, None),
        ("A plant needs light.", LETTERS, None),
        ("The answer is a bacterial population.", LETTERS, None),
        ("The answer is (E)", LETTERS, None),
        ("Answer: c", LETTERS, None),
        ("There are 2 steps and 3 cells.", DIGITS, None),
        ("I do not know.", LETTERS, None),
        ("", LETTERS, None),
    ],
)
def test_extract_choice(text: str, labels: tuple[str, ...], expected: str | None) -> None:
    assert extract_choice(text, labels) == expected


def test_choice_correct_is_strict_by_default() -> None:
    assert choice_correct("B", "B", LETTERS)
    assert choice_correct("b", "B", LETTERS)
    assert not choice_correct("C", "B", LETTERS)
    assert not choice_correct(None, "B", LETTERS)


def test_random_letter_credit_is_opt_in_and_seeded() -> None:
    draws = [
        choice_correct(None, "B", LETTERS, random_letter_credit=True, rng=random.Random(seed)) for seed in range(200)
    ]
    assert 20 < sum(draws) < 80  # about a quarter of unreadable answers get credit
    again = [
        choice_correct(None, "B", LETTERS, random_letter_credit=True, rng=random.Random(seed)) for seed in range(200)
    ]
    assert draws == again
    assert not choice_correct("C", "B", LETTERS, random_letter_credit=True, rng=random.Random(0))


def test_the_stated_answer_is_read_back() -> None:
    assert '"The answer is (X)"' in CHOICE_INSTRUCTION and choice_instruction("A or B").endswith("X is A or B.")
    assert extract_choice("(A) is wrong, (B) too. " + stated_choice("C"), LETTERS) == "C"
    assert extract_choice(option_lines(LETTERS, ["w", "x", "y", "z"]), LETTERS) is None  # listing is not answering
