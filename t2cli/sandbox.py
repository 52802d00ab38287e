"""Run untrusted, model-generated Python programs (MBPP / HumanEval style scoring) safely.

Two entry points:

- `run_python`: a program "passes" iff it exits with status 0 within the limits;
- `run_check`: a *solution* (untrusted) and its *checks* (trusted tests) run in two processes of one
  sandbox; it passes iff the checker process reports, over a pipe only it holds, that every test
  passed. The solution's functions are called from the tests across a pipe that carries plain
  values, so nothing the solution does in its own process decides the verdict (see
  ``t2cli/harness/box.py`` and ``t2cli/harness/wire.py``). This is what code tasks use.

The program is hostile until proven otherwise, so no single mechanism is trusted. Layers, outermost first:

1. Evaluator side: a separate interpreter started on ``t2cli/harness/box.py`` by path (``-I -S -B``:
   standard library only, it never imports t2cli), an explicit minimal
   environment, stdin from /dev/null, the program handed over as an unlinked file, a fresh ``mkdtemp``
   working directory deleted afterwards, a new session whose process group is SIGKILLed on wall-time
   timeout *and* after a normal exit, and stdout/stderr captured in anonymous files capped by
   RLIMIT_FSIZE (not pipes), so printing gigabytes or leaving a grandchild behind cannot exhaust or hang us.
2. Kernel, configured by ``box.py`` in the child before the program runs (best-effort where a
   kernel lacks a feature, except the uid drop, which is mandatory for a root evaluator):
   - rlimits: address space, CPU seconds, file size, open files, processes, no core dumps;
   - namespaces: network + IPC + mount + PID for root; user + network + PID for non-root where allowed.
     The PID namespace means everything the program started dies with it, even after ``setsid()``;
     the network namespace has only a downed loopback; the working directory becomes a small private
     tmpfs (root), and directories the sandbox uid could not traverse (e.g. /root, hiding all of it)
     are covered by an empty tmpfs with only the standard library bind-mounted back;
   - Landlock (Linux >= 5.13): read only the standard library and system libraries, write only the
     working directory, no execve at all, no TCP bind/connect (ABI >= 4), no signals or abstract unix
     sockets outside the sandbox (ABI >= 6); also sets no_new_privs;
   - a root evaluator drops to uid/gid 65534 (``nobody``) with no supplementary groups, so file
     permissions apply and RLIMIT_NPROC is enforced (the kernel ignores it for root).
3. A ``sys.addaudithook`` hook (cannot be removed once installed) that refuses file access outside the
   sandbox, sockets, process creation, exec, signals, ctypes and a few introspection escape hatches.
   PEP 578 hooks are not a security boundary by themselves; they make ordinary hostile code fail fast
   and with a clear message, and cover kernels without Landlock or namespaces.

Consequences for legitimate programs: only the standard library is importable, and importing
``subprocess``, ``asyncio``, ``multiprocessing``-spawning code or ``ctypes`` fails by design. Commonly
used modules are imported before the uid drop, so they work even where the other layers are missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

__all__ = ["SandboxLimits", "SandboxResult", "run_check", "run_check_many", "run_python", "run_python_many"]

_Item = TypeVar("_Item")

_SANDBOX_ID = 65534  # uid/gid "nobody": what a root evaluator drops to
_MAX_FILE_BYTES = 16 * 1024 * 1024  # RLIMIT_FSIZE: largest file (and captured stream) the program can write
_DISK_MB = 64  # size of the private tmpfs working directory (root only)
_EXTRA_PROCS = 64  # processes/threads the program may add on top of what its uid already runs
_MAX_OPEN_FILES = 64
_SETUP_FAILED = 125  # exit status of the child when it could not establish the sandbox
_PASS = b"PASS"  # the checker's verdict when every test passed
_MAX_VERDICT_BYTES = 4096
_PRELOAD = (
    "abc array bisect calendar cmath collections collections.abc contextlib copy dataclasses datetime "
    "decimal difflib enum fractions functools hashlib heapq io itertools json math numbers operator pprint "
    "queue random re statistics string struct textwrap time traceback typing unicodedata "
    "encodings.ascii encodings.latin_1 encodings.cp1252 encodings.utf_16 encodings.utf_32 "
    "encodings.unicode_escape encodings.raw_unicode_escape"
).split()


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one program run."""

    wall_time_s: float = 10.0
    cpu_time_s: float = 10.0
    memory_mb: int = 1024  # address-space limit
    max_output_bytes: int = 64_000  # stdout/stderr kept (truncated beyond)

    def __post_init__(self) -> None:
        for name in ("wall_time_s", "cpu_time_s", "memory_mb", "max_output_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run; ``stdout``/``stderr`` hold at most ``max_output_bytes`` bytes each."""

    passed: bool  # exit code 0, within limits
    status: str  # "passed" | "failed" | "timeout" | "error" (sandbox could not run)
    returncode: int | None
    stdout: str
    stderr: str
    wall_time_s: float


_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "harness", "box.py")  # the sandboxed side


