"""Numeric answers (GSM8K style): the last number of the output, compared within a tolerance.

The instruction asks for "The answer is N." at the end, which makes N the last number; any other
ending still scores by its last number.
"""

from __future__ import annotations

import math
import re

NUMBER_INSTRUCTION = 'Solve the problem step by step. End with "The answer is N." where N is the final number.'

# An optional sign (not when it is a minus between two operands: "10-3"), an optional "$", then
# either a thousands-grouped number ("1,000.50") or plain digits, with an optional decimal part.
_NUMBER = re.compile(r"(?<![\w.])(-)?\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\d)")


def stated_number(answer: str) -> str:
    """The closing sentence `NUMBER_INSTRUCTION` asks for.

    >>> stated_number("72")
    'The answer is 72.'
    """
    return f"The answer is {answer}."


def extract_last_number(text: str) -> str | None:
    """The last number in ``text``, commas/$ removed, or None.

    >>> extract_last_number("She pays $1,000.50 in total, so the answer is 1,000.50.")
    '1000.50'
    >>> extract_last_number("Temperature drops to -4 degrees"), extract_last_number("no digits")
    ('-4', None)
    """
    matches = _NUMBER.findall(text or "")
    if not matches:
        return None
    sign, digits = matches[-1]
    return sign + digits.replace(",", "")


def extract_hash_answer(text: str) -> str | None:
    """The number after the last ``####`` (the GSM8K reference format).

    >>> extract_hash_answer("48 + 24 = 72 clips.\\n#### 72")
    '72'
    """
    if "####" not in (text or ""):
        return None
    return extract_last_number(text.rsplit("####", 1)[1])


def parse_number(text: str | None) -> float | None:
    """A float from a number as people write it (commas, $, %, trailing period), or None.

    >>> parse_number("$1,000.00"), parse_number("50%"), parse_number("-3."), parse_number("x")
    (1000.0, 50.0, -3.0, None)
    """
    if text is None:
        return None
    s = text.strip().replace(",", "").replace("$", "").replace("%", "").rstrip(".").strip()
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numbers_equal(pred: str | None, ref: str | None, tol: float = 1e-6) -> bool:
    """Numeric equality within ``tol``; False when either side is not a number.

    >>> numbers_equal("1,000.00", "1000"), numbers_equal("0.5", ".5"), numbers_equal(None, "1")
    (True, True, False)
    """
    a, b = parse_number(pred), parse_number(ref)
    return a is not None and b is not None and abs(a - b) <= tol
