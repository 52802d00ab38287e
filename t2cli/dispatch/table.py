"""Pass-1 strategies by name: the one table, name → (options, factory).

Every way of choosing an expert per prompt is one `Strategy` here: `t2 chat --adapt NAME`, `t2 eval
--adapt NAME`, `t2 demo --adapt NAME`, `AdaptiveModel(…, NAME)` and the help texts all read this
table, so adding a strategy is one module of t2cli/dispatch/ (its options dataclass and its
dispatcher) plus one entry (`register_strategy`; docs/DEVELOPING.md walks through it).

A strategy's factory gets a `DispatchContext` (model, weight switch, registry, chosen experts and
the strategy's own options object) and the text after the colon of "NAME:ARGUMENT" (None without
one); it returns a `Dispatcher` whose `prepare()` does the strategy's one-time work (a search,
centroids, a model copy). Its options are a dataclass of its own: fields with defaults and help
text, validated in `__post_init__`.

This module is standard library only, so that `t2 --help` stays fast: the built-in entries name
their factory and options as "module:attribute", imported when the strategy is first used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import reduce
from importlib import import_module
from typing import TYPE_CHECKING, Any

from t2cli.errors import DispatchError

if TYPE_CHECKING:
    from t2cli.dispatch.base import DispatchContext, Dispatcher

Factory = Callable[["DispatchContext", "str | None"], "Dispatcher"]


@dataclass(frozen=True)
class NoOptions:
    """The options of a strategy that takes none."""


@dataclass(frozen=True)
class Strategy:
    """A pass-1 strategy: its name, one line of help, its factory and its options dataclass.

    `build` and `options` are the objects themselves, or "module:attribute" to import them when the
    strategy is first used (the built-in entries, so that this table needs no torch).
    `argument` names what follows "NAME:" (e.g. "NAME" for fixed:NAME; None: no argument);
    `uses_experts` is False only when it never applies an expert (no SVD store is needed);
    `needs_shots` says that it searches on labelled examples of a task (its options then have the
    fields `task` and `shots`, which the evaluation and `t2 chat` fill in).
    """

    name: str
    help: str
    build: Factory | str
    options: type | str = NoOptions
    argument: str | None = None
    uses_experts: bool = True
    needs_shots: bool = False

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name

    @property
    def routes_each_prompt(self) -> bool:
        """It chooses among the domain experts per prompt, with nothing to name or search first."""
        return self.uses_experts and self.argument is None and not self.needs_shots

    def factory(self) -> Factory:
        return _resolve(self.build)

    def options_type(self) -> type:
        return _resolve(self.options)

    def takes(self, option: str) -> bool:
        """Whether its options have a field called `option`."""
        return any(field.name == option for field in dataclasses.fields(self.options_type()))


def _resolve(reference: Any) -> Any:
    """The object a "module:attribute" reference names ("module:Class.method" too); anything else as is."""
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    return reduce(getattr, attribute.split("."), import_module(module))


STRATEGIES: dict[str, Strategy] = {}


def register_strategy(strategy: Strategy, replace: bool = False) -> Strategy:
    """Add `strategy` to the table (refused when the name is taken, unless `replace`)."""
    if ":" in strategy.name or not strategy.name:
        raise ValueError(f"a strategy name is one word without ':' (got {strategy.name!r})")
    if strategy.name in STRATEGIES and not replace:
        raise ValueError(f"a strategy named {strategy.name!r} is already registered")
    STRATEGIES[strategy.name] = strategy
    return strategy


def strategy_names() -> list[str]:
    """The strategies as a user types them ("fixed:NAME" for one that takes an argument)."""
    return [strategy.usage for strategy in STRATEGIES.values()]


def routing_strategies() -> list[str]:
    """The strategies that choose an expert per prompt with no argument and no shots (`t2 demo`)."""
    return [strategy.name for strategy in STRATEGIES.values() if strategy.routes_each_prompt]


def parse_strategy(spec: str) -> tuple[Strategy, str | None]:
    """("loglik" → the loglik entry, None), ("fixed:math" → the fixed entry, "math")."""
    name, colon, argument = spec.partition(":")
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise DispatchError(f"unknown dispatch strategy {spec!r}; choose one of {', '.join(strategy_names())}")
    if strategy.argument and not argument:
        raise DispatchError(f"the {name} strategy needs an argument: {strategy.usage}")
    if colon and not strategy.argument:
        raise DispatchError(f"the {name} strategy takes no argument (got {spec!r})")
    return strategy, argument or None


def strategy_options(spec: str, values: Mapping[str, Any]) -> Any:
    """The options object of strategy `spec`, from option values named like its fields (the
    command line's --pass1-tokens as "request_tokens", …).

    A value that is None is left at the field's default; a value no field of this strategy takes
    is ignored, except for a field marked `exclusive` in its metadata (an option that costs
    something, like a model copy): asking a strategy without it for one is an error.
    """
    strategy, _ = parse_strategy(spec)
    for name, value in values.items():
        metadata = _field_metadata(name)
        if value is not None and not strategy.takes(name) and metadata.get("exclusive"):
            takers = ", ".join(s.name for s in STRATEGIES.values() if s.takes(name))
            raise DispatchError(
                f"{metadata.get('label', name)} applies to the {takers} strategies only (not {spec!r}): "
                f"drop --{name.replace('_', '-')}"
            )
    chosen = {name: value for name, value in values.items() if strategy.takes(name) and value is not None}
    return strategy.options_type()(**chosen)


def _field_metadata(name: str) -> Mapping[str, Any]:
    """The metadata of the first registered strategy's option field called `name` (empty: none)."""
    for strategy in STRATEGIES.values():
        for field in dataclasses.fields(strategy.options_type()):
            if field.name == name:
                return field.metadata
    return {}


# --------------------------------------------------------------------------- built-in entries

for _strategy in (
    Strategy("none", "always the base model", "t2cli.dispatch.base:build_none", uses_experts=False),
    Strategy(
        "fixed", "always the registered expert NAME", "t2cli.dispatch.base:FixedDispatcher.for_expert", argument="NAME"
    ),
    Strategy(
        "prompt",
        "the base model names the prompt's domain (a few greedy tokens)",
        "t2cli.dispatch.prompt:PromptDispatcher.from_context",
        "t2cli.dispatch.prompt:PromptOptions",
    ),
    Strategy(
        "cls",
        "the classification expert names the domain",
        "t2cli.dispatch.prompt:build_cls",
        "t2cli.dispatch.prompt:PromptOptions",
    ),
    Strategy(
        "loglik",
        "one prefill: the domain names scored by log-likelihood, no decoding",
        "t2cli.dispatch.loglik:LoglikDispatcher.from_context",
        "t2cli.dispatch.loglik:LoglikOptions",
    ),
    Strategy(
        "loglik-cls",
        "loglik with the classification expert applied",
        "t2cli.dispatch.loglik:build_loglik_cls",
        "t2cli.dispatch.loglik:LoglikOptions",
    ),
    Strategy(
        "centroid",
        "one prefill: the nearest domain centroid of the base model's hidden states (no training)",
        "t2cli.dispatch.centroid:CentroidDispatcher.from_context",
        "t2cli.dispatch.centroid:CentroidOptions",
    ),
    Strategy(
        "cem",
        "few-shot: a mixture of the experts searched on labelled shots, then fixed",
        "t2cli.dispatch.cem:CEMDispatcher.from_context",
        "t2cli.dispatch.cem:CEMOptions",
        needs_shots=True,
    ),
):
    register_strategy(_strategy)
