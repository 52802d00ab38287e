"""The few-shot pass 1: the cross-entropy method searches mixing weights α over the domain experts
on labelled shots once (`prepare`); the mixture then answers every prompt."""

from __future__ import annotations

import time
from collections.abc import Sequence

from t2cli.adapt import ExpertSwitch
from t2cli.cem import CEMConfig, CEMProgress, CEMResult, cem_search
from t2cli.dispatch.base import Decision, DispatchContext, Dispatcher
from t2cli.errors import DispatchError
from t2cli.expert import ExpertVector
from t2cli.models import LoadedModel
from t2cli.tasks.base import Task


class CEMDispatcher(Dispatcher):
    """Always the mixture `cem_search` finds on `shots` of `task` (searched once, in `prepare`)."""

    name = "cem"

    def __init__(
        self,
        loaded: LoadedModel,
        switch: ExpertSwitch,
        experts: Sequence[ExpertVector],
        task: Task,
        shots: Sequence[dict],
        config: CEMConfig | None = None,
        progress: CEMProgress | None = None,
    ):
        if not shots:
            raise DispatchError("the cem strategy needs a task and labelled shots (CLI: --task T [--shots FILE|N])")
        self.loaded, self.switch, self.experts, self.task, self.shots = loaded, switch, list(experts), task, shots
        self.config, self.progress = config or CEMConfig(), progress
        self.cem: CEMResult | None = None

    @classmethod
    def from_context(cls, context: DispatchContext) -> CEMDispatcher:
        if context.task is None or not context.shots:
            raise DispatchError("the cem strategy needs a task and labelled shots (CLI: --task T [--shots FILE|N])")
        experts = list(context.domain_experts().values())
        return cls(
            context.loaded,
            context.switch,
            experts,
            context.task,
            context.shots,
            context.cem_config,
            context.cem_progress,
        )

    def prepare(self) -> float:
        if self.cem is not None:
            return 0.0
        started = time.perf_counter()
        self.cem = cem_search(
            self.loaded, self.switch, self.experts, self.task, self.shots, self.config, progress=self.progress
        )
        return time.perf_counter() - started

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        self.prepare()
        assert self.cem is not None
        details = {"strategy": self.name}
        return [Decision("mixture", self.cem.expert, self.cem.weights, details=dict(details)) for _ in prompts]

    def report(self) -> dict:
        if self.cem is None:
            return {}
        cem = self.cem
        return {"cem": {"weights": cem.weights, "shot_accuracy": cem.accuracy, "generations": len(cem.history)}}
