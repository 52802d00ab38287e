"""Every command's value checks in one place: numeric ranges, and model names that are flag values.

`RULES` names, per command, the options (by parameter name) and what they accept; `checked` attaches
each rule to its option's declaration when app.py registers the command. The parser then refuses a
bad value before the command runs — before any model is loaded — with one line and exit 2:
`error: --limit must be ≥ 1 (got 0)`. A new option gets its check by adding one
entry here; tests/cli/test_commands.py checks that every entry names an existing option.
(`t2 train` validates its options in `TrainConfig`, which the library shares; they are not repeated.)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from typer.models import ParameterInfo

from t2cli.cli.export import EXPORT_DTYPE_NAMES
from t2cli.defaults import PASS1_DTYPE_NAMES, STORE_DTYPES, SVD_DTYPES
from t2cli.dispatch.table import routing_strategies


@dataclass(frozen=True)
class Range:
    """Numbers from `low` to `high` (None: unbounded), each end open or closed; finite only."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        lower = None if self.low is None else f"{'>' if self.low_open else '≥'} {self.low:g}"
        upper = None if self.high is None else f"{'<' if self.high_open else '≤'} {self.high:g}"
        if lower and upper:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        return lower or upper or "a finite number"

    def accepts(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def __call__(self, value: Any) -> Any:
        if value is not None and not self.accepts(value):
            raise typer.BadParameter(f"must be {self.describe()} (got {value:g})")
        return value


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of names (None: the option's default applies)."""

    names: tuple[str, ...]

    def __call__(self, value: Any) -> Any:
        if value is not None and value not in self.names:
            raise typer.BadParameter(f"must be one of {', '.join(self.names)} (got {value!r})")
        return value


AT_LEAST_1 = Range(1)
POSITIVE = Range(0, low_open=True)
PROBABILITY = Range(0, 1, low_open=True)

FLAG_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "1", "0"})


def model_name(value: str) -> str:
    """A positional MODEL that is a flag's value (`t2 decompose --force true`) is refused, not loaded."""
    if value is not None and value.lower() in FLAG_WORDS and not Path(value).exists():
        raise typer.BadParameter(
            f"{value!r} is a flag's value, not a model: flags take no value (e.g. `--force`, not `--force {value}`)"
        )
    return value


def routing_strategy(value: str) -> str:
    """A pass-1 strategy that routes each prompt with no argument and no shots (from the table, when checked)."""
    return OneOf(tuple(routing_strategies()))(value)


RULES: dict[str, dict[str, Callable[[Any], Any]]] = {
    "eval": {
        "limit": AT_LEAST_1,
        "batch_size": AT_LEAST_1,
        "max_new_tokens": AT_LEAST_1,
        "temperature": POSITIVE,
        "top_p": PROBABILITY,
        "cem_generations": AT_LEAST_1,
        "pass1_tokens": AT_LEAST_1,
        "pass1_dtype": OneOf(PASS1_DTYPE_NAMES),
    },
    "chat": {
        "generations": AT_LEAST_1,
        "population": Range(2),
        "patience": AT_LEAST_1,
        "max_new_tokens": AT_LEAST_1,
        "cache_size": AT_LEAST_1,
        "pass1_tokens": AT_LEAST_1,
        "pass1_dtype": OneOf(PASS1_DTYPE_NAMES),
    },
    "demo": {
        "max_new_tokens": AT_LEAST_1,
        "adapt": routing_strategy,
        "pass1_dtype": OneOf(PASS1_DTYPE_NAMES),
    },
    "decompose": {"model": model_name, "svd_dtype": OneOf(SVD_DTYPES), "store_dtype": OneOf(STORE_DTYPES)},
    "export": {"dtype": OneOf(EXPORT_DTYPE_NAMES)},
    "info": {
        "model": model_name,
        "batch_size": AT_LEAST_1,
        "max_new_tokens": AT_LEAST_1,
        "prompt_tokens": AT_LEAST_1,
        "micro_batch": AT_LEAST_1,
        "gpu_memory": POSITIVE,
    },
}


def checked(command: str, function: Callable[..., None]) -> Callable[..., None]:
    """`function` with RULES[command] attached to its Typer option declarations (as callbacks)."""
    rules = RULES.get(command, {})
    declarations = {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if isinstance(parameter.default, ParameterInfo)
    }
    for name, rule in rules.items():
        declaration = declarations.get(name)
        if declaration is None:
            raise KeyError(f"validate.RULES[{command!r}] names {name!r}, which is not an option of `t2 {command}`")
        if declaration.callback is not None and declaration.callback is not rule:
            raise ValueError(f"`t2 {command}` option {name!r} already has a callback")
        declaration.callback = rule
    return function
