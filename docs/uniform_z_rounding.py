"""How many weights a uniform z changes: the plain SVF formula against `compose`.

    .venv/bin/python docs/uniform_z_rounding.py qwen2.5-coder-0.5b reasoning bfloat16

An RL run's base state is a uniform z (sigmoid(init_mean) = 0.525, not 1). In exact arithmetic
W + U(s − σ)Vᵀ with s = σ ⊙ z · Σσ/Σ(σ ⊙ z) is W for any uniform z; in floating point s equals σ
only to within an ulp. The script applies the registered expert both ways to every target matrix
and counts the weights, cast to the model's dtype, that differ from the loaded ones: the plain
formula (what `compose` computed before it returned W for a uniform z) and `compose` as it is.
It also counts the exact zeros among the weights (a de-quantised checkpoint has many).
"""

from __future__ import annotations

import sys

import torch

from t2cli.adapt import DenseAdapter, compose, scaled_singular_values
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import find_store


def plain_formula(factors, z: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    s = scaled_singular_values(factors.S, z.to(factors.S))
    U, Vh = factors.U.to(factors.S.dtype), factors.Vh.to(factors.S.dtype)
    return torch.addmm(base.to(factors.S.dtype), U * (s - factors.S), Vh)


@torch.no_grad()
def main(model: str, expert_name: str, dtype: str) -> None:
    loaded = load_model(model, dtype=dtype, device="cpu")
    expert = Registry().load(expert_name, loaded.name)
    store = find_store(loaded, expert.targets)
    if store is None:
        raise SystemExit(f"no SVD store for {model}: run `t2 decompose {model}` first")
    adapter = DenseAdapter(loaded, store)
    plain = composed = zeros = total = 0
    for name, module in adapter.modules.items():
        weight = module.weight.detach()
        factors, z = adapter.factors[name], expert.z[name]
        plain += int((plain_formula(factors, z, weight).to(weight.dtype) != weight).sum())
        composed += int((compose(factors, z, base=weight).to(weight.dtype) != weight).sum())
        zeros += int((weight == 0).sum())
        total += weight.numel()
    z = torch.cat([v.flatten() for v in expert.z.values()])
    uniform = f"uniform z = {z[0].item():.8f}" if bool((z == z[0]).all()) else "z not uniform"
    print(f"{model} {dtype}, expert {expert_name} ({uniform}), {total:,} target weights ({zeros:,} exactly 0):")
    print(f"  plain formula changes {plain:,} ({plain / total:.2%})")
    print(f"  compose changes {composed:,} ({composed / total:.2%})")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.strip().splitlines()[2].strip())
    main(*sys.argv[1:])
