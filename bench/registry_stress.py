"""Stress the expert registry through the CLI: racing writers and writers killed mid-overwrite.

    OMP_NUM_THREADS=1 .venv/bin/python bench/registry_stress.py --rounds 50 --kills 40

race   ROUNDS times: two processes run `t2 experts import … --name same` at the same instant (a
       barrier), each with different z. Exactly one must exit 0; the other must exit 2 with one
       line on stderr; the registered expert must be the winner's, complete.
kill   KILLS times: a good expert is registered; a process runs `t2 experts import NEW --name
       same --overwrite` and, once its write has begun (its staging directory appears), is killed
       with SIGKILL at a uniformly random moment within the time the write takes (measured
       first: staging appears → process exits). Every load afterwards must be the old expert or
       the new one, complete; the state the kill left (staging / old aside / done) is counted.

Each worker is forked from a process that has already imported the CLI, so the race is decided
by the registry, not by interpreter start-up; the command itself is the real Typer command.
Prints one JSON summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2cli.cli.app import app  # noqa: E402
from t2cli.expert import ExpertVector  # noqa: E402
from t2cli.registry import Registry  # noqa: E402

BASE = "stress-base"
SIZE = 1_000_000  # floats per matrix: large enough that an overwrite takes a measurable time


def expert(value: float, size: int) -> ExpertVector:
    z = {f"layers.{i}.mlp": torch.full((size,), value) for i in range(3)}
    return ExpertVector(z, "source", BASE, "f" * 32, ["mlp"])


def value_of(registry: Registry) -> float:
    """The expert's single value, after checking every matrix holds only that value."""
    loaded = registry.load("same", BASE)
    values = torch.cat([z.unique() for z in loaded.z.values()]).unique()
    if values.numel() != 1:
        raise AssertionError(f"a mixed expert: values {values.tolist()}")
    return float(values)


def run_cli(args: list[str], stderr_path: Path) -> None:
    """The real `t2` command in this (forked) process, stderr to a file; exits with its code."""
    import typer

    fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        typer.main.get_command(app)(args, prog_name="t2", standalone_mode=True)
    except SystemExit as done:
        os._exit(done.code if isinstance(done.code, int) else 1)
    os._exit(0)


def _racer(barrier, args: list[str], stderr_path: Path) -> None:
    barrier.wait()
    run_cli(args, stderr_path)


def race(root: Path, sources: dict[float, Path], rounds: int, work: Path) -> dict:
    context = multiprocessing.get_context("fork")
    registry = Registry(roots=[root], write_root=root)
    failures, example = [], ""
    for i in range(rounds):
        barrier = context.Barrier(2)
        workers = {}
        for value, source in sources.items():
            args = ["experts", "import", str(source), "--name", "same", "--registry", str(root)]
            stderr_path = work / f"race-{i}-{value}.err"
            workers[value] = (context.Process(target=_racer, args=(barrier, args, stderr_path)), stderr_path)
        for process, _ in workers.values():
            process.start()
        for process, _ in workers.values():
            process.join(120)
        codes = {value: process.exitcode for value, (process, _) in workers.items()}
        winners = [value for value, code in codes.items() if code == 0]
        losers = [value for value, code in codes.items() if code != 0]
        problems = []
        if len(winners) != 1:
            problems.append(f"exit codes {codes}")
        for value in losers:
            lines = workers[value][1].read_text().strip().splitlines()
            if codes[value] != 2 or len(lines) != 1:
                problems.append(f"loser exit {codes[value]} with {len(lines)} stderr line(s): {lines[:3]}")
            elif not example:
                example = lines[0]
        try:
            if winners and value_of(registry) != winners[0]:
                problems.append("the registered expert is not the winner's")
        except Exception as error:  # noqa: BLE001 - any failure to load is what this counts
            problems.append(f"load failed: {error}")
        if problems:
            failures.append({"round": i, "problems": problems})
        registry.remove("same", BASE)
    return {"rounds": rounds, "failures": failures, "loser_line_example": example}


def _overwriter(go, args: list[str], stderr_path: Path) -> None:
    go.wait()
    run_cli(args, stderr_path)


def kill(root: Path, sources: dict[float, Path], trials: int, work: Path, seed: int) -> dict:
    context = multiprocessing.get_context("fork")
    registry = Registry(roots=[root], write_root=root)
    old, new = sorted(sources)
    args = ["experts", "import", str(sources[new]), "--name", "same", "--overwrite", "--registry", str(root)]
    folder = root / BASE

    def start(i: int):
        registry.add(_renamed(sources[old]), overwrite=True)
        go = context.Event()
        process = context.Process(target=_overwriter, args=(go, args, work / f"kill-{i}.err"))
        process.start()
        time.sleep(0.2)
        go.set()
        while process.is_alive() and not list(folder.glob(".same.new-*")):
            time.sleep(0.0005)
        return process, time.perf_counter()

    durations = []
    for i in range(3):  # how long the write takes: from its staging directory appearing to exit
        process, began = start(-1 - i)
        process.join(120)
        durations.append(time.perf_counter() - began)
    window = sorted(durations)[1]
    rng = random.Random(seed)
    failures, outcomes, left = [], {"old": 0, "new": 0}, {"staging": 0, "old aside": 0, "done": 0}
    for i in range(trials):
        process, began = start(i)
        time.sleep(max(0.0, began + rng.uniform(0, window) - time.perf_counter()))
        if process.is_alive():
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it finished first
        process.join()
        if list(folder.glob(".same.old")):
            left["old aside"] += 1
        elif list(folder.glob(".same.new-*")):
            left["staging"] += 1
        else:
            left["done"] += 1
        try:
            value = value_of(registry)
            label = "old" if value == old else "new" if value == new else "other"
            outcomes[label] = outcomes.get(label, 0) + 1
            if label == "other":
                failures.append({"trial": i, "problem": f"value {value}"})
            elif value_of(Registry(roots=[root], write_root=root)) != value:
                failures.append({"trial": i, "problem": "a second load differs"})
        except Exception as error:  # noqa: BLE001 - any failure to load is what this counts
            failures.append({"trial": i, "problem": f"load failed: {error}"})
    return {
        "trials": trials,
        "write_s": round(window, 3),
        "failures": failures,
        "loaded": outcomes,
        "left_by_kill": left,
    }


def _renamed(source: Path) -> ExpertVector:
    loaded = ExpertVector.load(source)
    loaded.name = "same"
    return loaded


def main(rounds: int, kills: int, size: int = SIZE, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory(prefix="t2-registry-stress-") as folder:
        work = Path(folder)
        sources = {}
        for value in (0.25, 0.75):
            sources[value] = work / f"source-{value}"
            expert(value, size).save(sources[value])
        summary = {
            "race": race(work / "registry", sources, rounds, work),
            "kill": kill(work / "registry", sources, kills, work, seed),
            "matrix_floats": 3 * size,
        }
    summary["ok"] = not summary["race"]["failures"] and not summary["kill"]["failures"]
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args()
    result = main(options.rounds, options.kills, options.size, options.seed)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)