def _kill_group(pgid: int) -> None:
    """SIGKILL every process left in the sandbox's process group (it is the child's own session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_capped(f: BinaryIO, limit: int) -> str:
    f.seek(0)
    return f.read(limit).decode("utf-8", errors="replace")


def _remove_tree(path: str) -> None:
    """Delete the working directory, even if the program chmod-ed parts of it (or itself) to 000.

    Root ignores permissions and normally used a tmpfs anyway; a non-root evaluator must restore them.
    Symlinks are never followed, so a planted link cannot redirect the chmod outside the directory.
    """
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    os.chmod(path, 0o700)
    for dirpath, dirnames, _ in os.walk(path):  # top-down: children are fixed before they are listed
        for d in dirnames:
            if not os.path.islink(os.path.join(dirpath, d)):
                os.chmod(os.path.join(dirpath, d), 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _start(
    program: BinaryIO,
    box: str,
    limits: SandboxLimits,
    out: BinaryIO,
    err: BinaryIO,
    audit_hook: bool,
    check: tuple[BinaryIO, int] | None,
) -> subprocess.Popen:
    """Start the child in its own session; it receives the program as an inherited, unlinked file
    (and, for a check, the tests' file and the write end of the verdict pipe)."""
    cfg = {
        "mode": "check" if check else "program",
        "box": os.path.realpath(box),
        "src_fd": program.fileno(),
        "spec_fd": check[0].fileno() if check else -1,
        "verdict_fd": check[1] if check else -1,
        "preload": _PRELOAD,
        "uid": _SANDBOX_ID,
        "gid": _SANDBOX_ID,
        "memory_mb": int(limits.memory_mb),
        "cpu_s": max(1, math.ceil(limits.cpu_time_s)),
        "fsize": max(_MAX_FILE_BYTES, limits.max_output_bytes),
        "nofile": _MAX_OPEN_FILES,
        "extra_procs": _EXTRA_PROCS,
        "disk_mb": _DISK_MB,
        "setup_failed": _SETUP_FAILED,
        "audit": audit_hook,
    }
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": box,
        "TMPDIR": box,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    fds = (program.fileno(), check[0].fileno(), check[1]) if check else (program.fileno(),)
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", _CHILD, json.dumps(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        cwd=box,
        env=env,
        close_fds=True,
        pass_fds=fds,
        start_new_session=True,
    )


def _read_verdict(fd: int) -> bytes:
    """What the checker wrote to the verdict pipe (everything that could write to it has exited)."""
    os.set_blocking(fd, False)
    chunks = []
    while sum(map(len, chunks)) < _MAX_VERDICT_BYTES:
        try:
            chunk = os.read(fd, _MAX_VERDICT_BYTES)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _wait(proc: subprocess.Popen, deadline: float) -> tuple[int, bool]:
    """Wait until the child exits or the deadline passes, then kill its whole group: (returncode, timed_out).

    Polls without reaping (WNOWAIT): until we reap it, the exited leader keeps its process group id
    reserved, so the group kill cannot hit an unrelated process that reused the number.
    """
    timed_out, delay = False, 0.001
    try:
        while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                timed_out = True
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
    finally:
        _kill_group(proc.pid)  # also on KeyboardInterrupt in the evaluator
        returncode = proc.wait()
    return returncode, timed_out


