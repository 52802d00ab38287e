"""The few-shot pass 1: the cross-entropy method searches mixing weights α over the domain experts
on labelled shots once (`prepare`, see `t2cli.dispatch.cem_search`); the mixture then answers every
prompt."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from t2cli.adapt import ExpertSwitch
from t2cli.dispatch.base import Decision, DispatchContext, Dispatcher
from t2cli.dispatch.cem_search import CEMConfig, CEMProgress, CEMResult, cem_search
from t2cli.errors import DispatchError
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.tasks.base import Task


@dataclass(frozen=True)
class CEMOptions(CEMConfig):
    """The options of the cem strategy: the search's settings (`CEMConfig`) and what it searches on."""

    task: Task | None = field(default=None, metadata={"help": "the task of the shots (its prompts and checker)"})
    shots: Sequence[dict] = field(default=(), metadata={"help": "labelled examples of the task"})
    progress: CEMProgress | None = field(
        default=None, metadata={"help": "called after each generation: (generation, generations, best score)"}
    )
    checkpoint: str | None = field(
        default=None, metadata={"help": "file the search keeps its state in and continues from (see `cem_search`)"}
    )


class CEMDispatcher(Dispatcher):
    """Always the mixture `cem_search` finds on the shots of the options' task (searched once, in
    `prepare`)."""

    name = "cem"

    def __init__(self, loaded: LoadedModel, switch: ExpertSwitch, experts: Sequence[ExpertVector], options: CEMOptions):
        self.loaded, self.switch, self.experts, self.options = loaded, switch, list(experts), options
        self.cem: CEMResult | None = None

    @classmethod
    def from_context(cls, context: DispatchContext, argument: str | None = None) -> CEMDispatcher:
        """The cem strategy's factory: over the context's domain experts."""
        options: CEMOptions = context.options
        if options.task is None or not options.shots:
            raise DispatchError("the cem strategy needs a task and labelled shots (CLI: --task T [--shots FILE|N])")
        return cls(context.loaded, context.switch, list(context.domain_experts().values()), options)

    def prepare(self) -> float:
        if self.cem is not None:
            return 0.0
        started = time.perf_counter()
        options = self.options
        self.cem = cem_search(
            self.loaded, self.switch, self.experts, options.task, options.shots, options,
            progress=options.progress, checkpoint=options.checkpoint,
        )  # fmt: skip
        return time.perf_counter() - started

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        self.prepare()
        assert self.cem is not None
        details = {"strategy": self.name}
        return [Decision("mixture", self.cem.expert, self.cem.weights, details=dict(details)) for _ in prompts]

    def report(self) -> dict:
        if self.cem is None:
            return {}
        cem, options = self.cem, self.options
        searched = {"fitness": options.fitness, "shots": len(options.shots), "population": options.population}
        searched |= {"tolerance": options.tolerance, "evaluations": cem.evaluations, "search_s": round(cem.seconds, 1)}
        found = {"weights": cem.weights, "shot_accuracy": cem.accuracy, "shot_loglik": cem.loglik}
        found |= {"generations": len(cem.history), "final_spread": cem.history[-1].get("spread")}
        return {"cem": found | searched}
