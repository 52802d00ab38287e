"""The two-pass self-adaptive model: decide → switch weights → generate.

    answer = AdaptiveModel.open(loaded, "loglik").generate("What is 2 + 3?")
    answer.text, answer.decision.label, answer.pass1_s, answer.pass2_s

Pass 1 is a `Dispatcher` (t2cli.dispatch), built from a strategy name of the table in
`t2cli.strategies`; pass 2 is ordinary generation with the chosen expert's weights composed into
the model (dense: pass 2 runs at the base model's speed). Composed weights stay in a small LRU, so
consecutive prompts of one domain pay no recomposition; "other" restores the exact base weights.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from t2cli.adapt import DenseAdapter, ExpertSwitch
from t2cli.cem import CEMConfig, CEMProgress, CEMResult
from t2cli.dispatch import Decision, Dispatcher, DispatchError, choose_experts, make_dispatcher
from t2cli.embedded import answer_budget
from t2cli.evaluate import EvalReport
from t2cli.expert import ExpertVector
from t2cli.generation import Completion, GenerationConfig, GenerationProgress, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.registry import Registry
from t2cli.scoring import score_outputs
from t2cli.strategies import parse_strategy
from t2cli.svd_store import SVDStore, open_store
from t2cli.tasks.base import Task, read_jsonl

Prompt = str | Sequence[dict[str, str]]  # a user message, or chat messages (the last user turn is dispatched)


@dataclass
class AdaptiveAnswer:
    text: str
    decision: Decision
    pass1_s: float
    pass2_s: float  # generation, plus this prompt's share of switching weights (`switch_s`)
    num_new_tokens: int = 0
    switch_s: float = 0.0  # this prompt's share of loading/composing its expert's weights
    cut_off: bool = False  # the token budget ended the answer


class AdaptiveModel:
    """A base model, its SVD store and registered experts, answering each prompt with the expert
    its dispatcher picks.

    `strategy` is a name from `t2cli.strategies` ("none", "fixed:NAME", "prompt", "cls",
    "loglik", "loglik-cls", "centroid", "cem", or one registered there) or a ready `Dispatcher`.
    `experts` names the experts to route over (default: one per declared domain, see
    `t2cli.dispatch.choose_experts`). `request_tokens` caps what the loglik and centroid
    strategies read of each prompt (its last tokens); `pass1_dtype` ("bfloat16", …) gives their
    pass 1 its own copy of the model in that dtype. "cem" searches α on `shots` of `task` once,
    in the dispatcher's set-up at construction; the result (`self.cem`) holds the mixture, which
    the caller may register for reuse. `store` may be None only for a strategy that applies no
    expert ("none"). `AdaptiveModel.open` finds the store itself.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        store: SVDStore | None,
        registry: Registry | None = None,
        strategy: str | Dispatcher = "prompt",
        *,
        experts: Sequence[str] | None = None,
        cache_size: int = 4,
        request_tokens: int | None = None,
        pass1_dtype: str | None = None,
        batch_size: int = 16,
        task: Task | None = None,
        shots: Sequence[dict] = (),
        cem_config: CEMConfig | None = None,
        cem_progress: CEMProgress | None = None,
        adapter: DenseAdapter | None = None,
    ):
        self.loaded = loaded
        self.registry = registry or Registry()
        self.switch: ExpertSwitch | None = None
        if store is not None or adapter is not None:
            self.switch = ExpertSwitch(adapter or DenseAdapter(loaded, store), capacity=cache_size)
        if isinstance(strategy, Dispatcher):
            self.dispatcher = strategy
        else:
            self.dispatcher = make_dispatcher(
                strategy,
                loaded,
                self.switch,
                self.registry,
                experts=experts,
                request_tokens=request_tokens,
                batch_size=batch_size,
                pass1_dtype=pass1_dtype,
                task=task,
                shots=shots,
                cem_config=cem_config,
                cem_progress=cem_progress,
            )
        self.setup_s = self.dispatcher.prepare()  # pass 1's one-time set-up, not charged to any prompt

    @classmethod
    def open(
        cls,
        loaded: LoadedModel,
        strategy: str = "prompt",
        registry: Registry | None = None,
        experts: Sequence[str] | None = None,
        **options,
    ) -> AdaptiveModel:
        """The two-pass model with the SVD store its experts were made with (see `expert_store`)."""
        registry = registry or Registry()
        store = expert_store(loaded, registry, strategy, experts)
        return cls(loaded, store, registry, strategy, experts=experts, **options)

    @property
    def cem(self) -> CEMResult | None:
        """The few-shot search's result, when the strategy is cem."""
        return getattr(self.dispatcher, "cem", None)

    @property
    def notes(self) -> list[str]:
        """What choosing the experts noticed: a domain claimed twice (and which expert is used),
        experts skipped because they cannot be used."""
        choice = self.dispatcher.choice
        return choice.messages if choice is not None else []

    def generate(self, prompt: Prompt, generation_config: GenerationConfig | None = None) -> AdaptiveAnswer:
        """Pass 1 on the user prompt, then pass 2 with the chosen weights."""
        return self.generate_many([prompt], generation_config)[0]

    def generate_many(
        self,
        prompts: Sequence[Prompt],
        generation_config: GenerationConfig | None = None,
        progress: GenerationProgress | None = None,
        on_group: Callable[[list[int], list[Completion]], None] | None = None,
    ) -> list[AdaptiveAnswer]:
        """Each prompt is dispatched on its own; pass 2 runs in one batch per chosen expert.

        A prompt's `pass2_s` is its share of its group's time (switching weights included).
        `on_group(indices, completions)` receives each expert's answers as soon as they are done
        (an interrupted run keeps what finished).
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
            if on_group is not None:
                on_group(indices, completions)
            share = (time.perf_counter() - started) / len(indices)
            for i, completion in zip(indices, completions):
                decision = decisions[i]
                answers[i] = AdaptiveAnswer(
                    completion.text,
                    decision,
                    decision.seconds,
                    share,
                    completion.num_new_tokens,
                    switch_s,
                    completion.cut_off,
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


def strategy_experts(
    registry: Registry,
    base_model: str,
    strategy: str,
    experts: Sequence[str] | None = None,
    fingerprint: str | None = None,
) -> list[ExpertVector]:
    """The experts `strategy` may apply, read from their files (no model needed): the chosen
    domain experts and the classifier (see `choose_experts`), or the expert its argument names
    (fixed:NAME); none for a strategy that applies none."""
    entry, argument = parse_strategy(strategy)
    if not entry.uses_experts:
        return []
    if argument is not None and argument in {e.name for e in registry.list(base_model)}:
        return [registry.load(argument, base_model)]
    choice = choose_experts(registry, base_model, experts, fingerprint)
    return list(choice.experts.values()) + ([choice.classifier] if choice.classifier else [])


def expert_store(
    loaded: LoadedModel, registry: Registry, strategy: str, experts: Sequence[str] | None = None
) -> SVDStore | None:
    """The SVD store of the experts `strategy` applies (`strategy_experts`); None when it applies none."""
    if not parse_strategy(strategy)[0].uses_experts:
        return None
    chosen = strategy_experts(registry, loaded.name, strategy, experts, loaded.fingerprint)
    if not chosen:
        raise DispatchError(
            f"no usable experts are registered for {loaded.name}: train some with `t2 train` or pull a set with "
            "`t2 experts pull`, then retry"
        )
    return open_store(loaded, chosen[0].targets)


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
    on_completions: Callable[[list[dict], list[Completion]], None] | None = None,
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
    generation = generation or GenerationConfig(
        max_new_tokens=answer_budget(model.loaded.name, task), stop=tuple(task.stop)
    )
    on_group = None
    if on_completions is not None:
        on_group = lambda indices, done: on_completions([examples[i] for i in indices], done)  # noqa: E731
    answers = model.generate_many([task.messages(example) for example in examples], generation, progress, on_group)
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
            "cut_off": answer.cut_off,
        }
        for row, answer in zip(scored.rows, answers)
    ]
    cut_off = sum(answer.cut_off for answer in answers)
    by_label: dict[str, dict[str, int]] = {}
    for row, answer in zip(scored.rows, answers):
        counts = by_label.setdefault(answer.decision.label, {"n": 0, "correct": 0})
        counts["n"] += 1
        counts["correct"] += int(row.correct)
    choice = model.dispatcher.choice
    dispatch = {
        "strategy": model.dispatcher.name,
        "pass1_request_tokens": getattr(model.dispatcher, "request_tokens", None),  # loglik: tokens read (None: all)
        "pass1_dtype": str(getattr(model.dispatcher, "dtype", None) or "").removeprefix("torch.") or None,
        "labels": dict(Counter(answer.decision.label for answer in answers)),
        "task_domain": task.domain,  # the label a perfect dispatcher would choose for every prompt
        "routed_to_task_domain": round(sum(a.decision.label == task.domain for a in answers) / len(answers), 4),
        "by_label": by_label,  # answers and correct answers per chosen label
        "pass1_s": round(pass1, 4),
        "pass2_s": round(pass2, 4),
        "switch_s": round(sum(answer.switch_s for answer in answers), 4),
        "pass1_over_pass2": round(pass1 / pass2, 4) if pass2 else None,
        "pass1_setup_s": round(model.setup_s, 2),  # once per run (e.g. the pass-1 model copy), not in pass1_s
        "excluded_shots": sorted(excluded),
        "experts": {label: e.name for label, e in choice.experts.items()}
        if (choice := model.dispatcher.choice)
        else None,
        "notes": model.notes,  # e.g. two experts claimed one domain: which one was used
        **model.dispatcher.report(),  # what the strategy adds (cem: its weights and shot accuracy)
    }
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
        cut_off=cut_off,
        cut_off_share=round(cut_off / len(answers), 4),
    )


def load_shots(
    spec: str | None, task: Task, split: str = "train", data_dir: str | Path | None = None, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(shots, the split's other examples): from a JSONL file of task rows, or N seeded picks of
    `split` (`t2cli.cem.split_shots`; the rest is what may then be evaluated). `spec` None: the
    default number of picks (`t2cli.cem.default_shot_count`: 32 where the split allows)."""
    from t2cli.cem import default_shot_count, split_shots

    if spec is not None and Path(spec).is_file():
        path = Path(spec)
        rows = read_jsonl(path)
        try:
            shots = [task.to_example(row, f"shot-{i}") for i, row in enumerate(rows) if row is not None]
        except (KeyError, ValueError, TypeError) as error:
            raise DispatchError(f"{path}: a row is not a {task.name} example ({error})") from error
        if not shots:
            raise DispatchError(f"{path} holds no {task.name} examples")
        return shots, []
    if spec is not None and not spec.isdigit():
        raise DispatchError(f"--shots {spec!r} is neither a file nor a number of examples")
    examples = task.load(split, data_dir).examples
    count = default_shot_count(len(examples)) if spec is None else int(spec)
    if spec is None and count < 1:  # a named N is checked by split_shots
        raise DispatchError(f"{task.name}/{split} has {len(examples)} example(s): too few to take cem shots from")
    return split_shots(examples, count, seed)


