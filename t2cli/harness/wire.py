"""The checker and the solution in two processes, joined by pipes that carry plain values only.

The solution process runs the untrusted code and answers requests ("call this function with these
arguments", "read this attribute"); the checker process runs the trusted tests, in which every
function of the solution is a `Remote` stub. What crosses the pipe is JSON with a type tag per value
(``["i", "ff"]``, ``["t", [...]]``, ...), and the checker rebuilds exact builtin values from it: a
result is a plain ``int``/``str``/``tuple``/... whatever object the solution built, so its own
``__eq__`` never runs in the checker, and nothing the solution patches in its own process (builtins,
``json``, the tests' helpers) exists in the checker's. Objects that are not plain data stay in the
solution process and come back as opaque `Remote` handles: they can be called, their attributes
read, and passed back as arguments, but they have no truth value and compare equal to nothing.

Standard library only: this module is loaded by ``box.py`` inside the sandbox.
"""

from __future__ import annotations

import ast
import builtins
import json
import sys
from collections.abc import Callable
from typing import Any, BinaryIO

MAX_ITEMS = 1_000_000  # items read from an iterator the solution returns


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed message."""


class SolutionError(Exception):
    """The solution raised an exception that is not a builtin exception type."""


class SolutionExit(BaseException):  # noqa: N818 - mirrors SystemExit; tests must not catch it
    """The solution exited, was killed, or raised SystemExit/KeyboardInterrupt: the check fails."""


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def encode(value: Any, other: Callable[[Any], list]) -> list:
    """A JSON-able tagged form of ``value``; ``other`` encodes what is not plain data.

    Subclasses of builtins are sent as their builtin value (a namedtuple as a tuple, a Counter as a
    dict): the receiver only ever sees the data, never the subclass's methods.

    >>> encode((1, "a", [2.5, None]), repr)
    ['t', [['i', '1'], ['s', 'a'], ['l', [['f', 2.5], ['n']]]]]
    """
    if value is None:
        return ["n"]
    if value is True or value is False:
        return ["b", bool(value)]
    if isinstance(value, int):
        return ["i", format(int.__int__(value), "x")]  # hex: not bounded by int_max_str_digits
    if isinstance(value, float):
        return ["f", float.__float__(value)]
    if isinstance(value, complex):
        return ["c", float(value.real), float(value.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["y" if isinstance(value, bytes) else "Y", bytes(value).decode("latin-1")]
    if isinstance(value, dict):
        return ["d", [[encode(k, other), encode(v, other)] for k, v in dict.items(value)]]
    for kind, tag in ((list, "l"), (tuple, "t"), (set, "S"), (frozenset, "F")):
        if isinstance(value, kind):
            return [tag, [encode(v, other) for v in kind.__iter__(value)]]
    if hasattr(type(value), "__next__") and hasattr(type(value), "__iter__"):  # generators, map, zip...
        items = []
        for item in value:
            if len(items) >= MAX_ITEMS:
                raise ValueError(f"the returned iterator has more than {MAX_ITEMS} items")
            items.append(encode(item, other))
        return ["g", items]
    return other(value)


def decode(data: Any, remote: Callable[[list], Any]) -> Any:
    """The value of a tagged form, built from exact builtin types; ``remote`` resolves ``["r", ...]``.

    Raises `ProtocolError` on anything malformed.

    >>> decode(['t', [['i', 'ff'], ['S', [['s', 'x']]]]], None)
    (255, {'x'})
    """
    if type(data) is not list or not data or type(data[0]) is not str:
        raise ProtocolError(f"not a tagged value: {repr(data)[:80]}")
    tag, n = data[0], len(data)
    if tag == "n" and n == 1:
        return None
    if tag == "b" and n == 2 and type(data[1]) is bool:
        return data[1]
    if tag == "i" and n == 2 and type(data[1]) is str:
        try:
            return int(data[1], 16)
        except ValueError:
            raise ProtocolError("bad integer") from None
    if tag == "f" and n == 2 and type(data[1]) in (int, float):
        return float(data[1])
    if tag == "c" and n == 3 and all(type(x) in (int, float) for x in data[1:]):
        return complex(float(data[1]), float(data[2]))
    if tag == "s" and n == 2 and type(data[1]) is str:
        return data[1]
    if tag in ("y", "Y") and n == 2 and type(data[1]) is str:
        try:
            raw = data[1].encode("latin-1")
        except UnicodeEncodeError:
            raise ProtocolError("bad bytes") from None
        return raw if tag == "y" else bytearray(raw)
    if tag in ("l", "t", "S", "F", "g", "d") and n == 2 and type(data[1]) is list:
        if tag == "d":
            out = {}
            for pair in data[1]:
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("bad dict item")
                out[decode(pair[0], remote)] = decode(pair[1], remote)
            return out
        items = [decode(v, remote) for v in data[1]]
        return _same_order_set(items) if tag == "S" else {"l": list, "t": tuple, "F": frozenset, "g": iter}[tag](items)
    if tag == "r" and remote is not None:
        return remote(data)
    raise ProtocolError(f"bad value with tag {repr(tag)[:20]}")


def _same_order_set(items: list) -> set:
    """A set of ``items`` that, where possible, iterates in their order (the sender's set's order).

    Iteration order follows CPython's hash table, which depends on how a set was built: a literal
    ``{12, 13, 14, 15, 16}`` iterates from 16. Programs that turn a set into a tuple depend on it, so
    the constructions a sender's set most likely came from are tried in turn.
    """
    candidates = [lambda: set(frozenset(items)), lambda: set(items)]
    try:
        ordered = sorted(items)
        candidates.append(lambda: set(frozenset(ordered)))
    except TypeError:
        pass
    for build in candidates:
        value = build()
        if list(value) == items:
            return value
    return set(items)


# --------------------------------------------------------------------------------------------
# Messages: one JSON document per line
# --------------------------------------------------------------------------------------------


def send(out: BinaryIO, message: dict) -> None:
    out.write(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")
    out.flush()


def receive(inp: BinaryIO) -> dict:
    line = inp.readline()
    if not line:
        raise SolutionExit("the solution process ended")
    try:
        message = json.loads(line)
    except ValueError:
        raise ProtocolError("the solution process sent malformed data") from None
    if type(message) is not dict:
        raise ProtocolError("the solution process sent malformed data")
    return message


# --------------------------------------------------------------------------------------------
# The solution side
# --------------------------------------------------------------------------------------------


class _Sink:
    """A stdout that swallows everything (the solution's prints are not part of its answer)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


def _error(exc: BaseException) -> dict:
    return {"err": [type(exc).__name__, str(exc)[:2000]], "exit": not isinstance(exc, Exception)}


def serve(source: str, inp: BinaryIO, out: BinaryIO) -> None:
    """Run ``source`` in a fresh namespace, then answer the checker's requests until the pipe closes.

    Runs untrusted code: nothing here is relied on by the checker, which validates every reply.
    """
    sys.stdout = _Sink()
    namespace: dict[str, Any] = {"__name__": "t2_solution", "__builtins__": builtins}
    handles: list[Any] = []

    def keep(value: Any) -> list:
        handles.append(value)
        return ["r", len(handles) - 1, type(value).__name__[:100]]

    def resolve(data: list) -> Any:
        if len(data) < 2 or type(data[1]) is not int or not 0 <= data[1] < len(handles):
            raise ProtocolError("unknown handle")
        return handles[data[1]]

    try:
        exec(compile(source, "<solution>", "exec"), namespace)
        reply: dict = {"ok": ["n"]}
    except BaseException as exc:  # noqa: BLE001 - reported to the checker, which fails the check
        reply = _error(exc)
    send(out, reply)
    if "err" in reply:
        return
    while True:
        try:
            request = receive(inp)
        except SolutionExit:
            return
        try:
            target = request["target"]
            if target[0] == "name":
                if target[1] not in namespace:
                    raise NameError(f"name {target[1]!r} is not defined")
                obj = namespace[target[1]]
            else:
                obj = resolve(target)
            if request["op"] == "ref":
                send(out, {"ok": keep(obj)})
                continue
            if request["op"] == "getattr":
                result = getattr(obj, request["name"])
            else:
                args = [decode(a, resolve) for a in request["args"]]
                kwargs = {k: decode(v, resolve) for k, v in request["kwargs"]}
                result = obj(*args, **kwargs)
            reply = {"ok": encode(result, keep)}
        except BaseException as exc:  # noqa: BLE001 - reported to the checker
            reply = _error(exc)
        send(out, reply)


# --------------------------------------------------------------------------------------------
# The checker side
# --------------------------------------------------------------------------------------------


class Connection:
    """The checker's end of the pipes to the solution process: one request, one reply."""

    def __init__(self, out: BinaryIO, inp: BinaryIO) -> None:
        self.out, self.inp = out, inp

    def _arg(self, value: Any) -> list:
        if isinstance(value, Remote):
            if value._target[0] == "name":  # the solution's function itself: get a handle to it
                value = self.request(value._target, "ref")
            return ["r", value._target[1]]
        raise TypeError(f"cannot pass a {type(value).__name__} to the solution")

    def request(self, target: list, op: str, *args: Any, **kwargs: Any) -> Any:
        message: dict[str, Any] = {"op": op, "target": target}
        if op == "getattr":
            message["name"] = args[0]
        elif op == "call":
            message["args"] = [encode(a, self._arg) for a in args]
            message["kwargs"] = [[str(k), encode(v, self._arg)] for k, v in kwargs.items()]
        send(self.out, message)
        return self.reply()

    def reply(self) -> Any:
        message = receive(self.inp)
        if "ok" in message:
            return decode(message["ok"], lambda data: Remote(self, ["r", _handle_id(data)], _label(data)))
        err = message.get("err")
        if type(err) is not list or len(err) != 2 or not all(type(x) is str for x in err):
            raise ProtocolError("the solution process sent malformed data")
        name, text = err
        if message.get("exit") is not False:
            raise SolutionExit(f"{name}: {text}")
        kind = getattr(builtins, name, None)
        if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
            raise kind(text)
        raise SolutionError(f"{name}: {text}")


def _handle_id(data: list) -> int:
    if len(data) != 3 or type(data[1]) is not int:
        raise ProtocolError("bad handle")
    return data[1]


def _label(data: list) -> str:
    return data[2] if type(data[2]) is str else "object"


class Remote:
    """An object that lives in the solution process: callable, attributes readable, nothing else.

    It has no truth value and equals only itself, so a test can only pass on values it received.
    """

    __slots__ = ("_conn", "_target", "_label")

    def __init__(self, conn: Connection, target: list, label: str) -> None:
        self._conn, self._target, self._label = conn, target, label

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._conn.request(self._target, "call", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._conn.request(self._target, "getattr", name)

    def __bool__(self) -> bool:
        raise TypeError(f"the solution returned a {self._label} object, not plain data")

    def __repr__(self) -> str:
        return f"<solution's {self._label}>"


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the tests bind themselves (assignments, parameters, definitions, imports)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def free_names(tests: str, defined: set[str]) -> list[str]:
    """Names the tests read but neither bind nor find in ``defined`` or the builtins.

    >>> free_names("import math\\nassert f(Pair(1)) == math.pi and len(x) == 2", {"x"})
    ['Pair', 'f']
    """
    tree = ast.parse(tests)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return sorted(loaded - _bound_names(tree) - defined - set(dir(builtins)))


def run_tests(spec: dict, conn: Connection) -> None:
    """Run the trusted ``setup`` and ``tests`` of ``spec`` against the solution; raise to fail.

    Names the tests use but do not define become: the standard-library module of that name
    (imported here, never the solution's), else a `Remote` stub of the solution's object; the
    names in ``spec["remote"]`` (the entry point) are always the solution's.
    """
    message = receive(conn.inp)  # the solution has run its top level
    if "err" in message:
        err = message["err"]
        raise SolutionExit(f"the solution failed to load: {str(err)[:300]}")
    namespace: dict[str, Any] = {"__name__": "t2_tests", "__builtins__": builtins}
    exec(compile(spec["setup"], "<setup>", "exec"), namespace)
    for name in free_names(spec["tests"], set(namespace)):
        if name in sys.stdlib_module_names:
            namespace[name] = __import__(name)
        else:
            namespace[name] = Remote(conn, ["name", name], name)
    for name in spec["remote"]:
        namespace[name] = Remote(conn, ["name", name], name)
    exec(compile(spec["tests"], "<tests>", "exec"), namespace)


__all__ = ["Connection", "ProtocolError", "Remote", "SolutionError", "SolutionExit", "decode", "encode", "run_tests"]
