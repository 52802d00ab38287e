"""Put expert vectors into a model: dense (compose W' in place) or factorised (never build W').

Dense:       W' = (U * s) @ Vh with s = σ ⊙ z · (Σσ / Σ(σ ⊙ z)), copied into the module's weight.
             Generation then runs at exactly the base model's speed. The loaded weights are kept
             aside, so `revert()` restores them bit for bit (recomposing would not).
Factorised:  y = U (s ⊙ (Vh x)) + b, with z per batch row. Costs (m+n)·r per token instead of m·n,
             gives ∂y/∂z directly (training) and lets each row of a batch use its own expert.
Switching: `ExpertSwitch` puts one expert (or the base weights) in place through a DenseAdapter and
keeps recently composed weights, so that switching back to a recent expert costs a copy.

At scale: the factors sit on each module's own device (also under a device map) in the store
dtype; s, z and the composition run in float32 (σ's dtype) and only the result takes the weight's
dtype. Where the originals for an exact revert are kept is a choice (`keep`):
  device  a copy next to the weight (fastest revert; costs the targets' size on that device),
  cpu     a copy in host memory, pinned when the weight is on a GPU (revert = one host→device copy),
  files   no copy: revert re-reads each matrix from the model's safetensors files and casts it as
          loading did (bit-exact, costs a disk read per matrix).
`auto`: device on a CPU; on a GPU, device when it leaves room, else cpu.
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
    30-layer model), so trained z stay closer to the float64 value of the formula.

    A uniform z (every entry equal, e.g. an RL run's initial state) is the base model: the rescaling
    gives σ back in exact arithmetic but only to within an ulp in floating point, and adding that
    ulp's ΔW would change W's bits (in float32 most elements, in bfloat16 the exact zeros of a
    de-quantised checkpoint) — in bfloat16 enough to change greedy answers. So it gives W back bit
    for bit.
    """
    z = z.to(factors.S)
    uniform = bool((z == z.reshape(-1)[0]).all())
    if uniform and base is not None:
        return base.to(factors.S.dtype, copy=True)  # never a view of a live weight (callers cache it)
    s = factors.S if uniform else scaled_singular_values(factors.S, z)
    U, Vh = factors.U.to(factors.S.dtype), factors.Vh.to(factors.S.dtype)  # no copy when already float32
    if base is None:
        return (U * s) @ Vh
    return torch.addmm(base.to(factors.S.dtype), U * (s - factors.S), Vh)


def compose_naive(factors: SVDFactors, z: torch.Tensor) -> torch.Tensor:
    """The reference implementation's formula, as it computes it (for benchmarks):
    (U @ diag_embed(σ⊙z) @ Vh) · Σσ/Σ(σ⊙z) — an extra r×r product and an extra pass over W'."""
    z = z.to(factors.S)
    return (factors.U @ torch.diag_embed(factors.S * z) @ factors.Vh) * (factors.S.sum() / (factors.S * z).sum())


ADAPTED = "t2_adapted_with"  # set on a model while a DenseAdapter has its weights changed
KEEP_MODES = ("auto", "device", "cpu", "files")
ROOM_FACTOR = 2.0  # keep="auto" on a GPU keeps the originals there when free memory ≥ this × their size


def _keep_mode(keep: str, weights: list[torch.Tensor]) -> str:
    if keep not in KEEP_MODES:
        raise ExpertError(f"keep must be one of {', '.join(KEEP_MODES)}, not {keep!r}")
    if keep != "auto":
        return keep
    cuda = [w for w in weights if w.device.type == "cuda"]
    if not cuda:
        return "device"
    need = sum(w.numel() * w.element_size() for w in cuda)
    free = min(torch.cuda.mem_get_info(device)[0] for device in {w.device for w in cuda})
    return "device" if free >= ROOM_FACTOR * need else "cpu"


