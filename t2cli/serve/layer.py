"""The per-row SVF layer: one batch, a different expert on each row, no composed weight copy.

Each targeted matrix W = U diag(σ) Vᵀ is applied to a batch in one of two forms:

    exact       y = x Wᵀ (+ b) + ((x V) ⊙ (s_row − σ)) Uᵀ
    factorised  y = ((x V) ⊙ s_row) Uᵀ (+ b)          (rows on the base model: x Wᵀ (+ b))

with s_row = σ ⊙ z_row · Σσ / Σ(σ ⊙ z_row). The exact form is the module's own output plus a
low-rank correction for the rows that carry an expert (rows on the base model skip it, and a batch
of base rows runs at the base model's speed). In exact arithmetic both equal x W'ᵀ with the dense
composition W' = W + U (s − σ) Vᵀ that `t2cli.adapt` copies into the weights. In float32 the exact
form reproduces `t2 eval --expert` up to rounding (≈4e-7 relative per matrix, logits within about
1e-4: 0.7–1.2e-4 on smollm2-135m, bench/serve_precision.py);
the factorised form reads U and V but not W — about 1.4× the dense product instead of 2.4× — and
carries the float32 factors' own error (≈2e-6 relative per matrix, a few 1e-4 on the logits), so
greedy text can differ from `t2 eval --expert` where two tokens are that close. bench/serve_layer.py
measures both side by side.

`RowScales` is what the engine sets before each forward: one (rows, r) tensor per module — the
per-row values, s − σ (exact) or s (factorised) — which batch rows they belong to, and the others.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from t2cli.adapt import scaled_singular_values
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.svd_store import SVDStore

FORMS = ("exact", "factorised")


class RowScales:
    """The experts of the next forward's rows, shared by every PerRowSVF layer of a model.

    `deltas[module]`: (R, r) per-row values (s − σ, or s in the factorised form) for the R rows that
    carry an expert; `rows`: which batch rows those are (None: all of them, in order), and
    `others` the batch rows on the base model. `deltas` None: every row is on the base."""

    def __init__(self) -> None:
        self.deltas: dict[str, torch.Tensor] | None = None
        self.rows: torch.Tensor | None = None
        self.others: torch.Tensor | None = None

    def set(
        self,
        deltas: dict[str, torch.Tensor] | None,
        rows: torch.Tensor | None = None,
        others: torch.Tensor | None = None,
    ) -> None:
        if (rows is None) != (others is None):
            raise ValueError("rows and others are given together (or neither, when every row carries an expert)")
        self.deltas, self.rows, self.others = deltas, rows, others

    def clear(self) -> None:
        self.set(None)


class PerRowSVF(nn.Module):
    """A targeted Linear (or GPT-2 Conv1D) with a per-row expert, in the exact or factorised form."""

    def __init__(
        self, name: str, base: nn.Module, U: torch.Tensor, Vh: torch.Tensor, scales: RowScales, form: str = "exact"
    ):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"unknown per-row form {form!r}: {' or '.join(FORMS)}")
        self.name, self.form = name, form
        self.base = base  # computes x Wᵀ + b exactly as the loaded model does
        dtype, device = base.weight.dtype, base.weight.device
        self.register_buffer("V", Vh.T.to(device, dtype).contiguous(), persistent=False)  # (n, r)
        self.register_buffer("Ut", U.T.to(device, dtype).contiguous(), persistent=False)  # (r, m)
        self.scales = scales

    @property
    def weight(self) -> torch.Tensor:  # what code reading `module.weight` expects (the same Parameter)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deltas = self.scales.deltas
        if deltas is None:
            return self.base(x)
        rows = self.scales.rows
        picked = x if rows is None else x.index_select(0, rows)  # (R, T, n)
        low_rank = ((picked @ self.V) * deltas[self.name][:, None, :]) @ self.Ut  # (R, T, m)
        if self.form == "exact":
            y = self.base(x)
            return y + low_rank if rows is None else y.index_add(0, rows, low_rank)
        bias = getattr(self.base, "bias", None)
        if bias is not None:
            low_rank = low_rank + bias
        if rows is None:
            return low_rank
        others = self.scales.others
        y = low_rank.new_empty((x.shape[0], *low_rank.shape[1:]))
        y.index_copy_(0, others, self.base(x.index_select(0, others)))
        return y.index_copy_(0, rows, low_rank)


class PerRowModel:
    """A loaded model whose targeted matrices are PerRowSVF layers in one form (until `remove`).

    The factors are read once from the store onto each module's device in the module's dtype;
    σ stays in float32 (at least), where the scales are computed."""

    def __init__(self, loaded: LoadedModel, store: SVDStore, form: str = "exact"):
        if form not in FORMS:
            raise ValueError(f"unknown per-row form {form!r}: {' or '.join(FORMS)}")
        self.loaded, self.store, self.form = loaded, store, form
        self.scales = RowScales()
        self.sigma: dict[str, torch.Tensor] = {}
        self.layers: dict[str, PerRowSVF] = {}
        model = loaded.model
        for name in store.modules:
            base = model.get_submodule(name)
            factors = store.factors(name, device=base.weight.device)
            self.sigma[name] = factors.S.to(torch.promote_types(factors.S.dtype, torch.float32))
            layer = PerRowSVF(name, base, factors.U, factors.Vh, self.scales, form)
            model.set_submodule(name, layer)
            self.layers[name] = layer

    @property
    def ranks(self) -> dict[str, int]:
        return {name: int(sigma.numel()) for name, sigma in self.sigma.items()}

    def deltas(self, expert: ExpertVector) -> dict[str, torch.Tensor]:
        """The per-row values of one expert (s − σ, or s in the factorised form) per module, checked
        against the model first, in each layer's dtype."""
        expert.validate_for(self.store.ranks, self.loaded.name, self.loaded.fingerprint)
        return {name: self.delta(name, expert.z[name]) for name in self.layers}

    def delta(self, name: str, z: torch.Tensor) -> torch.Tensor:
        sigma = self.sigma[name]
        scaled = scaled_singular_values(sigma, z.to(sigma.device, sigma.dtype))
        return (scaled if self.form == "factorised" else scaled - sigma).to(self.layers[name].V.dtype)

    def remove(self) -> None:
        """Put the original modules back."""
        for name, layer in self.layers.items():
            self.loaded.model.set_submodule(name, layer.base)
        self.layers.clear()
        self.scales.clear()


def stack_deltas(per_row: list[Mapping[str, torch.Tensor] | None]) -> tuple[dict[str, torch.Tensor] | None, list[int]]:
    """The RowScales content of a batch: each module's (R, r) stack of per-row values over the rows
    that carry an expert, and those rows' indices (empty: a base-only batch, returned as None)."""
    rows = [index for index, deltas in enumerate(per_row) if deltas is not None]
    if not rows:
        return None, []
    first = per_row[rows[0]]
    stacked = {name: torch.stack([per_row[i][name] for i in rows]) for name in first}  # type: ignore[index]
    return stacked, rows
