"""A merged export: the base model with an expert baked into its weights, as a plain Hugging Face
model directory (config, tokenizer, safetensors shards) that `AutoModelForCausalLM` loads and so
every serving stack can serve, with no t2 code at inference time.

SVF experts change every singular value of every targeted matrix (full rank), so the export holds
the composed weights W' = U diag(σ ⊙ z) Vᵀ themselves, not a low-rank approximation of the change.
The model passed in is adapted only while it is written and reverted afterwards, bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from t2cli.errors import T2Error
from t2cli.expert import ExpertVector
from t2cli.files import normal_permissions
from t2cli.models import LoadedModel
from t2cli.placement import EXPORT_DTYPES, dtype_name, torch_dtype, unknown_dtype
from t2cli.provenance import EXPORT_RECORD_FILE, export_record
from t2cli.svd_store import SVDStore


class ExportError(T2Error):
    """The export cannot be written (bad dtype, target directory in the way)."""


def export_merged(
    loaded: LoadedModel,
    store: SVDStore,
    expert: ExpertVector,
    directory: str | Path,
    dtype: str = "float32",
    overwrite: bool = False,
    max_shard_size: str = "2GB",
) -> Path:
    """Write `loaded` with `expert` applied to `directory` (created atomically: a complete directory
    or none); return it. `dtype` is the stored precision of every floating-point tensor."""
    from t2cli.adapt import DenseAdapter

    target = check_export(directory, dtype, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    adapter = DenseAdapter(loaded, store)
    try:
        adapter.apply(expert)
        try:
            _save(loaded, staging, torch_dtype(dtype), max_shard_size)
        finally:
            adapter.revert()
        record = export_record(expert.name, expert.domain, loaded, expert.targets, dtype)
        (staging / EXPORT_RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        normal_permissions(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_export(directory: str | Path, dtype: str, overwrite: bool = False) -> Path:
    """The target directory, if an export with these settings can be written there (nothing is
    written): the dtype is known and the directory is new, empty, or to be overwritten."""
    if dtype not in EXPORT_DTYPES:
        raise ExportError(unknown_dtype("--dtype", dtype, EXPORT_DTYPES))
    target = Path(directory).expanduser()
    if target.exists() and not overwrite and not (target.is_dir() and not any(target.iterdir())):
        raise ExportError(f"{target} already exists and is not an empty directory: choose another or pass --overwrite")
    return target


def _save(loaded: LoadedModel, directory: Path, dtype: torch.dtype, max_shard_size: str) -> None:
    """save_pretrained with every floating tensor in `dtype`; tied tensors stay tied (one copy)."""
    cast: dict[int, torch.Tensor] = {}  # by storage: a tied embedding / LM head is cast once, saved once
    state = {}
    for name, tensor in loaded.model.state_dict().items():
        key = tensor.untyped_storage().data_ptr()
        if key not in cast:
            cast[key] = tensor.detach().to("cpu", dtype) if tensor.is_floating_point() else tensor.detach().cpu()
        state[name] = cast[key]
    loaded.model.save_pretrained(directory, state_dict=state, max_shard_size=max_shard_size)
    loaded.tokenizer.save_pretrained(directory)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    config["dtype"] = dtype_name(dtype)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
