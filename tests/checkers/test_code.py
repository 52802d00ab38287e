"""Code answers: extraction on tables of hand-written model outputs, check programs in the sandbox."""

from __future__ import annotations

import random
import time

import pytest

from t2cli.checkers.code import (
    CODE_INSTRUCTION,
    MAX_EXAMINED_CHARS,
    _parsable_prefix,
    _parse,
    as_function_body,
    check_program,
    defines_function,
    drop_example_usage,
    entry_point_of,
    example_test_instruction,
    extract_code,
    extract_solution,
    fenced,
    run_check_programs,
)

ADD = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Sure!\n```python\n{ADD}```\nThis adds.", ADD),
        (f"```py\n{ADD}```", ADD),
        (f"```Python\n{ADD}```", ADD),
        (f"```\n{ADD}```", ADD),
        (f"```python\n{ADD}", ADD),  # generation cut before the closing fence
        (f"```python\nprint(add(1, 2))\n```\nand\n```python\n{ADD}```", ADD),  # the block defining it
        (f"```python\nimport math\n```\n```python\n{ADD}```\n```python\n{ADD}\n# second\n```", ADD),
        (f"```text\nadd two numbers\n```\n```python\n{ADD}```", ADD),
        (f"```python\r\n{ADD.replace(chr(10), chr(13) + chr(10))}```", ADD),
        (f"{ADD}\nThis function returns the sum.", ADD),
        (f"Here is the code:\nimport math\n{ADD}Hope it helps!", "import math\n" + ADD),
        ("    return a + b\n\nExplanation: it adds.", "    return a + b\n"),
        ("I cannot write that.", None),
        ("", None),
    ],
)
def test_extract_code(text: str, expected: str | None) -> None:
    assert extract_code(text, "add") == expected


def _code_then_prose(prose_lines: int) -> str:
    return ADD + "".join(f"This line {i} explains how add works.\n" for i in range(prose_lines))


def test_unfenced_extraction_is_not_quadratic() -> None:
    """Code followed by prose: 20,000 lines took 261 s when every prefix was parsed in turn. Now the
    parser's error line guides the search: 100x the lines must not cost 100x the time (quadratic
    would be 10,000x), and the answer is the same code."""
    small, large = _code_then_prose(200), _code_then_prose(20_000)
    start = time.perf_counter()
    assert extract_code(small, "add") == ADD
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    assert extract_code(large, "add") == ADD
    t_large = time.perf_counter() - start
    assert t_large < max(2.0, 20 * t_small), (t_small, t_large)


def test_extraction_examines_a_bounded_prefix() -> None:
    """A 10 MB output is scored in seconds: only its first MAX_EXAMINED_CHARS characters are read."""
    huge = "def add(a, b):\n    return a + b\n" + "x = 1\n" * 1_700_000  # ~10 MB of parsable code
    assert len(huge) > 10_000_000
    start = time.perf_counter()
    code = extract_code(huge, "add")
    assert time.perf_counter() - start < 10.0
    assert code is not None and code.startswith(ADD) and len(code) <= MAX_EXAMINED_CHARS
    fenced_prose = "```python\n" + ADD + "```\n" + "Some prose.\n" * 1_000_000
    start = time.perf_counter()
    assert extract_code(fenced_prose, "add") == ADD
    assert time.perf_counter() - start < 10.0


def test_unfenced_prefix_search_matches_the_exhaustive_one() -> None:
    """The guided search finds what trying every prefix from the longest down finds."""

    def exhaustive(lines: list[str]) -> str | None:
        for end in range(len(lines), 0, -1):
            chunk = "\n".join(lines[:end]).rstrip()
            if chunk and _parse(chunk) is not None:
                return chunk + "\n"
        return None

    rng = random.Random(0)
    pieces = [*ADD.splitlines(), "    if a:", "        return b", "x = (1,", "  2)", "This is prose.", "else:"]
    pieces += ['"""', "print('a'", "]", "    indented prose", "def g(:", "class C:", "    pass", ""]
    for _ in range(300):
        lines = ["def f(x):"] + [rng.choice(pieces) for _ in range(rng.randrange(1, 12))]
        assert _parsable_prefix(lines) == exhaustive(lines), lines


