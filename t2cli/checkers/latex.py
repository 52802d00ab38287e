"""LaTeX answers (MATH style): the last ``\\boxed{}`` of the output, equivalent to the reference.

Equivalent means equal after normalisation (spacing, ``\\left``/``\\right``, ``\\dfrac``,
``\\text{}``, units, ...), numerically equal (a small arithmetic subset of LaTeX is evaluated
without ``eval``), or tuples, intervals and lists of solutions whose elements are equivalent.
"""

from __future__ import annotations

import ast
import math
import re

BOXED_INSTRUCTION = "Solve the problem step by step and put the final answer in \\boxed{}."


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
