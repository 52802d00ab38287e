"""Where a result came from: three records, built here only, and the check that a committed result
still matches the experts it names.

  an expert's recipe  how an expert (or a LoRA adapter) was made, stored as `provenance` in its
                      expert.json (merged into a LoRA adapter's t2_lora.json):
                      `training_recipe` (t2 train) or `mixture_recipe` (t2 mix)
  a report's record   what an evaluation or a benchmark ran on: the base model's weight fingerprint
                      and the SHA-256 of each expert's tensor file (+ the mixture weights when it
                      mixed them): `report_record`
  an export's record  what a merged export holds, written beside it: `export_record`

`check_reports` compares every report.json under a folder with a registry (`check_record` one record
from elsewhere, e.g. a benchmark's output) and returns one Finding per way it no longer matches: an
expert replaced, removed, or made for other base weights, or no record at all.

    >>> print(Finding(Path("docs/results/svf/gsm8k/report.json"), "expert 'math' changed").line())
    docs/results/svf/gsm8k/report.json: expert 'math' changed
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from t2cli.errors import RegistryError

if TYPE_CHECKING:
    from t2cli.models import LoadedModel

EXPORT_RECORD_FILE = "t2_export.json"  # an export's record, beside its config.json
RECIPE_FIELDS = {"metrics": dict, "hyperparameters": dict, "recipe": dict}  # recipe fields readers rely on
NO_RECORD = "no provenance (base fingerprint and expert hashes): re-run it or verify and backfill"


def timestamp() -> str:
    """Now, in UTC, as every record writes it: 2025-01-31T12:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- an expert's recipe


def training_recipe(
    hyperparameters: Mapping[str, Any],
    task: str,
    metrics: Mapping[str, Any],
    *,
    data_source: str,
    world_size: int,
    wall_time: float,
    task_spec: Mapping[str, Any] | None = None,
) -> dict:
    """How a trained expert or adapter was made: `hyperparameters` (the run's whole config, its
    method, objective and command among them), the `task` and, for a task from a data file, the
    `task_spec` that rebuilds it; the outcome (`metrics`), the data, the processes and the time."""
    return {
        "task": task,
        "method": hyperparameters["method"],
        "objective": hyperparameters["objective"],
        "hyperparameters": dict(hyperparameters),
        "metrics": dict(metrics),
        "data_source": data_source,
        **({"task_spec": dict(task_spec)} if task_spec else {}),
        "world_size": world_size,
        "wall_time_s": round(wall_time, 2),
        "command": hyperparameters["command"],
        "created": timestamp(),
    }


@dataclass(frozen=True)
class ValidationRecord:
    """What a trained expert's recipe says it gained on its task's validation items."""

    base: float  # the base model's accuracy
    best: float  # the registered state's accuracy
    best_iteration: int  # 0: no iteration beat the base model
    iterations: int  # done when the expert was registered
    planned: int  # the run's --iters (more than `iterations`: an interim expert, or an early stop)
    items: int


def validation_record(recipe: Mapping[str, Any]) -> ValidationRecord | None:
    """The validation outcome of a `training_recipe` (None for a mixture or a recipe without one)."""
    metrics, hyperparameters = recipe.get("metrics") or {}, recipe.get("hyperparameters") or {}
    if metrics.get("base_val_accuracy") is None or metrics.get("best_val_accuracy") is None:
        return None
    return ValidationRecord(
        base=metrics["base_val_accuracy"],
        best=metrics["best_val_accuracy"],
        best_iteration=metrics.get("best_iteration", 0),
        iterations=metrics.get("iterations", 0),
        planned=hyperparameters.get("iters", metrics.get("iterations", 0)),
        items=metrics.get("val_examples", 0),
    )


def mixture_recipe(
    experts: Sequence[str], weights: Sequence[float], normalize: bool, per_layer: Mapping[str, Mapping[str, float]]
) -> dict:
    """How a mixture z' = Σ αₖ zₖ was made: the experts, their global weights, whether each matrix's
    weights were normalised, and the per-matrix overrides."""
    return {
        "objective": "mix",
        "recipe": {
            "experts": list(experts),
            "weights": [float(w) for w in weights],
            "normalize": normalize,
            "per_layer": {name: dict(alphas) for name, alphas in per_layer.items()},
        },
        "created": timestamp(),
    }


# --------------------------------------------------------------------------- a report's record


def report_record(
    loaded: LoadedModel, experts: Mapping[str, str] | None = None, mixture: Mapping[str, float] | None = None
) -> dict:
    """What a report needs to stay checkable: {base_model, base_fingerprint, dtype, experts: {name:
    tensors sha256}} (+ mixture: {name: α} when the experts were mixed). The dtype is the one the
    answers were computed in: greedy answers of the same weights can differ between dtypes."""
    record = {
        "base_model": loaded.name,
        "base_fingerprint": loaded.fingerprint,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "experts": dict(sorted((experts or {}).items())),
    }
    if mixture:
        record["mixture"] = {name: float(alpha) for name, alpha in sorted(mixture.items())}
    return record


# --------------------------------------------------------------------------- an export's record


def export_record(expert: str, domain: str, loaded: LoadedModel, targets: Sequence[str], dtype: str) -> dict:
    """What a merged export holds: which expert on which base weights, its targets and stored dtype."""
    return {
        "expert": expert,
        "domain": domain,
        "base_model": loaded.name,
        "base_fingerprint": loaded.fingerprint,
        "targets": list(targets),
        "dtype": dtype,
    }


# --------------------------------------------------------------------------- the check


class ExpertIndex(Protocol):
    """What the check reads from a registry (a `t2cli.registry.Registry`)."""

    def find(self, name: str, base_model: str) -> Any: ...

    def list(self, base_model: str | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class Finding:
    report: Path
    problem: str

    def line(self) -> str:
        return f"{self.report}: {self.problem}"


def check_record(source: Path, record: dict, registry: ExpertIndex) -> list[Finding]:
    """The ways one report's record ({base_model, base_fingerprint, experts: {name: tensors sha256}},
    from a report or a benchmark's output `source`) no longer matches `registry` (empty: it does)."""
    try:
        base, fingerprint, experts = record["base_model"], record["base_fingerprint"], dict(record["experts"])
    except (KeyError, TypeError, ValueError):
        return [Finding(source, NO_RECORD)]
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


def check_report(path: Path, registry: ExpertIndex) -> list[Finding]:
    """The ways one report.json no longer matches `registry` (empty: it still does)."""
    try:
        record = json.loads(Path(path).read_text())["provenance"]
    except (OSError, ValueError, KeyError, TypeError):
        return [Finding(path, NO_RECORD)]
    return check_record(path, record, registry)


def check_reports(folder: Path, registry: ExpertIndex) -> list[Finding]:
    """Every report.json under `folder`, checked against `registry`."""
    return [finding for path in sorted(Path(folder).rglob("report.json")) for finding in check_report(path, registry)]
