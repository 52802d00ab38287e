"""Free-text answers (the exact / contains / regex checks of data-file tasks)."""

from __future__ import annotations

from t2cli.checkers.text import (
    TEXT_INSTRUCTION,
    contains_text,
    extract_final_text,
    normalize_text,
    stated_text,
    texts_equal,
)


def test_helpers() -> None:
    assert normalize_text(' "The  Answer." ') == "the answer"
    assert extract_final_text("") is None and extract_final_text("a\nThe answer is: b") == "b"


def test_the_stated_answer_is_read_back() -> None:
    assert '"The answer is: X"' in TEXT_INSTRUCTION
    assert extract_final_text("Rome is old.\n" + stated_text("Paris")) == "Paris"
    assert texts_equal(extract_final_text(stated_text("**New  York.**")), "new york")
    assert contains_text("It is New York, I think", "new york") and not contains_text(None, "x")