def _run(program: str, limits: SandboxLimits, audit_hook: bool = True, check: str | None = None) -> SandboxResult:
    """Run one program, or with ``check`` (the tests as JSON) one solution under its checker.

    ``audit_hook=False`` exists only so tests can check the kernel layers alone.
    """
    start = time.monotonic()
    box = tempfile.mkdtemp(prefix="t2-sandbox-")
    verdict = b""
    try:
        if os.geteuid() == 0:
            os.chown(box, _SANDBOX_ID, _SANDBOX_ID)
        with contextlib.ExitStack() as stack:
            src, out, err = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(3))
            src.write(program.encode("utf-8", errors="replace"))
            src.seek(0)
            channel = None
            if check is not None:
                spec = stack.enter_context(tempfile.TemporaryFile())
                spec.write(check.encode("utf-8"))
                spec.seek(0)
                read_end, write_end = os.pipe()
                stack.callback(os.close, read_end)
                channel = (spec, write_end)
            try:
                try:
                    proc = _start(src, box, limits, out, err, audit_hook, channel)
                finally:
                    if channel is not None:
                        os.close(write_end)  # from now on only the checker holds the write end
            except OSError as e:
                elapsed = time.monotonic() - start
                return SandboxResult(False, "error", None, "", f"sandbox: cannot start: {e}", elapsed)
            returncode, timed_out = _wait(proc, start + limits.wall_time_s)
            if channel is not None:
                verdict = _read_verdict(read_end)
            stdout, stderr = _read_capped(out, limits.max_output_bytes), _read_capped(err, limits.max_output_bytes)
    finally:
        _remove_tree(box)
    if timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif returncode == _SETUP_FAILED and stderr.startswith("t2-sandbox: setup failed"):
        status = "error"
    elif check is not None:
        status = "passed" if returncode == 0 and verdict == _PASS else "failed"
    else:
        status = "passed" if returncode == 0 else "failed"
    return SandboxResult(status == "passed", status, returncode, stdout, stderr, time.monotonic() - start)


def _in_parallel(
    run: Callable[[_Item], SandboxResult], items: list[_Item], max_workers: int | None, thread_name: str
) -> list[SandboxResult]:
    """``run`` on every item, at most ``max_workers`` (default: one per CPU) at a time; order is
    preserved. Threads only wait on the sandbox processes."""
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not items:
        return []
    workers = min(max_workers or os.cpu_count() or 1, len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name) as pool:
        return list(pool.map(run, items))


def run_python(program: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``program`` (Python source) in a fresh sandbox; it passes iff it exits 0 within the limits."""
    if not isinstance(program, str):
        raise TypeError(f"program must be str, got {type(program).__name__}")
    if limits is not None and not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits must be SandboxLimits or None, got {type(limits).__name__}")
    return _run(program, limits or SandboxLimits())


def run_python_many(
    programs: Sequence[str], limits: SandboxLimits | None = None, max_workers: int | None = None
) -> list[SandboxResult]:
    """Run several programs in parallel sandboxes (threads just wait on processes); order is preserved."""
    programs = list(programs)
    for p in programs:
        if not isinstance(p, str):
            raise TypeError(f"every program must be str, got {type(p).__name__}")
    return _in_parallel(lambda p: run_python(p, limits), programs, max_workers, "t2-sandbox")


def run_check(solution: str, checks: Mapping[str, Any], limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``solution`` (untrusted) in one sandboxed process and ``checks`` (trusted) in another.

    ``checks`` holds ``setup`` and ``tests`` (Python source run in the checker process, where the
    names of ``remote`` and any other name the tests use but do not define are the solution's
    functions, called across a pipe) and ``remote`` (a list of names). The result passes iff the
    checker reports that every test passed, over a pipe only the checker holds; what any process
    prints has no say.
    """
    if not isinstance(solution, str):
        raise TypeError(f"solution must be str, got {type(solution).__name__}")
    if limits is not None and not isinstance(limits, SandboxLimits):
        raise TypeError(f"limits must be SandboxLimits or None, got {type(limits).__name__}")
    spec = {
        "setup": str(checks.get("setup", "")),
        "tests": str(checks["tests"]),
        "remote": list(checks.get("remote", ())),
    }
    return _run(solution, limits or SandboxLimits(), check=json.dumps(spec))


def run_check_many(
    items: Sequence[tuple[str, Mapping[str, Any]]], limits: SandboxLimits | None = None, max_workers: int | None = None
) -> list[SandboxResult]:
    """`run_check` on several (solution, checks) pairs in parallel; order is preserved."""
    return _in_parallel(lambda item: run_check(item[0], item[1], limits), list(items), max_workers, "t2-check")
