"""Evaluation: generate answers for a task split and score them with the task's own checkers.

The same `Task.check_many` scores RL rewards, `t2 score` and this loop, so training, scoring
and evaluation cannot disagree. A report is a JSON summary plus one JSONL row per sample.

`run_evaluation(EvalSpec(…))` is the one entry point (`t2 eval` calls it): it loads the model,
opens the SVD store its experts need (decomposing it on the model's first use), applies what the
spec names — a registered expert, a LoRA adapter, or a pass-1 strategy answering
in two passes (`evaluate_adaptive`) — evaluates, and attaches the report's record
(`t2cli.provenance.report_record`): the base model's weight fingerprint, the dtype the answers were
computed in and, for each expert the run used, the SHA-256 of its tensor file (and the mixture
weights when it mixed them), so a report whose experts have since changed can be found
(`t2cli.provenance.check_reports`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from t2cli.adapt import DenseAdapter
from t2cli.adaptive import AdaptiveAnswer, AdaptiveModel, open_for_task, reusable, strategy_experts
from t2cli.answer_journal import AnswerJournal
from t2cli.defaults import DEFAULT_MODEL
from t2cli.dispatch.table import parse_strategy
from t2cli.embedded import answer_budget
from t2cli.errors import T2Error
from t2cli.expert import ExpertVector
from t2cli.files import atomic_write_text
from t2cli.generation import Completion, GenerationConfig, GenerationProgress, chat_prompt, generate
from t2cli.models import LoadedModel, load_model, model_key
from t2cli.provenance import report_record
from t2cli.registry import Registry
from t2cli.scoring import ScoreRow, score_outputs
from t2cli.svd_store import SVDStore, find_store, open_or_decompose
from t2cli.tasks.base import Task

# (examples, their answers) as each batch ends: `Completion`s, or two-pass `AdaptiveAnswer`s
OnCompletions = Callable[[list[dict], list[Completion] | list[AdaptiveAnswer]], None]


class NoExamplesError(T2Error, ValueError):
    """The split's data has no row the task can use (e.g. a file with the wrong fields)."""


class EvalSpecError(T2Error, ValueError):
    """An evaluation that asks for two ways of answering at once (e.g. an expert and a LoRA adapter)."""


@dataclass
class EvalReport:
    task: str
    split: str
    model: str
    expert: str | None
    n: int
    correct: int
    accuracy: float
    skipped_rows: int
    wall_time_s: float
    generation_s: float
    new_tokens: int
    tokens_per_s: float
    config: dict
    samples: list[dict] = field(default_factory=list, repr=False)
    provenance: dict = field(default_factory=dict)
    cut_off: int = 0  # answers the token budget ended (no end-of-turn, no stop string)
    cut_off_share: float = 0.0

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "samples"}


