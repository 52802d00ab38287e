"""One MLP matrix applied to a batch whose rows carry different experts: the candidate layers side by side.

    python bench/serve_layer.py [--shape 1536x576] [--rows 1,8,32] [--tokens 1] [--experts 3] [--matrices 1]

  dense        x Wᵀ: the base model (the floor)
  exact-base   x Wᵀ + ((x V) ⊙ (s_row − σ)) Uᵀ  (the per-row correction on top of the exact weights)
  factorised   ((x V) ⊙ s_row) Uᵀ               (no W at all)
  grouped      x_g W_gᵀ per expert group, with a composed copy W_g per expert (the weight-copy design)

`--matrices N` applies each variant to N distinct matrices in turn (90 = SmolLM2-135M's MLP: 30
layers × 3), so that the weights, factors and composed copies do not stay in the CPU's cache as
one matrix's do — a decode step reads every matrix once, from memory.

Prints milliseconds per call (over all the matrices) and the ratio to dense, and each variant's largest relative
difference from the dense composed matrix W' = W + U (s − σ) Vᵀ (what `t2 eval --expert` runs).
Writes bench/results/serve_layer.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def timed(function, repeat: int) -> float:
    function()
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat * 1e3


VARIANTS = ("dense", "exact-base", "factorised", "grouped")


class Matrix:
    """One matrix W = U diag(S) Vh, its factors laid out as the layer holds them, and a composed copy
    W' = W + U (s − σ) Vh per expert."""

    def __init__(self, W: torch.Tensor, experts: int):
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        self.W, self.V, self.Ut = W, Vh.T.contiguous(), U.T.contiguous()
        z = 1 + 0.1 * torch.randn(experts, S.numel())
        s = S * z * (S.sum() / (S * z).sum(dim=-1, keepdim=True))  # (k, r)
        self.s, self.delta = s, s - S
        self.composed = [W + (U * (s[k] - S)) @ Vh for k in range(experts)]


def measure(rows: int, tokens: int, experts: int, repeat: int, matrices: list[Matrix]) -> dict:
    """Each variant's milliseconds over all the matrices, ratio to dense, and the largest
    difference from the composed W' (on the first matrix)."""
    m, n = matrices[0].W.shape
    x = torch.randn(rows, tokens, n)
    expert_of_row = torch.arange(rows) % experts
    groups = [(expert_of_row == k).nonzero().squeeze(1) for k in range(experts)]

    def dense(a: Matrix):
        return x @ a.W.T

    def exact_base(a: Matrix):
        return x @ a.W.T + ((x @ a.V) * a.delta[expert_of_row][:, None, :]) @ a.Ut

    def factorised(a: Matrix):
        return ((x @ a.V) * a.s[expert_of_row][:, None, :]) @ a.Ut

    def grouped(a: Matrix):
        y = torch.empty(rows, tokens, m)
        for k, index in enumerate(groups):
            if index.numel():
                y[index] = x[index] @ a.composed[k].T
        return y

    def over_all(variant):
        return lambda: [variant(a) for a in matrices]

    first = matrices[0]
    reference = torch.stack([x[r] @ first.composed[int(expert_of_row[r])].T for r in range(rows)])
    row: dict = {"rows": rows, "tokens": tokens, "experts": experts}
    base_ms = timed(over_all(dense), repeat)
    for name, variant in zip(VARIANTS, (dense, exact_base, factorised, grouped)):
        ms = base_ms if name == "dense" else timed(over_all(variant), repeat)
        error = float((variant(first) - reference).abs().max() / reference.abs().max()) if name != "dense" else None
        row[name] = {"ms": round(ms, 4), "ratio": round(ms / base_ms, 2), "max_rel_diff": error}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", default="1536x576", help="out x in of the matrix (default: SmolLM2-135M's MLP)")
    parser.add_argument("--rows", default="1,8,32", help="batch rows (decode: one token each)")
    parser.add_argument("--tokens", type=int, default=1, help="tokens per row (1: a decode step)")
    parser.add_argument("--experts", type=int, default=3, help="distinct experts over the rows")
    parser.add_argument("--matrices", type=int, default=1, help="distinct matrices per call (90: a model's MLP)")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--out", default="bench/results/serve_layer.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    m, n = (int(v) for v in args.shape.split("x"))
    matrices = [Matrix(torch.randn(m, n) / n**0.5, args.experts) for _ in range(args.matrices)]
    results = []
    for rows in (int(v) for v in args.rows.split(",")):
        row = measure(rows, args.tokens, args.experts, args.repeat, matrices)
        results.append(row)
        print(
            f"rows {rows:3d} × {args.tokens} tokens: "
            + "  ".join(f"{k} {row[k]['ms']:.3f} ms ({row[k]['ratio']:.2f}×)" for k in VARIANTS)
        )
        print(
            "   max |Δ|/max|y| vs the composed W': "
            + "  ".join(f"{k} {row[k]['max_rel_diff']:.1e}" for k in VARIANTS[1:])
        )
    payload = {
        "shape": [m, n],
        "rank": min(m, n),
        "matrices": args.matrices,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
