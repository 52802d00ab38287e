"""Extractors and checkers on tables of hand-written model outputs."""

from __future__ import annotations

import random
import time

import pytest

from t2cli.checkers import (
    MAX_EXAMINED_CHARS,
    _parsable_prefix,
    _parse,
    as_function_body,
    check_program,
    choice_correct,
    defines_function,
    drop_example_usage,
    extract_boxed,
    extract_choice,
    extract_code,
    extract_hash_answer,
    extract_last_number,
    latex_number,
    math_equal,
    normalize_math_answer,
    numbers_equal,
    parse_number,
    run_check_programs,
)

# ---------------------------------------------------------------------------------------------
# GSM8K numbers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18.", "18"),
        ("She makes 9 * 2 = $18 every day.", "18"),
        ("She has $1,234.50 left", "1234.50"),
        ("The answer is 1,000,000.", "1000000"),
        ("It drops to -5 degrees", "-5"),
        ("Answer is -0.25", "-0.25"),
        ("10-3=7", "7"),
        ("so 10 - 3 is 7", "7"),
        ("answer: 1,000", "1000"),
        ("That is 50% of the class", "50"),
        ("x=3.", "3"),
        ("12 apples and 5 pears", "5"),
        ("3/4 of them", "4"),
        (".5 of a pie", ".5"),
        ("The answer is 0.5.", "0.5"),
        ("First 2, then 3.\n\nThe answer is 42", "42"),
        ("He paid $ 20", "20"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_last_number(text: str, expected: str | None) -> None:
    assert extract_last_number(text) == expected


@pytest.mark.parametrize(
    ("solution", "expected"),
    [
        ("48/2 = <<48/2=24>>24 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("#### -3", "-3"),
        ("no hashes 5", None),
        ("####", None),
    ],
)
def test_extract_hash_answer(solution: str, expected: str | None) -> None:
    assert extract_hash_answer(solution) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$1,000.00", 1000.0),
        ("50%", 50.0),
        ("-3.", -3.0),
        (".5", 0.5),
        (" 7 ", 7.0),
        ("x", None),
        (None, None),
        ("", None),
        ("inf", None),
        ("nan", None),
    ],
)
def test_parse_number(text: str | None, value: float | None) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("pred", "ref", "equal"),
    [
        ("1,000.00", "1000", True),
        ("1000", "1000", True),
        ("18.0", "18", True),
        ("0.5", ".5", True),
        ("-4", "-4", True),
        ("4", "-4", False),
        ("18.0000001", "18", True),
        ("18.001", "18", False),
        ("17", "18", False),
        (None, "18", False),
        ("eighteen", "18", False),
    ],
)
def test_numbers_equal(pred: str | None, ref: str, equal: bool) -> None:
    assert numbers_equal(pred, ref) is equal


# ---------------------------------------------------------------------------------------------
# ARC option labels
# ---------------------------------------------------------------------------------------------

LETTERS = ("A", "B", "C", "D")
DIGITS = ("1", "2", "3", "4")


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("Plants need light. The answer is (B).", LETTERS, "B"),
        ("The answer is B", LETTERS, "B"),
        ("The answer is: (B)", LETTERS, "B"),
        ("Answer: C", LETTERS, "C"),
        ("answer: (d)", LETTERS, "D"),
        ("**Answer: B**", LETTERS, "B"),
        ("So the correct option is (A) because", LETTERS, "A"),
        ("A plant needs water. The answer is (D)", LETTERS, "D"),
        ("The answer is (B). Wait, no: the answer is (C).", LETTERS, "C"),
        ("The final answer is $\\boxed{B}$", LETTERS, "B"),
        ("so \\boxed{\\text{(C)}}", LETTERS, "C"),
        ("(C) is the correct answer.", LETTERS, "C"),
        ("Therefore, B is the best option.", LETTERS, "B"),
        ("The correct answer is: (A) Evaporation.", LETTERS, "A"),
        ("B.", LETTERS, "B"),
        ("(D)", LETTERS, "D"),
        ("The answer is A", LETTERS, "A"),
        ("The answer is (2)", DIGITS, "2"),
        ("Answer: 3", DIGITS, "3"),
        ("4", DIGITS, "4"),
        ("The answer is (E)", ("A", "B", "C", "D", "E"), "E"),
        # strict: a label that is discussed, not stated as the answer -> None
        ("(A) Water evaporates.\n(D) Sunlight is converted to sugar. This step is not first.", LETTERS, None),
        ("Between the options I pick (C)", LETTERS, None),
        ("so (C)", LETTERS, None),
        ("I think B is right", LETTERS, None),
        ("so (4)", DIGITS, None),
        ("b", LETTERS, None),
        ("A plant needs light.", LETTERS, None),
        ("The answer is a bacterial population.", LETTERS, None),
        ("The answer is (E)", LETTERS, None),
        ("Answer: c", LETTERS, None),
        ("There are 2 steps and 3 cells.", DIGITS, None),
        ("I do not know.", LETTERS, None),
        ("", LETTERS, None),
    ],
)
def test_extract_choice(text: str, labels: tuple[str, ...], expected: str | None) -> None:
    assert extract_choice(text, labels) == expected


def test_choice_correct_is_strict_by_default() -> None:
    assert choice_correct("B", "B", LETTERS)
    assert choice_correct("b", "B", LETTERS)
    assert not choice_correct("C", "B", LETTERS)
    assert not choice_correct(None, "B", LETTERS)


