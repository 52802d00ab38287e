"""The two-pass self-adaptive model (SPEC §3): decide → switch weights → generate.

    answer = AdaptiveModel(loaded, store, Registry(), "prompt").generate("What is 2 + 3?")
    answer.text, answer.decision.label, answer.pass1_s, answer.pass2_s

Pass 1 is a `Dispatcher` (t2cli.dispatch); pass 2 is ordinary generation with the chosen
expert's weights composed into the model (dense: pass 2 runs at the base model's speed).
Composed weights stay in a small LRU, so consecutive prompts of one domain pay no recomposition;
"other" restores the exact base weights.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from t2cli.adapt import DenseAdapter
from t2cli.cem import CEMConfig, CEMProgress, CEMResult, cem_search
from t2cli.dispatch import (
    Decision,
    Dispatcher,
    DispatchError,
    ExpertSwitch,
    load_domain_experts,
    make_dispatcher,
)
from t2cli.evaluate import EvalReport
from t2cli.generation import GenerationConfig, GenerationProgress, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.registry import Registry
from t2cli.scoring import score_outputs
from t2cli.svd_store import SVDStore
from t2cli.tasks.base import Task

Prompt = str | Sequence[dict[str, str]]  # a user message, or chat messages (the last user turn is dispatched)


@dataclass
class AdaptiveAnswer:
    text: str
    decision: Decision
    pass1_s: float
    pass2_s: float  # generation, plus this prompt's share of switching weights (`switch_s`)
    num_new_tokens: int = 0
    switch_s: float = 0.0  # this prompt's share of loading/composing its expert's weights


class AdaptiveModel:
    """A base model, its SVD store and registered experts, answering each prompt with the expert
    its dispatcher picks.

    `strategy` is a name ("none", "fixed:NAME", "prompt", "cls", "loglik", "loglik-cls", "cem")
    or a ready `Dispatcher`. `request_tokens` caps what the loglik strategies read of each prompt
    (its last tokens); `pass1_dtype` ("bfloat16", …) gives their pass 1 its own copy of the
    model in that dtype. "cem" searches α on `shots` of `task` once, at construction; the
    result (`self.cem`) holds the mixture, which the caller may register for reuse. `store` may be
    None only for "none" (no expert is ever applied).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        store: SVDStore | None,
        registry: Registry | None = None,
        strategy: str | Dispatcher = "prompt",
        *,
        cache_size: int = 4,
        request_tokens: int | None = None,
        pass1_dtype: str | None = None,
        task: Task | None = None,
        shots: Sequence[dict] | None = None,
        cem_config: CEMConfig = CEMConfig(),
        cem_progress: CEMProgress | None = None,
        adapter: DenseAdapter | None = None,
    ):
        self.loaded = loaded
        self.registry = registry or Registry()
        self.cem: CEMResult | None = None
        if store is None and adapter is None:
            if strategy != "none":
                raise DispatchError(f"the {strategy} strategy needs the SVD store of {loaded.name}'s experts")
            self.switch: ExpertSwitch | None = None
            self.dispatcher: Dispatcher = Dispatcher()
            self.setup_s = 0.0
            return
        self.switch = ExpertSwitch(adapter or DenseAdapter(loaded, store), capacity=cache_size)
        if strategy == "cem":
            if task is None or not shots:
                raise DispatchError("the cem strategy needs a task and labelled shots (CLI: --task T --shots FILE)")
            experts = list(load_domain_experts(self.registry, loaded.name).values())
            self.cem = cem_search(loaded, self.switch, experts, task, shots, cem_config, progress=cem_progress)
        if isinstance(strategy, Dispatcher):
            self.dispatcher = strategy
        else:
            self.dispatcher = make_dispatcher(
                strategy,
                loaded,
                self.switch,
                self.registry,
                cem=self.cem,
                request_tokens=request_tokens,
                pass1_dtype=pass1_dtype,
            )
        self.setup_s = self.dispatcher.prepare()  # pass 1's one-time set-up, not charged to any prompt

    def generate(self, prompt: Prompt, generation_config: GenerationConfig | None = None) -> AdaptiveAnswer:
        """Pass 1 on the user prompt, then pass 2 with the chosen weights."""
        return self.generate_many([prompt], generation_config)[0]

    def generate_many(
        self,
        prompts: Sequence[Prompt],
        generation_config: GenerationConfig | None = None,
        progress: GenerationProgress | None = None,
    ) -> list[AdaptiveAnswer]:
        """Each prompt is dispatched on its own; pass 2 runs in one batch per chosen expert.

        A prompt's `pass2_s` is its share of its group's time (switching weights included).
        """
        config = generation_config or GenerationConfig()
        messages = [as_messages(p) for p in prompts]
        decisions = self.dispatcher.decide([user_text(m) for m in messages])
        groups: dict[str | None, list[int]] = {}
        for index, decision in enumerate(decisions):
            groups.setdefault(decision.expert_name, []).append(index)
        answers: list[AdaptiveAnswer | None] = [None] * len(prompts)
        done, tokens = 0, 0
        for indices in groups.values():
            started = time.perf_counter()
            if self.switch is not None:
                self.switch.use(decisions[indices[0]].expert)
            switch_s = (time.perf_counter() - started) / len(indices)
            texts = [chat_prompt(self.loaded.tokenizer, messages[i]) for i in indices]
            completions = generate(self.loaded, texts, config)
            share = (time.perf_counter() - started) / len(indices)
            for i, completion in zip(indices, completions):
                decision = decisions[i]
                answers[i] = AdaptiveAnswer(
                    completion.text, decision, decision.seconds, share, completion.num_new_tokens, switch_s
                )
                tokens += completion.num_new_tokens
            done += len(indices)
            if progress:
                progress(done, len(prompts), tokens)
        return answers  # type: ignore[return-value]

    def base(self) -> None:
        """Put the exact base weights back (e.g. before using `loaded` directly)."""
        if self.switch is not None:
            self.switch.use(None)


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def user_text(messages: Sequence[dict[str, str]]) -> str:
    """What pass 1 classifies: the last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message.get("content", "")
    raise DispatchError("the messages hold no user turn to answer")


def evaluate_adaptive(
    model: AdaptiveModel,
    task: Task,
    split: str = "test",
    limit: int | None = None,
    data_dir: str | Path | None = None,
    generation: GenerationConfig | None = None,
    exclude: Sequence[dict] = (),
    progress: GenerationProgress | None = None,
) -> EvalReport:
    """Two-pass answers for a task split, scored like `t2cli.evaluate.evaluate`.

    Examples whose id is in `exclude` (the few-shot examples of cem) are never evaluated; `limit`
    applies after the exclusion. The report's config holds the strategy, the label counts and
    pass 1's time as a fraction of pass 2's (the paper's overhead figure); each sample row holds
    its label, expert and pass times.
    """
    started = time.perf_counter()
    data = task.load(split, data_dir)
    excluded = {str(example["id"]) for example in exclude}
    examples = [example for example in data.examples if str(example["id"]) not in excluded]
    examples = examples[:limit] if limit else examples
    if not examples:
        raise ValueError(f"{task.name}/{split} has no examples left to evaluate ({len(excluded)} excluded as shots)")
    generation = generation or GenerationConfig(max_new_tokens=task.max_new_tokens, stop=tuple(task.stop))
    answers = model.generate_many([task.messages(example) for example in examples], generation, progress)
    outputs = [answer.text for answer in answers]
    scored = score_outputs(task, examples, outputs)
    pass1 = sum(answer.pass1_s for answer in answers)
    pass2 = sum(answer.pass2_s for answer in answers)
    new_tokens = sum(answer.num_new_tokens for answer in answers)
    samples = [
        {
            "id": row.id,
            "output": answer.text,
            "extracted": row.extracted,
            "correct": row.correct,
            "label": answer.decision.label,
            "expert": answer.decision.expert_name,
            "pass1_s": round(answer.pass1_s, 4),
            "pass2_s": round(answer.pass2_s, 4),
            "switch_s": round(answer.switch_s, 4),
        }
        for row, answer in zip(scored.rows, answers)
    ]
    by_label: dict[str, dict[str, int]] = {}
    for row, answer in zip(scored.rows, answers):
        counts = by_label.setdefault(answer.decision.label, {"n": 0, "correct": 0})
        counts["n"] += 1
        counts["correct"] += int(row.correct)
    dispatch = {
        "strategy": model.dispatcher.name,
        "pass1_request_tokens": getattr(model.dispatcher, "request_tokens", None),  # loglik: tokens read (None: all)
        "pass1_dtype": str(getattr(model.dispatcher, "dtype", None) or "").removeprefix("torch.") or None,
        "labels": dict(Counter(answer.decision.label for answer in answers)),
        "task_domain": task.domain,  # the label a perfect dispatcher would choose for every prompt
        "routed_to_task_domain": round(sum(a.decision.label == task.domain for a in answers) / len(answers), 4),
        "by_label": by_label,  # answers and correct answers per chosen label
        "pass1_s": round(pass1, 2),
        "pass2_s": round(pass2, 2),
        "switch_s": round(sum(answer.switch_s for answer in answers), 2),
        "pass1_over_pass2": round(pass1 / pass2, 4) if pass2 else None,
        "pass1_setup_s": round(model.setup_s, 2),  # once per run (e.g. the pass-1 model copy), not in pass1_s
        "excluded_shots": sorted(excluded),
    }
    if model.cem is not None:
        dispatch["cem"] = {"weights": model.cem.weights, "shot_accuracy": model.cem.accuracy}
    return EvalReport(
        task=task.name,
        split=split,
        model=model.loaded.name,
        expert=f"adapt:{model.dispatcher.name}",
        n=scored.n,
        correct=scored.correct,
        accuracy=scored.accuracy,
        skipped_rows=data.skipped,
        wall_time_s=round(time.perf_counter() - started, 2),
        generation_s=round(pass1 + pass2, 2),
        new_tokens=new_tokens,
        tokens_per_s=round(new_tokens / pass2, 2) if pass2 else 0.0,
        config={"limit": limit, "data_source": data.source, "dispatch": dispatch, **asdict(generation)},
        samples=samples,
    )
