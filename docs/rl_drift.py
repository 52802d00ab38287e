"""How far an SVF run's parameters moved, against what AdamW does with pure noise and with a steady signal.

    .venv/bin/python docs/rl_drift.py bench/runs/qwen0.5b-math-rl

z = sigmoid(p) and p starts at 0.1 plus noise of std 0.01. The run's checkpoint holds p now and z
of its best validation state. Beside their root-mean-square distance from 0.1, the script runs
AdamW with the run's own betas, eps and learning rates per iteration on as many parameters, fed
either independent Gaussian gradients every step (no signal: each coordinate's direction is a
coin toss) or the same gradient every step (a steady signal): a run whose parameters moved as far
as the noise-fed optimiser learned a direction no better than chance per coordinate; one near the
steady-signal distance followed its gradient. The gradient-norm clip does not matter here: AdamW's
step does not depend on the gradient's scale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def drift(p: torch.Tensor) -> float:
    return float(((p - 0.1) ** 2).mean().sqrt())


def simulated(n: int, lrs: list[float], group: dict, steady: bool, checkpoints: set[int]) -> dict[int, float]:
    """rms distance from 0.1 after each iteration in `checkpoints`, AdamW on noise or on one fixed gradient."""
    generator = torch.Generator().manual_seed(0)
    p = (0.1 + 0.01 * torch.randn(n, generator=generator)).requires_grad_()
    optimizer = torch.optim.AdamW([p], lr=lrs[0], betas=group["betas"], eps=group["eps"], weight_decay=0.0)
    fixed = torch.randn(n, generator=generator)
    distances = {}
    for iteration, lr in enumerate(lrs, start=1):
        optimizer.param_groups[0]["lr"] = lr
        p.grad = (fixed if steady else torch.randn(n, generator=generator)) * 1e-3 / n**0.5
        optimizer.step()
        if iteration in checkpoints:
            distances[iteration] = drift(p.detach())
    return distances


def main(run: Path) -> None:
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    p_now = torch.cat([v.flatten().float() for v in checkpoint["parameters"].values()])
    state = checkpoint["state"]
    best_iteration, now = state["best_iteration"], state["iteration"]
    p_best = torch.cat([torch.logit(v.double()).float().flatten() for v in state["best_state"].values()])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lr_of = {row["iter"]: row["lr"] for row in rows if "lr" in row}
    lrs = [lr_of[i] for i in range(1, now + 1)]
    group = checkpoint["optimizer"]["param_groups"][0]
    marks = {best_iteration, now}
    noise = simulated(p_now.numel(), lrs, group, steady=False, checkpoints=marks)
    signal = simulated(p_now.numel(), lrs, group, steady=True, checkpoints=marks)
    print(f"{run}: {p_now.numel():,} parameters p, rms distance from the start (0.1)")
    print("| iteration | the run | AdamW fed noise | AdamW fed a steady gradient |")
    print("|---|---|---|---|")
    for iteration, p in ((best_iteration, p_best), (now, p_now)):
        label = f"{iteration} (best validation)" if iteration == best_iteration else f"{iteration} (now)"
        print(f"| {label} | {drift(p):.4f} | {noise[iteration]:.4f} | {signal[iteration]:.4f} |")
    z_rel = torch.cat([(torch.sigmoid(v.float()) / torch.sigmoid(v.float()).mean()).flatten() for v in
                       checkpoint["parameters"].values()])  # fmt: skip
    print(f"z relative to its matrix's mean now: std {z_rel.std():.3f}, range {z_rel.min():.3f}–{z_rel.max():.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: docs/rl_drift.py RUN_DIR (a t2 train --out directory with checkpoint.pt)")
    main(Path(sys.argv[1]))
