"""Answer extractors and checkers: the single source for RL rewards and for evaluation scores.

Each extractor is a tiny function ``text -> str | None`` (None = nothing extractable, which always
counts as wrong); each checker compares an extracted answer with the reference. Tasks
(`t2cli.tasks`) chain them, so training and scoring can never disagree.

Code is never executed here in-process: `CheckProgram` pairs a candidate with its tests, and
`t2cli.sandbox` runs the two in separate, limited processes.
"""

from __future__ import annotations

import ast
import math
import random
import re
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

# --------------------------------------------------------------------------------------------
# Numbers (GSM8K)
# --------------------------------------------------------------------------------------------

# An optional sign (not when it is a minus between two operands: "10-3"), an optional "$", then
# either a thousands-grouped number ("1,000.50") or plain digits, with an optional decimal part.
_NUMBER = re.compile(r"(?<![\w.])(-)?\$?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?!\d)")


def extract_last_number(text: str) -> str | None:
    """The last number in ``text``, commas/$ removed, or None.

    >>> extract_last_number("She pays $1,000.50 in total, so the answer is 1,000.50.")
    '1000.50'
    >>> extract_last_number("Temperature drops to -4 degrees"), extract_last_number("no digits")
    ('-4', None)
    """
    matches = _NUMBER.findall(text or "")
    if not matches:
        return None
    sign, digits = matches[-1]
    return sign + digits.replace(",", "")


def extract_hash_answer(text: str) -> str | None:
    """The number after the last ``####`` (the GSM8K reference format).

    >>> extract_hash_answer("48 + 24 = 72 clips.\\n#### 72")
    '72'
    """
    if "####" not in (text or ""):
        return None
    return extract_last_number(text.rsplit("####", 1)[1])


def parse_number(text: str | None) -> float | None:
    """A float from a number as people write it (commas, $, %, trailing period), or None.

    >>> parse_number("$1,000.00"), parse_number("50%"), parse_number("-3."), parse_number("x")
    (1000.0, 50.0, -3.0, None)
    """
    if text is None:
        return None
    s = text.strip().replace(",", "").replace("$", "").replace("%", "").rstrip(".").strip()
    try:
        value = float(s)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numbers_equal(pred: str | None, ref: str | None, tol: float = 1e-6) -> bool:
    """Numeric equality within ``tol``; False when either side is not a number.

    >>> numbers_equal("1,000.00", "1000"), numbers_equal("0.5", ".5"), numbers_equal(None, "1")
    (True, True, False)
    """
    a, b = parse_number(pred), parse_number(ref)
    return a is not None and b is not None and abs(a - b) <= tol


# --------------------------------------------------------------------------------------------
# Multiple choice (ARC)
# --------------------------------------------------------------------------------------------

DEFAULT_CHOICE_LABELS = ("A", "B", "C", "D", "E", "1", "2", "3", "4", "5")

_ANSWER_IS = re.compile(
    r"(?:[Aa]nswer|ANSWER|correct (?:option|choice))\s*(?:is\s*:?|:)\s*"
    r"(?:\(\s*([A-Za-z0-9])\s*\)|([A-Z0-9])(?![\w']))"
)
# "(B) is the correct answer", "B is the best option"
_LABEL_IS_ANSWER = re.compile(
    r"(?:\(\s*([A-Za-z0-9])\s*\)|(?<![\w'])([A-Z0-9]))\s+is\s+(?:the\s+)?(?:correct|right|best|final)\s+"
    r"(?:answer|option|choice)"
)
_WHOLE_LABEL = re.compile(r"[\s(]*([A-Za-z0-9])[\s).!\"'`]*")


