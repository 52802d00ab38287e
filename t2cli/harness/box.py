"""The sandboxed child: builds the sandbox around itself, then runs the untrusted program.

Started by ``t2cli.sandbox`` as ``python -I -S -B box.py CONFIG`` (standard library only; it never
imports ``t2cli``). It reads its configuration from ``argv[1]``, builds the sandbox (namespaces ->
Landlock -> rlimits -> uid drop -> audit hook) and then either

- ``mode == "program"``: executes the program as ``__main__`` (it passes iff it exits 0), or
- ``mode == "check"``: forks the *solution process*, which runs the untrusted solution and answers
  requests, while this process stays the *checker*: it reads the trusted tests (only after the fork,
  so the solution process never holds them), runs them against `wire.Remote` stubs of the solution's
  functions and writes the verdict to a pipe that only it holds. Untrusted code never runs in the
  checker, and the solution process cannot reach it: it is in a nested Landlock domain (no signals,
  no ptrace into the checker), the checker is not dumpable (no /proc/<pid>/fd, /proc/<pid>/mem), and
  the verdict pipe and the tests' file are closed in the solution process before its code runs.

Everything that may fail on a given kernel is best-effort except the uid drop.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
NEWNS, NEWIPC, NEWUSER, NEWPID, NEWNET = 0x20000, 0x08000000, 0x10000000, 0x20000000, 0x40000000


def load_sibling(file: str, name: str):
    """Import a module of this directory by path under ``name`` (before Landlock hides the directory)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)), file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tasks_of(uid):
    n = 0
    for p in os.listdir("/proc"):
        try:
            if p.isdigit() and os.stat("/proc/" + p).st_uid == uid:
                n += len(os.listdir(f"/proc/{p}/task"))
        except OSError:
            pass
    return n


def expose(libc, L, box, paths):
    """The stdlib may sit below a directory "nobody" cannot traverse (pyenv in /root). Cover the first
    such ancestor with an empty world-traversable tmpfs (hiding the rest of it, e.g. all of /root) and
    bind-mount only the stdlib directories back in."""
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


def relay(private_fds):
    """We are alone in a new PID namespace: fork its init (C1), which forks the process that runs the
    program (C2). When C1 exits the kernel kills and reaps everything left in the namespace, including
    processes that escaped the process group with setsid(). This process stays outside, waits, and
    dies the way the program did (C1 sends the raw wait status through a pipe). Only C2 keeps
    ``private_fds``."""
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r)
        child = os.fork()
        if child == 0:
            os.close(w)
            return
        for fd in private_fds:
            os.close(fd)
        os.write(w, os.waitpid(child, 0)[1].to_bytes(4, "little"))
        os._exit(0)
    for fd in private_fds:
        os.close(fd)
    os.close(w)
    data = os.read(r, 4)
    os.wait()
    st = int.from_bytes(data, "little") if len(data) == 4 else 9
    if os.WIFSIGNALED(st):
        if os.WTERMSIG(st) not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(os.WTERMSIG(st), signal.SIG_DFL)
        os.kill(os.getpid(), os.WTERMSIG(st))
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 1)


def landlock(ctypes, libc, L, box, roots, files):
    """Read only ``roots`` and ``files``, write only ``box``, no execve, no TCP, scoped signals and
    abstract unix sockets (as far as the kernel's ABI goes). Calling it again nests a new domain."""
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
    ok = libc.prctl(L(PR_SET_NO_NEW_PRIVS), L(1), L(0), L(0), L(0)) == 0 and sc(L(446), L(rfd), L(0)) == 0
    os.close(rfd)
    return abi if ok else 0


