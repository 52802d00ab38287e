"""What a training run writes to its run directory: checkpoint, metrics log, learning curve.

A checkpoint is one small dict saved with `torch.save` (like nanoGPT's): the trainable p, the
optimiser and scheduler states, the run state (iteration, best z and score, metrics so far), the
RNG states and the config. It is written to a temporary file and `os.replace`d, so a run killed
while saving leaves the previous checkpoint intact. Resuming restores all of it; together with
a data order that is a pure function of (seed, iteration), the resumed run follows the
uninterrupted run's trajectory exactly.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from t2cli.files import atomic_path, atomic_write_text
from t2cli.train.config import TrainConfig, TrainError

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"


@dataclass
class RunState:
    """Everything about the run's progress that is not an optimiser tensor."""

    iteration: int = 0  # completed iterations
    base_score: float | None = None  # validation accuracy of the unadapted model
    init_score: float | None = None  # validation accuracy of --init-expert (None without one)
    best_score: float | None = None
    best_iteration: int = 0  # 0 = the base model (no iteration beat it)
    best_z: dict[str, torch.Tensor] = field(default_factory=dict)
    evals_since_best: int = 0
    elapsed_s: float = 0.0  # wall time over all sessions of this run
    metrics: list[dict] = field(default_factory=list)  # one line per completed iteration


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    # random.getstate() is nested tuples; a round trip through some serialisers gives lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


# --------------------------------------------------------------------------- checkpoint


def save_checkpoint(
    path: Path,
    *,
    p: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: RunState,
    config: TrainConfig,
) -> Path:
    """Write the whole run state atomically (tmp file in the same directory + os.replace)."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config.to_dict(),
        "p": {name: tensor.detach().cpu().clone() for name, tensor in p.items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": asdict(state) | {"best_z": {k: v.detach().cpu() for k, v in state.best_z.items()}},
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


def restore(
    checkpoint: dict,
    *,
    p: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> RunState:
    """Load p, optimiser, scheduler and RNG states in place; return the run state."""
    if set(checkpoint["p"]) != set(p):
        raise TrainError("the checkpoint adapts other matrices than this run's SVD store")
    with torch.no_grad():
        for name, tensor in p.items():
            tensor.copy_(checkpoint["p"][name])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    saved = dict(checkpoint["state"])
    device = next(iter(p.values())).device
    saved["best_z"] = {k: v.to(device) for k, v in saved["best_z"].items()}
    return RunState(**saved)


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


def plot_learning_curve(metrics: list[dict], path: Path, title: str, base: float | None = None,
                        start: tuple[str, float] | None = None) -> Path | None:
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
