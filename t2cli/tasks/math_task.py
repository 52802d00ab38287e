"""MATH (Hendrycks et al. 2021) competition problems; an unseen task.

Split "test" = the bundled ``math/dev.jsonl``: 200 problems sampled from the MATH test split
outside MATH-500 (this is not the paper's full test set). Split "math500" = MATH-500, from
--data-dir (``math/math500.jsonl``) or the Hub (HuggingFaceH4/MATH-500). Correct = the last
``\\boxed{}`` of the output is equivalent to the reference answer after LaTeX normalisation.
"""

from __future__ import annotations

from t2cli.checkers.latex import BOXED_INSTRUCTION, extract_boxed, math_equal
from t2cli.tasks.base import HubSource, SplitSource, Task, require_str
from t2cli.tasks.example import Example

_FIELDS = '"problem" and "answer" (or a "solution" ending in \\boxed{...})'


def _example(row: dict, fallback_id: str) -> Example:
    solution = row.get("solution") if isinstance(row.get("solution"), str) else ""
    answer = row.get("answer")
    if answer is None:
        answer = extract_boxed(solution)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("no reference answer")
    if row.get("unique_id"):
        example_id = str(row["unique_id"])
    elif row.get("idx") is not None:
        example_id = f"test-{row['idx']}"
    else:
        example_id = fallback_id
    return Example(
        example_id,
        problem=require_str(row, "problem").strip(),
        answer=answer.strip(),
        solution=solution,
        level=str(row.get("level", "")),
        type=str(row.get("type") or row.get("subject") or ""),
    )


def _reference(example: dict) -> str:
    solution = example["solution"]
    if solution and math_equal(extract_boxed(solution), example["answer"]):
        return solution
    return f"The final answer is $\\boxed{{{example['answer']}}}$."


MATH = Task(
    name="math",
    domain="math",
    description="MATH competition problems (unseen task); answer = last \\boxed{}, LaTeX-normalised.",
    sources={
        "test": SplitSource("math/dev.jsonl", fields=_FIELDS),
        "math500": SplitSource(
            "math/math500.jsonl", hub=HubSource("HuggingFaceH4/MATH-500", None, "test"), fields=_FIELDS
        ),
    },
    to_example=_example,
    prompt=lambda example: f"{example['problem']}\n\n{BOXED_INSTRUCTION}",
    extractor=lambda output, example=None: extract_boxed(output),
    is_correct=lambda answer, example: math_equal(answer, example["answer"]),
    reference=_reference,
    max_new_tokens=512,
)
