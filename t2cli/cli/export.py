"""`t2 export NAME --merged DIR`: the base model with a registered expert baked in, as a Hugging Face
model directory that `AutoModelForCausalLM` (and so vLLM, TGI, llama.cpp's converter) loads."""

from __future__ import annotations

from pathlib import Path

import typer

from t2cli.cli.common import console, status, user_errors
from t2cli.defaults import DEFAULT_MODEL
from t2cli.placement import EXPORT_DTYPES as EXPORT_DTYPE_NAMES  # also read under this name by `t2 validate`


def export_command(
    name: str = typer.Argument(..., help="The registered expert to bake in."),
    merged: Path = typer.Option(..., "--merged", help="Write the merged model directory here."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model of the expert."),
    dtype: str = typer.Option("float32", "--dtype", help=f"Stored precision: {', '.join(EXPORT_DTYPE_NAMES)}."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing DIR."),
) -> None:
    """Export base model + expert as one merged Hugging Face model (config, tokenizer, safetensors)."""
    from t2cli.export import check_export, export_merged
    from t2cli.models import load_model, model_key
    from t2cli.registry import Registry
    from t2cli.svd_store import open_store

    with user_errors():
        check_export(merged, dtype, overwrite)
        expert = Registry().load(name, model_key(model))  # a bad name fails before the model loads
        with status(f"loading {model}…"):
            loaded = load_model(model, device="cpu")
        with status(f"writing {merged}…"):
            directory = export_merged(loaded, open_store(loaded, expert.targets), expert, merged, dtype, overwrite)
    files = sorted(p.name for p in directory.iterdir())
    console.print(f"exported {loaded.name} + {expert.name} ({dtype}) to {directory}: {', '.join(files)}")
    console.print(f"load it with AutoModelForCausalLM.from_pretrained({str(directory)!r})", highlight=False)
