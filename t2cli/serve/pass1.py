"""Pass 1 for the server's `MODEL:auto`: a t2 dispatcher, used as a black box.

The dispatcher may switch the model's weights densely (e.g. the classification expert of
loglik-cls, through an ExpertSwitch made before the per-row layers went in: they share the
module's weight Parameter). The engine calls `decide` between decode steps, so no decode step
sees those weights, and the exact base weights are restored before decoding resumes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from t2cli.adapt import DenseAdapter, ExpertSwitch
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.registry import Registry
from t2cli.svd_store import SVDStore


@dataclass
class Choice:
    """What pass 1 chose for one prompt."""

    label: str  # a domain, "other" (the base model), an expert name, "mixture"
    expert: ExpertVector | None  # what pass 2 applies (None: the base model)
    weights: dict[str, float] | None  # α per expert name for a mixture
    seconds: float  # this prompt's share of pass 1


class Pass1:
    """A pass-1 strategy over the served experts; `prepare()` does its one-time work. `options`:
    the strategy's own options object (`t2cli.dispatch.table.strategy_options`; None: defaults)."""

    def __init__(
        self,
        loaded: LoadedModel,
        store: SVDStore,
        registry: Registry,
        strategy: str,
        experts: Sequence[str] | None = None,
        options: Any = None,
    ):
        from t2cli.dispatch import make_dispatcher

        self.strategy, self.options = strategy, options
        self.switch = ExpertSwitch(DenseAdapter(loaded, store), capacity=2)
        self.dispatcher = make_dispatcher(strategy, loaded, self.switch, registry, options, experts=experts)

    def tokens_read(self, prompt_tokens: int) -> int:
        """How many of a prompt's tokens pass 1 reads (a strategy's request budget bounds it)."""
        budget = getattr(self.options, "request_tokens", None)
        return min(prompt_tokens, budget) if budget else prompt_tokens

    def prepare(self) -> float:
        """The strategy's one-time work; the model has its exact base weights again afterwards (a
        strategy may prepare with its own expert's weights, as loglik-cls does)."""
        try:
            return self.dispatcher.prepare()
        finally:
            self.switch.use(None)

    def decide(self, prompts: Sequence[str]) -> list[Choice]:
        """One choice per user prompt; the model has its exact base weights again afterwards."""
        started = time.perf_counter()
        try:
            decisions = self.dispatcher.decide(list(prompts))
        finally:
            self.switch.use(None)
        share = (time.perf_counter() - started) / max(len(prompts), 1)
        return [Choice(d.label, d.expert, d.weights, d.seconds or share) for d in decisions]
