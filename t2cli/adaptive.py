"""The two-pass self-adaptive model: decide → switch weights → generate.

    answer = AdaptiveModel.open(loaded, "loglik").generate("What is 2 + 3?")
    answer.text, answer.decision.label, answer.pass1_s, answer.pass2_s

Pass 1 is a `Dispatcher` (t2cli.dispatch), built from a strategy name of the table in
`t2cli.dispatch.table` and that strategy's options object; pass 2 is ordinary generation with the
chosen expert's weights composed into the model (dense: pass 2 runs at the base model's speed).
Composed weights stay in a small LRU, so consecutive prompts of one domain pay no recomposition;
"other" restores the exact base weights.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2cli.adapt import DenseAdapter, ExpertSwitch
from t2cli.dispatch.base import Decision, Dispatcher, make_dispatcher
from t2cli.dispatch.cem_search import CEMResult, default_shot_count, split_shots
from t2cli.dispatch.experts import choose_experts
from t2cli.dispatch.table import parse_strategy
from t2cli.errors import DispatchError
from t2cli.expert import ExpertVector
from t2cli.generation import Completion, GenerationConfig, GenerationProgress, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.registry import Registry
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


def reusable(answer: AdaptiveAnswer, decision: Decision) -> bool:
    """Whether a kept answer of an interrupted run stands for this prompt: pass 1 chose its label again."""
    return answer.decision.label == decision.label


class AdaptiveModel:
    """A base model, its SVD store and registered experts, answering each prompt with the expert
    its dispatcher picks.

    `strategy` is a name from `t2cli.dispatch.table` ("none", "fixed:NAME", "prompt", "cls",
    "loglik", "loglik-cls", "centroid", "cem", or one registered there) or a ready `Dispatcher`;
    `options` is an object of that strategy's options dataclass (None: its defaults), e.g.
    `LoglikOptions(request_tokens=12, pass1_dtype="bfloat16")` or `CEMOptions(task=…, shots=…)`.
    `experts` names the experts to route over (default: one per declared domain, see
    `t2cli.dispatch.choose_experts`). The strategy's one-time set-up (cem: its search of α on the
    shots) runs at construction; cem's result (`self.cem`) holds the mixture, which the caller may
    register for reuse. `store` may be None only for a strategy that applies no expert ("none").
    `AdaptiveModel.open` finds the store itself.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        store: SVDStore | None,
        registry: Registry | None = None,
        strategy: str | Dispatcher = "prompt",
        options: Any = None,
        *,
        experts: Sequence[str] | None = None,
        cache_size: int = 4,
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
            self.dispatcher = make_dispatcher(strategy, loaded, self.switch, self.registry, options, experts=experts)
        self.setup_s = self.dispatcher.prepare()  # pass 1's one-time set-up, not charged to any prompt

    @classmethod
    def open(
        cls,
        loaded: LoadedModel,
        strategy: str = "prompt",
        registry: Registry | None = None,
        options: Any = None,
        *,
        experts: Sequence[str] | None = None,
        cache_size: int = 4,
    ) -> AdaptiveModel:
        """The two-pass model with the SVD store its experts were made with (see `expert_store`)."""
        registry = registry or Registry()
        store = expert_store(loaded, registry, strategy, experts)
        return cls(loaded, store, registry, strategy, options, experts=experts, cache_size=cache_size)

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
        on_batch: Callable[[list[int], list[AdaptiveAnswer]], None] | None = None,
        finished: Mapping[int, AdaptiveAnswer] | None = None,
    ) -> list[AdaptiveAnswer]:
        """Each prompt is dispatched on its own; pass 2 runs in batches per chosen expert.

        A prompt's `pass2_s` is its share of its batch's time plus its share of switching weights.
        `on_batch(indices, answers)` receives each batch's answers as soon as they are done (an
        interrupted run keeps what finished). `finished` ({prompt index: answer}) holds the answers
        of such a run: pass 1 decides every prompt again, an answer whose label it chooses again
        is reused, and the rest is generated in the batches the unbroken run uses.
        """
        config = generation_config or GenerationConfig()
        messages = [as_messages(p) for p in prompts]
        decisions = self.dispatcher.decide([user_text(m) for m in messages])
        reused = {
            i: dataclasses.replace(answer, decision=decisions[i], pass1_s=decisions[i].seconds)
            for i, answer in (finished or {}).items()
            if reusable(answer, decisions[i])
        }
        groups: dict[str | None, list[int]] = {}
        for index, decision in enumerate(decisions):
            groups.setdefault(decision.expert_name, []).append(index)
        answers: list[AdaptiveAnswer | None] = [reused.get(i) for i in range(len(prompts))]
        done, tokens = len(reused), sum(answer.num_new_tokens for answer in reused.values())

        def answered(batch: list[int], batch_answers: list[AdaptiveAnswer]) -> None:
            nonlocal done, tokens
            for i, answer in zip(batch, batch_answers):
                answers[i] = answer
            done += len(batch)
            tokens += sum(answer.num_new_tokens for answer in batch_answers)
            if on_batch is not None:
                on_batch(batch, batch_answers)
            if progress:
                progress(done, len(prompts), tokens)

        for indices in groups.values():
            todo = [i for i in indices if i not in reused]
            if todo:
                self._pass2(todo, decisions, messages, config, answered)
        return answers  # type: ignore[return-value]

    def _pass2(
        self,
        indices: list[int],
        decisions: Sequence[Decision],
        messages: Sequence[Sequence[dict[str, str]]],
        config: GenerationConfig,
        answered: Callable[[list[int], list[AdaptiveAnswer]], None],
    ) -> None:
        """Answer the prompts `indices` (one expert's) with its weights, handing each batch to `answered`."""
        started = time.perf_counter()
        if self.switch is not None:
            self.switch.use(decisions[indices[0]].expert)
        switch_s = (time.perf_counter() - started) / len(indices)
        batch_started = time.perf_counter()

        def batch_done(positions: list[int], completions: list[Completion]) -> None:
            nonlocal batch_started
            share = (time.perf_counter() - batch_started) / len(positions)
            batch = [indices[position] for position in positions]
            answered(
                batch,
                [
                    AdaptiveAnswer(
                        completion.text,
                        decisions[i],
                        decisions[i].seconds,
                        share + switch_s,
                        completion.num_new_tokens,
                        switch_s,
                        completion.cut_off,
                    )
                    for i, completion in zip(batch, completions)
                ],
            )
            batch_started = time.perf_counter()

        texts = [chat_prompt(self.loaded.tokenizer, messages[i]) for i in indices]
        generate(self.loaded, texts, config, on_batch=batch_done)

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


