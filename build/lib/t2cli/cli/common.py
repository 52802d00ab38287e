"""What every command shares: the rich console, one-line errors, progress bars, option types."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from t2cli.defaults import PASS1_DTYPE_NAMES
from t2cli.errors import T2Error

if TYPE_CHECKING:
    from t2cli.registry import Registry

PASS1_TOKENS_HELP = (
    "loglik / loglik-cls: read at most the last N tokens of each prompt in pass 1 (where its closing "
    "instruction is); pass 1 is a prefill, so this bounds its cost. Default: the whole prompt."
)
PASS1_DTYPE_HELP = (
    f"loglik / loglik-cls: run pass 1 on its own copy of the model in this dtype ({', '.join(PASS1_DTYPE_NAMES)}). "
    "bfloat16 is cheaper only on hardware with bfloat16 units; on a CPU without them it is ~3× slower "
    "(docs/RESULTS.md §6). Default: the shared model as loaded."
)

console = Console()
err_console = Console(stderr=True)
PLAIN_PROGRESS_EVERY_S = 60.0  # without a terminal: a progress line per step, or at least this often


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn library errors (T2Error) into one red line and exit code 2."""
    try:
        yield
    except T2Error as error:
        fail(str(error))


@contextmanager
def progress_bar(description: str, total: int | None = None) -> Iterator[callable]:
    """A rich progress bar; yields `advance(done, total, label)` for library progress callbacks.
    Without a terminal (`nohup t2 train … > log`) a bar would show nothing until the end, so
    plain lines go to the log instead: one per completed step, and the current phase at most once
    a minute between steps."""
    if not err_console.is_terminal:
        yield _plain_progress(description)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}"),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, label="")

        def update(done: int, total: int, label: str = "") -> None:
            progress.update(task, completed=done, total=total, label=label)

        yield update


def _plain_progress(description: str):
    last = {"done": None, "at": 0.0}

    def update(done: int, total: int | None, label: str = "") -> None:
        now = time.monotonic()
        if done == last["done"] and now - last["at"] < PLAIN_PROGRESS_EVERY_S:
            return
        last.update(done=done, at=now)
        stamp = time.strftime("%H:%M:%S")
        err_console.print(
            f"{stamp} {description} {done}/{total if total is not None else '?'} {label}".rstrip(),
            highlight=False,
            soft_wrap=True,
        )

    return update


@contextmanager
def status(message: str) -> Iterator[None]:
    with err_console.status(message):
        yield


def open_registry(directory: Path | None = None) -> Registry:
    """The expert registry, writing to `directory` when given (the library is imported here, not
    when the command tree is built)."""
    from t2cli.registry import Registry

    return Registry(write_root=directory) if directory else Registry()


def registry_key(model: str) -> str:
    """The key a model's experts are registered under (t2cli.models.model_key)."""
    from t2cli.models import model_key

    return model_key(model)


# --------------------------------------------------------------------------- model placement options

DTYPE_HELP = (
    "Model dtype: auto (bfloat16 on a GPU that supports it, float32 on a CPU), float32, bfloat16, float16. "
    "bfloat16 on a CPU without bfloat16 units is several times slower (docs/RESULTS.md §6)."
)
DEVICE_HELP = "Where the model runs: auto (the GPU when there is one), cpu, cuda, cuda:N."
DEVICE_MAP_HELP = (
    "auto: let accelerate spread a model larger than one GPU over the GPUs and the CPU "
    "(experts are applied to each matrix where it lives). Overrides --device."
)


def dtype_option(default: str = "auto"):
    return typer.Option(default, "--dtype", help=DTYPE_HELP)


def device_option(default: str = "auto"):
    return typer.Option(default, "--device", help=DEVICE_HELP)


def device_map_option():
    return typer.Option(None, "--device-map", help=DEVICE_MAP_HELP)


def check_placement(dtype: str, device: str, device_map: str | None = None) -> None:
    """One clear line for a bad --dtype / --device / --device-map (before anything is loaded)."""
    from t2cli.defaults import MODEL_DTYPES

    if dtype not in MODEL_DTYPES:
        hint = " (the SVD precision is --svd-dtype)" if dtype == "float64" else ""
        fail(f"--dtype must be one of {', '.join(MODEL_DTYPES)}, not {dtype!r}{hint}")
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        fail(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if device_map not in (None, "auto", "balanced", "sequential", "cpu"):
        fail(f"--device-map must be auto, balanced, sequential or cpu, not {device_map!r}")