def evaluate(
    loaded: LoadedModel,
    task: Task,
    split: str = "test",
    limit: int | None = None,
    data_dir: str | Path | None = None,
    generation: GenerationConfig | None = None,
    expert_name: str | None = None,
    progress: GenerationProgress | None = None,
    experts: Mapping[str, str] | None = None,
    on_completions: OnCompletions | None = None,
    finished: Mapping[str, Completion] | None = None,
) -> EvalReport:
    """Greedy answers for the first `limit` examples of `split`, scored by the task's checker.

    `experts` ({name: tensors sha256}) names what is applied to `loaded`, for the provenance.
    `on_completions(examples, completions)` receives each generated batch as soon as it is done
    (unscored), so a caller can keep the finished answers of a run that is interrupted.
    `finished` ({example id: answer}) holds the answers of such a run (`AnswerJournal.finished`):
    they are reused and only the other examples are generated, in the batches the unbroken run
    would have used (the report's config counts them as "resumed_answers")."""
    started = time.perf_counter()
    data = task.load(split, data_dir)
    examples = data.examples[:limit] if limit else data.examples
    if not examples:
        source = task.sources.get(split)
        fields = f"; each row needs {source.fields}" if source is not None and source.fields else ""
        raise NoExamplesError(
            f"{task.name}/{split} ({data.source}) has no usable examples: {data.skipped} rows skipped as "
            f"malformed{fields}"
        )
    generation = generation or GenerationConfig(max_new_tokens=answer_budget(loaded.name, task), stop=tuple(task.stop))
    prompts = [chat_prompt(loaded.tokenizer, task.messages(example)) for example in examples]
    finished = finished or {}
    todo = [i for i, example in enumerate(examples) if str(example["id"]) not in finished]
    reused = len(examples) - len(todo)
    generation_started = time.perf_counter()
    on_batch = None
    if on_completions is not None:
        on_batch = lambda indices, done: on_completions([examples[todo[i]] for i in indices], done)  # noqa: E731
    counted = None
    if progress is not None:
        counted = lambda done, total, tokens: progress(reused + done, len(examples), tokens)  # noqa: E731
    generated = generate(loaded, [prompts[i] for i in todo], generation, progress=counted, on_batch=on_batch)
    generation_s = time.perf_counter() - generation_started
    answers = dict(zip(todo, generated))
    completions = [answers[i] if i in answers else finished[str(examples[i]["id"])] for i in range(len(examples))]
    generated_tokens = sum(c.num_new_tokens for c in generated)
    outputs = [completion.text for completion in completions]
    scored = score_outputs(task, examples, outputs)
    new_tokens = sum(c.num_new_tokens for c in completions)
    samples = [
        {
            "id": row.id,
            "prompt": prompt,
            "output": completion.text,
            "extracted": row.extracted,
            "correct": row.correct,
            "cut_off": completion.cut_off,
        }
        for row, prompt, completion in zip(scored.rows, prompts, completions)
    ]
    cut_off = sum(completion.cut_off for completion in completions)
    return EvalReport(
        task=task.name,
        split=split,
        model=loaded.name,
        expert=expert_name,
        n=scored.n,
        correct=scored.correct,
        accuracy=scored.accuracy,
        skipped_rows=data.skipped,
        wall_time_s=round(time.perf_counter() - started, 2),
        generation_s=round(generation_s, 2),
        new_tokens=new_tokens,
        tokens_per_s=round(generated_tokens / generation_s, 2) if generation_s else 0.0,
        config={
            "limit": limit,
            "data_source": data.source,
            **asdict(generation),
            **({"resumed_answers": reused} if reused else {}),
        },
        samples=samples,
        provenance=report_record(loaded, experts),
        cut_off=cut_off,
        cut_off_share=round(cut_off / len(completions), 4),
    )


# --------------------------------------------------------------------------- two passes


