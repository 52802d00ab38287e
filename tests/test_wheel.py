"""The wheel carries the shipped registry: build it, install it into a fresh venv, list the experts.

The venv gets only the wheel (`--no-deps`); its dependencies (torch, transformers, …) come from
the running interpreter's site-packages through a .pth line, so nothing is downloaded or rebuilt.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    return [line for line in listing.stdout.splitlines() if (ROOT / line).is_file()]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_the_installed_wheel_lists_the_shipped_experts(tmp_path):
    source = tmp_path / "src"  # a clean copy: the build writes build/ and *.egg-info into the tree
    for name in tracked_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = pip + ["wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("t2cli-*.whl")
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(pip + ["--python", str(python), "install", "--no-deps", str(wheel)], check=True, capture_output=True)
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"T2_REGISTRY": str(tmp_path / "empty")}
    listing = subprocess.run(
        [venv / "bin" / "t2", "experts", "list", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert {"reasoning", "math", "code", "dispatch-cls"} <= {entry["name"] for entry in entries}
    assert all(entry["shipped"] and entry["error"] is None for entry in entries)
    assert all(Path(entry["path"]).is_relative_to(site) for entry in entries)  # read from the wheel, not this tree
    completions = subprocess.run(
        [python, "-c", "from t2cli.resources import completions_dir; print(completions_dir())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert (Path(completions) / "t2.bash").is_file() and Path(completions).is_relative_to(site)