def test_random_letter_credit_is_opt_in_and_seeded() -> None:
    draws = [
        choice_correct(None, "B", LETTERS, random_letter_credit=True, rng=random.Random(seed)) for seed in range(200)
    ]
    assert 20 < sum(draws) < 80  # about a quarter of unreadable answers get credit
    again = [
        choice_correct(None, "B", LETTERS, random_letter_credit=True, rng=random.Random(seed)) for seed in range(200)
    ]
    assert draws == again
    assert not choice_correct("C", "B", LETTERS, random_letter_credit=True, rng=random.Random(0))


# ---------------------------------------------------------------------------------------------
# MATH answers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the answer is $\boxed{5}$.", "5"),
        (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"\boxed{\left( 1, \frac{\pi}{2} \right)}", r"\left( 1, \frac{\pi}{2} \right)"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\fbox{7}", "7"),
        (r"\boxed 5$", "5"),
        (r"\boxed {3}", "3"),
        (r"\boxed{\text{(C)}}", r"\text{(C)}"),
        (r"\boxed{2} and a broken \boxed{3", "2"),
        (r"\boxed{3", None),
        ("The answer is 5.", None),
        ("", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("answer", "normal"),
    [
        (r"\$15,\!000", "15000"),
        ("15,000", "15000"),
        (r"x = \dfrac 12.", r"\frac{1}{2}"),
        (r"\tfrac{3}{4}", r"\frac{3}{4}"),
        (r"\frac1{2}", r"\frac{1}{2}"),
        (r"\frac{1}2", r"\frac{1}{2}"),
        (r"\sqrt2", r"\sqrt{2}"),
        ("3/4", r"\frac{3}{4}"),
        (r"120^\circ", "120"),
        (r"120^{\circ}", "120"),
        ("120°", "120"),
        (r"5\text{ inches}", "5"),
        (r"25 \text{ ft}", "25"),
        (r"10\text{ cm}^2", "10"),
        (r"20\%", "20"),
        ("$0.20$", "0.20"),
        (".5", "0.5"),
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\text{(C)}", "C"),
        (r"\text{odd}", "odd"),
        ("y = 2x + 3", "2x+3"),
        (r"\theta = 30", "30"),
        ("2x", "2x"),
        (r"1,\ 2", "1,2"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    ],
)
def test_normalize_math_answer(answer: str, normal: str) -> None:
    assert normalize_math_answer(answer) == normal


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("3", 3.0),
        ("-2.5", -2.5),
        (r"\frac{1}{2}", 0.5),
        (r"-\frac{7}{4}", -1.75),
        (r"\frac{-7}{4}", -1.75),
        (r"2\frac{1}{2}", 2.5),
        (r"\sqrt{16}", 4.0),
        (r"2^{10}", 1024.0),
        (r"\frac{\sqrt{4}}{4}", 0.5),
        ("x+1", None),
        ("", None),
        (r"\frac{1}{0}", None),
        (r"10^{100000}", None),
    ],
)
def test_latex_number(answer: str, value: float | None) -> None:
    result = latex_number(answer)
    assert result == pytest.approx(value) if value is not None else result is None


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("0.5", r"\frac12"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\frac{1}{2}", "1/2"),
        ("x = 5", "5"),
        ("5.", "5"),
        (r"\$15,\!000", "15000"),
        (r"120^\circ", "120"),
        (r"\frac{68}{3}\text{ pounds}", r"\frac{68}{3}"),
        (r"20\%", "20"),
        (r"11\frac{2}{3}", r"\frac{35}{3}"),
        (r"\frac 43", r"\frac{4}{3}"),
        (r"10\sqrt{2}", r"\sqrt{200}"),
        (r"-\frac{7}{4}", "-1.75"),
        ("2^{10}", "1024"),
        (r"(8\sqrt2, \pi/4, \pi/6)", r"\left( 8 \sqrt{2}, \frac{\pi}{4}, \frac{\pi}{6} \right)"),
        ("[-2,0]", "[-2, 0]"),
        (r"(-\infty,0)", r"(-\infty, 0)"),
        ("6, -2", "-2, 6"),
        ("4, -2 + 3i, -2 - 3i", "-2-3i, 4, -2+3i"),
        (r"\text{(C)}", "C"),
        (r"\text{odd}", "odd"),
        ("28 - 2\\pi", "28-2\\pi"),
        (r"\begin{pmatrix} 2/5 \\ -1/5 \end{pmatrix}", r"\begin{pmatrix}2/5\\-1/5\end{pmatrix}"),
    ],
)
def test_math_equal_accepts(pred: str, ref: str) -> None:
    assert math_equal(pred, ref)
    assert math_equal(ref, pred)


@pytest.mark.parametrize(
    ("pred", "ref"),
    [
        ("0.33", r"\frac{1}{3}"),
        ("10", "1"),
        ("[-2,0]", "(-2,0)"),
        ("(6, -2)", "(-2, 6)"),
        ("1,1,2", "1,2,2"),
        ("x+2", "3"),
        ("", "3"),
        (None, "3"),
        ("3", ""),
        ("2x", "2y"),
    ],
)
def test_math_equal_rejects(pred: str | None, ref: str) -> None:
    assert not math_equal(pred, ref)


# ---------------------------------------------------------------------------------------------
# Code extraction
# ---------------------------------------------------------------------------------------------

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
