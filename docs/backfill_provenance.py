"""Verify, then stamp, the provenance of committed reports written before reports recorded it.

A report that used experts gets the current experts' hashes only if the current experts reproduce
it: `t2 eval` re-runs the report's first 10 items with the shipped registry (same task, split,
data, generation settings and strategy) and every output must equal the committed sample's.

    OMP_NUM_THREADS=1 .venv/bin/python docs/backfill_provenance.py verify runs/backfill
    .venv/bin/python docs/backfill_provenance.py stamp runs/backfill

`verify` writes runs/backfill/verification.json (and one eval directory per report; a third
argument, e.g. `svf/`, restricts it to reports under that folder and can run beside another
verify with its own work folder, e.g. runs/backfill-svf); `stamp` merges every runs/backfill*/
log into docs/results/provenance-verification.json, then
writes the provenance of every base-model and LoRA report (the base fingerprint only: a LoRA
adapter is not a registered expert) and of every report that verified, and lists the ones that
did not. A report in HISTORICAL is not re-run: it is stamped with the experts of the registry
at the commit that added it, marked unverified, so the staleness check compares those hashes
with today's registry. Run `verify` from a checkout whose code and registry/ are the ones to be
stamped: it runs this checkout's t2 with an empty user registry.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
ITEMS = 10
SKIP = {  # reports not re-run, with the reason
    "adaptive/arc-challenge-dev-cem": "its mixture was searched with the first math expert, replaced on "
    "2026-12-01 (issue 16): stale, to be re-measured",
}
HISTORICAL = {"adaptive/arc-challenge-dev-cem": "784c7a9"}  # report: the commit that added it


def reports() -> list[str]:
    return sorted(str(p.parent.relative_to(RESULTS)) for p in RESULTS.glob("*/*/report.json"))


def uses_experts(report: dict) -> bool:
    return bool(report.get("expert")) and not str(report["expert"]).startswith("lora-")


def eval_command(name: str, report: dict, out: Path, data_dir: Path | None) -> list[str]:
    config = report["config"]
    command = [sys.executable, "-m", "t2cli.cli.app", "eval", "--task", report["task"], "--split", report["split"]]
    command += ["--limit", str(ITEMS), "--batch-size", str(config["batch_size"])]
    command += ["--max-new-tokens", str(config["max_new_tokens"]), "--seed", str(config["seed"]), "--out", str(out)]
    expert = report["expert"]
    if expert.startswith("adapt:"):
        command += ["--adapt", expert.removeprefix("adapt:")]
        tokens = config["dispatch"].get("pass1_request_tokens")
        if tokens:
            command += ["--pass1-tokens", str(tokens)]
        if config["dispatch"].get("pass1_dtype"):
            command += ["--pass1-dtype", config["dispatch"]["pass1_dtype"]]
    else:
        command += ["--expert", expert]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir)]
    return command


def without_out(command: list[str]) -> list[str]:
    at = command.index("--out")
    return command[:at] + command[at + 2 :]


def samples(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "samples.jsonl").read_text().splitlines() if line.strip()]


def verify(work: Path, only: str = "") -> None:
    work.mkdir(parents=True, exist_ok=True)
    heldout = work / "data-mbpp-heldout"
    subprocess.run([sys.executable, str(ROOT / "docs" / "mbpp_heldout.py"), str(heldout)], check=True)
    env = os.environ | {"T2_REGISTRY": tempfile.mkdtemp(prefix="empty-registry-"), "PYTHONPATH": str(ROOT)}
    log_path = work / "verification.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    commands: dict[str, list[str]] = {}
    for name in reports():
        report = json.loads((RESULTS / name / "report.json").read_text())
        if not uses_experts(report) or name in log or not name.startswith(only):
            continue
        if name in SKIP:
            log[name] = {"verified": False, "reason": SKIP[name]}
            continue
        source = report["config"]["data_source"]
        data_dir = heldout if "data-mbpp-heldout" in source else None
        out = work / name.replace("/", "--")
        command = eval_command(name, report, out, data_dir)
        started = time.perf_counter()
        same = next((done for done, c in commands.items() if without_out(c) == without_out(command)), None)
        if same:  # the same first items with the same settings (e.g. a longer subset of one split): reuse
            out = work / same
            run = subprocess.CompletedProcess(command, 0)
        else:
            run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        commands[out.name] = command
        entry = {"command": " ".join(command[1:]).replace(str(ROOT) + "/", ""), "seconds": 0.0}
        entry["seconds"] = round(time.perf_counter() - started, 1)
        if run.returncode != 0:
            entry |= {"verified": False, "reason": f"t2 eval exited {run.returncode}: {run.stderr.strip()[-300:]}"}
        else:
            new, old = samples(out), samples(RESULTS / name)[:ITEMS]
            differ = [a["id"] for a, b in zip(new, old) if (a["id"], a["output"]) != (b["id"], b["output"])]
            entry["verified"] = len(new) == len(old) == ITEMS and not differ
            entry["identical_outputs"] = f"{ITEMS - len(differ)}/{ITEMS}"
            entry["differing_ids"] = differ
        log[name] = entry
        log_path.write_text(json.dumps(log, indent=2, sort_keys=True) + "\n")
        print(name, entry.get("identical_outputs", entry.get("reason")), f"{entry['seconds']} s", flush=True)
    log_path.write_text(json.dumps(log, indent=2, sort_keys=True) + "\n")


def shown(command: str) -> str:
    """The logged command as a user would type it (`t2 eval …`, without the scratch --out)."""
    return re.sub(r" --out \S+", "", command.replace("-m t2cli.cli.app ", "t2 "))


def historical_experts(commit: str, base: str) -> dict[str, str]:
    """{name: tensors sha256} of the shipped registry as it was at `commit`."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", commit, f"registry/{base}/"], cwd=ROOT, capture_output=True, text=True
    )
    hashes = {}
    for path in listing.stdout.split():
        if path.endswith("/expert.json"):
            meta = json.loads(subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True).stdout)
            hashes[meta["name"]] = meta["tensors_sha256"]
    return hashes


