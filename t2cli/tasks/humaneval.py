"""HumanEval (Chen et al. 2021): 164 Python functions from signature + docstring; an unseen task.

Test split only. The program checked is the prompt (imports, helpers, signature) followed by the
answer: a complete function redefines the prompt's stub, a body-only completion is indented into
it. Correct = the hidden ``check(entry_point)`` passes.
"""

from __future__ import annotations

from t2cli.checkers.code import (
    FUNCTION_INSTRUCTION,
    CheckProgram,
    as_function_body,
    check_program,
    defines_function,
    extract_solution,
)
from t2cli.tasks.base import HubSource, SplitSource, Task, require_str
from t2cli.tasks.example import Example


def _example(row: dict, fallback_id: str) -> Example:
    return Example(
        require_str(row, "task_id"),
        prompt=require_str(row, "prompt"),
        entry_point=require_str(row, "entry_point"),
        canonical_solution=require_str(row, "canonical_solution"),
        test=require_str(row, "test"),
    )


def _prompt(example: dict) -> str:
    return f"Complete this Python function.\n```python\n{example['prompt'].strip()}\n```\n{FUNCTION_INSTRUCTION}"


def solution_program(solution: str, example: dict) -> str:
    """The prompt followed by the answer (a whole function, or a body indented under the stub)."""
    if defines_function(solution, example["entry_point"]):
        return f"{example['prompt']}\n{solution}"
    return example["prompt"] + as_function_body(solution)


def _program(solution: str | None, example: dict) -> CheckProgram | None:
    if solution is None:
        return None
    entry = example["entry_point"]
    # The prompt (trusted) also runs in the checker, so helpers the tests use (poly, encode_cyclic)
    # are the prompt's, never the solution's.
    tests = f"{example['test']}\ncheck({entry})\n"
    return check_program(solution_program(solution, example), tests, setup=example["prompt"], remote=[entry])


HUMANEVAL = Task(
    name="humaneval",
    domain="code",
    description="HumanEval Python functions from docstrings (unseen task); correct = passes check().",
    sources={
        "test": SplitSource(
            "humaneval/test.jsonl",
            hub=HubSource("openai/openai_humaneval", None, "test"),
            fields='"task_id", "prompt", "entry_point", "canonical_solution" and "test"',
        ),
    },
    to_example=_example,
    prompt=_prompt,
    extractor=lambda output, example=None: extract_solution(output, example["entry_point"] if example else None),
    test_program=_program,
    reference=lambda example: f"```python\n{example['prompt']}{example['canonical_solution']}```",
    max_new_tokens=320,  # one function; CPU budget
    aliases=("human-eval", "openai-humaneval"),
)
