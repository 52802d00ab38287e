"""GSM8K (Cobbe et al. 2021): grade-school math word problems; the math expert's training task.

Splits (paper protocol): train = even rows of train.jsonl, validation = odd rows, test = test.jsonl.
Correct when the last number of the output equals the number after ``####`` in the solution.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from t2cli.checkers import extract_hash_answer, extract_last_number, numbers_equal
from t2cli.tasks.base import (
    HubSource,
    Rows,
    SplitSource,
    Task,
    all_rows,
    even_rows,
    odd_rows,
    require_str,
)

INSTRUCTION = 'Solve the problem step by step. End with "The answer is N." where N is the final number.'
_FIELDS = '"question" and "answer" (a solution ending in "#### <number>")'


def _example(row: dict, fallback_id: str) -> dict:
    solution = require_str(row, "answer")
    answer = extract_hash_answer(solution)
    if answer is None:
        raise ValueError("the solution has no '#### <number>' answer")
    return {"id": fallback_id, "question": require_str(row, "question").strip(), "answer": answer, "solution": solution}


def _prompt(example: dict) -> str:
    return f"{example['question']}\n\n{INSTRUCTION}"


def _reference(example: dict) -> str:
    steps = re.sub(r"<<[^>]*>>", "", example["solution"].rsplit("####", 1)[0]).strip()
    return f"{steps}\nThe answer is {example['answer']}."


def _source(file: str, hub_split: str, select: Callable[[Rows], Rows] = all_rows) -> SplitSource:
    return SplitSource(file, select, HubSource("openai/gsm8k", "main", hub_split), _FIELDS)


GSM8K = Task(
    name="gsm8k",
    domain="math",
    description="GSM8K grade-school math word problems; answer = the last number of the output.",
    sources={
        "train": _source("gsm8k/train.jsonl", "train", even_rows),
        "validation": _source("gsm8k/train.jsonl", "train", odd_rows),
        "test": _source("gsm8k/test.jsonl", "test"),
    },
    to_example=_example,
    prompt=_prompt,
    extractor=lambda output, example=None: extract_last_number(output),
    is_correct=lambda answer, example: numbers_equal(answer, example["answer"]),
    reference=_reference,
    max_new_tokens=320,  # GSM8K solutions are short; CPU budget
)