def stamp(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from t2cli.models import load_model
    from t2cli.provenance import report_record as provenance
    from t2cli.registry import Registry

    committed = RESULTS / "provenance-verification.json"  # earlier verifications stay; this work's runs update them
    earlier = json.loads(committed.read_text()) if committed.exists() else {}
    log = {name: entry for name, entry in earlier.items() if (RESULTS / name).is_dir()}
    for path in sorted(work.parent.glob(f"{work.name}*/verification.json")):  # e.g. runs/backfill, runs/backfill-svf
        log |= json.loads(path.read_text())
    committed.write_text(json.dumps(log, indent=2, sort_keys=True) + "\n")
    shipped = ROOT / "registry"
    registry = Registry(roots=[shipped], write_root=shipped)
    models: dict = {}
    unverified = []
    for name in reports():
        path = RESULTS / name / "report.json"
        report = json.loads(path.read_text())
        if "provenance" in report:
            continue
        if report["model"] not in models:
            models[report["model"]] = load_model(report["model"])
        loaded = models[report["model"]]
        made_for = {e.meta["base_fingerprint"] for e in registry.list(loaded.name) if e.error is None}
        if made_for - {loaded.fingerprint}:
            raise SystemExit(f"the registered experts were made for {made_for}, not {loaded.fingerprint}")
        pool = {e.name: e.meta["tensors_sha256"] for e in registry.list(loaded.name) if e.error is None}
        if not uses_experts(report):
            how = "base model only" if not report.get("expert") else "LoRA adapter (not a registered expert)"
            record = provenance(loaded) | {"backfilled": f"{how}: the base fingerprint of the model loaded today"}
        elif name in HISTORICAL:
            commit = HISTORICAL[name]
            cem = report["config"]["dispatch"].get("cem")
            record = provenance(loaded, historical_experts(commit, loaded.name), cem["weights"] if cem else None)
            record["backfilled"] = {
                "verified": False,
                "how": f"the experts of registry/ at commit {commit}, which added this report; not re-run",
                "why": log.get(name, {}).get("reason", ""),
            }
        elif log.get(name, {}).get("verified"):
            expert = report["expert"]
            strategy = expert.removeprefix("adapt:") if expert.startswith("adapt:") else None
            if strategy is None:
                used = {expert: pool[expert]}
            else:
                fixed = strategy.removeprefix("fixed:") if strategy.startswith("fixed:") else None
                used = {n: sha for n, sha in pool.items() if fixed in (None, n)}
            record = provenance(loaded, used)
            record["backfilled"] = {
                "verified": True,
                "how": f"`{shown(log[name]['command'])}` with today's registry/ gave outputs identical to this "
                f"report's first {ITEMS} samples ({log[name]['identical_outputs']})",
            }
        else:
            why = log[name].get("reason") or f"outputs differ: {log[name]}" if name in log else "not re-run (time)"
            unverified.append(f"{name}: {why}")
            continue
        report["provenance"] = record
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        print(f"stamped {name}")
    for line in unverified:
        print(f"NOT stamped (did not verify): {line}")


if __name__ == "__main__":
    step, work = sys.argv[1], Path(sys.argv[2])
    if step == "verify":
        verify(work, *sys.argv[3:4])
    elif step == "stamp":
        stamp(work)
    else:
        raise SystemExit(f"unknown step {step!r}: verify | stamp")
