"""Run untrusted, model-generated Python programs (MBPP / HumanEval style scoring) safely.

A program "passes" iff it exits with status 0 within the limits; callers append the test asserts to it.

The program is hostile until proven otherwise, so no single mechanism is trusted. Layers, outermost first:

1. Evaluator side: a separate interpreter (``-S -s -B``: standard library only), an explicit minimal
   environment, stdin from /dev/null, the program handed over as an unlinked file, a fresh ``mkdtemp``
   working directory deleted afterwards, a new session whose process group is SIGKILLed on wall-time
   timeout *and* after a normal exit, and stdout/stderr captured in anonymous files capped by
   RLIMIT_FSIZE (not pipes), so printing gigabytes or leaving a grandchild behind cannot exhaust or hang us.
2. Kernel, configured by a trusted prelude in the child before the program runs (best-effort where a
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

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "run_python_many"]

_SANDBOX_ID = 65534  # uid/gid "nobody": what a root evaluator drops to
_MAX_FILE_BYTES = 16 * 1024 * 1024  # RLIMIT_FSIZE: largest file (and captured stream) the program can write
_DISK_MB = 64  # size of the private tmpfs working directory (root only)
_EXTRA_PROCS = 64  # processes/threads the program may add on top of what its uid already runs
_MAX_OPEN_FILES = 64
_SETUP_FAILED = 125  # exit status of the prelude when it could not establish the sandbox
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


# The trusted prelude, run by the child interpreter as `-c`. It reads its configuration from argv[1],
# builds the sandbox (namespaces -> Landlock -> rlimits -> uid drop -> audit hook) and then executes
# program.py as __main__. Everything that may fail on a given kernel is best-effort except the uid drop.
_PRELUDE = r"""
import json, os, signal, sys
cfg = json.loads(sys.argv[1])
box = cfg["box"]
with os.fdopen(cfg["src_fd"], "rb") as f:  # an unlinked file: nothing else can swap the program
    src = f.read().decode("utf-8")
for m in cfg["preload"]:
    try:
        __import__(m)
    except Exception:
        pass
