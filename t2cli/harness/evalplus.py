"""The MBPP+ oracle, run in the checker process: the solution's output on every input must match the
canonical solution's, compared like EvalPlus (evalplus/eval/__init__.py ``check_output``,
evalplus/data/mbpp.py ``mbpp_deserialize_inputs``).

JSON inputs get their tuple/set/complex types back per task id, some tasks compare as sets or as
"returned something", floats compare with atol (1e-6 when the dataset gives 0), and two problems
with ambiguous statements accept an alternative reading. The canonical solution runs here, in a
namespace of its own; the candidate is the solution process's function (a ``wire.Remote``), so its
results arrive as plain values. Standard library only (loaded by ``box.py`` as ``t2_evalplus``).
"""

from __future__ import annotations

import copy
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}
SET_EQ = {
    "similar_elements",
    "find_char_long",
    "common_in_nested_lists",
    "extract_singly",
    "larg_nnum",
    "intersection_array",
    "find_dissimilar",
    "Diff",
}
_PAIRS = (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809)
_NESTED = (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780)


def _tuples(x: Any) -> Any:
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def deserialize(n: int, inputs: list) -> list:
    """The argument lists of task ``Mbpp/n`` with the types JSON lost restored.

    >>> deserialize(106, [[[1], [2, 3]]])
    [[[1], (2, 3)]]
    """
    t = tuple
    if n in _PAIRS:
        return [[t(a) for a in inp] for inp in inputs]
    if n in _NESTED:
        return [[[t(b) for b in a] for a in inp] for inp in inputs]
    if n in (75, 413, 444, 753):
        return [[[t(b) for b in inp[0]], inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0], t(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(i) if isinstance(i, list) and i else {} for i in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in (250, 405, 446, 617, 720, 763, 808):
        return [[t(inp[0]), inp[1]] for inp in inputs]
    if n in (259, 401, 445):
        return [[t(t(b) for b in a) for a in inp] for inp in inputs]
    if n == 278:
        return [[t(t(i) if isinstance(i, list) else i for i in inp[0])] for inp in inputs]
    if n == 307:
        return [[t(inp[0]), inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{k: t(v) for k, v in inp[0].items()}] + inp[1:] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in (580, 615, 791):
        return [_tuples(inp) for inp in inputs]
    return inputs


def _pyramid_area(base_edge: float, height: float) -> float:  # Mbpp/581 read with the perpendicular height
    slant = math.sqrt((base_edge / 2) ** 2 + height**2)
    return round(base_edge**2 + 2 * base_edge * slant)


def _digit_distance(a: int, b: int) -> int:  # Mbpp/558 read with zero padding
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(width), y.zfill(width)))


def _is_floats(x: Any) -> bool:
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return type(x).__name__ == "ndarray" and str(x.dtype) in ("float64", "float32")


def _flat(x: Any) -> list:
    return [v for i in x for v in _flat(i)] if isinstance(x, (list, tuple)) else [x]


def _allclose(out: Any, exp: Any, tol: float) -> bool:
    try:
        import numpy
    except ImportError:
        a, b = _flat(out), _flat(exp)  # numpy.allclose's rule, element by element
        return len(a) == len(b) and all(x == y or abs(x - y) <= tol + 1e-07 * abs(y) for x, y in zip(a, b))
    return bool(numpy.allclose(out, exp, rtol=1e-07, atol=tol))


def output_ok(entry: str, atol: float, inp: list, out: Any, exp: Any) -> bool:
    """Whether ``out`` is an acceptable output of task ``entry`` on ``inp`` (``exp``: the canonical one).

    >>> output_ok("add", 0.0, [1, 2], 3.0000001, 3.0), output_ok("add", 0.0, [1, 2], 4, 3)
    (True, False)
    """
    exact = out == exp
    if entry == "are_equivalent":
        exact = True
    elif entry == "sum_div":
        exact = exact or out == 0
    elif entry == "surface_Area":
        exact = exact or abs(out - _pyramid_area(*inp)) <= atol
    elif entry == "digit_distance_nums":
        exact = exact or out == _digit_distance(*inp)
    elif entry in SET_EQ:
        exact = set(out) == set(exp)
    elif entry in NOT_NONE:
        exact = out == exp if isinstance(out, bool) else exp == (out is not None)
    tol = 1e-6 if atol == 0 and _is_floats(exp) else atol
    if not exact and tol != 0:
        if type(out) is not type(exp):
            return False
        if isinstance(exp, (list, tuple)) and len(out) != len(exp):
            return False
        return _allclose(out, exp, tol)
    return bool(exact)


def _transfer_s(args: Any, result: Any) -> float:
    """Seconds to carry ``args`` to the solution process and ``result`` back (encode, JSON, decode):
    the candidate is called across a pipe, the canonical solution in this process, so its time
    limit counts the transfer the reference would also pay (a large returned list can take longer
    to carry than to compute)."""
    wire = sys.modules.get("t2_wire")
    if wire is None:
        return 0.0
    start = time.perf_counter()
    try:
        for value in (args, result):
            wire.decode(json.loads(json.dumps(wire.encode(value, lambda other: ["n"]))), None)
    except Exception:
        return 0.0
    return time.perf_counter() - start


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeoutError("time limit for one input exceeded")


def check(
    candidate: Callable[..., Any], *, entry: str, atol: float, task_number: int, reference: str, inputs: str
) -> None:
    """Raise AssertionError unless ``candidate`` matches the canonical solution on every input.

    ``inputs`` is the JSON list of argument lists; each call of the candidate gets
    max(1 s, 4x the canonical solution's time on that input).
    """
    namespace: dict[str, Any] = {"__name__": "t2_reference"}
    exec(compile(reference, "<canonical solution>", "exec"), namespace)
    expected_fn = namespace[entry]
    signal.signal(signal.SIGALRM, _on_alarm)
    for k, inp in enumerate(deserialize(task_number, json.loads(inputs))):
        start = time.perf_counter()
        exp = expected_fn(*copy.deepcopy(inp))
        if entry in NOT_NONE:
            exp = exp is not None
        reference_s = time.perf_counter() - start + _transfer_s(inp, exp)
        signal.setitimer(signal.ITIMER_REAL, max(1.0, 4.0 * reference_s))
        try:
            out = candidate(*copy.deepcopy(inp))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not output_ok(entry, atol, inp, out, exp):
            raise AssertionError(f"input #{k} {repr(inp)[:200]}: got {repr(out)[:200]}, expected {repr(exp)[:200]}")
