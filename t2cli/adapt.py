"""Put expert vectors into a model: dense (compose W' in place) or factorised (never build W').

Dense:       W' = (U * s) @ Vh with s = σ ⊙ z · (Σσ / Σ(σ ⊙ z)), copied into the module's weight.
             Generation then runs at exactly the base model's speed. The loaded weights are kept
             aside, so `revert()` restores them bit for bit (recomposing would not).
Factorised:  y = U (s ⊙ (Vh x)) + b, with z per batch row. Costs (m+n)·r per token instead of m·n,
             gives ∂y/∂z directly (training) and lets each row of a batch use its own expert.
Switching: `ExpertSwitch` puts one expert (or the base weights) in place through a DenseAdapter and
keeps recently composed weights, so that switching back to a recent expert costs a copy.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from t2cli.errors import ExpertError
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.svd_store import SVDFactors, SVDStore


def scaled_singular_values(S: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """σ ⊙ z rescaled so that its sum equals Σσ (a uniform z gives σ back). z: (r,) or (B, r)."""
    s = S * z
    return s * (S.sum(dim=-1, keepdim=True) / s.sum(dim=-1, keepdim=True))


def compose(factors: SVDFactors, z: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    """W' as (U * s) @ Vh: scales U's columns instead of multiplying by a diagonal matrix.

    With `base` (the original W, out × in) it computes the same matrix as W + (U * (s − σ)) @ Vh.
    In exact arithmetic the two are equal; in floating point the second avoids the SVD's
    reconstruction error (≈1e-6 relative in float32, which adds up to ~2e-4 in the logits of a
    30-layer model), so a uniform z gives W back bit for bit and trained z stay closer to the
    float64 value of the formula.
    """
    s = scaled_singular_values(factors.S, z.to(factors.S))
    if base is None:
        return (factors.U * s) @ factors.Vh
    return torch.addmm(base.to(factors.S.dtype), factors.U * (s - factors.S), factors.Vh)


def compose_naive(factors: SVDFactors, z: torch.Tensor) -> torch.Tensor:
    """The reference implementation's formula, as it computes it (for benchmarks):
    (U @ diag_embed(σ⊙z) @ Vh) · Σσ/Σ(σ⊙z) — an extra r×r product and an extra pass over W'."""
    z = z.to(factors.S)
    return (factors.U @ torch.diag_embed(factors.S * z) @ factors.Vh) * (factors.S.sum() / (factors.S * z).sum())


ADAPTED = "t2_adapted_with"  # set on a model while a DenseAdapter has its weights changed


class DenseAdapter:
    """Applies experts to a loaded model in place and reverts to the exact loaded weights.

    One adapter per model at a time: a second one made while the first has an expert applied
    would take the adapted weights for the base weights, so that is refused.
    """

    def __init__(self, loaded: LoadedModel, store: SVDStore):
        if (active := getattr(loaded.model, ADAPTED, None)) is not None:
            raise ExpertError(
                f"{loaded.name}'s weights are currently adapted (expert {active!r}): revert that adapter "
                "first, or reuse it (e.g. AdaptiveModel(..., adapter=it))"
            )
        self.loaded = loaded
        self.store = store
        modules = dict(loaded.model.named_modules())
        missing = [name for name in store.modules if name not in modules]
        if missing:
            raise ValueError(f"SVD store targets {missing[0]}, which this model does not have")
        self.modules = {name: modules[name] for name in store.modules}
        self.factors = store.load_all(device=loaded.device)
        # The loaded weights, kept aside in the modules' own layout: revert copies them back bit for bit.
        self.originals = {name: module.weight.detach().clone() for name, module in self.modules.items()}
        self.active: str | None = None

    def check(self, expert: ExpertVector) -> None:
        """Raise ExpertError if the expert does not fit this model (nothing is changed)."""
        expert.validate_for(self.store.ranks, self.loaded.name, self.loaded.fingerprint)

    @torch.no_grad()
    def compose(self, expert: ExpertVector) -> dict[str, torch.Tensor]:
        """Adapted weights for every target, in the modules' own layout and dtype (for caching)."""
        self.check(expert)
        return {name: self._compose_one(name, expert.z[name]) for name in self.modules}

    def _compose_one(self, name: str, z: torch.Tensor) -> torch.Tensor:
        # GPT-2's Conv1D stores the weight as (in, out); the SVD is of the (out, in) matrix.
        transposed = type(self.modules[name]).__name__ == "Conv1D"
        original = self.originals[name].T if transposed else self.originals[name]
        matrix = compose(self.factors[name], z, base=original)
        return (matrix.T if transposed else matrix).to(original.dtype)

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, torch.Tensor], label: str) -> None:
        """Copy precomposed weights (from `compose`) into the model."""
        for name, module in self.modules.items():
            module.weight.copy_(weights[name])
        self._set_active(label)

    @torch.no_grad()
    def apply(self, expert: ExpertVector) -> None:
        """Validate, then compose and copy one matrix at a time (bounded extra memory)."""
        self.check(expert)
        for name, module in self.modules.items():
            module.weight.copy_(self._compose_one(name, expert.z[name]))
        self._set_active(expert.name)

    @torch.no_grad()
    def revert(self) -> None:
        """Restore the loaded base weights bit for bit."""
        for name, module in self.modules.items():
            module.weight.copy_(self.originals[name])
        self._set_active(None)

    def _set_active(self, label: str | None) -> None:
        self.active = label
        setattr(self.loaded.model, ADAPTED, label)

    @torch.no_grad()
    def weight_change(self) -> dict[str, float]:
        """‖W' − W‖ / ‖W‖ per target for the currently applied weights."""
        return {
            name: float((module.weight - self.originals[name]).norm() / self.originals[name].norm())
            for name, module in self.modules.items()
        }


