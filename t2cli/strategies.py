"""Pass-1 strategies by name: the one table, name → factory.

Every way of choosing an expert per prompt (t2cli.dispatch) is one `Strategy` here: `t2 chat
--adapt NAME`, `t2 eval --adapt NAME`, `AdaptiveModel(…, NAME)` and the help texts all read this
table, so adding a strategy is adding one entry (`register_strategy`). A factory gets a
`t2cli.dispatch.DispatchContext` (model, weight switch, registry, chosen experts, options) and the
text after the colon of "NAME:ARGUMENT" (None without one); it returns a `Dispatcher` whose
`prepare()` does the strategy's one-time work (a search, centroids, a model copy).

This module is standard library only, so that `t2 --help` stays fast: the built-in factories
import their dispatchers when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from t2cli.errors import DispatchError

if TYPE_CHECKING:
    from t2cli.dispatch import DispatchContext, Dispatcher

Factory = Callable[["DispatchContext", "str | None"], "Dispatcher"]


@dataclass(frozen=True)
class Strategy:
    """A pass-1 strategy: its name, one line of help and the factory that builds its dispatcher.

    `argument` names what follows "NAME:" (e.g. "NAME" for fixed:NAME; None: no argument);
    `pass1_dtype` says whether it can read with its own copy of the model (--pass1-dtype);
    `uses_experts` is False only when it never applies an expert (no SVD store is needed);
    `needs_shots` says that it searches on labelled examples of a task (cem: `--shots`).
    """

    name: str
    help: str
    build: Factory
    argument: str | None = None
    pass1_dtype: bool = False
    uses_experts: bool = True
    needs_shots: bool = False

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.argument}" if self.argument else self.name


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


# --------------------------------------------------------------------------- built-in entries


def _none(context: DispatchContext, argument: str | None) -> Dispatcher:
    from t2cli.dispatch import Dispatcher

    return Dispatcher()


def _fixed(context: DispatchContext, argument: str | None) -> Dispatcher:
    from t2cli.dispatch import FixedDispatcher

    return FixedDispatcher.for_expert(context, argument)


def _prompt(context: DispatchContext, argument: str | None, classifier: bool = False) -> Dispatcher:
    from t2cli.dispatch import PromptDispatcher

    return PromptDispatcher.from_context(context, classifier=classifier)


def _loglik(context: DispatchContext, argument: str | None, classifier: bool = False) -> Dispatcher:
    from t2cli.dispatch import LoglikDispatcher

    return LoglikDispatcher.from_context(context, classifier=classifier)


def _centroid(context: DispatchContext, argument: str | None) -> Dispatcher:
    from t2cli.dispatch import CentroidDispatcher

    return CentroidDispatcher.from_context(context)


def _cem(context: DispatchContext, argument: str | None) -> Dispatcher:
    from t2cli.dispatch import CEMDispatcher

    return CEMDispatcher.from_context(context)


for _strategy in (
    Strategy("none", "always the base model", _none, uses_experts=False),
    Strategy("fixed", "always the registered expert NAME", _fixed, argument="NAME"),
    Strategy("prompt", "the base model names the prompt's domain (a few greedy tokens)", _prompt),
    Strategy(
        "cls",
        "the classification expert names the domain",
        lambda context, argument: _prompt(context, argument, classifier=True),
    ),
    Strategy(
        "loglik", "one prefill: the domain names scored by log-likelihood, no decoding", _loglik, pass1_dtype=True
    ),
    Strategy(
        "loglik-cls",
        "loglik with the classification expert applied",
        lambda context, argument: _loglik(context, argument, classifier=True),
        pass1_dtype=True,
    ),
    Strategy(
        "centroid",
        "one prefill: the nearest domain centroid of the base model's hidden states (no training)",
        _centroid,
        pass1_dtype=True,
    ),
    Strategy(
        "cem", "few-shot: a mixture of the experts searched on labelled shots, then fixed", _cem, needs_shots=True
    ),
):
    register_strategy(_strategy)
