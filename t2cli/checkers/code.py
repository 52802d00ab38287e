"""Code answers (MBPP / HumanEval style): the program in an output, checked by running tests.

Extraction reads the output as text (fenced blocks first, else the longest parsable run of code)
and never executes it. Checking pairs the candidate with trusted tests in a `CheckProgram`, which
`t2cli.sandbox` runs in two separate, limited processes, so nothing the candidate does can pass
its own tests.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from t2cli.sandbox import SandboxLimits, run_check_many

CODE_INSTRUCTION = "Write the Python function in a single ```python code block."
FUNCTION_INSTRUCTION = "Write the complete function in a single ```python code block."


def example_test_instruction(example_test: str) -> str:
    """`CODE_INSTRUCTION` after one of the tests the code must pass.

    >>> print(example_test_instruction("assert add(1, 2) == 3"))
    Your code should pass this test:
    assert add(1, 2) == 3
    Write the Python function in a single ```python code block.
    """
    return f"Your code should pass this test:\n{example_test}\n{CODE_INSTRUCTION}"


def fenced(code: str) -> str:
    """Code as the instructions ask for it: one ```python block.

    >>> print(fenced("def f():\\n    return 1\\n"))
    ```python
    def f():
        return 1
    ```
    """
    return f"```python\n{code.strip()}\n```"


MAX_EXAMINED_CHARS = 200_000  # of a model output: far beyond any generation budget, bounds the work
MAX_CODE_LINES = 2_000  # of an unfenced answer, from its first line of code
PARSE_BUDGET_CHARS = 2_000_000  # total text parsed while looking for the parsable prefix of one answer
_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_LANGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(?:async\s+def |def |class |import |from \S+ import |@\w|[A-Za-z_]\w*\s*=[^=])")


def defines_function(code: str, name: str) -> bool:
    """Whether ``code`` defines ``name`` at top level (by text, so it works on broken code).

    >>> defines_function("import math\\ndef area(r):\\n    return math.pi*r*r", "area")
    True
    """
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def _parse_error(code: str) -> SyntaxError | ValueError | None:
    """Why ``code`` does not parse (None when it does); silent about invalid escape sequences."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ast.parse(code)
        except (SyntaxError, ValueError) as exc:
            return exc
    return None


