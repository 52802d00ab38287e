"""`t2 decompose MODEL`: thin SVD of the targeted matrices, cached in the SVD store.

Streams: the matrices are read one at a time from the model's safetensors files (the converted
cache of an embedded model, a local directory or a Hub snapshot), so the model is never loaded.
"""

from __future__ import annotations

import time

import typer
from rich.table import Table

from t2cli.cli.common import (
    console,
    device_map_option,
    device_option,
    dtype_option,
    progress_bar,
    status,
    user_errors,
)
from t2cli.defaults import DEFAULT_MODEL
from t2cli.placement import STORE_DTYPES, SVD_DTYPES, check_placement, dtype_name


def split_targets(values: list[str]) -> list[str]:
    """`--targets mlp,attn` and `--targets mlp --targets attn` mean the same."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def decompose_command(
    model: str = typer.Argument(DEFAULT_MODEL, help="Embedded model name, local HF directory or Hub id."),
    targets: list[str] = typer.Option(
        ["mlp"], "--targets", "-t", help="mlp, attn, all, or a regex over module names (repeatable)."
    ),
    dtype: str = dtype_option(),
    device: str = device_option(),
    device_map: str = device_map_option(),
    svd_dtype: str = typer.Option(
        "float32", "--svd-dtype", help=f"SVD precision, whatever the model dtype: {', '.join(SVD_DTYPES)}."
    ),
    store_dtype: str = typer.Option(
        None, "--store-dtype", help=f"dtype of the stored U and Vᵀ: {', '.join(STORE_DTYPES)}. Default: the model's."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a complete store exists."),
) -> None:
    """Decompose every targeted weight matrix once (W = U diag(σ) Vᵀ) and cache the factors."""
    from t2cli.errors import SVDStoreError
    from t2cli.models import load_model
    from t2cli.svd_store import decompose, file_source, store_key

    with user_errors():
        check_placement(dtype, device, device_map)
        targets = split_targets(targets)
        with status(f"reading {model}…"):
            try:  # stream from the weight files: nothing is loaded
                source = file_source(model, dtype=dtype, device=device)
            except SVDStoreError:  # a checkpoint whose tensor names need conversion: load it
                source = load_model(model, dtype=dtype, device=device, device_map=device_map)
        key = store_key(store_dtype or dtype_name(source.dtype), svd_dtype)
        reused = False
        started = time.time()
        with progress_bar("SVD") as update:
            calls = []

            def progress(done: int, total: int, name: str) -> None:
                calls.append(done)
                update(done, total, name)

            store = decompose(
                source,
                targets,
                svd_dtype=svd_dtype,
                store_dtype=store_dtype,
                device=device,
                force=force,
                progress=progress,
            )
            reused = not calls
        elapsed = time.time() - started
    table = Table(title=f"SVD store for {source.name}", show_header=False)
    table.add_row("fingerprint", source.fingerprint)
    table.add_row("targets", " ".join(store.targets))
    table.add_row("matrices", str(len(store.modules)))
    table.add_row("SVF parameters", f"{store.num_parameters:,}")
    table.add_row("precision", f"SVD {store.manifest.get('svd_dtype', store.manifest['dtype'])}, stored {key}")
    table.add_row("store", str(store.path))
    table.add_row("this run", f"{elapsed:.1f} s ({'reused the cached store' if reused else 'decomposed'})")
    console.print(table)
