"""LaTeX answers (MATH) on tables of hand-written model outputs."""

from __future__ import annotations

import pytest

from t2cli.checkers.latex import (
    BOXED_INSTRUCTION,
    extract_boxed,
    latex_number,
    math_equal,
    normalize_math_answer,
)


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


def test_the_instruction_asks_for_what_is_read() -> None:
    assert "\\boxed{}" in BOXED_INSTRUCTION and extract_boxed(r"So $\boxed{\frac12}$.") == r"\frac12"
