"""SVF vs LoRA learning curves per task, from the training runs' metrics.jsonl.

    .venv/bin/python docs/plot_learning_curves.py            # after docs/run_training.sh train-*

Copies each run's metrics (and the LoRA adapter's t2_lora.json) to docs/results/train/<run>/ so the
curves can be redrawn from the repository alone, then draws docs/results/train/<task>.png: train
SFT loss (left) and validation accuracy (right, iteration 0 = the base model) of both methods.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "train"
RUNS = {  # task: (SVF run, LoRA run)
    "arc-easy": ("reasoning", "arc-easy-lora"),
    "gsm8k": ("math", "gsm8k-lora150"),  # the LoRA run on the shipped math expert's budget
    "mbpp-plus": ("code", "mbpp-plus-lora"),
}


def collect(run: str) -> Path | None:
    """docs/results/train/<run>/ with metrics.jsonl (+ base accuracy), refreshed from runs/ if there."""
    source, target = ROOT / "runs" / f"train-{run}", OUT / run
    if (source / "metrics.jsonl").exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / "metrics.jsonl", target / "metrics.jsonl")
        for meta in (source / "adapter" / "t2_lora.json", ROOT / "registry" / "smollm2-135m" / run / "expert.json"):
            if meta.exists():
                shutil.copy(meta, target / meta.name)
    return target if (target / "metrics.jsonl").exists() else None


def base_accuracy(folder: Path) -> float | None:
    for name in ("t2_lora.json", "expert.json"):
        if (folder / name).exists():
            meta = json.loads((folder / name).read_text())
            metrics = meta.get("metrics") or meta.get("provenance", {}).get("metrics", {})
            return metrics.get("base_val_accuracy")
    return None


def main() -> None:
    for task, runs in RUNS.items():
        folders = {method: collect(run) for method, run in zip(("SVF", "LoRA"), runs)}
        if not any(folders.values()):
            continue
        figure, (loss_axis, val_axis) = plt.subplots(1, 2, figsize=(10, 4))
        for (method, folder), color in zip(folders.items(), ("tab:blue", "tab:red")):
            if folder is None:
                continue
            metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line]
            loss_axis.plot([m["iter"] for m in metrics], [m["loss"] for m in metrics], color=color, label=method)
            val = [(m["iter"], m["val/accuracy"]) for m in metrics if "val/accuracy" in m]
            base = base_accuracy(folder)
            if base is not None:
                val = [(0, base), *val]
            val_axis.plot(*zip(*val), color=color, marker="o", label=method)
        loss_axis.set(title=f"{task}: train SFT loss", xlabel="iteration", ylabel="loss")
        val_axis.set(title=f"{task}: validation accuracy (iter 0 = base)", xlabel="iteration", ylabel="accuracy")
        loss_axis.legend()
        val_axis.legend()
        figure.tight_layout()
        figure.savefig(OUT / f"{task}.png", dpi=90)
        plt.close(figure)
        print(f"wrote {OUT / f'{task}.png'}")


if __name__ == "__main__":
    main()
