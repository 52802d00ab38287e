"""Tests for t2cli.sandbox: ordinary programs are scored correctly, hostile ones end as "not passed"
within their limits, and the harm they attempt verifiably does not happen.

Most hostile tests run twice: once through the public API ("all-layers") and once with the Python audit
hook disabled ("kernel-only"), which proves the kernel layers (uid drop, namespaces, Landlock, rlimits)
stop the attack on their own. The kernel-only variant needs Landlock ABI >= 6 (signal scoping) and is
skipped otherwise, because without it a hostile ``kill(-1, 9)`` could reach the test's own processes.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from t2cli import sandbox
from t2cli.sandbox import SandboxLimits, SandboxResult, run_python, run_python_many

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox targets Linux")

HOSTILE = SandboxLimits(wall_time_s=3.0, cpu_time_s=3.0, memory_mb=512, max_output_bytes=10_000)
MARGIN_S = 2.0  # time allowed beyond the wall limit for setup, the kill and cleanup
IS_ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[1]


def _landlock_abi() -> int:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return max(0, libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1)))
    except (OSError, AttributeError):
        return 0


KERNEL_ONLY_OK = _landlock_abi() >= 6


@functools.cache
def _kernel_probe() -> dict:
    """What the program sees with only the kernel layers: its uid, pid and network interfaces."""
    r = sandbox._run(
        "import json, os, socket\n"
        "print(json.dumps({'uid': os.getuid(), 'pid': os.getpid(), 'ifaces': [n for _, n in socket.if_nameindex()]}))",
        SandboxLimits(wall_time_s=10),
        audit_hook=False,
    )
    assert r.passed, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(params=["all-layers", "kernel-only"])
def run(request):
    """Run a program through every layer, or through the kernel layers alone."""
    if request.param == "kernel-only":
        if not KERNEL_ONLY_OK:
            pytest.skip("kernel-only checks need Landlock ABI >= 6")
        if IS_ROOT:  # never run hostile code unaudited unless the uid drop is in effect
            assert _kernel_probe()["uid"] == 65534

    def _run(program: str, limits: SandboxLimits = HOSTILE) -> SandboxResult:
        if request.param == "all-layers":
            return run_python(program, limits)
        return sandbox._run(program, limits, audit_hook=False)

    _run.layers = request.param
    return _run


def assert_rejected(r: SandboxResult, limits: SandboxLimits = HOSTILE) -> None:
    assert not r.passed, r
    assert r.status in ("failed", "timeout"), r
    assert r.wall_time_s < limits.wall_time_s + MARGIN_S, r


def _live_processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (uid, cmdline) of every process that is not a zombie."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("Z", "X"):
                out[int(name)] = (os.stat(f"/proc/{name}").st_uid, Path(f"/proc/{name}/cmdline").read_bytes())
        except (OSError, IndexError):
            pass
    return out


@pytest.fixture(scope="module", autouse=True)
def private_tempdir(tmp_path_factory):
    """Sandboxes started by these tests live under a directory of their own, so a process carrying it in
    its argv is ours (the sandbox may be in use by other evaluations on the same machine)."""
    tmp_path_factory.getbasetemp()  # pytest's own temporary root stays outside (it outlives this module)
    d = tempfile.mkdtemp(prefix="t2-test-run-")
    os.chmod(d, 0o755)  # the sandbox uid must be able to traverse to its working directory
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", d)
        yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


def _strays() -> list[int]:
    """Live processes started by this module's sandboxes (forks inherit the argv naming the directory)."""
    tag = tempfile.gettempdir().encode()
    return [pid for pid, (_, cmd) in _live_processes().items() if tag in cmd and pid != os.getpid()]


@pytest.fixture
def machine_unharmed():
    """After the test: no sandbox process survives, temp dirs are cleaned up and the sandbox still works."""
    assert _strays() == []
    yield
    deadline = time.monotonic() + 3
    while _strays() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _strays() == []
    assert list(Path(tempfile.gettempdir()).glob("t2-sandbox-*")) == []
    assert run_python("print(6 * 7)").stdout == "42\n"


