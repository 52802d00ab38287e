"""What every pass-1 strategy shares: the `Decision` it returns, the `Dispatcher` interface, the
`DispatchContext` its factory gets, the options of the strategies that read prompts with the model
(`PrefillOptions`), and `make_dispatcher`, which builds a dispatcher from its name and options."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from t2cli.adapt import ExpertSwitch
from t2cli.defaults import OTHER
from t2cli.dispatch.experts import ExpertChoice, choose_experts, classification_expert, training_command
from t2cli.dispatch.table import parse_strategy
from t2cli.errors import DispatchError
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.placement import pass1_dtype_of
from t2cli.registry import Registry


@dataclass
class Decision:
    """What pass 1 chose for one prompt.

    `label` is a domain ("math", …), "other" (the base model), an expert name (fixed) or
    "mixture" (cem); `expert` is the vector pass 2 applies (None: the base model); `weights` are
    the α per expert name for a mixture; `seconds` is this prompt's share of pass 1.
    """

    label: str
    expert: ExpertVector | None = field(default=None, repr=False)
    weights: dict[str, float] | None = None
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def expert_name(self) -> str | None:
        return self.expert.name if self.expert is not None else None


@dataclass
class DispatchContext:
    """What a strategy's factory may use: the model, the weight switch shared with pass 2, the
    registry, the experts to route over (`experts`: names; None: the default set, see
    `choose_experts`) and the strategy's own options object."""

    loaded: LoadedModel
    switch: ExpertSwitch | None
    registry: Registry
    experts: Sequence[str] | None = None
    options: Any = None
    _choice: ExpertChoice | None = field(default=None, init=False, repr=False)

    @property
    def choice(self) -> ExpertChoice:
        """The experts chosen to route over (made once), with what was noticed choosing them."""
        if self._choice is None:
            self._choice = choose_experts(self.registry, self.loaded.name, self.experts, self.loaded.fingerprint)
        return self._choice

    def domain_experts(self) -> dict[str, ExpertVector]:
        """{label: expert} to route over; at least one."""
        if not self.choice.experts:
            raise DispatchError(
                f"no usable domain experts are registered for {self.loaded.name}: train them with "
                f"{training_command()} (or a task of your own) or pull a set with `t2 experts pull`"
                + (f" (skipped: {'; '.join(self.choice.skipped)})" if self.choice.skipped else "")
            )
        return self.choice.experts

    def classifier(self) -> ExpertVector:
        return self.choice.classifier or classification_expert(self.registry, self.loaded.name)


class Dispatcher:
    """Base: `decide(prompts)` returns one Decision per user prompt (plain text). As is, the
    "none" strategy: always the base model."""

    name = "none"
    choice: ExpertChoice | None = None  # the experts it routes over and what choosing them noticed

    def prepare(self) -> float:
        """One-time set-up (a search, a pass-1 model copy, cached prefixes, centroids), so that
        `decide` times only per-prompt work; returns its seconds. `decide` calls it when it has
        not run yet."""
        return 0.0

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        return [Decision(OTHER, details={"strategy": self.name}) for _ in prompts]

    def report(self) -> dict:
        """What an evaluation report records of this strategy beyond the decisions."""
        return {}


class FixedDispatcher(Dispatcher):
    """Always one expert (a registered one, or a mixture)."""

    def __init__(self, expert: ExpertVector, label: str | None = None, weights: dict[str, float] | None = None):
        self.expert, self.label, self.weights = expert, label or expert.name, weights
        self.name = f"fixed:{expert.name}"

    @classmethod
    def for_expert(cls, context: DispatchContext, name: str | None) -> FixedDispatcher:
        expert = context.registry.load(str(name), context.loaded.name)
        return cls(expert, label=expert.domain if expert.domain != OTHER else expert.name)

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        return [Decision(self.label, self.expert, self.weights, details={"strategy": self.name}) for _ in prompts]


