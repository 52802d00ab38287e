"""The per-row SVF layer: one batch, a different expert on each row, no composed weight copy.

Each targeted matrix W = U diag(σ) Vᵀ is applied to a batch as

    y = x Wᵀ (+ b) + ((x V) ⊙ (s_row − σ)) Uᵀ,    s_row = σ ⊙ z_row · Σσ / Σ(σ ⊙ z_row)

that is, the module's own exact output plus a low-rank correction for the rows that carry an
expert (rows on the base model skip it, and a batch of base rows runs at the base model's speed).
In exact arithmetic this is x W'ᵀ with the dense composition W' = W + U (s − σ) Vᵀ that
`t2cli.adapt` copies into the weights, so a request gets the numbers of `t2 eval --expert` up to
float rounding (≈1e-6 relative per matrix). The pure factorised form ((x V) ⊙ s_row) Uᵀ is cheaper
but does not reproduce W from float32 factors within that tolerance: bench/serve_layer.py measures
the variants side by side.

`RowScales` is what the engine sets before each forward: one (rows, r) tensor of s − σ per module,
and which batch rows they belong to.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from t2cli.adapt import scaled_singular_values
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.svd_store import SVDStore


class RowScales:
    """The experts of the next forward's rows, shared by every PerRowSVF layer of a model.

    `deltas[module]`: (R, r) values of s − σ for the R rows that carry an expert; `rows`: which
    batch rows those are (None: all of them, in order). `deltas` None: every row is on the base."""

    def __init__(self) -> None:
        self.deltas: dict[str, torch.Tensor] | None = None
        self.rows: torch.Tensor | None = None

    def set(self, deltas: dict[str, torch.Tensor] | None, rows: torch.Tensor | None = None) -> None:
        self.deltas, self.rows = deltas, rows

    def clear(self) -> None:
        self.set(None)


class PerRowSVF(nn.Module):
    """A targeted Linear (or GPT-2 Conv1D) plus the per-row low-rank expert correction."""

    def __init__(self, name: str, base: nn.Module, U: torch.Tensor, Vh: torch.Tensor, scales: RowScales):
        super().__init__()
        self.name = name
        self.base = base  # computes x Wᵀ + b exactly as the loaded model does
        dtype, device = base.weight.dtype, base.weight.device
        self.register_buffer("V", Vh.T.to(device, dtype).contiguous(), persistent=False)  # (n, r)
        self.register_buffer("Ut", U.T.to(device, dtype).contiguous(), persistent=False)  # (r, m)
        self.scales = scales

    @property
    def weight(self) -> torch.Tensor:  # what code reading `module.weight` expects (the same Parameter)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        deltas = self.scales.deltas
        if deltas is None:
            return y
        rows = self.scales.rows
        picked = x if rows is None else x.index_select(0, rows)  # (R, T, n)
        correction = ((picked @ self.V) * deltas[self.name][:, None, :]) @ self.Ut  # (R, T, m)
        return y + correction if rows is None else y.index_add(0, rows, correction)


class PerRowModel:
    """A loaded model whose targeted matrices are PerRowSVF layers (until `remove`).

    The factors are read once from the store onto each module's device in the module's dtype;
    σ stays in float32 (at least), where the scales are computed."""

    def __init__(self, loaded: LoadedModel, store: SVDStore):
        self.loaded, self.store = loaded, store
        self.scales = RowScales()
        self.sigma: dict[str, torch.Tensor] = {}
        self.layers: dict[str, PerRowSVF] = {}
        model = loaded.model
        for name in store.modules:
            base = model.get_submodule(name)
            factors = store.factors(name, device=base.weight.device)
            self.sigma[name] = factors.S.to(torch.promote_types(factors.S.dtype, torch.float32))
            layer = PerRowSVF(name, base, factors.U, factors.Vh, self.scales)
            model.set_submodule(name, layer)
            self.layers[name] = layer

    @property
    def ranks(self) -> dict[str, int]:
        return {name: int(sigma.numel()) for name, sigma in self.sigma.items()}

    def deltas(self, expert: ExpertVector) -> dict[str, torch.Tensor]:
        """s − σ per module for one expert (checked against the model first), in each layer's dtype."""
        expert.validate_for(self.store.ranks, self.loaded.name, self.loaded.fingerprint)
        return {name: self.delta(name, expert.z[name]) for name in self.layers}

    def delta(self, name: str, z: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma[name]
        delta = scaled_singular_values(sigma, z.to(sigma.device, sigma.dtype)) - sigma
        return delta.to(self.layers[name].V.dtype)

    def remove(self) -> None:
        """Put the original modules back."""
        for name, layer in self.layers.items():
            self.loaded.model.set_submodule(name, layer.base)
        self.layers.clear()
        self.scales.clear()


def stack_deltas(per_row: list[Mapping[str, torch.Tensor] | None]) -> tuple[dict[str, torch.Tensor] | None, list[int]]:
    """The RowScales content of a batch: each module's (R, r) stack over the rows that carry an
    expert, and those rows' indices (empty: a base-only batch, returned as None)."""
    rows = [index for index, deltas in enumerate(per_row) if deltas is not None]
    if not rows:
        return None, []
    first = per_row[rows[0]]
    stacked = {name: torch.stack([per_row[i][name] for i in rows]) for name in first}  # type: ignore[index]
    return stacked, rows