def test_extract_code_without_entry_point_takes_longest_python_block() -> None:
    text = f"```python\nx = 1\n```\n```python\n{ADD}```"
    assert extract_code(text) == ADD


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (ADD + "assert add(1, 2) == 4\n", ADD),
        (ADD + "print(add(1, 2))\n", ADD),
        (ADD + "add(3, 4)\n", ADD),
        (ADD + "n = int(input())\n", ADD + "n = int(input())\n"),  # assignments are kept
        (ADD + "x = add(1, 1)\n", ADD + "x = add(1, 1)\n"),
        ("import sys\nsys.setrecursionlimit(10000)\n" + ADD, "import sys\nsys.setrecursionlimit(10000)\n" + ADD),
        (
            ADD + "if __name__ == '__main__':\n    print(add(1, 2))\n",
            ADD + "if __name__ == '__main__':\n    print(add(1, 2))\n",
        ),
        ("def broken(:\n", "def broken(:\n"),  # does not parse: unchanged
    ],
)
def test_drop_example_usage(code: str, expected: str) -> None:
    assert drop_example_usage(code, "add") == expected


def test_drop_example_usage_passes_none_through() -> None:
    assert drop_example_usage(None, "add") is None


@pytest.mark.parametrize(
    ("code", "name", "expected"),
    [
        (ADD, "add", True),
        ("async def add(a):\n    pass", "add", True),
        ("def add_one(a): pass", "add", False),
        ("class A:\n    def add(self): pass", "add", False),
        ("x = add(1)", "add", False),
    ],
)
def test_defines_function(code: str, name: str, expected: bool) -> None:
    assert defines_function(code, name) is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("return 1\n", "    return 1\n"),
        ("    return 1\n", "    return 1\n"),
        ("x = 1\nreturn x\n", "    x = 1\n    return x\n"),
        ("\n\treturn 1\n", "\n\treturn 1\n"),
    ],
)
def test_as_function_body(code: str, expected: str) -> None:
    assert as_function_body(code) == expected


def test_entry_point_of() -> None:
    assert entry_point_of("assert math.isclose(area(2), 4)") == "area" and entry_point_of("x ==") is None


def test_the_fenced_answer_is_read_back() -> None:
    assert example_test_instruction("assert add(1, 2) == 3").endswith("assert add(1, 2) == 3\n" + CODE_INSTRUCTION)
    assert extract_solution("Here it is:\n" + fenced(ADD + "print(add(1, 2))\n") + "\nDone.", "add") == ADD


# ---------------------------------------------------------------------------------------------
# Check programs in the sandbox
# ---------------------------------------------------------------------------------------------

TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


@pytest.mark.parametrize(
    ("solution", "passes"),
    [
        (ADD, True),
        ("print('x' * 10**6)\n" + ADD, True),  # its output is swallowed and decides nothing
        (ADD + "if __name__ == '__main__':\n    raise SystemExit(1)\n", True),  # demos do not run
        ("def add(a, b):\n    return a - b\n", False),
        ("def add(a, b):\n    raise ValueError\n", False),
        ("import sys\nsys.exit(0)\n", False),  # exiting early is a failure, even with status 0
        ("exit()\n", False),
        ("import os\nos._exit(0)\n", False),  # exit 0 without a verdict
        ("def add(a, b):\n    while True:\n        pass\n", False),
        ("def add(a, b)\n    return a + b\n", False),  # syntax error
    ],
)
def test_check_programs(solution: str, passes: bool) -> None:
    program = check_program(solution, TESTS)
    assert run_check_programs([program], wall_time_s=2.0) == [passes]


def test_run_check_programs_keeps_order_and_skips_none() -> None:
    good, bad = check_program(ADD, TESTS), check_program("def add(a, b):\n    return 0\n", TESTS)
    assert run_check_programs([good, None, bad, good], max_workers=2) == [True, False, False, True]
    assert run_check_programs([None, None]) == [False, False]
    assert run_check_programs([]) == []


def test_check_program_keeps_solution_and_checks_apart() -> None:
    program = check_program(ADD, TESTS, setup="import math", remote=["add"])
    assert program.solution == ADD and "add" not in program.setup
    assert program.checks() == {"setup": "import math", "tests": TESTS, "remote": ["add"]}
