"""LoRA adapters through PEFT: their size beside SVF's, attaching one to a model on exactly SVF's
targets, and saving / loading the adapter directory (a normal PEFT directory, `save_pretrained`:
adapter_config.json + adapter_model.safetensors, plus `t2_lora.json` with the base model's
fingerprint, the recipe and the metrics).

The paper's LoRA baseline: rank 16, alpha 32, dropout 0.05. Training it is `lora.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from t2cli.errors import T2Error
from t2cli.files import normal_permissions
from t2cli.models import LoadedModel
from t2cli.svd_store import select_targets, weight_matrix
from t2cli.train.config import TrainError

LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05  # the paper's LoRA baseline
META_FILE = "t2_lora.json"
META_FORMAT = 1


def adapter_weights_sha256(directory: str | Path) -> str | None:
    """SHA-256 of an adapter directory's weights file (None where it has none)."""
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        path = Path(directory) / name
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
            return digest.hexdigest()
    return None


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
        normal_permissions(tmp)
        if directory.exists():  # a directory cannot be replaced by os.replace: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}-old-", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return directory