def extract_choice(text: str, labels: Sequence[str] = DEFAULT_CHOICE_LABELS) -> str | None:
    """The option label the text states as its final answer; None when it states none.

    A label counts only where it is given as the answer, not where it is discussed: the last
    "answer is (X)" / "answer is X" / "Answer: X" / "correct option is (X)" (also "final answer",
    "correct answer"); else the last "(X) is the correct answer" (or "right", "best", "final";
    "option", "choice"); else the last \\boxed{X}; else a text that is nothing but the label
    ("B", "(B).").  A model that walks through the options ("(D) Sunlight is converted …") and
    stops without stating one gets None, which scores as wrong.

    >>> extract_choice("Plants need light. The answer is (B).", "ABCD")
    'B'
    >>> extract_choice("(D) Sunlight is converted to sugar. This step is not the first.", "ABCD")
    >>> extract_choice("Answer: c", "ABCD"), extract_choice("A plant grows.", "ABCD"), extract_choice("(C)", "ABCD")
    (None, None, 'C')
    """
    text = (text or "").replace("*", "")
    valid = {str(label).upper(): str(label) for label in labels}
    for pattern in (_ANSWER_IS, _LABEL_IS_ANSWER):
        for match in reversed(list(pattern.finditer(text))):
            in_parens, bare = match.groups()
            label = (in_parens or "").upper() or bare
            if label in valid:
                return valid[label]
    boxed = extract_boxed(text)
    if boxed is not None:
        label = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", boxed).strip().strip("()").strip().upper()
        if label in valid:
            return valid[label]
    whole = _WHOLE_LABEL.fullmatch(text)
    if whole and whole.group(1).upper() in valid and (whole.group(1).isupper() or whole.group(1).isdigit()):
        return valid[whole.group(1).upper()]
    return None


def choice_correct(
    pred: str | None,
    key: str,
    labels: Sequence[str],
    *,
    random_letter_credit: bool = False,
    rng: random.Random | None = None,
) -> bool:
    """Strict label match. With ``random_letter_credit`` (the reference code's behaviour, off by
    default) an unreadable answer is replaced by a label drawn from ``rng``.

    >>> choice_correct("B", "B", "ABCD"), choice_correct(None, "B", "ABCD")
    (True, False)
    """
    if pred is None and random_letter_credit:
        pred = (rng or random.Random(0)).choice(list(labels))
    return pred is not None and str(pred).upper() == str(key).upper()


