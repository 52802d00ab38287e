"""Tests for t2cli.harness.wire: what crosses the pipe between the solution and the checker is plain
data of exact builtin types, whatever the solution sends."""

from __future__ import annotations

import collections
import enum
import math

import pytest

from t2cli.harness.wire import ProtocolError, Remote, decode, encode, free_names


def _keep(value):
    return ["r", 0, type(value).__name__]


def _exact(a, b) -> bool:
    """Equal, with the same type at every level (so 1 vs True vs 1.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(_exact(k, k2) and _exact(a[k], b[k2]) for k, k2 in zip(a, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_exact(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        pytest.param(-(10**5000), id="huge-int"),  # beyond int_max_str_digits: sent in hex
        1.5,
        float("inf"),
        float("nan"),
        2 - 3j,
        "é\x00",
        b"\xff\x00",
        bytearray(b"ab"),
        [1, [2.0, (3, "x")], {"k": {1, 2}}],
        {(1, 2): frozenset({"a"}), 3: None},
        (),
        set(),
    ],
)
def test_plain_values_round_trip_with_their_exact_types(value):
    back = decode(encode(value, _keep), None)
    assert _exact(back, value)


class Liar(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class Colour(enum.IntEnum):
    RED = 1


def test_subclasses_arrive_as_their_builtin_value():
    point = collections.namedtuple("Point", "x y")
    for value, expected in [
        (Liar("abc"), "abc"),
        (point(1, 2), (1, 2)),
        (collections.Counter("aab"), {"a": 2, "b": 1}),
        (collections.OrderedDict(a=1), {"a": 1}),
        (Colour.RED, 1),
        ([Liar("")], [""]),
    ]:
        back = decode(encode(value, _keep), None)
        assert _exact(back, expected)
    assert decode(encode(Liar("abc"), _keep), None) != "xyz"  # str's own __eq__ now


def test_iterators_are_read_and_other_objects_stay_remote():
    back = decode(encode((i * i for i in range(3)), _keep), None)
    assert not isinstance(back, list) and list(back) == [0, 1, 4]
    assert encode(object(), _keep) == ["r", 0, "object"]
    assert decode(["r", 7, "Pair"], lambda data: data[1]) == 7


@pytest.mark.parametrize(
    "data",
    [
        "s",
        [],
        ["i", 5],
        ["i", "zz"],
        ["s", 1],
        ["b", 1],
        ["f", "1"],
        ["c", 1],
        ["y", "\u0100"],
        ["l", "abc"],
        ["d", [[["i", "1"]]]],
        ["t", [["n"], "x"]],
        ["q", 1],
        ["r", 0, "x"],  # handles only where the caller expects them
        ["S", [["l", []]]],  # unhashable set element: a TypeError, never a value
    ],
)
def test_malformed_data_is_refused(data):
    with pytest.raises((ProtocolError, TypeError)):
        decode(data, None)


def test_remote_objects_are_opaque():
    remote = Remote(None, ["r", 0], "Pair")  # type: ignore[arg-type]
    assert remote != remote.__class__(None, ["r", 0], "Pair")  # type: ignore[arg-type]
    assert remote != 0 and remote != "" and remote != ()  # noqa: PLC1901
    with pytest.raises(TypeError):
        bool(remote)
    with pytest.raises(TypeError):
        iter(remote)
    with pytest.raises(AttributeError):
        remote.__len__  # noqa: B018
    assert repr(remote) == "<solution's Pair>"


def test_free_names_are_what_the_tests_use_without_defining():
    tests = "def check(candidate):\n    assert candidate(1) == helper(2)\n\ncheck(f)\nimport os\nos.getcwd()"
    assert free_names(tests, {"helper"}) == ["f"]
