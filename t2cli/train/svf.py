"""The SVF method: train one logit vector p per target matrix, z = max_multiplier · sigmoid(p).

Rollouts and validation generate with dense composed weights W' (the base model's speed); the loss
runs through the factorised model y = U (s(z) ⊙ (Vᵀ x)), where ∂loss/∂z exists without composing
W', and `base=True` sets z to None there: the base model with a zero delta, the KL reference. The
best z is registered as an expert, with its recipe in the provenance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from t2cli.adapt import DenseAdapter, factorised
from t2cli.expert import META_FILE, ExpertVector
from t2cli.models import LoadedModel
from t2cli.placement import dtype_name
from t2cli.registry import Registry
from t2cli.svd_store import open_or_decompose
from t2cli.train.config import TrainConfig, TrainError
from t2cli.train.distributed import Processes, barrier
from t2cli.train.method import State
from t2cli.train.objective import Sample, completion_logits


def z_of(p: Mapping[str, torch.Tensor], max_multiplier: float) -> dict[str, torch.Tensor]:
    return {name: max_multiplier * torch.sigmoid(value) for name, value in p.items()}


def p_of(expert: ExpertVector, max_multiplier: float) -> dict[str, torch.Tensor]:
    """The p whose z_of is the expert's z (the inverse of z = max_multiplier · sigmoid(p))."""
    top = max(float(z.max()) for z in expert.z.values())
    if top >= max_multiplier:
        raise TrainError(
            f"expert {expert.name!r} has z values up to {top:.3g}, not below --max-multiplier "
            f"{max_multiplier:g}; pass a larger --max-multiplier to start from it"
        )
    tiny = torch.finfo(torch.float32).eps
    return {name: torch.logit((z.float() / max_multiplier).clamp(tiny, 1 - tiny)) for name, z in expert.z.items()}


class SVFMethod:
    """p (float32, on the model's device) for every target of the SVD store of `config.targets`."""

    name = "svf"

    @staticmethod
    def check(config: TrainConfig, base_name: str, registry: Registry) -> None:
        """Refuse before anything is loaded: a taken expert name."""
        if (registry.write_root / base_name / config.expert_name / META_FILE).exists() and not config.overwrite:
            raise TrainError(
                f"an expert named {config.expert_name!r} already exists for {base_name}; choose "
                "another --name or pass --overwrite"
            )

    def __init__(
        self,
        loaded: LoadedModel,
        config: TrainConfig,
        procs: Processes,
        registry: Registry,
        domain: str,
        start_from: str | None,
        on_decompose: Callable[[int, int, str], None] | None = None,
    ):
        """`on_decompose(done, total, matrix)` hears the progress of a first-use decomposition."""
        self.loaded, self.config, self.registry, self.domain = loaded, config, registry, domain
        self.expert: ExpertVector | None = None
        # rank 0 finds the store in the model's dtype (or decomposes it); the others then read its files
        dtype = dtype_name(loaded.dtype)
        store = open_or_decompose(loaded, config.targets, dtype=dtype, progress=on_decompose) if procs.main else None
        barrier(procs)
        self.store = store or open_or_decompose(loaded, config.targets, dtype=dtype)
        self.adapter = DenseAdapter(loaded, self.store)  # dense W' for generation; holds U, σ, Vᵀ in memory
        # Sorted names: a fresh store lists modules in model order, a reopened one (JSON, sorted keys) in
        # name order; p's noise draws and the flat all-reduce buffer must not depend on which one we got.
        generator = torch.Generator().manual_seed(config.seed)
        self.parameters = {
            module: (config.init_mean + config.init_std * torch.randn(self.store.ranks[module], generator=generator))
            .to(loaded.device)
            .requires_grad_()
            for module in sorted(self.store.ranks)
        }
        if start_from:
            start = registry.load(start_from, loaded.name)
            start.validate_for(self.store.ranks, loaded.name, loaded.fingerprint)
            with torch.no_grad():
                for module, value in p_of(start, config.max_multiplier).items():
                    self.parameters[module].copy_(value)

    @property
    def num_parameters(self) -> int:
        return self.store.num_parameters

    def z(self) -> dict[str, torch.Tensor]:
        return z_of(self.parameters, self.config.max_multiplier)

    @contextmanager
    def generation_weights(self, base: bool = False) -> Iterator[None]:
        if base:  # the loaded weights are the base model
            yield
            return
        loaded = self.loaded
        with torch.no_grad():
            z = {k: v.detach() for k, v in self.z().items()}
        expert = ExpertVector(z, "in-training", loaded.name, loaded.fingerprint, self.store.targets)
        try:
            self.adapter.apply(expert)
            yield
        finally:
            self.adapter.revert()

    @contextmanager
    def loss_model(self) -> Iterator:
        model = self.loaded.model
        with factorised(self.loaded, self.store, factors=self.adapter.factors) as adapted:  # no second copy

            def forward(samples: Sequence[Sample], *, base: bool = False):
                adapted.set_z(None if base else self.z())  # None: σ unchanged, the base model
                return completion_logits(model, samples)

            yield forward

    def snapshot(self) -> State:
        return {k: v.detach().clone() for k, v in self.z().items()}

    def base_state(self) -> State:
        uniform = float(self.config.max_multiplier * torch.sigmoid(torch.tensor(self.config.init_mean)))
        return {
            module: torch.full((rank,), uniform, device=self.loaded.device) for module, rank in self.store.ranks.items()
        }

    def save(self, best: State, recipe: dict) -> Path:
        loaded, config = self.loaded, self.config
        self.expert = ExpertVector(
            z={k: v.detach().cpu() for k, v in best.items()},
            name=config.expert_name,
            base_model=loaded.name,
            base_fingerprint=loaded.fingerprint,
            targets=list(self.store.targets),
            domain=self.domain,
            parameterisation={"kind": "sigmoid", "max_multiplier": config.max_multiplier},
            provenance=recipe,
        )
        return self.registry.add(self.expert, overwrite=config.overwrite).path

    def close(self) -> None:
        if self.adapter.active is not None:
            self.adapter.revert()
