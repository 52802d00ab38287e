"""What every command shares: the rich console, one-line errors, progress bars, option types."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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

from t2cli.errors import T2Error

console = Console()
err_console = Console(stderr=True)



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
    """A rich progress bar; yields `advance(done, total, label)` for library progress callbacks."""
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


@contextmanager
def status(message: str) -> Iterator[None]:
    with err_console.status(message):
        yield
