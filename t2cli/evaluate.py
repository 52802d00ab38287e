"""Evaluation: generate answers for a task split and score them with the task's own checkers.

The same `Task.check_many` scores RL rewards, `t2 score` and this loop, so training, scoring
and evaluation cannot disagree. A report is a JSON summary plus one JSONL row per sample.

Every report carries its provenance: the base model's weight fingerprint and, for each expert the
run used, the SHA-256 of its tensor file (and the mixture weights when it mixed them), so a
report whose experts have since changed can be found (`t2cli.results.check_reports`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from t2cli.embedded import answer_budget
from t2cli.errors import T2Error
from t2cli.files import atomic_write_text
from t2cli.generation import Completion, GenerationConfig, GenerationProgress, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.scoring import score_outputs
from t2cli.tasks.base import Task


class NoExamplesError(T2Error, ValueError):
    """The split's data has no row the task can use (e.g. a file with the wrong fields)."""


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


def provenance(
    loaded: LoadedModel, experts: Mapping[str, str] | None = None, mixture: Mapping[str, float] | None = None
) -> dict:
    """What a report needs to stay checkable: {base_model, base_fingerprint, experts: {name: tensors
    sha256}} (+ mixture: {name: α} when the experts were mixed)."""
    record = {
        "base_model": loaded.name,
        "base_fingerprint": loaded.fingerprint,
        "experts": dict(sorted((experts or {}).items())),
    }
    if mixture:
        record["mixture"] = {name: float(alpha) for name, alpha in sorted(mixture.items())}
    return record


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
    on_completions: Callable[[list[dict], list[Completion]], None] | None = None,
) -> EvalReport:
    """Greedy answers for the first `limit` examples of `split`, scored by the task's checker.

    `experts` ({name: tensors sha256}) names what is applied to `loaded`, for the provenance.
    `on_completions(examples, completions)` receives each generated batch as soon as it is done
    (unscored), so a caller can keep the finished answers of a run that is interrupted."""
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
    generation_started = time.perf_counter()
    on_batch = None
    if on_completions is not None:
        on_batch = lambda indices, done: on_completions([examples[i] for i in indices], done)  # noqa: E731
    completions = generate(loaded, prompts, generation, progress=progress, on_batch=on_batch)
    generation_s = time.perf_counter() - generation_started
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
        tokens_per_s=round(new_tokens / generation_s, 2) if generation_s else 0.0,
        config={"limit": limit, "data_source": data.source, **asdict(generation)},
        samples=samples,
        provenance=provenance(loaded, experts),
        cut_off=cut_off,
        cut_off_share=round(cut_off / len(completions), 4),
    )


def write_report(report: EvalReport, directory: str | Path) -> tuple[Path, Path]:
    """report.json + samples.jsonl in `directory`, each written atomically."""
    directory = Path(directory)
    summary_path, samples_path = directory / "report.json", directory / "samples.jsonl"
    atomic_write_text(samples_path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in report.samples))
    atomic_write_text(summary_path, json.dumps(report.summary(), indent=2, sort_keys=True) + "\n")
    return summary_path, samples_path
