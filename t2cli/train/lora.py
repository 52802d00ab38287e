"""The LoRA method: the paper's baseline through PEFT (`peft_adapter.py`), trained by the same loop as
SVF (`loop.py`) on the same targets, batches, loss and validation.

The paper trains LoRA with the next-token (SFT) loss because policy-gradient LoRA collapsed; so does
this method. The trained parameters are PEFT's A and B (injected into `loaded.model` in place, so
generation already runs with the current adapter); `base=True` disables the adapter (the base
model, no second copy). Only LoRA's own dropout follows the training phase; the base model stays in
eval mode, as in SVF training, so the two methods differ in the adapter only. The best adapter is
saved to <run dir>/adapter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from t2cli.models import LoadedModel
from t2cli.svd_store import select_targets
from t2cli.train.config import TrainConfig, TrainError
from t2cli.train.distributed import launched_world_size
from t2cli.train.method import State
from t2cli.train.objective import Sample, completion_logits
from t2cli.train.peft_adapter import (  # noqa: F401 (re-exported: `t2 eval --lora` loads adapters from here)
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_RANK,
    META_FILE,
    META_FORMAT,
    attach_lora,
    load_lora,
    save_adapter,
)

ADAPTER_DIR = "adapter"  # inside the run directory
RL_REFUSAL = (
    "the LoRA baseline trains with the next-token loss only (--objective sft): the paper trains LoRA "
    "that way because policy-gradient LoRA collapsed"
)


# --------------------------------------------------------------------------- the method


class LoraMethod:
    """PEFT's A and B on exactly SVF's targets; the best adapter is saved to <run dir>/adapter."""

    name = "lora"
    expert = None  # a LoRA run registers no expert vector

    @staticmethod
    def check(config: TrainConfig, base_name: str, registry: object) -> None:
        """Refuse before anything is loaded: what the baseline does not do, and a taken adapter directory."""
        if config.objective != "sft":
            raise TrainError(f"objective {config.objective!r}: {RL_REFUSAL}")
        if config.init_expert:
            raise TrainError(
                "--init-expert starts an SVF run from an expert's z; a LoRA adapter has no z to start from"
            )
        if launched_world_size() > 1:
            raise TrainError("the LoRA baseline runs in one process (no torchrun / accelerate launch)")
        adapter_dir = config.run_dir / ADAPTER_DIR
        if adapter_dir.exists() and not config.overwrite:
            raise TrainError(
                f"{adapter_dir} already holds a LoRA adapter; pass --overwrite or choose another --name / --out"
            )

    def __init__(
        self,
        loaded: LoadedModel,
        config: TrainConfig,
        domain: str,
        rank: int = LORA_RANK,
        alpha: float = LORA_ALPHA,
        dropout: float = LORA_DROPOUT,
    ):
        self.loaded, self.config, self.domain = loaded, config, domain
        self.rank, self.alpha, self.dropout = rank, alpha, dropout
        self.target_modules = select_targets(loaded.model, config.targets)  # before PEFT wraps them
        self.peft_model = attach_lora(loaded, config.targets, rank, alpha, dropout)  # A: torch's RNG
        _set_dropout(self.peft_model, False)  # PEFT makes its dropout in training mode: only the loss uses it
        self.parameters = {name: p for name, p in self.peft_model.named_parameters() if p.requires_grad}
        self._initial = self.snapshot()  # B = 0: the base model

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters.values())

    def generation_weights(self, base: bool = False):
        # PEFT's layers are in loaded.model already: generation uses the current adapter as it is
        return self.peft_model.disable_adapter() if base else nullcontext()

    @contextmanager
    def loss_model(self) -> Iterator:
        model = self.loaded.model

        def forward(samples: Sequence[Sample], *, base: bool = False):
            with self.peft_model.disable_adapter() if base else nullcontext():
                return completion_logits(model, samples)

        _set_dropout(self.peft_model, True)
        try:
            yield forward
        finally:
            _set_dropout(self.peft_model, False)

    def snapshot(self) -> State:
        return {name: p.detach().clone() for name, p in self.parameters.items()}

    def base_state(self) -> State:
        return self._initial

    def save(self, best: State, recipe: dict) -> Path:
        with torch.no_grad():
            for name, param in self.parameters.items():
                param.copy_(best[name])
        meta = {
            "format": META_FORMAT,
            "method": "lora",
            "name": self.config.expert_name,
            "base_model": self.loaded.name,
            "base_fingerprint": self.loaded.fingerprint,
            "domain": self.domain,
            "lora": {
                "rank": self.rank,
                "alpha": self.alpha,
                "dropout": self.dropout,
                "targets": list(self.config.targets),
                "target_modules": self.target_modules,
            },
            "trainable_parameters": self.num_parameters,
        } | recipe  # the recipe's fields beside the adapter's own, as an expert's provenance holds them
        return save_adapter(self.peft_model, self.config.run_dir / ADAPTER_DIR, meta, overwrite=self.config.overwrite)

    def close(self) -> None:
        _set_dropout(self.peft_model, False)
        self.peft_model.unload()  # the original modules back into loaded.model (no merge)
        for param in self.loaded.model.parameters():
            param.requires_grad_(False)


def _set_dropout(model: nn.Module, training: bool) -> None:
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            module.train(training)
