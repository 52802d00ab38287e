"""Learning curves of one RL run from its run directory (config.json, metrics.jsonl).

    .venv/bin/python docs/plot_rl_run.py bench/runs/qwen0.5b-math-rl \
        --compare bench/runs/qwen0.5b-math-lora-lr2e-4 bench/runs/qwen0.5b-math-lora-lr1e-3

Draws RUN/curves.png: sampled-rollout accuracy per iteration (with its running mean over 5
iterations), validation accuracy (iteration 0 = the base model's, from the checkpoint), and the
KL to the base model per answer (summed over its tokens): the three numbers that say whether
REINFORCE + KL is learning. `--compare` adds other runs' validation accuracy on the same items
(the LoRA baselines) to the middle panel.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def running_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the up to `window - 1` before it.

    >>> running_mean([0.0, 1.0, 2.0, 3.0], 2)
    [0.0, 0.5, 1.5, 2.5]
    """
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def read_run(run: Path) -> tuple[dict, list[dict]]:
    """A run directory's config and its metrics lines."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((run / "config.json").read_text()), lines


def label(config: dict) -> str:
    """A run as the legend names it: "svf rl, lr 0.01"."""
    return f"{config['method']} {config['objective']}, lr {config['lr']:g}"


def own_base_score(run: Path) -> float | None:
    """The base model's validation accuracy as a run measured it (its own dtype): from its
    checkpoint, or from its saved adapter's recipe (a LoRA checkpoint is not committed)."""
    if (run / "checkpoint.pt").exists():
        return torch.load(run / "checkpoint.pt", weights_only=False)["state"]["base_score"]
    recipe = run / "adapter" / "t2_lora.json"
    if recipe.exists():
        return json.loads(recipe.read_text())["metrics"]["base_val_accuracy"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run directory (config.json, metrics.jsonl, checkpoint.pt)")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="other run directories (validation only)")
    args = parser.parse_args()
    config, lines = read_run(args.run)
    base = own_base_score(args.run)
    iters = [line["iter"] for line in lines]
    train_accuracy = [line["train/accuracy"] for line in lines]
    validated = [(line["iter"], line["val/accuracy"]) for line in lines if "val/accuracy" in line]
    if base is not None:
        validated = [(0, base), *validated]

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.6))
    left.plot(iters, train_accuracy, ".", alpha=0.5, label="per iteration")
    left.plot(iters, running_mean(train_accuracy, 5), "-", label="running mean (5)")
    left.set(title="sampled rollouts correct", xlabel="iteration", ylim=(0, 1))
    left.legend()
    middle.plot(*zip(*validated), "o-", label=label(config))
    for other in args.compare:
        other_config, other_lines = read_run(other)
        points = [(line["iter"], line["val/accuracy"]) for line in other_lines if "val/accuracy" in line]
        other_base = own_base_score(other)
        if other_base is not None:
            points = [(0, other_base), *points]  # its own base validation: dtypes can differ
        middle.plot(*zip(*points), "s--", label=label(other_config))
    if base is not None:
        middle.axhline(base, color="grey", linestyle=":", label=f"base {base:.0%}")
        middle.legend()
    middle.set(title=f"validation accuracy (first {config['val_limit']}, greedy)", xlabel="iteration")
    right.plot(iters, [line["kl"] for line in lines], "-")
    right.set(title=f"KL to the base per answer (λ = {config['kl']})", xlabel="iteration", ylabel="nats")
    fig.suptitle(
        f"{config['model']} {config['task']}: {config['objective']}, lr {config['lr']}, "
        f"{config['batch_size']} prompts × {config['rollouts_per_prompt']} rollouts at T {config['temperature']}"
    )
    fig.tight_layout()
    fig.savefig(args.run / "curves.png", dpi=110)
    print(args.run / "curves.png")


if __name__ == "__main__":
    main()
