"""Task registry: every task t2 trains or evaluates on, by name.

The built-in benchmarks register themselves here; a task defined anywhere else — a test, a plugin,
a data file (`t2cli.tasks.datafile`) — becomes first-class with `register_task(task)`: `get_task`,
`t2 eval --task` and `t2 train --task` then find it like a built-in one. Task files added with
`t2 tasks add FILE` live in ``T2_HOME/tasks/NAME.toml`` and are found by name too, without being
registered in this process.

>>> sorted(TASKS)
['arc-challenge', 'arc-easy', 'cls', 'gsm8k', 'humaneval', 'math', 'mbpp', 'mbpp-plus']
"""

from __future__ import annotations

import re

from t2cli.tasks.arc import ARC_CHALLENGE, ARC_EASY, make_arc_task
from t2cli.tasks.base import (
    BUNDLED_DATA,
    DATA_ENV,
    HubSource,
    MissingSplitError,
    SplitSource,
    Task,
    TaskData,
    UnknownSplitError,
    UnknownTaskError,
)
from t2cli.tasks.cls import CLS, dispatch_messages, parse_dispatch_label
from t2cli.tasks.example import Example
from t2cli.tasks.gsm8k import GSM8K
from t2cli.tasks.humaneval import HUMANEVAL
from t2cli.tasks.math_task import MATH
from t2cli.tasks.mbpp import MBPP, MBPP_PLUS

TASKS: dict[str, Task] = {}
TASK_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]*")


def task_key(name: str) -> str:
    """The form names are compared in: case and "_" vs "-" do not matter.

    >>> task_key(" MBPP_Plus ")
    'mbpp-plus'
    """
    return name.strip().lower().replace("_", "-")


def _lookup(key: str) -> Task | None:
    if key in TASKS:
        return TASKS[key]
    return next((task for task in TASKS.values() if key in map(task_key, task.aliases)), None)


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Make ``task`` findable by its name and aliases (`get_task`, ``t2 eval/train --task``).

    A name or alias already taken by another task is refused unless ``replace`` is true (then the
    tasks holding those names are removed first). Registering the same object twice is harmless.
    """
    if task_key(task.name) != task.name or not TASK_NAME.fullmatch(task.name):
        raise UnknownTaskError(
            f"cannot register task {task.name!r}: a task name is lower case letters, digits, '.', '+' and '-' "
            f"(e.g. {task_key(task.name) or 'my-task'!r})"
        )
    holders = {}
    for name in (task.name, *map(task_key, task.aliases)):
        holder = _lookup(name)
        if holder is not None and holder is not task:
            holders[name] = holder
    if holders and not replace:
        taken = ", ".join(f"{name!r} by task {holder.name!r}" for name, holder in holders.items())
        raise UnknownTaskError(f"cannot register task {task.name!r}: the name {taken} is taken; choose another name")
    for holder in holders.values():
        TASKS.pop(holder.name, None)
    TASKS[task.name] = task
    return task


def unregister_task(name: str) -> Task:
    """Remove the task called ``name`` (or one of its aliases) from the registry; returns it."""
    task = _lookup(task_key(name))
    if task is None:
        raise UnknownTaskError(f"no registered task {name!r} to unregister")
    return TASKS.pop(task.name)


def get_task(name: str) -> Task:
    """The task called ``name`` (case, "_" vs "-" and aliases like "mbpp-pro" tolerated): a registered
    task, else a task file added with ``t2 tasks add`` (``T2_HOME/tasks/NAME.toml``)."""
    key = task_key(name)
    task = _lookup(key)
    if task is not None:
        return task
    from t2cli.tasks.datafile import find_task_file, load_task_file

    path = find_task_file(key)
    if path is not None:
        return load_task_file(path)
    from t2cli.tasks.datafile import task_file_names

    added = task_file_names()
    raise UnknownTaskError(
        f"Unknown task {name!r}; valid tasks: {', '.join([*TASKS, *added])}. A task of your own: "
        "--data FILE (or --task-file FILE), or `t2 tasks add FILE` once to use it by name."
    )


for _task in (GSM8K, MBPP_PLUS, ARC_EASY, MATH, HUMANEVAL, ARC_CHALLENGE, MBPP, CLS):
    register_task(_task)

__all__ = [
    "BUNDLED_DATA",
    "DATA_ENV",
    "TASKS",
    "Example",
    "HubSource",
    "MissingSplitError",
    "SplitSource",
    "Task",
    "TaskData",
    "UnknownSplitError",
    "UnknownTaskError",
    "dispatch_messages",
    "get_task",
    "make_arc_task",
    "parse_dispatch_label",
    "register_task",
    "task_key",
    "unregister_task",
]
