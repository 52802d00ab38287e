"""GSM8K (Cobbe et al. 2021): grade-school math word problems; the math expert's training task.

Splits (paper protocol): train = even rows of train.jsonl, validation = odd rows, test = test.jsonl.
Correct when the last number of the output equals the number after ``####`` in the solution.
"""

from __future__ import annotations

import re

from t2cli.checkers.numbers import (
    NUMBER_INSTRUCTION,
    extract_hash_answer,
    extract_last_number,
    numbers_equal,
    stated_number,
)
from t2cli.tasks.base import Task, paper_splits, require_str
from t2cli.tasks.example import Example

_FIELDS = '"question" and "answer" (a solution ending in "#### <number>")'


def _example(row: dict, fallback_id: str) -> Example:
    solution = require_str(row, "answer")
    answer = extract_hash_answer(solution)
    if answer is None:
        raise ValueError("the solution has no '#### <number>' answer")
    return Example(fallback_id, question=require_str(row, "question").strip(), answer=answer, solution=solution)


def _prompt(example: dict) -> str:
    return f"{example['question']}\n\n{NUMBER_INSTRUCTION}"


def _reference(example: dict) -> str:
    steps = re.sub(r"<<[^>]*>>", "", example["solution"].rsplit("####", 1)[0]).strip()
    return f"{steps}\n{stated_number(example['answer'])}"


GSM8K = Task(
    name="gsm8k",
    domain="math",
    description="GSM8K grade-school math word problems; answer = the last number of the output.",
    sources=paper_splits("gsm8k", "openai/gsm8k", "main", _FIELDS),
    to_example=_example,
    prompt=_prompt,
    extractor=lambda output, example=None: extract_last_number(output),
    is_correct=lambda answer, example: numbers_equal(answer, example["answer"]),
    reference=_reference,
    max_new_tokens=320,  # GSM8K solutions are short; CPU budget
)
