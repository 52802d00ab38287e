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

from t2cli.checkers import CheckProgram, check_program, drop_example_usage, extract_code
from t2cli.tasks.base import HubSource, SplitSource, Task, require_str, shuffled_slice

CODE_INSTRUCTION = "Write the Python function in a single ```python code block."
MBPP_PLUS_SPLIT_SEED = 16  # the paper's split of the first 300 MBPP+ problems (Python `random`)


def code_prompt(text: str, example_test: str) -> str:
    return f"{text.strip()}\nYour code should pass this test:\n{example_test.strip()}\n{CODE_INSTRUCTION}"


def fenced(code: str) -> str:
    return f"```python\n{code.strip()}\n```"


def _extract(output: str, example: dict | None) -> str | None:
    entry = example["entry_point"] if example else None
    return drop_example_usage(extract_code(output, entry), entry)


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


def _mbpp_example(row: dict, fallback_id: str) -> dict:
    tests = row["test_list"]
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
        raise ValueError("test_list must be a non-empty list of asserts")
    code = require_str(row, "code").replace("\r\n", "\n")
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise ValueError("test_setup_code must be a string")
    return {
        "id": str(row["task_id"]),
        "text": require_str(row, "text"),
        "code": code,
        "test_list": tests,
        "test_setup_code": setup.replace("\r\n", "\n"),
        "entry_point": _mbpp_entry_point(code, tests[0]),
    }


def _mbpp_program(solution: str | None, example: dict) -> CheckProgram | None:
    if solution is None:
        return None
    tests = "\n".join([example["test_setup_code"], *example["test_list"]])
    return check_program(solution, tests)


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

# The trusted test driver, run after the solution in its namespace. It recomputes the expected
# outputs with the canonical solution (in a namespace of its own) and compares like EvalPlus
# (evalplus/eval/__init__.py `check_output`, evalplus/data/mbpp.py `mbpp_deserialize_inputs`):
# JSON inputs get their tuple/set/complex types back per task id, some tasks compare as sets or
# as "returned something", floats compare with atol (1e-6 when the dataset gives 0), and two
# problems with ambiguous statements accept an alternative reading.
_PLUS_DRIVER = """
def _t2_evalplus_check():
    import copy
    import json
    import math
    import signal
    import time

    not_none = {"check_str", "text_match_three", "text_starta_endb"}
    set_eq = {"similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
              "larg_nnum", "intersection_array", "find_dissimilar", "Diff"}
    entry, atol = _T2_ENTRY, _T2_ATOL

    def tuples(x):
        return tuple(tuples(i) for i in x) if isinstance(x, list) else x

    def deserialize(n, inputs):
        T = tuple
        if n in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616,
                 630, 726, 740, 744, 809):
            return [[T(a) for a in inp] for inp in inputs]
        if n in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
            return [[[T(b) for b in a] for a in inp] for inp in inputs]
        if n in (75, 413, 444, 753):
            return [[[T(b) for b in inp[0]], inp[1]] for inp in inputs]
        if n in (106, 750):
            return [[inp[0], T(inp[1])] for inp in inputs]
        if n == 115:
            return [[[set(i) if isinstance(i, list) and i else {} for i in inp[0]]] for inp in inputs]
        if n == 124:
            return [(float(inp[0]), complex(inp[1])) for inp in inputs]
        if n in (250, 405, 446, 617, 720, 763, 808):
            return [[T(inp[0]), inp[1]] for inp in inputs]
        if n in (259, 401, 445):
            return [[T(T(b) for b in a) for a in inp] for inp in inputs]
        if n == 278:
            return [[T(T(i) if isinstance(i, list) else i for i in inp[0])] for inp in inputs]
        if n == 307:
            return [[T(inp[0]), inp[1], inp[2]] for inp in inputs]
        if n == 722:
            return [[{k: T(v) for k, v in inp[0].items()}] + inp[1:] for inp in inputs]
        if n == 252:
            return [[complex(inp[0])] for inp in inputs]
        if n in (580, 615, 791):
            return [tuples(inp) for inp in inputs]
        return inputs

    def pyramid_area(base_edge, height):  # Mbpp/581 read with the perpendicular height
        slant = math.sqrt((base_edge / 2) ** 2 + height**2)
        return round(base_edge**2 + 2 * base_edge * slant)

    def digit_distance(a, b):  # Mbpp/558 read with zero padding
        a, b = str(a), str(b)
        width = max(len(a), len(b))
        return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))

    def is_floats(x):
        if isinstance(x, float):
            return True
        if isinstance(x, (list, tuple)) and x:
            return all(isinstance(i, float) for i in x)
        return type(x).__name__ == "ndarray" and str(x.dtype) in ("float64", "float32")

    def flat(x):
        return [v for i in x for v in flat(i)] if isinstance(x, (list, tuple)) else [x]

    def allclose(out, exp, tol):
        try:
            import numpy
        except ImportError:
            a, b = flat(out), flat(exp)  # numpy.allclose's rule, element by element
            return len(a) == len(b) and all(x == y or abs(x - y) <= tol + 1e-07 * abs(y) for x, y in zip(a, b))
        return bool(numpy.allclose(out, exp, rtol=1e-07, atol=tol))

    def output_ok(inp, out, exp):
        exact = out == exp
        if entry == "are_equivalent":
            exact = True
        elif entry == "sum_div":
            exact = exact or out == 0
        elif entry == "surface_Area":
            exact = exact or abs(out - pyramid_area(*inp)) <= atol
        elif entry == "digit_distance_nums":
            exact = exact or out == digit_distance(*inp)
        elif entry in set_eq:
            exact = set(out) == set(exp)
        elif entry in not_none:
            exact = out == exp if isinstance(out, bool) else exp == (out is not None)
        tol = 1e-6 if atol == 0 and is_floats(exp) else atol
        if not exact and tol != 0:
            if type(out) is not type(exp):
                return False
            if isinstance(exp, (list, tuple)) and len(out) != len(exp):
                return False
            return allclose(out, exp, tol)
        return bool(exact)

    reference = {"__name__": "t2_reference"}
    exec(compile(_T2_REFERENCE, "<canonical solution>", "exec"), reference)
    expected_fn = reference[entry]
    candidate = globals().get(entry)
    if not callable(candidate):
        raise AssertionError("the solution does not define %s()" % entry)

    def on_alarm(signum, frame):
        raise TimeoutError("time limit for one input exceeded")

    signal.signal(signal.SIGALRM, on_alarm)
    for k, inp in enumerate(deserialize(_T2_TASK_NUMBER, json.loads(_T2_INPUTS))):
        start = time.perf_counter()
        exp = expected_fn(*copy.deepcopy(inp))
        if entry in not_none:
            exp = exp is not None
        signal.setitimer(signal.ITIMER_REAL, max(1.0, 4.0 * (time.perf_counter() - start)))
        try:
            out = candidate(*copy.deepcopy(inp))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not output_ok(inp, out, exp):
            raise AssertionError("input #%d %.200r: got %.200r, expected %.200r" % (k, inp, out, exp))


_t2_evalplus_check()
"""