class ExpertSwitch:
    """The model's current weights: the base model or one expert, composed weights in an LRU.

    Each cached entry is a full copy of the targeted matrices, hence the small default capacity.
    Entries are keyed by expert name. Two-pass inference shares one switch between pass 1 and pass 2.
    """

    def __init__(self, adapter: DenseAdapter, capacity: int = 4):
        if capacity < 1:
            raise ValueError("the composed-weights cache needs a capacity ≥ 1")
        self.adapter = adapter
        self.capacity = capacity
        self.cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.compositions = 0  # how many times an expert was composed (cache misses)

    @property
    def active(self) -> str | None:
        return self.adapter.active

    def use(self, expert: ExpertVector | None) -> None:
        """Make `expert` (None: the exact base weights) the model's weights."""
        if expert is None:
            if self.adapter.active is not None:
                self.adapter.revert()
            return
        if self.adapter.active == expert.name:
            return
        weights = self.cache.get(expert.name)
        if weights is None:
            weights = self.adapter.compose(expert)
            self.compositions += 1
            self.cache[expert.name] = weights
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        self.cache.move_to_end(expert.name)
        self.adapter.load_weights(weights, expert.name)


# --------------------------------------------------------------------------- factorised path


class SVFLinear(nn.Module):
    """A Linear (or GPT-2 Conv1D) evaluated through its SVD with a per-row expert vector.

    Set `z` before the forward: shape (r,) for the whole batch or (B, r) for one expert per row;
    None means the base matrix. x: (B, T, n) → y: (B, T, m).
    """

    def __init__(self, base: nn.Module, factors: SVDFactors):
        super().__init__()
        self.base = base  # kept only to restore it afterwards
        dtype = base.weight.dtype
        self.register_buffer("U", factors.U.to(dtype), persistent=False)  # (m, r)
        self.register_buffer("S", factors.S.to(dtype), persistent=False)  # (r,)
        self.register_buffer("Vh", factors.Vh.to(dtype), persistent=False)  # (r, n)
        self.bias = base.bias
        self.z: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.z if self.z is not None else torch.ones_like(self.S)
        s = scaled_singular_values(self.S, z.to(self.S.dtype))  # (r,) or (B, r)
        h = x @ self.Vh.T  # (B, T, r)
        h = h * (s[:, None, :] if s.ndim == 2 else s)
        y = h @ self.U.T  # (B, T, m)
        return y + self.bias if self.bias is not None else y


class FactorisedModel:
    """Handle returned by `factorised`: set the expert (per batch row) for every SVFLinear."""

    def __init__(self, modules: dict[str, SVFLinear]):
        self.modules = modules

    def set_z(self, z: Mapping[str, torch.Tensor] | None) -> None:
        for name, module in self.modules.items():
            module.z = None if z is None else z[name]


@contextmanager
def factorised(loaded: LoadedModel, store: SVDStore) -> Iterator[FactorisedModel]:
    """Temporarily swap the targeted modules for SVFLinear; the originals come back on exit."""
    model = loaded.model
    swapped: dict[str, SVFLinear] = {}
    try:
        for name in store.modules:
            base = model.get_submodule(name)
            svf = SVFLinear(base, store.factors(name, device=loaded.device))
            model.set_submodule(name, svf)
            swapped[name] = svf
        yield FactorisedModel(swapped)
    finally:
        for name, svf in swapped.items():
            model.set_submodule(name, svf.base)
