"""What every command shares: the rich console, one-line errors, progress bars, option types."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from t2cli.cli.output import console_width
from t2cli.defaults import PASS1_DTYPE_NAMES
from t2cli.errors import T2Error

if TYPE_CHECKING:
    from t2cli.adaptive import AdaptiveModel
    from t2cli.registry import Registry

PASS1_TOKENS_HELP = (
    "loglik / loglik-cls / centroid: read at most the last N tokens of each prompt in pass 1 (where its "
    "closing instruction is); pass 1 is a prefill, so this bounds its cost. Default: the whole prompt."
)
PASS1_DTYPE_HELP = (
    "loglik / loglik-cls / centroid: run pass 1 on its own copy of the model in this dtype "
    f"({', '.join(PASS1_DTYPE_NAMES)}). bfloat16 is cheaper only on hardware with bfloat16 units; on a CPU "
    "without them it is ~3× slower. Default: the shared model as loaded."
)

console = Console(width=console_width())
err_console = Console(stderr=True)
PLAIN_PROGRESS_EVERY_S = 60.0  # without a terminal: a progress line per step, or at least this often


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # text, not markup
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
    "bfloat16 on a CPU without bfloat16 units is several times slower."
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


# --------------------------------------------------------------------------- two-pass commands (chat, eval --adapt)

EXPERTS_HELP = (
    "Experts to route over, comma-separated (default: one per declared domain, the shipped one first; "
    "a domain claimed twice is named when the command starts)."
)


def expert_names(value: str | None) -> list[str] | None:
    """--experts a,b,c → ["a", "b", "c"] (None: the default set)."""
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def show_choice(adaptive: AdaptiveModel) -> None:
    """Which experts pass 1 routes over, and what choosing them noticed (on stderr)."""
    choice = adaptive.dispatcher.choice
    if choice is not None and choice.experts:
        routed = ", ".join(f"{label} → {expert.name}" for label, expert in choice.experts.items())
        err_console.print(f"[dim]routing over: {routed}[/]", highlight=False)
    for note in adaptive.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False)


# ------------------------------------------------------------------ options declared once, added to commands


def with_options(*groups: list[inspect.Parameter]):
    """Give a command these CLI options besides its own parameters; their values reach it in `**options`.

    Typer reads a command's options from its signature, so options shared by several commands (or
    generated from a config's fields) are declared once as `inspect.Parameter`s and added here."""

    def decorate(command):
        own = [
            p.replace(kind=p.KEYWORD_ONLY)
            for p in inspect.signature(command).parameters.values()
            if p.kind is not p.VAR_KEYWORD
        ]
        added = [parameter for group in groups for parameter in group]
        command.__signature__ = inspect.Signature(added + own)
        return command

    return decorate


def option(name: str, annotation: object, default: object, *flags: str, help: str) -> inspect.Parameter:
    """One CLI option as a keyword parameter (flags default to --the-name)."""
    flags = flags or (f"--{name.replace('_', '-')}",)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(default, *flags, help=help), annotation=annotation
    )


# ------------------------------------------------------------------ the task: by name, task file or data file
# Shared by `t2 eval` and `t2 train` (t2cli/tasks/datafile.py defines what each setting means).
# Each data-file setting: its help text ("--data: " is prepended); all take text but --val-fraction.
DATA_FILE_SETTINGS = {
    "prompt_field": "the field holding each prompt.",
    "template": 'the prompt, with {field} placeholders, e.g. "Q: {question}" (instead of --prompt-field; '
    "nothing is appended).",
    "answer_field": "the field holding each answer.",
    "checker": "exact (normalised text), number, choice (a letter), contains, regex:PATTERN (group 1 is the "
    "answer) or python-tests (the answer field holds asserts, run in the sandbox). Default exact.",
    "target_field": "full solutions, the SFT target (default: built from the answer).",
    "split_field": "the field naming each row's split (train / validation / test). Without it, "
    "--val-fraction of the rows is held out.",
    "val_fraction": "the seeded share of rows held out for validation (default 0.2).",
    "domain": "the task's domain (an expert trained on it carries it).",
    "system": "a system prompt.",
}
TASK_SETTINGS = [
    option(name, float | None if name == "val_fraction" else str | None, None, help=f"--data: {text}")
    for name, text in DATA_FILE_SETTINGS.items()
]


def task_options(task_help: str) -> list[inspect.Parameter]:
    """--task / --task-file / --data and the data file's settings (read back by `task_from`)."""
    return [
        option("task", str | None, None, help=task_help),
        option(
            "task_file",
            Path | None,
            None,
            help="A TOML task file (keys: data, prompt_field, answer_field, checker, …), instead of --task.",
        ),
        option(
            "data",
            str | None,
            None,
            help="A task from a data file (JSONL, JSON, CSV, Parquet) or a Hub dataset "
            "id, instead of --task. With --prompt-field or --template, --answer-field, --checker.",
        ),
        *TASK_SETTINGS,
    ]


def task_from(options: dict):
    """The task that `task_options` describe, their values taken out of a command's `**options`."""
    settings = {parameter.name: options.pop(parameter.name) for parameter in TASK_SETTINGS}
    return choose_task(options.pop("task"), options.pop("task_file"), options.pop("data"), **settings)


def choose_task(task: str | None, task_file: Path | None, data: str | None, **settings: object):
    """The task of --task NAME, --task-file FILE or --data FILE (with its settings); exits on bad input."""
    from t2cli.tasks import get_task
    from t2cli.tasks.datafile import data_task, load_task_file

    given = [name for name, value in (("--task", task), ("--task-file", task_file), ("--data", data)) if value]
    if len(given) != 1:
        fail(
            "give one of --task NAME, --task-file FILE or --data FILE"
            + (f", not {' and '.join(given)}" if given else "")
        )
    stray = [key for key, value in settings.items() if value is not None]
    if stray and not data:
        fail(f"--{stray[0].replace('_', '-')} applies to --data FILE (a task file sets {stray[0]} itself)")
    with user_errors():
        if task:
            return get_task(task)
        if task_file:
            return load_task_file(task_file)
        return data_task({"data": data, **settings})