@pytest.fixture
def open_dir():
    """A world-writable directory: ordinary permissions would let the sandbox uid write and delete here."""
    d = Path(tempfile.mkdtemp(prefix="t2-test-open-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --- ordinary programs -------------------------------------------------------------------------------


def test_correct_program_passes():
    r = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n")
    assert r == SandboxResult(True, "passed", 0, "ok\n", "", r.wall_time_s)
    assert 0 < r.wall_time_s < 5


@pytest.mark.parametrize(
    "program",
    ["assert 1 + 1 == 3", "def f(:\n    pass", "raise SystemExit(3)", "import no_such_module_t2", "1 / 0"],
)
def test_incorrect_programs_fail(program):
    r = run_python(program)
    assert not r.passed and r.status == "failed" and r.returncode != 0


@pytest.mark.parametrize(
    ("program", "passed"),
    [
        ("exit(0)", True),
        ("quit()", True),
        ("import sys\nsys.exit(0)", True),
        ("exit(1)", False),
        ("if __name__ == '__main__':\n    raise SystemExit(2)", False),
    ],
)
def test_exit_and_main_behave_like_a_script(program, passed):
    assert run_python(program).passed is passed


def test_child_imports_neither_t2_nor_heavy_packages():
    """The sandboxed side is started by file path with the standard library only (fast start-up)."""
    program = "import sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('t2cli', 'torch', 'numpy')))"
    r = run_python(program)
    assert r.passed and r.stdout == "[]\n", r
    assert r.wall_time_s < 5


def test_common_stdlib_is_available():
    program = """
import bisect, collections, concurrent.futures, dataclasses, fractions, functools, hashlib, heapq
import itertools, math, random, re, shlex, statistics, string, tempfile, typing
from collections import namedtuple

@dataclasses.dataclass
class P:
    x: int

assert namedtuple("Q", "a b")(1, 2).b == 2 and P(1).x == 1
assert heapq.nsmallest(2, [5, 1, 3]) == [1, 3] and math.comb(5, 2) == 10
assert hashlib.md5(b"x").hexdigest() == "9dd4e461268c8034f5c8564e155c67a6"
assert "é".encode("latin-1") == b"\\xe9"
with concurrent.futures.ThreadPoolExecutor(4) as ex:
    assert sum(ex.map(abs, range(-5, 5))) == 25
with open("scratch.txt", "w") as f:
    f.write("own directory is writable")
assert open("scratch.txt").read().startswith("own")
"""
    r = run_python(program)
    assert r.passed, r.stderr


def test_environment_is_minimal_and_directory_is_thrown_away(monkeypatch):
    monkeypatch.setenv("T2_TEST_SECRET_TOKEN", "hunter2-token")
    r = run_python(
        "import os, sys\nassert sys.stdin.read() == ''\nprint(os.getcwd())\nprint(sorted(os.environ.items()))"
    )
    assert r.passed, r.stderr
    cwd, env = r.stdout.splitlines()
    assert "hunter2-token" not in r.stdout and "T2_TEST_SECRET_TOKEN" not in env
    assert f"('HOME', '{cwd}')" in env
    assert Path(cwd).name.startswith("t2-sandbox-") and not Path(cwd).exists()


# --- time ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(1000)"])
def test_wall_time_limit(program, machine_unharmed):
    limits = SandboxLimits(wall_time_s=2.0, cpu_time_s=30.0)
    r = run_python(program, limits)
    assert r.status == "timeout" and not r.passed
    assert limits.wall_time_s <= r.wall_time_s < limits.wall_time_s + MARGIN_S


def test_cpu_time_limit(machine_unharmed):
    r = run_python("while True:\n    pass", SandboxLimits(wall_time_s=20.0, cpu_time_s=1.0))
    assert r.status == "timeout" and not r.passed
    assert r.returncode == -signal.SIGXCPU and r.wall_time_s < 15  # the CPU limit fired, not the wall limit


# --- processes ---------------------------------------------------------------------------------------

FORK_BOMBS = {
    "os.fork": "import os\nwhile True:\n    os.fork()",
    "multiprocessing": (
        "import multiprocessing, time\nps = []\nwhile True:\n"
        "    p = multiprocessing.Process(target=time.sleep, args=(100,))\n    p.start()\n    ps.append(p)"
    ),
    "subprocess": (
        "import subprocess, sys\nwhile True:\n"
        "    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)'])"
    ),
}


@pytest.mark.parametrize("name", FORK_BOMBS)
def test_fork_bomb(run, name, machine_unharmed):
    assert_rejected(run(FORK_BOMBS[name]))
    assert subprocess.run(["true"]).returncode == 0  # the evaluator can still fork


def test_stragglers_do_not_outlive_or_hang_the_run(run, machine_unharmed):
    # A child that leaves its process group and keeps the output streams open must neither keep the
    # evaluator waiting nor survive the run (the audit hook already refuses the fork).
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(100)\ntime.sleep(0.3)\nassert False"
    assert_rejected(run(program))


def test_memory_bomb(run, machine_unharmed):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limits = SandboxLimits(wall_time_s=5.0, memory_mb=256)
    for program in ("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", "x = bytearray(10**11)"):
        r = run(program, limits)
        assert_rejected(r, limits)
        assert "MemoryError" in r.stderr
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: parent untouched


# --- files -------------------------------------------------------------------------------------------

WRITES = {
    "open": "open({t!r}, 'w').write('pwned')",
    "os.open": "import os\nos.write(os.open({t!r}, os.O_WRONLY | os.O_CREAT), b'pwned')",
    "pathlib": "import pathlib\npathlib.Path({t!r}).write_text('pwned')",
    "symlink": "import os\nos.symlink({t!r}, 'link')\nopen('link', 'w').write('pwned')",
    "rename-out": "import os\nopen('f', 'w').write('pwned')\nos.rename('f', {t!r})",
    "shutil.copy": "import shutil\nshutil.copy('program.py', {t!r})",
}


@pytest.mark.parametrize("how", WRITES)
def test_cannot_write_outside(run, how, open_dir, tmp_path):
    targets = [open_dir / f"pwned-{how}", tmp_path / f"pwned-{how}", Path(f"/tmp/t2-test-pwned-{uuid.uuid4().hex}")]
    try:
        for target in targets:
            assert_rejected(run(WRITES[how].format(t=str(target))))
            assert not target.exists() and not target.is_symlink()
    finally:
        targets[2].unlink(missing_ok=True)


DELETES = {
    "os.remove": "import os\nos.remove({t!r})",
    "pathlib.unlink": "import pathlib\npathlib.Path({t!r}).unlink()",
    "shutil.rmtree": "import os, shutil\nshutil.rmtree(os.path.dirname({t!r}))",
    "rename-in": "import os\nos.rename({t!r}, 'stolen')",
    "truncate": "import os\nos.truncate({t!r}, 0)",
    "open-w": "open({t!r}, 'w').close()",
}


@pytest.mark.parametrize("how", DELETES)
def test_cannot_delete_outside(run, how, open_dir):
    sentinel = open_dir / "sentinel.txt"
    sentinel.write_text("keep me")
    sentinel.chmod(0o666)
    assert_rejected(run(DELETES[how].format(t=str(sentinel))))
    assert sentinel.read_text() == "keep me"


@pytest.fixture
def secrets(open_dir, tmp_path):
    """Files the program must not read: world-readable, owner-only (0600 in a 0700 dir), the repo's and
    (if there is one) a file in the evaluator's home."""
    public = open_dir / "public-secret.txt"
    public.write_text("PUBLIC-SECRET-4242")
    public.chmod(0o644)
    private_dir = tmp_path / "private"
    private_dir.mkdir(mode=0o700)
    private = private_dir / "private-secret.txt"
    private.write_text("PRIVATE-SECRET-4242")
    private.chmod(0o600)
    repo_file = REPO / "pyproject.toml"
    found = {public: "PUBLIC-SECRET-4242", private: "PRIVATE-SECRET-4242", repo_file: repo_file.read_text()[:200]}
    for home_file in sorted(Path.home().iterdir()) if Path.home().is_dir() else []:
        try:
            if home_file.is_file() and len(text := home_file.read_text().strip()) >= 20:
                found[home_file] = text[:200]
                break
        except (OSError, UnicodeDecodeError):
            continue
    return found


@pytest.mark.parametrize("how", ["open", "symlink"])
def test_cannot_read_outside(run, how, secrets):
    for path, content in secrets.items():
        if how == "open":
            program = f"print(open({str(path)!r}).read())"
        else:
            program = f"import os\nos.symlink({str(path)!r}, 'link')\nprint(open('link').read())"
        r = run(program)
        assert_rejected(r)
        assert content not in r.stdout and content.strip()[:40] not in r.stdout


def test_cannot_list_home_or_repo(run):
    for directory in [d for d in (Path.home(), REPO) if d.is_dir()]:
        names = [n for n in os.listdir(directory) if len(n) > 3]
        r = run(f"import os\nprint(os.listdir({str(directory)!r}))")
        assert_rejected(r)
        assert not any(repr(n) in r.stdout for n in names)


# --- network -----------------------------------------------------------------------------------------


def test_no_network(run):
    with socket.create_server(("127.0.0.1", 0)) as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        tcp_port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        programs = [
            f"import socket\nsocket.create_connection(('127.0.0.1', {tcp_port}), timeout=2).sendall(b'pwned')",
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{tcp_port}/', timeout=2)",
            "import socket\nsocket.create_server(('0.0.0.0', 0))",
        ]
        # UDP is outside Landlock's reach: on its own only the network namespace stops it.
        if run.layers == "all-layers" or _kernel_probe()["ifaces"] == ["lo"]:
            programs.append(
                "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"assert s.sendto(b'pwned', ('127.0.0.1', {udp_port})) == 5"
            )
        for program in programs:
            assert_rejected(run(program))
        tcp.settimeout(0.3)
        with pytest.raises(socket.timeout):
            tcp.accept()  # a completed handshake would be waiting in the backlog
        udp.settimeout(0.3)
        with pytest.raises(socket.timeout):
            udp.recv(100)


# --- other processes ---------------------------------------------------------------------------------

SHELL_OUTS = {
    "os.system": "import os\nassert os.system('touch {m}') == 0",
    "subprocess": "import subprocess\nsubprocess.run(['touch', '{m}'], check=True)",
    "os.popen": "import os\nos.popen('touch {m}').read()\nassert os.path.exists('{m}')",
    "os.execv": "import os\nos.execv('/usr/bin/touch', ['touch', '{m}'])",
    "posix_spawn": (
        "import os\npid = os.posix_spawn('/usr/bin/touch', ['touch', '{m}'], {{}})\nassert os.waitpid(pid, 0)[1] == 0"
    ),
}


@pytest.mark.parametrize("how", SHELL_OUTS)
def test_cannot_run_commands(run, how, open_dir, machine_unharmed):
    marker = open_dir / "marker"
    assert_rejected(run(SHELL_OUTS[how].format(m=marker)))
    assert not marker.exists()


@pytest.fixture
def canaries():
    """Bystander processes a hostile program might try to kill: one of ours, one of the sandbox uid."""
    procs = [subprocess.Popen(["sleep", "60"])]
    if IS_ROOT:
        procs.append(subprocess.Popen(["sleep", "60"], user=65534, group=65534, extra_groups=[]))
    yield procs
    for p in procs:
        p.kill()
        p.wait()


KILLS = {
    "parent": "os.kill(os.getppid(), signal.SIGKILL)",
    "evaluator-pid": "os.kill({evaluator}, signal.SIGKILL)",
    "evaluator-group": "os.killpg({evaluator_pgid}, signal.SIGKILL)",
    "canary": "os.kill({canary}, signal.SIGKILL)",
    "own-group": "os.killpg(0, signal.SIGKILL)",
    "everyone": "os.kill(-1, signal.SIGKILL)",
}


@pytest.mark.parametrize("how", KILLS)
def test_cannot_kill_the_evaluator_or_others(run, how, canaries):
    if how == "everyone" and not (IS_ROOT or KERNEL_ONLY_OK):
        pytest.skip("kill(-1) is only attempted when the kernel confines it (uid drop or Landlock scoping)")
    program = "import os, signal\n" + KILLS[how].format(
        evaluator=os.getpid(), evaluator_pgid=os.getpgid(0), canary=canaries[-1].pid
    )
    r = run(program)
    if how == "everyone" and run.layers == "kernel-only" and _kernel_probe()["pid"] > 2:
        # No PID namespace here: kill(-1) then reports success even though every target refused (the
        # kernel ignores EPERM for it), so only the bystanders below tell whether it did harm.
        assert r.wall_time_s < HOSTILE.wall_time_s + MARGIN_S
    else:
        assert_rejected(r)
    time.sleep(0.1)
    assert all(p.poll() is None for p in canaries)  # bystanders alive (and so is this process)


def test_introspection_escapes_are_refused():
    for program in (
        "import ctypes\nctypes.CDLL(None).fork()",
        "import gc\nprint(len(gc.get_objects()))",
        "import _posixsubprocess",
        "import sys\nsys.modules['os'].fork()",
        "def f(): pass\nf.__code__ = (lambda: 1).__code__",
    ):
        assert_rejected(run_python(program, HOSTILE))


# --- output ------------------------------------------------------------------------------------------


def test_huge_output_is_truncated(machine_unharmed):
    limits = SandboxLimits(wall_time_s=5.0, max_output_bytes=1000)
    r = run_python("import sys\nsys.stdout.write('x' * 5_000_000)\nsys.stderr.write('e' * 5_000_000)", limits)
    assert r.passed and r.stdout == "x" * 1000 and r.stderr == "e" * 1000
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('y' * 65536)", limits)
    assert_rejected(r, limits)
    assert r.stdout == "y" * 1000 and len(r.stderr) <= 1000


# --- API -----------------------------------------------------------------------------------------------


def test_run_python_many_is_parallel_and_ordered(machine_unharmed):
    programs = [f"import time\ntime.sleep(2)\nprint({i})\nassert {i} % 2 == 0" for i in range(4)]
    start = time.monotonic()
    results = run_python_many(programs, SandboxLimits(wall_time_s=10), max_workers=2)
    elapsed = time.monotonic() - start
    assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert [r.passed for r in results] == [True, False, True, False]
    # 4 x 2 s of sleep: at least 8 s one at a time, about 4 s two at a time (start-up grows with load)
    assert elapsed < 6.5
    assert [r.stdout for r in run_python_many(["print(1)", "print(2)"])] == ["1\n", "2\n"]
    assert run_python_many([]) == []


def test_programmer_errors_raise():
    with pytest.raises(TypeError):
        run_python(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        run_python_many(["print(1)", None])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        SandboxLimits(wall_time_s=0)
    with pytest.raises(ValueError):
        run_python_many(["print(1)"], max_workers=0)


def test_unstartable_interpreter_is_an_error(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    r = run_python("print(1)")
    assert r.status == "error" and not r.passed and r.returncode is None


def test_unremovable_leftovers_are_still_cleaned_up(run, machine_unharmed):
    program = (
        "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').close()\nos.symlink('/etc', 'a/etc')\n"
        "os.chmod('a/b', 0)\nos.chmod('a', 0)\nos.chmod('.', 0)\nprint(os.getcwd())"
    )
    etc_mode = os.stat("/etc").st_mode
    r = run(program)
    assert r.passed, r.stderr
    assert not os.path.lexists(r.stdout.strip())
    assert os.stat("/etc").st_mode == etc_mode


def test_sandbox_dir_is_private(run):
    r = run("import os, stat\nprint(oct(stat.S_IMODE(os.stat('.').st_mode)))")
    assert r.passed and r.stdout.strip() == oct(stat.S_IRWXU)


# --- checker integrity: a pass must be earned -----------------------------------------------------------
# No cheat below holds a real solution. With the single-process harness this replaced (the tests and the
# pass marker shared a process, a namespace and a source file with the solution), every class passed on
# every task: the marker and equality cheats on all three, the patched compile/exec on all three, the
# patched json.loads/enumerate on mbpp-plus ("every-fd" is new: it targets the verdict pipe).

MBPP_ADD = {
    "id": "1",
    "text": "Add two numbers.",
    "code": "def add(a, b):\n    return a + b\n",
    "test_list": ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"],
    "test_setup_code": "",
    "entry_point": "add",
}
HUMANEVAL_ADD = {
    "id": "HumanEval/0",
    "entry_point": "add",
    "prompt": 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n',
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(5, 7) == 12\n",
}
PLUS_ADD = {
    "id": "Mbpp/9999",
    "task_number": 9999,
    "entry_point": "add",
    "atol": 0.0,
    "canonical_solution": "def add(a, b):\n    return a + b\n",
    "base_input": [[1, 2], [3, 4]],
    "plus_input": [[10**20, 1], [-5, 5]],
    "text": "Add two numbers.",
    "example_test": "assert add(1, 2) == 3",
}
HONEST = "def add(a, b):\n    return a + b\n"
_MARKER = r"T2-TESTS-PASSED-[0-9a-f]+"
CHEATS = {
    # the verdict: read the pass marker (from program.py, from the frames' code) or write a verdict
    "marker": {
        "program.py": f"""
import os, re
def add(a, b):
    return 0
found = re.findall(r"{_MARKER}", open("program.py").read())
if found:
    os.write(1, ("\\n" + found[-1] + "\\n").encode())
os._exit(0)
""",
        "frames": f"""
import os, re, sys
def add(a, b):
    return 0
def consts(code):
    for c in code.co_consts:
        if isinstance(c, str):
            yield c
        elif hasattr(c, "co_consts"):
            yield from consts(c)
f, found = sys._getframe(), []
while f is not None:
    for c in consts(f.f_code):
        found += re.findall(r"{_MARKER}", c)
    f = f.f_back
if found:
    os.write(1, ("\\n" + found[-1] + "\\n").encode())
os._exit(0)
""",
        "every-fd": """
import os
def add(a, b):
    return 0
for fd in range(0, 256):
    for word in (b"PASS", b"\\nPASS\\n"):
        try:
            os.write(fd, word)
        except OSError:
            pass
os._exit(0)
""",
    },
    # the comparison: results that claim to equal anything
    "equality": {
        base: f"""
class Liar({base}):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = {base}.__hash__
def add(a, b):
    return Liar()
"""
        for base in ("str", "int", "tuple", "float", "object")
    },
    # the checker's code: patch what it uses, in the solution's own process
    "patching": {
        "json.loads": "import json\njson.loads = lambda s, *a, **k: []\ndef add(a, b):\n    return 0\n",
        "enumerate": "import builtins\nbuiltins.enumerate = lambda it, start=0: iter(())\n"
        "def add(a, b):\n    return 0\n",
        "compile": "import builtins\n_compile = builtins.compile\n"
        "builtins.compile = lambda src, name, mode, *a, **k: _compile('pass', name, mode)\n"
        "def add(a, b):\n    return 0\n",
        "exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\ndef add(a, b):\n    return 0\n",
    },
}


def _code_tasks():
    from t2cli.tasks.humaneval import HUMANEVAL
    from t2cli.tasks.mbpp import MBPP, MBPP_PLUS

    return {"mbpp": (MBPP, MBPP_ADD), "humaneval": (HUMANEVAL, HUMANEVAL_ADD), "mbpp-plus": (MBPP_PLUS, PLUS_ADD)}


@pytest.mark.parametrize("task_name", ["mbpp", "humaneval", "mbpp-plus"])
@pytest.mark.parametrize("cheat_class", sorted(CHEATS))
def test_a_pass_must_be_earned(cheat_class, task_name):
    task, example = _code_tasks()[task_name]
    cheats = CHEATS[cheat_class]
    outputs = [f"```python\n{code}\n```" for code in cheats.values()] + [f"```python\n{HONEST}```"]
    verdicts = task.check_many(outputs, [example] * len(outputs), max_workers=2)
    assert dict(zip(list(cheats) + ["honest"], verdicts)) == {**dict.fromkeys(cheats, False), "honest": True}


def test_correct_programs_that_print_a_lot_pass():
    """The verdict does not travel with the output, so no amount of output can push it out of view."""
    loud = {
        "print": "def add(a, b):\n    print('x' * 70_000)\n    return a + b\n",
        "fd 1": "import os\ndef add(a, b):\n    os.write(1, b'x' * 70_000)\n    return a + b\n",
        "stderr": "import sys\ndef add(a, b):\n    sys.stderr.write('x' * 70_000)\n    return a + b\n",
    }
    for task_name, (task, example) in _code_tasks().items():
        outputs = [f"```python\n{code}```" for code in loud.values()]
        assert task.check_many(outputs, [example] * len(outputs), max_workers=2) == [True] * 3, task_name


def test_the_solution_process_never_holds_the_tests():
    """The expected answers cannot be read: not from files, descriptors, frames or the checker's /proc."""
    from t2cli.sandbox import run_check

    snoop = """
import gc, os, sys
seen = []
for fd in range(3, 64):
    try:
        seen.append(os.pread(fd, 1 << 20, 0))
    except OSError:
        pass
for path in os.listdir("."):
    try:
        seen.append(open(path, "rb").read())
    except OSError:
        pass
for pid in (os.getppid(), os.getpid()):
    for name in ("cmdline", "environ", "mem"):
        try:
            seen.append(open("/proc/%d/%s" % (pid, name), "rb").read(1 << 20))
        except (OSError, ValueError):
            pass
f = sys._getframe()
while f is not None:
    seen.append(repr(f.f_globals).encode() + repr(f.f_locals).encode())
    f = f.f_back
sys.stderr.write(repr(seen))
def add(a, b):
    return a + b
"""
    secret = "assert add(40, 2) == 42  # T2-SECRET-EXPECTED"
    r = run_check(snoop, {"tests": secret, "remote": ["add"]})
    assert r.passed, r.stderr
    assert "T2-SECRET-EXPECTED" not in r.stderr


def test_checker_survives_hostile_solutions(machine_unharmed):
    """The hostile suite's worst cases, as solutions under a checker: contained, and never a pass."""
    from t2cli.sandbox import run_check_many

    hostile = [
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "x = [bytearray(1 << 20) for _ in range(10_000)]\n",
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n",
        "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\n",
        "import subprocess\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\n",
        "def add(a, b):\n    while True:\n        pass\n",
        "import shutil\nshutil.rmtree('/tmp', ignore_errors=True)\n",
    ]
    checks = {"tests": "assert add(1, 2) == 3", "remote": ["add"]}
    results = run_check_many([(h, checks) for h in hostile], HOSTILE, max_workers=2)
    for r in results:
        assert_rejected(r)


@pytest.mark.skipif(not KERNEL_ONLY_OK, reason="kernel-only checks need Landlock ABI >= 6")
def test_checker_is_out_of_reach_without_the_audit_hook():
    """With only the kernel layers: the solution cannot signal the checker or reach its verdict pipe."""
    reach = """
import os, signal
def add(a, b):
    return 0
ppid = os.getppid()
for fd in range(0, 256):
    try:
        os.write(fd, b"PASS")
    except OSError:
        pass
try:
    for name in os.listdir("/proc/%d/fd" % ppid):
        try:
            fd = os.open("/proc/%d/fd/%s" % (ppid, name), os.O_WRONLY)
            os.write(fd, b"PASS")
        except OSError:
            pass
except OSError:
    pass
try:
    os.kill(ppid, signal.SIGSTOP)
    print("signalled", file=__import__("sys").stderr)
except OSError:
    pass
"""
    checks = json.dumps({"setup": "", "tests": "assert add(1, 2) == 3", "remote": ["add"]})
    r = sandbox._run(reach, HOSTILE, audit_hook=False, check=checks)
    assert not r.passed and r.status == "failed", r
    assert "signalled" not in r.stderr
