"""Task registry: every benchmark t2 trains or evaluates on, by name.

>>> sorted(TASKS)
['arc-challenge', 'arc-easy', 'cls', 'gsm8k', 'humaneval', 'math', 'mbpp', 'mbpp-plus']
"""

from __future__ import annotations

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
from t2cli.tasks.gsm8k import GSM8K
from t2cli.tasks.humaneval import HUMANEVAL
from t2cli.tasks.math_task import MATH
from t2cli.tasks.mbpp import MBPP, MBPP_PLUS

TASKS: dict[str, Task] = {
    task.name: task for task in (GSM8K, MBPP_PLUS, ARC_EASY, MATH, HUMANEVAL, ARC_CHALLENGE, MBPP, CLS)
}
ALIASES = {
    "mbpp-pro": "mbpp-plus",
    "mbppplus": "mbpp-plus",
    "arc-e": "arc-easy",
    "arc-c": "arc-challenge",
    "human-eval": "humaneval",
    "openai-humaneval": "humaneval",
}


def get_task(name: str) -> Task:
    """The task called ``name`` (case, "_" vs "-" and a few aliases like "mbpp-pro" tolerated)."""
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in TASKS:
        raise UnknownTaskError(f"Unknown task {name!r}; valid tasks: {', '.join(TASKS)}.")
    return TASKS[key]


__all__ = [
    "BUNDLED_DATA",
    "DATA_ENV",
    "TASKS",
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
]
