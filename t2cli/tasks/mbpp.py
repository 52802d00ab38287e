"""MBPP (Austin et al. 2021) and MBPP+ (EvalPlus, Liu et al. 2023) Python programming problems.

- ``mbpp``: the original release; train/validation/test are its task-id ranges 601-974 / 511-600
  / 11-510 (bundled files). Correct = the program passes ``test_list`` (after ``test_setup_code``).
- ``mbpp-plus`` (the paper's "MBPP-Pro", training task of the code expert): MBPP+ v0.1.0. The
  first 300 problems are shuffled with ``random.Random(16)`` into 200 train / 100 validation; the
  last 99 are the test split. Correct = EvalPlus-style differential testing: on every base input
  AND every plus input, the solution's output must equal the canonical solution's (with
  EvalPlus's tolerance rules and special oracles), each input within max(1 s, 4x the canonical
  solution's time).

Both prompts show the problem text with one example assert and ask for one ```python block.
"""

from __future__ import annotations

import json
import re

from t2cli.checkers.code import CheckProgram, check_program, example_test_instruction, extract_solution, fenced
from t2cli.tasks.base import HubSource, SplitSource, Task, require_str, shuffled_slice
from t2cli.tasks.example import Example

MBPP_PLUS_SPLIT_SEED = 16  # the paper's split of the first 300 MBPP+ problems (Python `random`)


def code_prompt(text: str, example_test: str) -> str:
    return f"{text.strip()}\n{example_test_instruction(example_test.strip())}"


def _extract(output: str, example: dict | None) -> str | None:
    return extract_solution(output, example["entry_point"] if example else None)


# ------------------------------------------------------------------------------------------
# MBPP
# ------------------------------------------------------------------------------------------


def _mbpp_entry_point(code: str, test: str) -> str:
    defined = re.findall(r"^def\s+(\w+)\s*\(", code, re.MULTILINE)
    for name in re.findall(r"(\w+)\s*\(", test):
        if name in defined:
            return name
    if not defined:
        raise ValueError("the reference code defines no function")
    return defined[0]


def _mbpp_example(row: dict, fallback_id: str) -> Example:
    tests = row["test_list"]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("test_list must be a non-empty list of asserts")
    code = require_str(row, "code").replace("\r\n", "\n")
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise ValueError("test_setup_code must be a string")
    return Example(
        str(row["task_id"]),
        text=require_str(row, "text"),
        code=code,
        test_list=tests,
        test_setup_code=setup.replace("\r\n", "\n"),
        entry_point=_mbpp_entry_point(code, tests[0]),
    )


def _mbpp_program(solution: str | None, example: dict) -> CheckProgram | None:
    if solution is None:
        return None
    tests = "\n".join(example["test_list"])
    return check_program(solution, tests, setup=example["test_setup_code"], remote=[example["entry_point"]])


_MBPP_FIELDS = '"task_id", "text", "code", "test_list" and "test_setup_code"'


def _mbpp_source(split: str) -> SplitSource:
    hub = HubSource("google-research-datasets/mbpp", "full", split)
    return SplitSource(f"mbpp/{split}.jsonl", hub=hub, fields=_MBPP_FIELDS)


MBPP = Task(
    name="mbpp",
    domain="code",
    description="MBPP Python problems (original release); correct = passes its three asserts.",
    sources={split: _mbpp_source(split) for split in ("train", "validation", "test")},
    to_example=_mbpp_example,
    prompt=lambda example: code_prompt(example["text"], example["test_list"][0]),
    extractor=_extract,
    test_program=_mbpp_program,
    reference=lambda example: fenced(example["code"]),
    max_new_tokens=320,  # one function; CPU budget
)


# ------------------------------------------------------------------------------------------
# MBPP+
# ------------------------------------------------------------------------------------------


def _plus_text(prompt: str) -> tuple[str, str]:
    """(problem statement, example assert) from MBPP+'s docstring-style ``prompt`` field."""
    body = prompt.strip().strip('"').strip()
    lines = body.split("\n")
    asserts = [line for line in lines if line.strip().startswith("assert")]
    text = "\n".join(line for line in lines if not line.strip().startswith("assert")).strip()
    if not text or not asserts:
        raise ValueError("the prompt needs a statement and an example assert")
    return text, "\n".join(asserts)


def _plus_example(row: dict, fallback_id: str) -> Example:
    task_id = require_str(row, "task_id")
    text, example_test = _plus_text(require_str(row, "prompt"))
    base, plus = row["base_input"], row["plus_input"]
    if plus == {}:  # Mbpp/793 in v0.1.0 ships "plus_input": {} (no plus tests), as EvalPlus reads it
        plus = []
    if not isinstance(base, list) or not isinstance(plus, list) or not base:
        raise ValueError("base_input/plus_input must be lists of argument lists")
    atol = float(row.get("atol") or 0)
    return Example(
        task_id,
        task_number=int(task_id.rsplit("/", 1)[-1]),
        text=text,
        example_test=example_test,
        entry_point=require_str(row, "entry_point"),
        canonical_solution=require_str(row, "canonical_solution"),
        base_input=base,
        plus_input=plus,
        atol=atol,
    )


def _plus_program(solution: str | None, example: dict) -> CheckProgram | None:
    if solution is None:
        return None
    # The oracle (t2cli/harness/evalplus.py) runs in the checker process, with the canonical solution.
    entry = example["entry_point"]
    tests = (
        f"import t2_evalplus\nt2_evalplus.check({entry}, entry={entry!r}, atol={example['atol']!r}, "
        f"task_number={example['task_number']!r}, reference={example['canonical_solution']!r}, "
        f"inputs={json.dumps(example['base_input'] + example['plus_input'])!r})\n"
    )
    return check_program(solution, tests, remote=[entry])


_PLUS_FIELDS = '"task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input", "atol"'

MBPP_PLUS = Task(
    name="mbpp-plus",
    domain="code",
    description="MBPP+ (the paper's MBPP-Pro); correct = matches the canonical solution on base+plus inputs.",
    sources={
        "train": SplitSource(
            "mbpp_plus/sakana_trainval.jsonl", shuffled_slice(MBPP_PLUS_SPLIT_SEED, 0, 200), fields=_PLUS_FIELDS
        ),
        "validation": SplitSource(
            "mbpp_plus/sakana_trainval.jsonl", shuffled_slice(MBPP_PLUS_SPLIT_SEED, 200, None), fields=_PLUS_FIELDS
        ),
        "test": SplitSource("mbpp_plus/sakana_test.jsonl", fields=_PLUS_FIELDS),
    },
    to_example=_plus_example,
    prompt=lambda example: code_prompt(example["text"], example["example_test"]),
    extractor=_extract,
    test_program=_plus_program,
    reference=lambda example: fenced(example["canonical_solution"]),
    max_new_tokens=320,  # one function; CPU budget
    # The canonical solution runs inside every check: Mbpp/599's takes ~22 s over its inputs and
    # Mbpp/255's needs ~1.1 GB, so the whole-program limits are wide (EvalPlus allows 4 GB); each
    # input still has its own max(1 s, 4x canonical) time limit.
    sandbox_wall_time_s=90.0,
    sandbox_memory_mb=4096,
    aliases=("mbpp-pro", "mbppplus"),
)