class DenseAdapter:
    """Applies experts to a loaded model in place and reverts to the exact loaded weights.

    One adapter per model at a time: a second one made while the first has an expert applied
    would take the adapted weights for the base weights, so that is refused.
    """

    def __init__(self, loaded: LoadedModel, store: SVDStore, keep: str = "auto"):
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
        offloaded = [name for name, module in self.modules.items() if module.weight.device.type == "meta"]
        if offloaded:
            raise ExpertError(
                f"{offloaded[0]} is offloaded to disk by the device map; experts need every targeted matrix "
                "on a GPU or the CPU (give the device map more memory, or use a smaller --dtype)"
            )
        # Each module's factors on that module's device (a device map may spread them), in the store dtype.
        self.factors = {name: store.factors(name, device=module.weight.device) for name, module in self.modules.items()}
        self.keep = _keep_mode(keep, [module.weight for module in self.modules.values()])
        self._files = None
        if self.keep == "files":
            from t2cli.models import WeightFiles

            if loaded.path is None:
                raise ExpertError(f"keep='files' needs a model loaded from a directory; {loaded.name} has none")
            self._files = WeightFiles(loaded.path)
        # The loaded weights, kept aside in the modules' own layout: revert copies them back bit for bit.
        self.originals = {name: self._keep_copy(module.weight) for name, module in self.modules.items()}
        self.active: str | None = None
        self._changed: set[str] = set()  # targets whose weight differs from the loaded one

    def _keep_copy(self, weight: torch.Tensor) -> torch.Tensor | None:
        if self.keep == "device":
            return weight.detach().clone()
        if self.keep == "cpu":
            pin = weight.device.type == "cuda"
            return weight.detach().to("cpu", copy=True).pin_memory() if pin else weight.detach().to("cpu", copy=True)
        return None

    def original(self, name: str) -> torch.Tensor:
        """The loaded weight of one target, on its module's device, in the module's layout and dtype."""
        weight = self.modules[name].weight
        kept = self.originals[name]
        if kept is not None:
            return kept.to(weight.device, non_blocking=True)
        if name not in self._changed:  # the module holds the original
            return weight.detach()
        # Read it back as loading did: the stored tensor cast to the model's dtype (same rounding).
        return self._files.tensor(f"{name}.weight").to(weight.device, weight.dtype)

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
        original = self.original(name)
        original = original.T if transposed else original
        matrix = compose(self.factors[name], z.to(original.device), base=original)
        return (matrix.T if transposed else matrix).to(original.dtype)

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, torch.Tensor], label: str) -> None:
        """Copy precomposed weights (from `compose`) into the model."""
        for name, module in self.modules.items():
            module.weight.copy_(weights[name])
            self._changed.add(name)
        self._set_active(label)

    @torch.no_grad()
    def apply(self, expert: ExpertVector) -> None:
        """Validate, then compose and copy one matrix at a time (bounded extra memory)."""
        self.check(expert)
        for name, module in self.modules.items():
            module.weight.copy_(self._compose_one(name, expert.z[name]))
            self._changed.add(name)
        self._set_active(expert.name)

    @torch.no_grad()
    def revert(self) -> None:
        """Restore the loaded base weights bit for bit."""
        for name in list(self._changed):
            self.modules[name].weight.copy_(self.original(name))
            self._changed.discard(name)
        self._set_active(None)

    def _set_active(self, label: str | None) -> None:
        self.active = label
        setattr(self.loaded.model, ADAPTED, label)

    @torch.no_grad()
    def weight_change(self) -> dict[str, float]:
        """‖W' − W‖ / ‖W‖ per target for the currently applied weights."""
        changes = {}
        for name, module in self.modules.items():
            original = self.original(name).float()
            changes[name] = float((module.weight.float() - original).norm() / original.norm())
        return changes


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
        dtype, device = base.weight.dtype, base.weight.device
        self.register_buffer("U", factors.U.to(device, dtype), persistent=False)  # (m, r), the weight's dtype
        self.register_buffer("S", factors.S.to(device, torch.promote_types(dtype, torch.float32)), persistent=False)
        self.register_buffer("Vh", factors.Vh.to(device, dtype), persistent=False)  # (r, n)
        self.bias = base.bias
        self.z: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.z if self.z is not None else torch.ones_like(self.S)
        s = scaled_singular_values(self.S, z.to(self.S.dtype))  # (r,) or (B, r), in float32 at least
        h = x @ self.Vh.T  # (B, T, r)
        s = s.to(h.dtype)
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
def factorised(
    loaded: LoadedModel, store: SVDStore, factors: Mapping[str, SVDFactors] | None = None
) -> Iterator[FactorisedModel]:
    """Temporarily swap the targeted modules for SVFLinear; the originals come back on exit.

    `factors`: factors already in memory (e.g. a DenseAdapter's), so nothing is read again and,
    when their device and dtype are the module's, nothing is copied."""
    model = loaded.model
    swapped: dict[str, SVFLinear] = {}
    try:
        for name in store.modules:
            base = model.get_submodule(name)
            held = factors[name] if factors is not None else store.factors(name, device=base.weight.device)
            svf = SVFLinear(base, held)
            model.set_submodule(name, svf)
            swapped[name] = svf
        yield FactorisedModel(swapped)
    finally:
        for name, svf in swapped.items():
            model.set_submodule(name, svf.base)