def _parse(code: str) -> ast.Module | None:
    """The AST of ``code``, or None; silent about the model's invalid escape sequences."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ast.parse(code)
        except (SyntaxError, ValueError):
            return None


def _parsable_prefix(lines: list[str]) -> str | None:
    """The longest prefix of ``lines`` that parses as Python (prose after the code is dropped).

    Guided by the parser: when a prefix fails at line k, the next candidate ends at line k (a
    longer one still holds the line the parser could not read), or one line earlier when k is the
    last. Prose after code fails on its first line, so this takes a few parses, not one per line;
    the parses stop (None) after ``PARSE_BUDGET_CHARS`` characters in total.
    """
    end, budget = len(lines), PARSE_BUDGET_CHARS
    while end > 0:
        chunk = "\n".join(lines[:end]).rstrip()
        budget -= len(chunk)
        if not chunk or budget < 0:
            return None
        error = _parse_error(chunk)
        if error is None:
            return chunk + "\n"
        line = getattr(error, "lineno", None)
        end = min(end - 1, line) if isinstance(line, int) and line >= 1 else end - 1
    return None


def extract_code(text: str, entry_point: str | None = None) -> str | None:
    """The program in a model answer, or None.

    Fenced blocks first (```python or bare ```; an unterminated last fence counts): the first
    block defining ``entry_point``, else the longest Python block. Without fences: an indented
    body (a completion) up to the first unindented line, or the longest parsable run of code
    starting at the first line that looks like code, so trailing prose is dropped.

    >>> extract_code("Here:\\n```python\\ndef f(x):\\n    return x\\n```\\nDone.")
    'def f(x):\\n    return x\\n'
    >>> extract_code("def f(x):\\n    return x\\nThis returns x."), extract_code("No code.")
    ('def f(x):\\n    return x\\n', None)

    Only the first ``MAX_EXAMINED_CHARS`` characters, and ``MAX_CODE_LINES`` lines of unfenced
    code, are examined, so the time taken is bounded whatever the output.
    """
    text = (text or "")[:MAX_EXAMINED_CHARS].replace("\r\n", "\n")
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text) if body.strip()]
    if blocks:
        python = [body for lang, body in blocks if lang in _PYTHON_LANGS] or [body for _, body in blocks]
        if entry_point:
            for body in python:
                if defines_function(body, entry_point):
                    return body.rstrip() + "\n"
        return max(python, key=len).rstrip() + "\n"
    lines = text.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        return None
    if lines[0][:1] in (" ", "\t"):  # a function body (completion style)
        body = []
        for line in lines:
            if line.strip() and line[:1] not in (" ", "\t"):
                break
            body.append(line)
        return "\n".join(body).rstrip() + "\n"
    for start, line in enumerate(lines):
        if _CODE_START.match(line):
            return _parsable_prefix(lines[start : start + MAX_CODE_LINES])
    return None


def drop_example_usage(code: str | None, entry_point: str | None = None) -> str | None:
    """Remove the model's own top-level ``assert`` lines, ``print(...)``/``input(...)`` calls and
    bare calls of ``entry_point`` (example usage, as EvalPlus's sanitiser does); definitions,
    imports and other statements are kept. Code that does not parse is returned unchanged.

    >>> drop_example_usage("def f(x):\\n    return x\\nassert f(1) == 2\\nprint(f(3))\\n", "f")
    'def f(x):\\n    return x\\n'
    """
    if code is None:
        return None
    tree = _parse(code)
    if tree is None:
        return code
    lines = code.split("\n")
    drop: set[int] = set()
    for node in tree.body:
        removable = isinstance(node, ast.Assert)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            removable = isinstance(func, ast.Name) and func.id in {"print", "input", entry_point}
        if removable:
            drop.update(range(node.lineno - 1, (node.end_lineno or node.lineno)))
    if not drop:
        return code
    kept = [line for i, line in enumerate(lines) if i not in drop]
    return "\n".join(kept).rstrip() + "\n"


def extract_solution(output: str, entry_point: str | None = None) -> str | None:
    """The program a code task checks: `extract_code`, then `drop_example_usage`.

    >>> extract_solution("```python\\ndef f(x):\\n    return x\\nprint(f(1))\\n```", "f")
    'def f(x):\\n    return x\\n'
    """
    return drop_example_usage(extract_code(output, entry_point), entry_point)


def entry_point_of(tests: str) -> str | None:
    """The first function the tests call that is not a builtin (the function to write), or None.

    >>> entry_point_of("assert add(1, 2) == 3\\nassert abs(add(-1, 0)) == 1")
    'add'
    """
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    return None


def as_function_body(code: str) -> str:
    """Indent ``code`` by four spaces unless it already starts indented (body-only answers).

    >>> as_function_body("return 1\\n")
    '    return 1\\n'
    """
    first = next((line for line in code.split("\n") if line.strip()), "")
    return code if first[:1] in (" ", "\t") else textwrap.indent(code, "    ")


@dataclass(frozen=True)
class CheckProgram:
    """A candidate ``solution`` (untrusted) and the checks that decide it (trusted).

    The sandbox runs them in two processes (`t2cli.sandbox.run_check`): ``setup`` then ``tests``
    run in the checker process, where the names in ``remote``, and any name the tests use without
    defining it, are the solution's objects, called across a pipe that carries plain values only.
    A check passes iff the checker says every test passed; nothing the solution does in its own
    process (printing, exiting, patching builtins, returning objects with a custom ``__eq__``) can
    make that happen.
    """

    solution: str
    tests: str
    setup: str = ""
    remote: tuple[str, ...] = ()

    def checks(self) -> dict[str, object]:
        return {"setup": self.setup, "tests": self.tests, "remote": list(self.remote)}


def check_program(solution: str, tests: str, *, setup: str = "", remote: Sequence[str] = ()) -> CheckProgram:
    """Pair ``solution`` (untrusted code) with ``tests`` (trusted code; raise to fail).

    >>> check_program("def f(): return 1", "assert f() == 1", remote=["f"]).remote
    ('f',)
    """
    return CheckProgram(solution, tests, setup, tuple(remote))


def run_check_programs(
    programs: Sequence[CheckProgram | None],
    *,
    wall_time_s: float = 10.0,
    memory_mb: int = 1024,
    max_workers: int | None = None,
) -> list[bool]:
    """Run programs in the sandbox in parallel; None entries (nothing extracted) are False."""
    todo = [(i, p) for i, p in enumerate(programs) if p is not None]
    results = [False] * len(programs)
    if not todo:
        return results
    limits = SandboxLimits(wall_time_s=wall_time_s, cpu_time_s=wall_time_s, memory_mb=memory_mb)
    outcomes = run_check_many([(p.solution, p.checks()) for _, p in todo], limits=limits, max_workers=max_workers)
    for (i, _), outcome in zip(todo, outcomes):
        results[i] = outcome.passed
    return results
