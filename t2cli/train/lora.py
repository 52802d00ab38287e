"""The LoRA method: the paper's baseline (rank 16, alpha 32, dropout 0.05) through PEFT, trained by the
same loop as SVF (`loop.py`) on the same targets, batches, loss and validation.

The paper trains LoRA with the next-token (SFT) loss because policy-gradient LoRA collapsed; so does
this method. The trained parameters are PEFT's A and B (injected into `loaded.model` in place, so
generation already runs with the current adapter); `base=True` disables the adapter (the base
model, no second copy). Only LoRA's own dropout follows the training phase; the base model stays in
eval mode, as in SVF training, so the two methods differ in the adapter only.

Output: a normal PEFT adapter directory (`save_pretrained`: adapter_config.json +
adapter_model.safetensors) plus `t2_lora.json` (base model and fingerprint, recipe, metrics), written
to a temporary directory and `os.replace`d into <run dir>/adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn

from t2cli.errors import T2Error
from t2cli.models import LoadedModel
from t2cli.svd_store import select_targets, weight_matrix
from t2cli.train.config import TrainConfig, TrainError
from t2cli.train.distributed import launched_world_size
from t2cli.train.method import State
from t2cli.train.objective import Sample, completion_logits

LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05  # the paper's LoRA baseline
META_FILE = "t2_lora.json"
META_FORMAT = 1
ADAPTER_DIR = "adapter"  # inside the run directory
RL_REFUSAL = (
    "the LoRA baseline trains with the next-token loss only (--objective sft): the paper trains LoRA "
    "that way because policy-gradient LoRA collapsed"
)


# --------------------------------------------------------------------------- targets, sizes, attach, files


def target_shapes(model: nn.Module, targets: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(m, n) = (out, in) of every targeted matrix; works on a meta-device model (no weights)."""
    modules = dict(model.named_modules())
    return {name: tuple(weight_matrix(modules[name]).shape) for name in select_targets(model, targets)}


def lora_parameter_count(model: nn.Module, targets: Sequence[str], rank: int = LORA_RANK) -> int:
    """Σ r·(m + n): A is r×n, B is m×r for every targeted m×n matrix."""
    return sum(rank * (m + n) for m, n in target_shapes(model, targets).values())


def svf_parameter_count(model: nn.Module, targets: Sequence[str]) -> int:
    """Σ min(m, n): one scale per singular value (SVF's size, for comparison)."""
    return sum(min(m, n) for m, n in target_shapes(model, targets).values())


def lora_config(
    model: nn.Module,
    targets: Sequence[str],
    rank: int = LORA_RANK,
    alpha: float = LORA_ALPHA,
    dropout: float = LORA_DROPOUT,
):
    """PEFT's LoraConfig on exactly the modules SVF adapts (full module names, not suffixes)."""
    from peft import LoraConfig

    names = select_targets(model, targets)
    modules = dict(model.named_modules())
    conv1d = all(type(modules[name]).__name__ == "Conv1D" for name in names)  # GPT-2: weights stored (in, out)
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=names,
        bias="none",
        fan_in_fan_out=conv1d,
        task_type="CAUSAL_LM",
    )


def attach_lora(
    loaded: LoadedModel,
    targets: Sequence[str] = ("mlp",),
    rank: int = LORA_RANK,
    alpha: float = LORA_ALPHA,
    dropout: float = LORA_DROPOUT,
):
    """Wrap `loaded.model` in a fresh PEFT LoRA (B = 0, so it starts as the base model).

    PEFT injects its layers into `loaded.model` in place: generation through `loaded` uses the
    adapter until `peft_model.unload()` puts the original modules back.
    """
    from peft import get_peft_model

    config = lora_config(loaded.model, targets, rank, alpha, dropout)
    with _quiet():
        return get_peft_model(loaded.model, config)


@contextmanager
def _quiet() -> Iterator[None]:
    """PEFT asks transformers 5 a deprecated question (a FutureWarning); nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_lora(loaded: LoadedModel, directory: str | Path):
    """A saved adapter on `loaded.model` (in place, eval mode); refuses one trained on other weights."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise T2Error(f"{directory} is not a PEFT adapter directory (no adapter_config.json)")
    meta_file = directory / META_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("base_fingerprint") not in (None, loaded.fingerprint):
            raise T2Error(
                f"the LoRA adapter {directory} was trained on {meta.get('base_model')} "
                f"(weights {meta['base_fingerprint'][:12]}), not on {loaded.name} "
                f"(weights {loaded.fingerprint[:12]})"
            )
    with _quiet():
        peft_model = PeftModel.from_pretrained(loaded.model, str(directory), is_trainable=False)
    peft_model.eval()
    return peft_model


def save_adapter(peft_model, directory: str | Path, meta: dict, overwrite: bool = False) -> Path:
    """`save_pretrained` + t2_lora.json into a temporary sibling directory, then `os.replace` it in."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise TrainError(f"{directory} already exists; pass --overwrite or choose another --name / --out")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    old = None
    try:
        peft_model.save_pretrained(str(tmp))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if directory.exists():  # a directory cannot be replaced by os.replace: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}-old-", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return directory


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

    def save(self, best: State, provenance: dict) -> Path:
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
        } | provenance
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