def _plus_text(prompt: str) -> tuple[str, str]:
    """(problem statement, example assert) from MBPP+'s docstring-style ``prompt`` field."""
    body = prompt.strip().strip('"').strip()
    lines = body.split("\n")
    asserts = [line for line in lines if line.strip().startswith("assert")]
    text = "\n".join(line for line in lines if not line.strip().startswith("assert")).strip()
    if not text or not asserts:
        raise ValueError("the prompt needs a statement and an example assert")
    return text, "\n".join(asserts)


def _plus_example(row: dict, fallback_id: str) -> dict:
    task_id = require_str(row, "task_id")
    text, example_test = _plus_text(require_str(row, "prompt"))
    base, plus = row["base_input"], row["plus_input"]
    if plus == {}:  # Mbpp/793 in v0.1.0 ships "plus_input": {} (no plus tests), as EvalPlus reads it
        plus = []
    if not isinstance(base, list) or not isinstance(plus, list) or not base:
        raise ValueError("base_input/plus_input must be lists of argument lists")
    atol = float(row.get("atol") or 0)
    return {
        "id": task_id,
        "task_number": int(task_id.rsplit("/", 1)[-1]),
        "text": text,
        "example_test": example_test,
        "entry_point": require_str(row, "entry_point"),
        "canonical_solution": require_str(row, "canonical_solution"),
        "base_input": base,
        "plus_input": plus,
        "atol": atol,
    }


def _plus_program(solution: str | None, example: dict) -> CheckProgram | None:
    if solution is None:
        return None
    header = (
        f"_T2_ENTRY = {example['entry_point']!r}\n_T2_ATOL = {example['atol']!r}\n"
        f"_T2_TASK_NUMBER = {example['task_number']!r}\n"
        f"_T2_REFERENCE = {example['canonical_solution']!r}\n"
        f"_T2_INPUTS = {json.dumps(example['base_input'] + example['plus_input'])!r}\n"
    )
    return check_program(solution, header + _PLUS_DRIVER)


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
)
