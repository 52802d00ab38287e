"""`t2 decompose MODEL`: thin SVD of the targeted matrices, cached in the SVD store."""

from __future__ import annotations

import time

import typer
from rich.table import Table

from t2cli.cli.common import console, progress_bar, status, user_errors
from t2cli.defaults import DEFAULT_MODEL, SVD_DTYPES


def split_targets(values: list[str]) -> list[str]:
    """`--targets mlp,attn` and `--targets mlp --targets attn` mean the same."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def decompose_command(
    model: str = typer.Argument(DEFAULT_MODEL, help="Embedded model name, local HF directory or Hub id."),
    targets: list[str] = typer.Option(
        ["mlp"], "--targets", "-t", help="mlp, attn, all, or a regex over module names (repeatable)."
    ),
    dtype: str = typer.Option("float32", help=f"SVD precision: {', '.join(SVD_DTYPES)}."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a complete store exists."),
) -> None:
    """Decompose every targeted weight matrix once (W = U diag(σ) Vᵀ) and cache the factors."""
    from t2cli.models import load_model
    from t2cli.svd_store import decompose, store_path

    with user_errors():
        targets = split_targets(targets)
        with status(f"loading {model}…"):
            loaded = load_model(model)
        reused = not force and (store_path(loaded, targets, dtype) / "manifest.json").is_file()
        started = time.time()
        with progress_bar("SVD") as update:
            store = decompose(loaded, targets, dtype=dtype, force=force, progress=update)
        elapsed = time.time() - started
    table = Table(title=f"SVD store for {loaded.name}", show_header=False)
    table.add_row("fingerprint", loaded.fingerprint)
    table.add_row("targets", " ".join(store.targets))
    table.add_row("matrices", str(len(store.modules)))
    table.add_row("SVF parameters", f"{store.num_parameters:,}")
    table.add_row("precision", store.manifest["dtype"])
    table.add_row("store", str(store.path))
    table.add_row("this run", f"{elapsed:.1f} s ({'reused the cached store' if reused else 'decomposed'})")
    console.print(table)
