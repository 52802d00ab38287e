"""Free-text answers: the text after the last "answer is", compared after normalisation.

Used by the ``exact``, ``contains`` and ``regex:`` checks of tasks from data files, whose answers
are words or short phrases rather than numbers, labels or LaTeX.
"""

from __future__ import annotations

import re

TEXT_INSTRUCTION = 'End with "The answer is: X" where X is your final answer.'

# "The answer is: Paris", "final answer is Paris" (any case); the answer runs to the end of the line
_ANSWER_IS_TEXT = re.compile(r"answer is\s*:?\s*(.+)", re.IGNORECASE)


def stated_text(answer: str) -> str:
    """The closing sentence `TEXT_INSTRUCTION` asks for.

    >>> stated_text("Paris")
    'The answer is: Paris'
    """
    return f"The answer is: {answer}"


def normalize_text(text: str | None) -> str:
    """Lower case, single spaces, no surrounding quotes, markdown emphasis or final punctuation.

    >>> normalize_text('  **"Paris".** '), normalize_text("New   York")
    ('paris', 'new york')
    """
    s = re.sub(r"\s+", " ", str(text or "")).strip().lower()
    previous = None
    while previous != s:
        previous = s
        s = s.strip(" *_`'\"").rstrip(".!;,").strip()
    return s


def extract_final_text(output: str) -> str | None:
    """The text after the last "answer is" (to the end of its line), else the last non-empty line.

    >>> extract_final_text("Paris is big.\\nThe answer is: Paris."), extract_final_text("I think\\nRome")
    ('Paris.', 'Rome')
    """
    lines = [line.strip() for line in (output or "").splitlines() if line.strip()]
    for line in reversed(lines):
        matches = list(_ANSWER_IS_TEXT.finditer(line))
        if matches:
            return matches[-1].group(1).strip() or None
    return lines[-1] if lines else None


def texts_equal(pred: str | None, ref: str | None) -> bool:
    """Equality after `normalize_text`; False when nothing was extracted.

    >>> texts_equal("**Paris.**", "paris"), texts_equal(None, "paris")
    (True, False)
    """
    return pred is not None and normalize_text(pred) == normalize_text(ref)


def contains_text(output: str | None, wanted: str) -> bool:
    """Whether ``wanted`` occurs in ``output`` as whole words, after `normalize_text`.

    >>> contains_text("I think it is the Blue Whale.", "blue whale"), contains_text("a category", "cat")
    (True, False)
    """
    want = re.escape(normalize_text(wanted))
    return output is not None and re.search(rf"(?<!\w){want}(?!\w)", normalize_text(output)) is not None
