"""Lettered choices (ARC style): the option label an output states as its final answer.

A label counts only where it is given as the answer ("The answer is (B)", "(B) is the correct
answer", ``\\boxed{B}`` or an output that is nothing but the label), never where an option is only
discussed, and the comparison is strict: an output that states no label is wrong.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from t2cli.checkers.latex import extract_boxed

LETTER_LABELS = ("A", "B", "C", "D", "E", "F", "G", "H")  # the labels of up to eight options, in order
DIGIT_LABELS = ("1", "2", "3", "4", "5", "6", "7", "8", "9")  # ARC labels some questions 1, 2, 3, ...
DEFAULT_CHOICE_LABELS = (*LETTER_LABELS[:5], *DIGIT_LABELS[:5])  # accepted when an example gives none

# "The answer is (B)", "answer is B", "Answer: B", "correct option is (B)" (also "final answer", ...)
_ANSWER_IS_LABEL = re.compile(
    r"(?:[Aa]nswer|ANSWER|correct (?:option|choice))\s*(?:is\s*:?|:)\s*"
    r"(?:\(\s*([A-Za-z0-9])\s*\)|([A-Z0-9])(?![\w']))"
)
# "(B) is the correct answer", "B is the best option"
_LABEL_IS_ANSWER = re.compile(
    r"(?:\(\s*([A-Za-z0-9])\s*\)|(?<![\w'])([A-Z0-9]))\s+is\s+(?:the\s+)?(?:correct|right|best|final)\s+"
    r"(?:answer|option|choice)"
)
_WHOLE_LABEL = re.compile(r"[\s(]*([A-Za-z0-9])[\s).!\"'`]*")


def choice_instruction(which: str) -> str:
    """The closing instruction of a multiple-choice prompt; ``which`` names the labels.

    >>> choice_instruction("A, B or C")
    'Think step by step, then end with "The answer is (X)" where X is A, B or C.'
    """
    return f'Think step by step, then end with "The answer is (X)" where X is {which}.'


CHOICE_INSTRUCTION = choice_instruction("the letter of your choice")


def stated_choice(label: str) -> str:
    """The closing sentence `choice_instruction` asks for.

    >>> stated_choice("B")
    'The answer is (B).'
    """
    return f"The answer is ({label})."


def option_lines(labels: Sequence[str], options: Sequence[str]) -> str:
    """The options as a prompt shows them, one "(label) text" per line.

    >>> print(option_lines("AB", ["red", "blue"]))
    (A) red
    (B) blue
    """
    return "\n".join(f"({label}) {text}" for label, text in zip(labels, options))


def extract_choice(text: str, labels: Sequence[str] = DEFAULT_CHOICE_LABELS) -> str | None:
    """The option label the text states as its final answer; None when it states none.

    A label counts only where it is given as the answer, not where it is discussed: the last
    "answer is (X)" / "answer is X" / "Answer: X" / "correct option is (X)" (also "final answer",
    "correct answer"); else the last "(X) is the correct answer" (or "right", "best", "final";
    "option", "choice"); else the last \\boxed{X}; else a text that is nothing but the label
    ("B", "(B).").  A model that walks through the options ("(D) Sunlight is converted …") and
    stops without stating one gets None, which scores as wrong.

    >>> extract_choice("Plants need light. The answer is (B).", "ABCD")
    'B'
    >>> extract_choice("(D) Sunlight is converted to sugar. This step is not the first.", "ABCD")
    >>> extract_choice("Answer: c", "ABCD"), extract_choice("A plant grows.", "ABCD"), extract_choice("(C)", "ABCD")
    (None, None, 'C')
    """
    text = (text or "").replace("*", "")
    valid = {str(label).upper(): str(label) for label in labels}
    for pattern in (_ANSWER_IS_LABEL, _LABEL_IS_ANSWER):
        for match in reversed(list(pattern.finditer(text))):
            in_parens, bare = match.groups()
            label = (in_parens or "").upper() or bare
            if label in valid:
                return valid[label]
    boxed = extract_boxed(text)
    if boxed is not None:
        label = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", boxed).strip().strip("()").strip().upper()
        if label in valid:
            return valid[label]
    whole = _WHOLE_LABEL.fullmatch(text)
    if whole and whole.group(1).upper() in valid and (whole.group(1).isupper() or whole.group(1).isdigit()):
        return valid[whole.group(1).upper()]
    return None


def choice_correct(
    pred: str | None,
    key: str,
    labels: Sequence[str],
    *,
    random_letter_credit: bool = False,
    rng: random.Random | None = None,
) -> bool:
    """Strict label match. With ``random_letter_credit`` (the reference code's behaviour, off by
    default) an unreadable answer is replaced by a label drawn from ``rng``.

    >>> choice_correct("B", "B", "ABCD"), choice_correct(None, "B", "ABCD")
    (True, False)
    """
    if pred is None and random_letter_credit:
        pred = (rng or random.Random(0)).choice(list(labels))
    return pred is not None and str(pred).upper() == str(key).upper()