def make_hook(box, readable):
    realpath, fsdecode, isdir = os.path.realpath, os.fsdecode, os.path.isdir
    wflags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    banned = frozenset(
        "os.system os.exec os.posix_spawn os.posix_spawnp os.spawn os.fork os.forkpty "
        "os.kill os.killpg subprocess.Popen pty.spawn gc.get_objects gc.get_referrers "
        "gc.get_referents sys._current_frames".split()
    )
    banned_imports = frozenset("ctypes _ctypes _posixsubprocess _xxsubinterpreters _testcapi _testinternalcapi".split())
    path_args = {
        "os.remove": (0,),
        "os.rmdir": (0,),
        "os.rename": (0, 1),
        "os.link": (0, 1),
        "os.symlink": (1,),
        "os.mkdir": (0,),
        "os.chmod": (0,),
        "os.chown": (0,),
        "os.truncate": (0,),
        "os.utime": (0,),
        "os.setxattr": (0,),
        "os.removexattr": (0,),
        "shutil.rmtree": (0,),
    }
    reads = {"os.listdir", "os.scandir"}

    def under(path, prefixes):
        if path is None or isinstance(path, int):
            return True  # operations on already-open descriptors were checked when they were opened
        p = realpath(fsdecode(path))
        return any(p == r or p.startswith(r.rstrip("/") + "/") for r in prefixes)

    def hook(event, args):
        if event in banned or event.startswith(("socket.", "ctypes.")):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0].partition(".")[0] in banned_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            raise PermissionError("sandbox: replacing __code__ is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & wflags)
            if not under(path, box if writing else box + readable):
                raise PermissionError(f"sandbox: open({path!r}) outside the sandbox")
            if not isinstance(path, int) and isdir(path) and not under(path, box):
                raise PermissionError("sandbox: directory descriptors outside the sandbox are not allowed")
        elif event in path_args:
            if not all(under(args[i], box) for i in path_args[event] if i < len(args)):
                raise PermissionError(f"sandbox: {event} outside the sandbox")
        elif event in reads and args and not under(args[0], box + readable):
            raise PermissionError(f"sandbox: {event} outside the sandbox")

    return hook


def forget_dangerous_modules():
    for m in [m for m in sys.modules if m.partition(".")[0] in ("ctypes", "_ctypes", "subprocess", "_posixsubprocess")]:
        del sys.modules[m]


def run_program(src, audit, box, readable):
    """Execute ``src`` as the ``__main__`` script ``program.py``."""
    forget_dangerous_modules()
    code = compile(src, "program.py", "exec")
    import builtins

    builtins.exit = builtins.quit = sys.exit  # normally installed by the site module, which -S skips
    main = type(sys)("__main__")
    main.__file__ = "program.py"
    sys.modules["__main__"], sys.argv = main, ["program.py"]
    if audit:
        sys.addaudithook(make_hook((box,), readable))
    exec(code, main.__dict__)


def run_check(src, cfg, isolate, readable):
    """Fork the solution process, run the tests here against it, write the verdict; never returns."""
    import builtins

    wire = sys.modules["t2_wire"]
    builtins.exit = builtins.quit = sys.exit
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the solution process: untrusted from here on
        try:
            for fd in (cfg["spec_fd"], cfg["verdict_fd"], req_w, resp_r):
                os.close(fd)
            null = os.open("/dev/null", os.O_WRONLY)
            os.dup2(null, 1)  # its prints go nowhere, whatever their size
            os.close(null)
            isolate()  # a nested Landlock domain: the checker is outside it (no signals, no ptrace)
            forget_dangerous_modules()
            if cfg["audit"]:
                sys.addaudithook(make_hook((cfg["box"],), readable))
            sys.argv = ["program.py"]
        except BaseException as e:  # noqa: BLE001
            sys.stderr.write(f"t2-sandbox: setup failed: {e!r}\n")
            os._exit(cfg["setup_failed"])
        with os.fdopen(req_r, "rb") as inp, os.fdopen(resp_w, "wb") as out:
            wire.serve(src, inp, out)
        os._exit(0)
    os.close(req_r)
    os.close(resp_w)
    verdict, status = b"PASS", 0
    try:
        with os.fdopen(cfg["spec_fd"], "rb") as f:  # read only now: the solution process never had it
            spec = json.loads(f.read().decode("utf-8"))
        with os.fdopen(req_w, "wb") as out, os.fdopen(resp_r, "rb") as inp:
            wire.run_tests(spec, wire.Connection(out, inp))
    except BaseException as e:  # noqa: BLE001 - any failure of the tests is a failed check
        verdict, status = (f"FAIL {type(e).__name__}: {e}").encode("utf-8", "replace")[:2000], 1
        sys.stderr.write(f"t2-check: {verdict.decode('utf-8', 'replace')}\n")
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    os.write(cfg["verdict_fd"], verdict)
    os._exit(status)


def set_limits(resource, cfg, nproc):
    """rlimits: address space, CPU seconds, file size, open files, no core dumps, processes."""
    mem = cfg["memory_mb"] * 1024 * 1024
    cpu = cfg["cpu_s"]
    for res, lim in (
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_FSIZE, (cfg["fsize"],) * 2),
        (resource.RLIMIT_NOFILE, (cfg["nofile"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NPROC, (nproc, nproc)),
    ):
        resource.setrlimit(res, lim)


def drop_privileges(uid, gid):
    """Become ``uid``/``gid`` with no supplementary groups, for good (a root evaluator only)."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid,) * 3 or os.getresgid() != (gid,) * 3 or os.getgroups():
        raise OSError("privilege drop did not stick")


def main():
    cfg = json.loads(sys.argv[1])
    box = cfg["box"]
    check = cfg["mode"] == "check"
    with os.fdopen(cfg["src_fd"], "rb") as f:  # an unlinked file: nothing else can swap the program
        src = f.read().decode("utf-8")
    if check:
        load_sibling("wire.py", "t2_wire")
        load_sibling("evalplus.py", "t2_evalplus")
    for m in cfg["preload"]:
        try:
            __import__(m)
        except Exception:
            pass
    import ctypes
    import resource

    libc = ctypes.CDLL(None, use_errno=True)
    L = ctypes.c_long
    roots = sorted(
        {os.path.realpath(p) for p in sys.path + [os.path.dirname(os.__file__)] if p and os.path.exists(p)}
        | {p for p in ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/share/zoneinfo") if os.path.isdir(p)}
    )
    files = [p for p in ("/dev/null", "/dev/urandom", "/etc/localtime", "/etc/ld.so.cache") if os.path.exists(p)]
    root = os.geteuid() == 0
    uid, gid = (cfg["uid"], cfg["gid"]) if root else (os.getuid(), os.getgid())
    nproc = tasks_of(uid) + cfg["extra_procs"]
    # Root must not enter a user namespace: uid 65534 would be unmapped there and the drop would fail.
    for flags in (NEWNS | NEWNET | NEWIPC | NEWPID,) if root else (NEWUSER | NEWNET | NEWPID, NEWUSER | NEWNET):
        if libc.unshare(L(flags)) == 0:
            break
    else:
        flags = 0
    # Never propagate our mounts to the host: only mount anything once "/" is private (MS_REC|MS_PRIVATE).
    if flags & NEWNS and libc.mount(b"none", b"/", None, L(16384 | 262144), None) == 0:
        try:
            expose(libc, L, box, [p for p in roots if os.path.isdir(p)])
        except OSError:
            pass
        opts = f"size={cfg['disk_mb']}m,nr_inodes=4096,mode=0700,uid={uid},gid={gid}"
        libc.mount(b"tmpfs", box.encode(), b"tmpfs", L(2 | 4), opts.encode())  # NOSUID | NODEV
    with open(os.path.join(box, "program.py"), "w", encoding="utf-8") as f:  # for tracebacks
        f.write(src)
    if flags & NEWPID:
        relay([cfg["spec_fd"], cfg["verdict_fd"]] if check else [])

    def isolate():
        try:
            landlock(ctypes, libc, L, box, roots, files)
        except Exception:
            pass

    isolate()
    try:
        set_limits(resource, cfg, nproc)
        if root:
            drop_privileges(uid, gid)
        libc.prctl(L(PR_SET_PDEATHSIG), L(9))  # = SIGKILL (the uid change above reset it)
        if check and libc.prctl(L(PR_SET_DUMPABLE), L(0), L(0), L(0), L(0)) != 0:
            raise OSError("cannot make the checker undumpable")
        os.chdir(box)
    except BaseException as e:
        sys.stderr.write(f"t2-sandbox: setup failed: {e!r}\n")
        os._exit(cfg["setup_failed"])
    readable = tuple(roots + files)
    if check:
        run_check(src, cfg, isolate, readable)
    run_program(src, cfg["audit"], box, readable)


if __name__ == "__main__":
    main()