def load_shots(
    spec: str | None, task: Task, split: str = "train", data_dir: str | Path | None = None, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(shots, the split's other examples): from a JSONL file of task rows, or N seeded picks of
    `split` (`split_shots`; the rest is what may then be evaluated). `spec` None: the default
    number of picks (`default_shot_count`: 32 where the split allows)."""
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


def open_for_task(
    loaded: LoadedModel,
    task: Task,
    strategy: str,
    options: Any = None,
    *,
    shots: str | None = None,
    split: str = "test",
    data_dir: str | Path | None = None,
    seed: int = 0,
    registry: Registry | None = None,
    experts: Sequence[str] | None = None,
) -> tuple[AdaptiveModel, list[dict]]:
    """The two-pass model that answers `task` with `strategy`, its set-up paid here, once; and the
    shots it set aside, which must never be evaluated.

    A strategy that searches on shots (cem) gets them, with `task`, in its options: `shots` N
    examples of `split` or a JSONL file (None: 32 where the split allows, see `load_shots`).
    """
    entry = parse_strategy(strategy)[0]
    shot_examples = load_shots(shots, task, split, data_dir, seed)[0] if shots or entry.needs_shots else []
    if entry.needs_shots:
        options = dataclasses.replace(options or entry.options_type()(), task=task, shots=shot_examples)
    return AdaptiveModel.open(loaded, strategy, registry, options, experts=experts), shot_examples