import ctypes, resource
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
roots = sorted({os.path.realpath(p) for p in sys.path + [os.path.dirname(os.__file__)] if p and os.path.exists(p)}
               | {p for p in ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/share/zoneinfo") if os.path.isdir(p)})
files = [p for p in ("/dev/null", "/dev/urandom", "/etc/localtime", "/etc/ld.so.cache") if os.path.exists(p)]
root = os.geteuid() == 0
uid, gid = (cfg["uid"], cfg["gid"]) if root else (os.getuid(), os.getgid())

def tasks_of(u):
    n = 0
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.stat("/proc/" + p).st_uid == u:
                n += len(os.listdir("/proc/%s/task" % p))
        except OSError:
            pass
    return n

def expose(paths):
    # The stdlib may sit below a directory "nobody" cannot traverse (pyenv in /root). Cover the first such
    # ancestor with an empty world-traversable tmpfs (hiding the rest of it, e.g. all of /root) and
    # bind-mount only the stdlib directories back in.
    blocked = {}
    for p in paths:
        parts = p.split("/")
        for i in range(2, len(parts)):
            a = "/".join(parts[:i])
            if not os.stat(a).st_mode & 0o001:
                blocked.setdefault(a, []).append(p)
                break
    for a, ps in blocked.items():
        if box == a or box.startswith(a + "/"):
            continue
        ps = [p for p in ps if not any(p.startswith(q + "/") for q in ps)]
        fds = [os.open(p, os.O_PATH | os.O_CLOEXEC) for p in ps]
        if libc.mount(b"tmpfs", a.encode(), b"tmpfs", L(2 | 4 | 8), b"mode=0755,size=1m") == 0:
            for p, fd in zip(ps, fds):
                os.makedirs(p, exist_ok=True)
                libc.mount(b"/proc/self/fd/%d" % fd, p.encode(), None, L(4096 | 16384), None)  # BIND | REC
        for fd in fds:
            os.close(fd)

def relay():
    # We are alone in a new PID namespace: fork its init (C1), which forks the process that runs the
    # program (C2). When C1 exits the kernel kills and reaps everything left in the namespace, including
    # processes that escaped the process group with setsid(). This process stays outside, waits, and
    # dies the way the program did (C1 sends the raw wait status through a pipe).
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        child = os.fork()
        if child == 0:
            os.close(w)
            return
        os.write(w, os.waitpid(child, 0)[1].to_bytes(4, "little"))
        os._exit(0)
    os.close(w)
    data = os.read(r, 4)
    os.wait()
    st = int.from_bytes(data, "little") if len(data) == 4 else 9
    if os.WIFSIGNALED(st):
        if os.WTERMSIG(st) not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(os.WTERMSIG(st), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(st))
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)

NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x08000000, 0x10000000, 0x20000000, 0x40000000
nproc = tasks_of(uid) + cfg["extra_procs"]
# Root must not enter a user namespace: uid 65534 would be unmapped there and the drop would fail.
for flags in ((NEWNS | NEWNET | NEWIPC | NEWPID,) if root else (NEWUSER | NEWNET | NEWPID, NEWUSER | NEWNET)):
    if libc.unshare(L(flags)) == 0:
        break
else:
    flags = 0
# Never propagate our mounts to the host: only mount anything once "/" is private (MS_REC|MS_PRIVATE).
if flags & NEWNS and libc.mount(b"none", b"/", None, L(16384 | 262144), None) == 0:
    try:
        expose([p for p in roots if os.path.isdir(p)])
    except OSError:
        pass
    opts = "size=%dm,nr_inodes=4096,mode=0700,uid=%d,gid=%d" % (cfg["disk_mb"], uid, gid)
    libc.mount(b"tmpfs", box.encode(), b"tmpfs", L(2 | 4), opts.encode())  # NOSUID | NODEV
with open(os.path.join(box, "program.py"), "w", encoding="utf-8") as f:  # for tracebacks
    f.write(src)
if flags & NEWPID:
    relay()

def landlock():
    sc = libc.syscall
    sc.restype = L
    abi = sc(L(444), None, L(0), L(1))
    if abi < 1:
        return 0
    fs = (1 << {1: 13, 2: 14, 3: 15, 4: 15}.get(abi, 16)) - 1
    attr = (ctypes.c_uint64 * 3)(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)
    rfd = sc(L(444), ctypes.byref(attr), L(8 if abi < 4 else 16 if abi < 6 else 24), L(0))
    if rfd < 0:
        return 0

    class Beneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    def allow(path, access):
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return
        if not os.path.isdir(path):
            access &= 1 | 2 | 4 | 1 << 14 | 1 << 15  # rights that apply to files
        sc(L(445), L(rfd), L(1), ctypes.byref(Beneath(access & fs, fd)), L(0))
        os.close(fd)

    allow(box, fs & ~1)  # everything but execute
    for p in roots:
        allow(p, 4 | 8)  # READ_FILE | READ_DIR
    for p in files:
        allow(p, 4 | (2 if p == "/dev/null" else 0))
    if libc.prctl(L(38), L(1), L(0), L(0), L(0)) != 0 or sc(L(446), L(rfd), L(0)) != 0:  # NO_NEW_PRIVS
        return 0
    return abi

try:
    landlock()
except Exception:
    pass
try:
    mem = cfg["memory_mb"] * 1024 * 1024
    cpu = cfg["cpu_s"]
    for res, lim in ((resource.RLIMIT_AS, (mem, mem)), (resource.RLIMIT_CPU, (cpu, cpu + 1)),
                     (resource.RLIMIT_FSIZE, (cfg["fsize"],) * 2), (resource.RLIMIT_NOFILE, (cfg["nofile"],) * 2),
                     (resource.RLIMIT_CORE, (0, 0)), (resource.RLIMIT_NPROC, (nproc, nproc))):
        resource.setrlimit(res, lim)
    if root:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3 or os.getgroups():
            raise OSError("privilege drop did not stick")
    libc.prctl(L(1), L(9))  # PR_SET_PDEATHSIG = SIGKILL (the uid change above reset it)
    os.chdir(box)
except BaseException as e:
    sys.stderr.write("t2-sandbox: setup failed: %r\n" % (e,))
    os._exit(cfg["setup_failed"])

def make_hook(box, readable):
    import os
    realpath, fsdecode, isdir = os.path.realpath, os.fsdecode, os.path.isdir
    wflags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    banned = frozenset("os.system os.exec os.posix_spawn os.posix_spawnp os.spawn os.fork os.forkpty "
                       "os.kill os.killpg subprocess.Popen pty.spawn gc.get_objects gc.get_referrers "
                       "gc.get_referents sys._current_frames".split())
    banned_imports = frozenset("ctypes _ctypes _posixsubprocess _xxsubinterpreters _testcapi _testinternalcapi".split())
    path_args = {"os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,),
                 "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
                 "os.setxattr": (0,), "os.removexattr": (0,), "shutil.rmtree": (0,)}
    reads = {"os.listdir", "os.scandir"}

    def under(path, prefixes):
        if path is None or isinstance(path, int):
            return True  # operations on already-open descriptors were checked when they were opened
        p = realpath(fsdecode(path))
        return any(p == r or p.startswith(r.rstrip("/") + "/") for r in prefixes)

    def hook(event, args):
        if event in banned or event.startswith(("socket.", "ctypes.")):
            raise PermissionError("sandbox: %s is not allowed" % event)
        if event == "import" and args[0].partition(".")[0] in banned_imports:
            raise PermissionError("sandbox: importing %s is not allowed" % args[0])
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise PermissionError("sandbox: replacing __code__ is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & wflags)
            if not under(path, box if writing else box + readable):
                raise PermissionError("sandbox: open(%r) outside the sandbox" % (path,))
            if not isinstance(path, int) and isdir(path) and not under(path, box):
                raise PermissionError("sandbox: directory descriptors outside the sandbox are not allowed")
        elif event in path_args:
            if not all(under(args[i], box) for i in path_args[event] if i < len(args)):
                raise PermissionError("sandbox: %s outside the sandbox" % event)
        elif event in reads and args and not under(args[0], box + readable):
            raise PermissionError("sandbox: %s outside the sandbox" % event)

    return hook

for m in [m for m in sys.modules if m.partition(".")[0] in ("ctypes", "_ctypes", "subprocess", "_posixsubprocess")]:
    del sys.modules[m]
code = compile(src, "program.py", "exec")
import builtins
builtins.exit = builtins.quit = sys.exit  # normally installed by the site module, which -S skips
main = type(sys)("__main__")
main.__file__ = "program.py"
sys.modules["__main__"], sys.argv = main, ["program.py"]
if cfg["audit"]:
    sys.addaudithook(make_hook((box,), tuple(roots + files)))
del cfg, src, libc, ctypes, resource, make_hook, landlock, tasks_of, expose, relay
exec(code, main.__dict__)
"""


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
    program: BinaryIO, box: str, limits: SandboxLimits, out: BinaryIO, err: BinaryIO, audit_hook: bool
) -> subprocess.Popen:
    """Start the prelude in its own session; it receives the program as an inherited, unlinked file."""
    cfg = {
        "box": os.path.realpath(box),
        "src_fd": program.fileno(),
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
    return subprocess.Popen(
        [sys.executable, "-S", "-s", "-B", "-c", _PRELUDE, json.dumps(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        cwd=box,
        env=env,
        close_fds=True,
        pass_fds=(program.fileno(),),
        start_new_session=True,
    )


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


def _run(program: str, limits: SandboxLimits, audit_hook: bool = True) -> SandboxResult:
    """Run one program; ``audit_hook=False`` exists only so tests can check the kernel layers alone."""
    start = time.monotonic()
    box = tempfile.mkdtemp(prefix="t2-sandbox-")
    try:
        if os.geteuid() == 0:
            os.chown(box, _SANDBOX_ID, _SANDBOX_ID)
        with tempfile.TemporaryFile() as src, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            src.write(program.encode("utf-8", errors="replace"))
            src.seek(0)
            try:
                proc = _start(src, box, limits, out, err, audit_hook)
            except OSError as e:
                elapsed = time.monotonic() - start
                return SandboxResult(False, "error", None, "", f"sandbox: cannot start: {e}", elapsed)
            returncode, timed_out = _wait(proc, start + limits.wall_time_s)
            stdout, stderr = _read_capped(out, limits.max_output_bytes), _read_capped(err, limits.max_output_bytes)
    finally:
        _remove_tree(box)
    if timed_out or returncode == -signal.SIGXCPU:
        status = "timeout"
    elif returncode == _SETUP_FAILED and stderr.startswith("t2-sandbox: setup failed"):
        status = "error"
    else:
        status = "passed" if returncode == 0 else "failed"
    return SandboxResult(status == "passed", status, returncode, stdout, stderr, time.monotonic() - start)


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
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    if not programs:
        return []
    workers = min(max_workers or os.cpu_count() or 1, len(programs))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="t2-sandbox") as pool:
        return list(pool.map(lambda p: run_python(p, limits), programs))