class ModelDispatcher(Dispatcher):
    """A pass 1 that runs the model, with `pass1_expert` applied (None: the base weights).

    With `dtype` (e.g. torch.bfloat16), pass 1 runs on its own copy of the model, made once with
    `pass1_expert` composed and cast to that dtype: choosing among a few labels tolerates the lower
    precision, and pass 1 then never switches the shared model's weights (pass 2 keeps its expert
    in place). The copy costs one model's memory in `dtype`.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        switch: ExpertSwitch,
        experts: dict[str, ExpertVector],
        pass1_expert: ExpertVector | None = None,
        batch_size: int = 16,
        dtype: torch.dtype | None = None,
    ):
        self.loaded, self.switch, self.experts, self.pass1_expert = loaded, switch, experts, pass1_expert
        self.labels = list(experts)
        self.batch_size = batch_size
        self.dtype = dtype
        self.scorer: LoadedModel | None = None  # the model pass 1 reads with (its own copy with `dtype`)

    def pass1_model(self) -> LoadedModel:
        """The model with pass 1's weights in place: the shared one (switched), or the own copy —
        made once from the shared model, its targets overwritten with pass 1's weights (composed
        from the base weights, or the base weights themselves), so the shared model is never switched."""
        if self.dtype is None:
            self.switch.use(self.pass1_expert)
            return self.loaded
        if self.scorer is None:
            adapter = self.switch.adapter
            base = {name: adapter.original(name) for name in adapter.modules}
            weights = adapter.compose(self.pass1_expert) if self.pass1_expert is not None else base
            model = copy.deepcopy(self.loaded.model)
            modules = dict(model.named_modules())
            with torch.no_grad():
                for name, weight in weights.items():
                    modules[name].weight.copy_(weight)
            self.scorer = dataclasses.replace(self.loaded, model=model.to(self.dtype).eval())
        return self.scorer


# --------------------------------------------------------------------------- options of a prefill pass 1


def check_request_tokens(request_tokens: int | None) -> None:
    if request_tokens is not None and request_tokens < 2:
        raise DispatchError(f"the pass-1 request budget must be ≥ 2 tokens (got {request_tokens})")


@dataclass(frozen=True)
class PrefillOptions:
    """The options of a pass 1 that reads each request with one prefill of the model (loglik, centroid)."""

    batch_size: int = field(default=16, metadata={"help": "prompts per pass-1 forward"})
    request_tokens: int | None = field(
        default=None,
        metadata={"help": "read only the last N tokens of each request, where its closing instruction is (None: all)"},
    )
    pass1_dtype: str | torch.dtype | None = field(
        default=None,
        metadata={
            "help": "read with a copy of the model in this dtype (float32, bfloat16, float16; None: the shared model)",
            "label": "a pass-1 dtype",
            "exclusive": True,  # a model copy: refused, not ignored, by a strategy that makes none
        },
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DispatchError(f"pass 1's batch size must be ≥ 1 (got {self.batch_size})")
        check_request_tokens(self.request_tokens)
        pass1_dtype_of(self.pass1_dtype)

    @property
    def dtype(self) -> torch.dtype | None:
        return pass1_dtype_of(self.pass1_dtype)


# --------------------------------------------------------------------------- building a strategy


def build_none(context: DispatchContext, argument: str | None) -> Dispatcher:
    return Dispatcher()


def make_dispatcher(
    strategy: str,
    loaded: LoadedModel,
    switch: ExpertSwitch | None,
    registry: Registry,
    options: Any = None,
    *,
    experts: Sequence[str] | None = None,
) -> Dispatcher:
    """The dispatcher for a strategy name from the table in `t2cli.dispatch.table` ("fixed:NAME"
    for one that takes an argument), with `options`, an object of the strategy's own options
    dataclass (None: its defaults). `experts` names the experts to route over (default: see
    `choose_experts`)."""
    entry, argument = parse_strategy(strategy)
    options_type = entry.options_type()
    options = options_type() if options is None else options
    if not isinstance(options, options_type):
        raise DispatchError(f"the {entry.name} strategy takes {options_type.__name__}, not {type(options).__name__}")
    if switch is None and entry.uses_experts:
        raise DispatchError(f"the {strategy} strategy needs the SVD store of {loaded.name}'s experts")
    context = DispatchContext(loaded, switch, registry, experts=experts, options=options)
    dispatcher = entry.factory()(context, argument)
    dispatcher.choice = context._choice  # what choosing the experts noticed (None: no choice was made)
    return dispatcher
