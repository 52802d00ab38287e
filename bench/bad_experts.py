"""Every malformed expert through every command that reads experts: one line, exit 2, no traceback.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bad_experts.py > bench/results/bad-experts.md

Each case copies the shipped `reasoning` expert into a temporary user registry as `bad`, damages
it, and runs `t2 experts list`, `t2 experts show bad`, `t2 experts show reasoning` (a healthy
neighbour), `t2 eval --expert bad` and `t2 mix bad:0.5 reasoning:0.5` in-process (Typer's runner,
the real commands). Prints a markdown table: exit code, seconds, and the first line of output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2cli.cli.app import app  # noqa: E402
from t2cli.resources import shipped_registry  # noqa: E402

BASE = "smollm2-135m"


def edit(**changes):
    def damage(folder: Path) -> None:
        meta = json.loads((folder / "expert.json").read_text())
        meta.update(changes)
        (folder / "expert.json").write_text(json.dumps(meta))

    return damage


def metrics_string(folder: Path) -> None:
    meta = json.loads((folder / "expert.json").read_text())
    meta["provenance"]["metrics"] = "good"
    (folder / "expert.json").write_text(json.dumps(meta))


def non_utf8(folder: Path) -> None:
    data = (folder / "expert.json").read_bytes()
    (folder / "expert.json").write_bytes(data.replace(b'"reasoning"', b'"reas\xffoning"', 1))


def tensors(make):
    def damage(folder: Path) -> None:
        from safetensors.torch import load_file

        z = {name: make(value) for name, value in load_file(folder / "expert.safetensors").items()}
        payload = save(z)
        (folder / "expert.safetensors").write_bytes(payload)
        edit(tensors_sha256=hashlib.sha256(payload).hexdigest())(folder)

    return damage


CASES = {
    "expert.json not UTF-8": non_utf8,
    '"targets": 5': edit(targets=5),
    "numeric base_fingerprint": edit(base_fingerprint=78),
    "string provenance": edit(provenance="trained"),
    "string provenance.metrics": metrics_string,
    "all-zero z": tensors(torch.zeros_like),
    "z with a negative sum": tensors(lambda v: -v),
    "integer z tensors": tensors(lambda v: torch.ones_like(v, dtype=torch.int64)),
    "truncated tensor file": lambda f: (f / "expert.safetensors").write_bytes(b"\0" * 10),
}
COMMANDS = {
    "experts list": ["experts", "list"],
    "experts show bad": ["experts", "show", "bad"],
    "experts show reasoning": ["experts", "show", "reasoning"],
    "eval --expert bad": ["eval", "--task", "arc-easy", "--expert", "bad", "--limit", "1"],
    "mix bad reasoning": ["mix", "bad:0.5", "reasoning:0.5", "--name", "m"],
}


def main() -> None:
    runner = CliRunner()
    print("| damage | command | exit | seconds | output (first line; `broken` rows for list) |")
    print("|---|---|---|---|---|")
    for case, damage in CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            os.environ["T2_REGISTRY"] = folder
            target = Path(folder) / BASE / "bad"
            shutil.copytree(shipped_registry() / BASE / "reasoning", target)
            edit(name="bad")(target)
            damage(target)
            for label, args in COMMANDS.items():
                started = time.perf_counter()
                result = runner.invoke(app, args, env={"COLUMNS": "300"})
                seconds = time.perf_counter() - started
                lines = [line for line in result.output.splitlines() if line.strip()]
                if label == "experts list":
                    lines = [line for line in lines if "broken" in line][-1:] or lines[:1]
                shown = (lines[0] if lines else "").replace("|", "\\|")[:160]
                if result.exception and not isinstance(result.exception, SystemExit):
                    shown = f"TRACEBACK {type(result.exception).__name__}: {result.exception}"
                print(f"| {case} | t2 {label} | {result.exit_code} | {seconds:.2f} | {shown} |")


if __name__ == "__main__":
    main()
