"""Committed reports stay true: find the reports whose experts (or base model) have changed since.

A report's provenance (t2cli.evaluate.provenance) names the base model's fingerprint and the
SHA-256 of every expert's tensor file it used. `check_reports` compares each report.json under a
folder with a registry and returns one Finding per report that no longer matches: an expert
replaced, removed, or made for other base weights, or a report with no provenance at all.
`check_provenance` does the same for one record from elsewhere (a benchmark's output).

    >>> print(Finding(Path("docs/results/svf/gsm8k/report.json"), "expert 'math' changed").line())
    docs/results/svf/gsm8k/report.json: expert 'math' changed
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from t2cli.errors import RegistryError
from t2cli.registry import Registry


@dataclass(frozen=True)
class Finding:
    report: Path
    problem: str

    def line(self) -> str:
        return f"{self.report}: {self.problem}"


def check_report(path: Path, registry: Registry) -> list[Finding]:
    """The ways one report.json no longer matches `registry` (empty: it still does)."""
    try:
        record = json.loads(Path(path).read_text())["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        return [Finding(path, "no provenance (base fingerprint and expert hashes): re-run it or verify and backfill")]
    return check_provenance(path, record, registry)


def check_provenance(source: Path, record: dict, registry: Registry) -> list[Finding]:
    """The ways one provenance record ({base_model, base_fingerprint, experts: {name: tensors
    sha256}}, from a report or a benchmark's output `source`) no longer matches `registry`."""
    try:
        base, fingerprint, experts = record["base_model"], record["base_fingerprint"], dict(record["experts"])
    except (KeyError, TypeError, ValueError):
        return [Finding(source, "no provenance (base fingerprint and expert hashes): re-run it or verify and backfill")]
    findings = []
    for name, sha in sorted(experts.items()):
        try:
            entry = registry.find(name, base)
        except RegistryError:
            findings.append(Finding(source, f"expert {name!r} is no longer registered for {base}"))
            continue
        if entry.error:
            findings.append(Finding(source, f"expert {name!r} is broken: {entry.error}"))
        elif entry.meta["tensors_sha256"] != sha:
            findings.append(
                Finding(
                    source,
                    f"expert {name!r} changed since this report (tensors {sha[:12]} → "
                    f"{entry.meta['tensors_sha256'][:12]}): re-run the report",
                )
            )
    for entry in registry.list(base):
        if entry.error is None and entry.meta["base_fingerprint"] != fingerprint:
            findings.append(
                Finding(
                    source,
                    f"base model {base} changed: the report used weights {fingerprint[:12]}, the registered "
                    f"expert {entry.name!r} was made for {entry.meta['base_fingerprint'][:12]}",
                )
            )
            break
    return findings


def check_reports(folder: Path, registry: Registry) -> list[Finding]:
    """Every report.json under `folder`, checked against `registry`."""
    return [finding for path in sorted(Path(folder).rglob("report.json")) for finding in check_report(path, registry)]