def evaluate_adaptive(
    model: AdaptiveModel,
    task: Task,
    split: str = "test",
    limit: int | None = None,
    data_dir: str | Path | None = None,
    generation: GenerationConfig | None = None,
    exclude: Sequence[dict] = (),
    progress: GenerationProgress | None = None,
    on_completions: OnCompletions | None = None,
    finished: Mapping[str, AdaptiveAnswer] | None = None,
) -> EvalReport:
    """Two-pass answers for a task split, scored like `evaluate`.

    Examples whose id is in `exclude` (the few-shot examples of cem) are never evaluated; `limit`
    applies after the exclusion. The report's config holds the strategy, the label counts and
    pass 1's time as a fraction of pass 2's (the paper's overhead figure, `dispatch_summary`);
    each sample row holds its label, expert and pass times. `finished` ({example id: answer})
    holds the answers of an interrupted run of the same evaluation, reused where pass 1 chooses
    the same label again (`AdaptiveModel.generate_many`).
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
    on_batch = None
    if on_completions is not None:
        on_batch = lambda indices, done: on_completions([examples[i] for i in indices], done)  # noqa: E731
    finished = finished or {}
    earlier = {i: finished[str(ex["id"])] for i, ex in enumerate(examples) if str(ex["id"]) in finished}
    answers = model.generate_many(
        [task.messages(example) for example in examples], generation, progress, on_batch, earlier
    )
    reused = sum(reusable(answer, answers[i].decision) for i, answer in earlier.items())
    scored = score_outputs(task, examples, [answer.text for answer in answers])
    pass1 = sum(answer.pass1_s for answer in answers)
    pass2 = sum(answer.pass2_s for answer in answers)
    new_tokens = sum(answer.num_new_tokens for answer in answers)
    cut_off = sum(answer.cut_off for answer in answers)
    dispatch = dispatch_summary(model, task, answers, scored.rows, excluded)
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
        config={
            "limit": limit,
            "data_source": data.source,
            "dispatch": dispatch,
            **asdict(generation),
            **({"resumed_answers": reused} if reused else {}),
        },
        samples=[adaptive_sample(row, answer) for row, answer in zip(scored.rows, answers)],
        cut_off=cut_off,
        cut_off_share=round(cut_off / len(answers), 4),
    )


def adaptive_sample(row: ScoreRow, answer: AdaptiveAnswer) -> dict:
    """One sample row of a two-pass report: the answer, its score, pass 1's choice and the times."""
    return {
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


def dispatch_summary(
    model: AdaptiveModel, task: Task, answers: Sequence[AdaptiveAnswer], rows: Sequence[ScoreRow], excluded: set[str]
) -> dict:
    """What a two-pass report records of pass 1: the strategy and its settings, where it sent the
    prompts (and how many of each choice were answered correctly), and what each pass cost."""
    dispatcher = model.dispatcher
    pass1 = sum(answer.pass1_s for answer in answers)
    pass2 = sum(answer.pass2_s for answer in answers)
    by_label: dict[str, dict[str, int]] = {}
    for row, answer in zip(rows, answers):
        counts = by_label.setdefault(answer.decision.label, {"n": 0, "correct": 0})
        counts["n"] += 1
        counts["correct"] += int(row.correct)
    choice = dispatcher.choice
    return {
        "strategy": dispatcher.name,
        "pass1_request_tokens": getattr(dispatcher, "request_tokens", None),  # loglik: tokens read (None: all)
        "pass1_dtype": str(getattr(dispatcher, "dtype", None) or "").removeprefix("torch.") or None,
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
        "experts": {label: e.name for label, e in choice.experts.items()} if choice else None,
        "notes": model.notes,  # e.g. two experts claimed one domain: which one was used
        **dispatcher.report(),  # what the strategy adds (cem: its weights and shot accuracy)
    }


# --------------------------------------------------------------------------- one evaluation from one spec

Stage = Callable[[str], AbstractContextManager[object]]  # a step's message → what the step runs inside
ProgressBar = Callable[[str], AbstractContextManager[Callable[[int, int, str], None]]]  # → update(done, total, label)


@dataclass
class EvalSpec:
    """One evaluation: the model, the task split, how answers are generated, and at most one way of
    adapting the model — a registered `expert`, a `lora` adapter directory, or a pass-1 strategy
    (`adapt`, with `adapt_options`, an object of its options dataclass; None: its defaults)."""

    task: Task
    model: str | LoadedModel = DEFAULT_MODEL  # a name (loaded with dtype, device, device_map) or a loaded model
    split: str = "test"
    limit: int | None = None  # only the first N examples (after cem's shots are set aside)
    data_dir: str | Path | None = None  # a directory laid out like the bundled data
    generation: GenerationConfig | None = None  # None: greedy, within the task's answer budget
    expert: str | None = None
    lora: Path | None = None
    adapt: str | None = None
    adapt_options: Any = None
    experts: Sequence[str] | None = None  # adapt: the experts routed over (None: one per declared domain)
    shots: str | None = None  # adapt with shots (cem): N examples of the split, or a JSONL file
    seed: int = 0  # the shots' draw
    dtype: str = "auto"
    device: str = "auto"
    device_map: str | None = None
    registry: Registry | None = None
    out: Path | None = None  # where report.json and samples.jsonl go (None: runs/eval-…)
    resume: bool = False  # continue the unfinished run whose answers `out` holds (`answer_journal`)

    def __post_init__(self) -> None:
        if self.resume and self.out is None:
            raise EvalSpecError("--resume continues the evaluation in an --out directory: name it with --out")
        if self.resume and self.generation is not None and self.generation.do_sample:
            raise EvalSpecError(
                "--resume continues greedy evaluations: sampled answers would not continue the same random stream"
            )
        if self.lora and self.expert:
            raise EvalSpecError(
                "--lora and --expert are mutually exclusive: evaluate the LoRA baseline or an SVF expert"
            )
        if self.adapt and (self.lora or self.expert):
            raise EvalSpecError(
                "--adapt chooses the experts itself: drop --expert / --lora (or name them with --experts)"
            )
        if self.experts and not self.adapt:
            raise EvalSpecError(
                "--experts chooses what --adapt routes over: add --adapt STRATEGY, or use --expert NAME for one expert"
            )

    @property
    def answered_by(self) -> str | None:
        """What answers, as a run's name shows it: the expert, lora-DIR, adapt-STRATEGY (None: the base model)."""
        if self.lora:
            return f"lora-{self.lora.name if self.lora.name != 'adapter' else self.lora.parent.name}"
        if self.adapt:
            return f"adapt-{self.adapt.replace(':', '-')}"
        return self.expert

    def out_dir(self) -> Path:
        """`out`, or runs/eval-TASK-SPLIT-WHAT-TIMESTAMP."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.out or Path("runs") / f"eval-{self.task.name}-{self.split}-{self.answered_by or 'base'}-{stamp}"

    def journal_run(self) -> dict:
        """What makes two runs the same run, for the answer journal: the task split and subset, the
        model, what answers (the expert's tensor hash, the LoRA adapter's weights hash) and how."""
        answered_by: dict[str, Any] = {}
        if self.adapt:
            answered_by = {
                "strategy": self.adapt,
                "options": plain_settings(self.adapt_options),
                "experts": {name: vector.tensors_sha256 for name, vector in self.used_experts().items()},
                "shots": self.shots,
                "seed": self.seed,
            }
        elif self.expert:
            answered_by = {"expert": self.expert, "sha256": self.used_experts()[self.expert].tensors_sha256}
        elif self.lora:
            from t2cli.train.peft_adapter import adapter_weights_sha256

            answered_by = {"lora_sha256": adapter_weights_sha256(self.lora)}
        return {
            "task": self.task.name,
            "split": self.split,
            "limit": self.limit,
            "data_dir": str(self.data_dir) if self.data_dir else None,
            "model": self.model.name if isinstance(self.model, LoadedModel) else str(self.model),
            "dtype": self.dtype,
            "answered_by": answered_by,
            "generation": asdict(self.generation) if self.generation else None,
        }

    def open_journal(self, directory: Path | None = None) -> AnswerJournal:
        """The journal keeping this run's answers in `directory` (default `out`) as they finish —
        continued from what an unfinished run left there when `resume`."""
        return AnswerJournal(directory or self.out_dir(), self.journal_run(), resume=self.resume)

    def used_experts(self) -> dict[str, ExpertVector]:
        """The experts the run will use, each read and checked from its files (milliseconds, no
        model): the expert, or the experts the strategy may apply (`t2cli.adaptive.strategy_experts`)."""
        registry = self.registry or Registry()
        base = self.model.name if isinstance(self.model, LoadedModel) else model_key(self.model)
        if self.expert:
            return {self.expert: registry.load(self.expert, base)}
        if not self.adapt:
            return {}
        return {vector.name: vector for vector in strategy_experts(registry, base, self.adapt, self.experts)}


def with_search_hooks(options: Any, update: Callable[[int, int, str], None], checkpoint: Path | None) -> Any:
    """A shot-searching strategy's options, with its progress reported to `update` and its state
    kept in `checkpoint` (continued from there by a resumed run), where its options take them."""
    names = {option.name for option in fields(options)}
    hooks: dict[str, Any] = {}
    if "progress" in names:
        hooks["progress"] = lambda done, total, best: update(done, total, f"best fitness {best:.4f}")
    if "checkpoint" in names and checkpoint is not None:
        hooks["checkpoint"] = str(checkpoint)
    return replace(options, **hooks)


def plain_settings(options: Any) -> dict | None:
    """A strategy's options as plain values (what is not plain data, such as cem's task and shots
    objects, is fixed by the rest of the run's description)."""
    if options is None or not is_dataclass(options):
        return None
    plain = (str, int, float, bool, type(None))
    return {key: value for key, value in asdict(options).items() if isinstance(value, plain)}


def run_evaluation(
    spec: EvalSpec,
    *,
    journal: AnswerJournal | None = None,
    stage: Stage = lambda message: nullcontext(),
    progress: ProgressBar = lambda description: nullcontext(lambda done, total, label="": None),
    on_routing: Callable[[AdaptiveModel], None] | None = None,
) -> EvalReport:
    """Run the evaluation `spec` describes and return its report, with its record attached.

    The experts are checked before the model is loaded. `stage(message)` wraps each long step
    (loading the model, pass 1's set-up) and `progress(description)` the generation and, on a
    model's first use, the decomposition of its SVD store, yielding `update(done, total, label)`:
    the command line's spinner and progress bars, or nothing.
    `on_routing(model)` sees the two-pass model before it answers (which experts it routes over).
    `journal` (`spec.open_journal()`) keeps each batch of answers as it finishes, and hands back
    those of the unfinished run it continues.
    """
    on_completions = journal.add if journal is not None else None
    used = spec.used_experts()
    loaded = spec.model
    if not isinstance(loaded, LoadedModel):
        with stage(f"loading {spec.model}…"):
            loaded = load_model(spec.model, dtype=spec.dtype, device=spec.device, device_map=spec.device_map)
    adaptive, shots = None, []
    if spec.lora:
        from t2cli.train.lora import load_lora

        load_lora(loaded, spec.lora)
    stores = open_stores(loaded, used.values(), progress)
    if spec.expert:
        expert = used[spec.expert]
        DenseAdapter(loaded, stores[tuple(expert.targets)]).apply(expert)
    if spec.adapt:
        strategy = parse_strategy(spec.adapt)[0]
        setup = progress(f"{strategy.name} search") if strategy.needs_shots else stage(f"pass-1 set-up ({spec.adapt})…")
        with setup as update:  # a bar for a search on shots, a spinner for any other set-up
            options = spec.adapt_options or strategy.options_type()()
            if strategy.needs_shots:
                options = with_search_hooks(options, update, journal.partial_path("search") if journal else None)
            adaptive, shots = open_for_task(
                loaded, spec.task, spec.adapt, options, shots=spec.shots, split=spec.split,
                data_dir=spec.data_dir, seed=spec.seed, registry=spec.registry, experts=spec.experts,
            )  # fmt: skip
        if on_routing is not None:
            on_routing(adaptive)
    task, split = spec.task, spec.split
    with progress(f"{task.name} {split}") as update:
        counted = lambda done, total, tokens: update(done, total, f"{tokens} tokens")  # noqa: E731
        if adaptive is not None:
            report = evaluate_adaptive(
                adaptive, task, split, spec.limit, spec.data_dir, spec.generation, shots, counted, on_completions,
                finished=journal.finished_two_pass() if journal is not None else None,
            )  # fmt: skip
        else:
            name = used[spec.expert].name if spec.expert else spec.answered_by
            report = evaluate(
                loaded, task, split, spec.limit, spec.data_dir, spec.generation, name, counted,
                on_completions=on_completions, finished=journal.finished() if journal is not None else None,
            )  # fmt: skip
    cem = report.config.get("dispatch", {}).get("cem")
    report.provenance = experts_record(loaded, used.values(), mixture=cem["weights"] if cem else None)
    if spec.lora:
        from t2cli.train.peft_adapter import adapter_weights_sha256

        report.config["lora"] = working_path(spec.lora)
        report.config["lora_sha256"] = adapter_weights_sha256(spec.lora)
    return report


def working_path(path: Path) -> str:
    """`path` relative to the working directory where it lies inside it (a report names a file of
    the checkout, not of the machine that wrote it), else absolute."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def experts_record(
    loaded: LoadedModel, experts: Iterable[ExpertVector], mixture: Mapping[str, float] | None = None
) -> dict:
    """The report's record of a run on `loaded` that used `experts` (mixed with `mixture`, if so)."""
    return report_record(loaded, {expert.name: expert.tensors_sha256 for expert in experts}, mixture)


def open_stores(
    loaded: LoadedModel, experts: Iterable[ExpertVector], progress: ProgressBar
) -> dict[tuple[str, ...], SVDStore]:
    """The SVD store of each target set the experts use, by targets; a store used for the first
    time is decomposed first, inside `progress(description)`."""
    stores = {}
    for targets in dict.fromkeys(tuple(expert.targets) for expert in experts):
        store = find_store(loaded, targets)
        if store is None:
            with progress(f"SVD of the {' '.join(targets)} matrices (first use only)") as update:
                store = open_or_decompose(loaded, targets, progress=update)
        stores[targets] = store
    return stores


# --------------------------------------------------------------------------- writing a report


def write_report(report: EvalReport, directory: str | Path) -> tuple[Path, Path]:
    """report.json + samples.jsonl in `directory`, each written atomically."""
    directory = Path(directory)
    summary_path, samples_path = directory / "report.json", directory / "samples.jsonl"
    atomic_write_text(samples_path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in report.samples))
    atomic_write_text(summary_path, json.dumps(report.summary(), indent=2, sort_keys=True) + "\n")
    return summary_path, samples_path
