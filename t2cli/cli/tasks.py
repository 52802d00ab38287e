"""`t2 tasks list|add|remove`: the tasks `--task` accepts, and task files added by name."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from t2cli.cli.common import console, user_errors

app = typer.Typer(help="Tasks: the built-in benchmarks and your own, from data files.", no_args_is_help=True)


@app.command("list")
def list_command() -> None:
    """Every task `--task` accepts: the built-in ones and the task files added with `t2 tasks add`."""
    from t2cli.errors import T2Error
    from t2cli.tasks import TASKS
    from t2cli.tasks.datafile import find_task_file, load_task_file, task_file_names

    table = Table(title="tasks")
    for column in ("name", "domain", "splits", "source", "description"):
        table.add_column(column)
    for task in TASKS.values():
        table.add_row(task.name, task.domain, ", ".join(task.splits), "built-in", task.description)
    for name in task_file_names():
        path = find_task_file(name)
        try:
            task = load_task_file(path)
        except T2Error as error:  # one broken file does not hide the others
            table.add_row(name, "-", "-", str(path), f"[red]unusable:[/] {error}")
            continue
        table.add_row(task.name, task.domain, ", ".join(task.splits), str(path), task.description)
    console.print(table)


@app.command("add")
def add_command(
    task_file: Path = typer.Argument(
        ...,
        help="A TOML task file (keys: name, data, prompt_field or template, answer_field, checker, domain, system, …).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an added task of the same name."),
) -> None:
    """Check a task file (its data is read once) and keep it, so that `--task NAME` finds it."""
    from t2cli.tasks.datafile import add_task_file

    with user_errors():
        spec, path = add_task_file(task_file, overwrite=overwrite)
    console.print(
        f"added task {spec.task_name} (domain {spec.domain}, data {spec.data}) as {path}; "
        f"use it with --task {spec.task_name}",
        highlight=False,
    )


@app.command("remove")
def remove_command(name: str = typer.Argument(..., help="An added task's name.")) -> None:
    """Forget a task added with `t2 tasks add` (its data file is not touched)."""
    from t2cli.tasks.datafile import remove_task_file

    with user_errors():
        path = remove_task_file(name)
    console.print(f"removed {path}", highlight=False)