@dataclass
class AdaptiveEvaluator:
    """A drop-in for `t2cli.evaluate.evaluate` answering in two passes with `model`; the `shots`
    (cem's few-shot examples) are never evaluated."""

    model: AdaptiveModel
    shots: list[dict]

    def __call__(self, loaded: LoadedModel, task: Task, expert_name: str | None = None, **options) -> EvalReport:
        return evaluate_adaptive(self.model, task, exclude=self.shots, **options)


def adaptive_evaluator(
    loaded: LoadedModel,
    task: Task,
    strategy: str,
    *,
    shots: str | None = None,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    **options,
) -> AdaptiveEvaluator:
    """The evaluator of `task` in two passes with `strategy` (its set-up is paid here, once).

    `shots` (cem: N examples of the evaluated split, or a JSONL file; None: 32 where the split
    allows) are excluded from the evaluation; `options` go to `AdaptiveModel.open` (experts,
    request_tokens, pass1_dtype, cem_config, …).
    """
    needs_shots = parse_strategy(strategy)[0].needs_shots
    shot_examples = load_shots(shots, task, split, data_dir, seed)[0] if shots or needs_shots else []
    model = AdaptiveModel.open(loaded, strategy, registry, task=task, shots=shot_examples, **options)
    return AdaptiveEvaluator(model, shot_examples)