# --------------------------------------------------------------------------------------------
# LaTeX answers (MATH)
# --------------------------------------------------------------------------------------------


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed),
    or of ``\\boxed 5``.

    >>> extract_boxed(r"so $x = \\boxed{\\frac{1}{2}}$."), extract_boxed(r"\\boxed{3")
    ('\\\\frac{1}{2}', None)
    """
    text = text or ""
    starts = sorted(m.end() for m in re.finditer(r"\\(?:boxed|fbox)(?![a-zA-Z])", text))
    for start in reversed(starts):
        i = start
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j]
        elif i > start:  # "\boxed 5": up to the next space or "$"
            match = re.match(r"[^\s$]+", text[i:])
            if match:
                return match.group(0)
    return None


_UNIT_WORDS = (
    "square units|units|unit|degrees|degree|cm|centimeters|meters|metres|km|mm|inches|inch|"
    "feet|foot|ft|yards|miles|mph|hours|hour|minutes|minute|seconds|sec|days|dollars|cents|"
    "pounds|lbs|ounces|grams|gm|kg|liters|ways|points|students|people"
)
_TRAILING_UNITS = re.compile(rf"(?<=[\d}}.])\s*(?:{_UNIT_WORDS})(?:\^\{{?[23]\}}?)?$")


def _fix_fracs(s: str) -> str:
    r"""``\frac12`` -> ``\frac{1}{2}``, ``\frac1{2}`` -> ``\frac{1}{2}``, ``\sqrt2`` -> ``\sqrt{2}``."""
    s = re.sub(r"\\frac\s*(\w)\s*(\w)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\w)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\w)", r"\\frac\1{\2}", s)
    return re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)


def normalize_math_answer(answer: str) -> str:
    r"""A canonical string for a LaTeX answer: spacing, ``\left``/``\right``, ``\dfrac``,
    ``\text{}``, units, degrees, ``$``, ``%``, trailing ".", a short "x =" prefix and thousands
    separators are removed or unified.

    >>> normalize_math_answer(r"\$15,\!000"), normalize_math_answer(r"x = \dfrac 12.")
    ('15000', '\\frac{1}{2}')
    >>> normalize_math_answer(r"120^\circ"), normalize_math_answer(r"5\text{ inches}")
    ('120', '5')
    """
    s = (answer or "").strip().replace("\n", " ")
    s = re.sub(r"(?<!\\)\\[!,;:]", "", s)  # thin spaces (not the "\\" of a matrix row break)
    s = re.sub(r"(?<!\\)\\ |~|\\q?quad(?![a-zA-Z])", " ", s)
    s = s.replace("{,}", "").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\[dt]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ(?![a-zA-Z])", "", s)
    s = s.replace("\\%", "").replace("%", "")
    previous = None
    while previous != s:  # \text{...} and friends -> their content, innermost first
        previous = s
        s = re.sub(r"\\(?:text|textbf|textrm|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}", r"\1", s)
    s = s.strip()
    stripped = _TRAILING_UNITS.sub("", s).strip()
    if stripped and stripped != s and re.search(r"\d", stripped):
        s = stripped
    lhs = s.split("=")[0]
    if s.count("=") == 1 and re.fullmatch(r"\s*(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?\s*", lhs):
        s = s.split("=")[1]
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    s = _fix_fracs(s)
    if re.fullmatch(r"-?\d+/\d+", s):
        sign, body = ("-", s[1:]) if s.startswith("-") else ("", s)
        num, den = body.split("/")
        s = f"{sign}\\frac{{{num}}}{{{den}}}"
    s = re.sub(r"(?<![\d])\.(\d)", r"0.\1", s)
    if re.fullmatch(r"\(([A-Za-z])\)", s):  # "(C)" -> "C"
        s = s[1]
    return s


def _brace_group(s: str, i: int) -> tuple[str, int]:
    """The content of the ``{...}`` group starting at ``s[i]`` and the index after it."""
    if i >= len(s) or s[i] != "{":
        raise ValueError("expected '{'")
    depth = 0
    for j in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[j], 0)
        if depth == 0:
            return s[i + 1 : j], j + 1
    raise ValueError("unbalanced braces")


def _latex_to_python(s: str) -> str:
    """Translate a small arithmetic subset of LaTeX into a Python expression (may raise)."""
    out, i = [], 0
    while i < len(s):
        if s.startswith("\\frac", i):
            num, i = _brace_group(s, i + 5)
            den, i = _brace_group(s, i)
            out.append(f"(({_latex_to_python(num)})/({_latex_to_python(den)}))")
        elif s.startswith("\\sqrt", i):
            i += 5
            root = "2"
            if i < len(s) and s[i] == "[":
                end = s.index("]", i)
                root, i = _latex_to_python(s[i + 1 : end]), end + 1
            arg, i = _brace_group(s, i)
            out.append(f"(({_latex_to_python(arg)})**(1/({root})))")
        elif s.startswith("\\pi", i):
            out.append("(pi)")
            i += 3
        elif s.startswith("\\cdot", i) or s.startswith("\\times", i):
            out.append("*")
            i += 5 if s.startswith("\\cdot", i) else 6
        elif s[i] in "{}":
            out.append("(" if s[i] == "{" else ")")
            i += 1
        elif s[i] == "^":
            out.append("**")
            i += 1
        elif s[i] in "0123456789.+-*/() ":
            out.append(s[i])
            i += 1
        else:
            raise ValueError(f"unsupported: {s[i:]!r}")
    expr = "".join(out)
    return re.sub(r"(?<=[\d)])\s*(?=\()", "*", expr)  # implicit products: 2\pi, 2\sqrt{3}


_ALLOWED_OPS = {ast.Add: float.__add__, ast.Sub: float.__sub__, ast.Mult: float.__mul__, ast.Div: float.__truediv__}


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id == "pi":
        return math.pi
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval_node(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > 1024 or (left < 0 and right != int(right)):
                raise ValueError("exponent out of range")
            return float(left**right)
        op = _ALLOWED_OPS.get(type(node.op))
        if op is not None:
            return op(left, right)
    raise ValueError("not arithmetic")


def latex_number(answer: str) -> float | None:
    r"""The numeric value of a normalised answer (integers, decimals, ``\frac``, ``\sqrt``,
    ``\pi``, mixed numbers ``2\frac{1}{3}``), or None.

    >>> latex_number(r"\frac{1}{2}"), latex_number(r"2\frac{1}{2}"), latex_number("x+1")
    (0.5, 2.5, None)
    """
    s = normalize_math_answer(answer)
    mixed = re.fullmatch(r"(-?)(\d+)(\\frac\{\d+\}\{\d+\})", s)
    if mixed:
        s = f"{mixed.group(1)}({mixed.group(2)}+{mixed.group(3)})"
    if not s or not re.search(r"\d|\\pi", s):
        return None
    try:
        value = _eval_node(ast.parse(_latex_to_python(s), mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None
    return value if math.isfinite(value) else None


def _split_top_level(s: str) -> list[str]:
    """Split on commas that are not inside brackets or braces."""
    parts, depth, current = [], 0, []
    for ch in s:
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _outer_brackets(s: str) -> tuple[str, str, str]:
    """("(", ")", inner) when ``s`` is one bracketed group like "(1,2]", else ("", "", s)."""
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return "", "", s
    depth = 0
    for i, ch in enumerate(s):
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if depth == 0 and i < len(s) - 1:
            return "", "", s
    return s[0], s[-1], s[1:-1]


def math_equal(pred: str | None, ref: str | None, rel_tol: float = 1e-6) -> bool:
    r"""Whether two LaTeX answers are equivalent: equal after normalisation, numerically equal,
    tuples/intervals whose elements are equivalent in order, or bare comma-separated lists of
    solutions that are equivalent in any order.

    >>> math_equal(r"0.5", r"\frac12"), math_equal(r"\left( 1, \dfrac{1}{2} \right)", "(1,0.5)")
    (True, True)
    >>> math_equal("0.33", r"\frac{1}{3}"), math_equal(None, "1")
    (False, False)
    """
    if pred is None or ref is None:
        return False
    a, b = normalize_math_answer(pred), normalize_math_answer(ref)
    if not a or not b:
        return False
    if a == b:
        return True
    va, vb = latex_number(a), latex_number(b)
    if va is not None and vb is not None:
        return math.isclose(va, vb, rel_tol=rel_tol, abs_tol=1e-9)
    (open_a, close_a, inner_a), (open_b, close_b, inner_b) = _outer_brackets(a), _outer_brackets(b)
    if (open_a, close_a) != (open_b, close_b):
        return False
    parts_a, parts_b = _split_top_level(inner_a), _split_top_level(inner_b)
    if len(parts_a) != len(parts_b) or (len(parts_a) < 2 and not open_a):
        return False
    if all(math_equal(x, y, rel_tol) for x, y in zip(parts_a, parts_b)):
        return True
    if open_a:  # a tuple or an interval: order matters
        return False
    unmatched = list(parts_b)  # a bare list of solutions ("6, -2"): any order
    for x in parts_a:
        match = next((i for i, y in enumerate(unmatched) if math_equal(x, y, rel_tol)), None)
        if match is None:
            return False
        unmatched.pop(match)
    return True


# --------------------------------------------------------------------------------------------
# Code
# --------------------------------------------------------------------------------------------

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
    from t2cli.sandbox import SandboxLimits, run_check_many

    todo = [(i, p) for i, p in enumerate(programs) if p is not None]
    results = [False] * len(programs)
    if not todo:
        return results
    limits = SandboxLimits(wall_time_s=wall_time_s, cpu_time_s=wall_time_s, memory_mb=memory_mb)
    outcomes = run_check_many([(p.solution, p.checks()) for _, p in todo], limits=limits, max_workers=max_workers)
    for (i, _), outcome in zip(todo, outcomes):
        results[i] = outcome.passed
    return results
