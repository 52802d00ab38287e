"""What a training run writes to its run directory: checkpoint, metrics log, learning curve.

A checkpoint is one small dict saved with `torch.save` (like nanoGPT's): the trained parameters (p
for SVF, A and B for LoRA), the optimiser and scheduler states, the run state (iteration, best state
and score, metrics so far), torch's RNG state and the config. It is written to a temporary file
beside it and `os.replace`d, so a run killed while saving leaves the previous checkpoint intact; the
temporary file a kill -9 leaves behind is removed when the run (or its resume) starts. Resuming
restores all of it; together with a data order that is a pure function of (seed, iteration), the
resumed run follows the uninterrupted run's trajectory exactly.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from t2cli.files import atomic_path, atomic_write_text
from t2cli.train.config import TrainConfig, TrainError

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CURVE_FILE = "learning_curve.png"


@dataclass
class RunState:
    """Everything about the run's progress that is not an optimiser tensor."""

    iteration: int = 0  # completed iterations
    base_score: float | None = None  # validation accuracy of the unadapted model
    init_score: float | None = None  # validation accuracy of --init-expert (None without one)
    best_score: float | None = None
    best_iteration: int = 0  # 0 = the base model (no iteration beat it)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)  # z (SVF) or A and B (LoRA)
    evals_since_best: int = 0
    elapsed_s: float = 0.0  # wall time over all sessions of this run
    metrics: list[dict] = field(default_factory=list)  # one line per completed iteration


# --------------------------------------------------------------------------- RNG


# torch's RNG draws LoRA's initial A and its dropout masks (SVF draws nothing from it). The loop runs
# inside `torch.random.fork_rng`, so saving and setting the state here never touches the caller's.


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- run directory


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed run left in its run directory
    (`.checkpoint.pt-*`, `.metrics.jsonl-*`, `.config.json-*`, a half-saved `.adapter-*`)."""
    removed = []
    for name in (CHECKPOINT_FILE, METRICS_FILE, CONFIG_FILE, "adapter"):
        for path in run_dir.glob(f".{name}-*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# --------------------------------------------------------------------------- checkpoint


@dataclass
class Optimisation:
    """What the optimiser steps, the optimiser and its schedule: saved and restored together."""

    parameters: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def save_checkpoint(path: Path, training: Optimisation, state: RunState, config: TrainConfig) -> Path:
    """Write the whole run state atomically (tmp file in the same directory + os.replace)."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "parameters": {name: tensor.detach().cpu().clone() for name, tensor in training.parameters.items()},
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "state": asdict(state) | {"best_state": {k: v.detach().cpu() for k, v in state.best_state.items()}},
        "rng": rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return path


def load_checkpoint(path: Path, config: TrainConfig) -> dict:
    """Read a checkpoint and check that it belongs to this config; raise TrainError otherwise."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - unreadable for any reason: say which file and why
        raise TrainError(f"cannot read the checkpoint {path} ({type(error).__name__}: {error})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a t2 training checkpoint of format {CHECKPOINT_FORMAT}")
    mismatches = config.resume_mismatches(checkpoint["config"])
    if mismatches:
        raise TrainError(
            f"cannot resume from {path}: the run was started with other settings ({'; '.join(mismatches)}); "
            "pass the same options as the original run"
        )
    return checkpoint


def restore(checkpoint: dict, training: Optimisation) -> RunState:
    """Load the parameters, optimiser, scheduler and RNG states in place; return the run state."""
    parameters = training.parameters
    saved_parameters = checkpoint.get("parameters", checkpoint.get("p"))  # "p", "best_z": before LoRA resumed
    if set(saved_parameters) != set(parameters):
        raise TrainError("the checkpoint trains other parameters than this run (other targets or method)")
    with torch.no_grad():
        for name, tensor in parameters.items():
            tensor.copy_(saved_parameters[name])
    training.optimizer.load_state_dict(checkpoint["optimizer"])
    training.scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    saved = dict(checkpoint["state"])
    best = saved.pop("best_state", None) or saved.pop("best_z", {})
    saved.pop("best_z", None)
    device = next(iter(parameters.values())).device
    return RunState(**saved, best_state={k: v.to(device) for k, v in best.items()})


# --------------------------------------------------------------------------- metrics log


def write_metrics(path: Path, lines: list[dict]) -> None:
    """(Re)write the whole log: on resume, lines of iterations after the checkpoint are dropped."""
    atomic_write_text(path, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))


def append_metrics(path: Path, line: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- learning curve


def plot_learning_curve(
    metrics: list[dict], path: Path, title: str, base: float | None = None, start: tuple[str, float] | None = None
) -> Path | None:
    """Train reward (or loss) and validation accuracy against iteration, the base model's validation
    accuracy as a dashed line and, for a run started from an expert, that (name, accuracy) as a dotted
    one; returns None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display; must precede pyplot's import
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    train_key = "reward/mean" if any("reward/mean" in m for m in metrics) else "loss"
    train = [(m["iter"], m[train_key]) for m in metrics if m.get(train_key) is not None]
    val = [(m["iter"], m["val/accuracy"]) for m in metrics if m.get("val/accuracy") is not None]
    if start is not None:
        val = [(0, start[1]), *val]  # the curve starts at the starting expert
    elif base is not None:
        val = [(0, base), *val]  # the curve starts at the unadapted model
    figure, left = plt.subplots(figsize=(7, 4))
    if train:
        left.plot(*zip(*train), color="tab:blue", alpha=0.8, label=f"train {train_key}")
        if train_key == "reward/mean" and all(-1 <= value <= 1 for _, value in train):
            left.set_ylim(-1.05, 1.05)  # ±1 rewards: keep the scale fixed so runs compare by eye
    left.set_xlabel("iteration")
    left.set_ylabel(f"train {train_key}", color="tab:blue")
    right = left.twinx()
    if val:
        right.plot(*zip(*val), color="tab:orange", marker="o", label="validation accuracy")
    if base is not None:
        right.axhline(base, color="tab:orange", linestyle="--", linewidth=1, label="base model")
    if start is not None:
        right.axhline(start[1], color="tab:green", linestyle=":", linewidth=1.5, label=f"start: {start[0]}")
    right.set_ylabel("validation accuracy", color="tab:orange")
    shown = [value for _, value in val] + [v for v in (base, start and start[1]) if v is not None]
    # a full 0–1 scale unless every accuracy is small (then 1–4% differences would be invisible)
    top = min(1.0, max(0.1, 1.25 * max(shown, default=1.0)))
    right.set_ylim(-0.02 * top, 1.02 * top)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    if handles:
        left.legend(handles=handles, loc="upper left", fontsize="small")
    left.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
