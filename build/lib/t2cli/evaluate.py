"""Evaluation: generate answers for a task split and score them with the task's own checkers.

The same `Task.check_many` scores RL rewards, `t2 score` and this loop, so training, scoring
and evaluation cannot disagree. A report is a JSON summary plus one JSONL row per sample.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from t2cli.files import atomic_write_text
from t2cli.generation import GenerationConfig, GenerationProgress, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.scoring import score_outputs
from t2cli.tasks.base import Task


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
) -> EvalReport:
    """Greedy answers for the first `limit` examples of `split`, scored by the task's checker."""
    started = time.perf_counter()
    data = task.load(split, data_dir)
    examples = data.examples[:limit] if limit else data.examples
    if not examples:
        raise ValueError(f"{task.name}/{split} has no usable examples ({data.skipped} malformed rows skipped)")
    generation = generation or GenerationConfig(max_new_tokens=task.max_new_tokens, stop=tuple(task.stop))
    prompts = [chat_prompt(loaded.tokenizer, task.messages(example)) for example in examples]
    generation_started = time.perf_counter()
    completions = generate(loaded, prompts, generation, progress=progress)
    generation_s = time.perf_counter() - generation_started
    outputs = [completion.text for completion in completions]
    scored = score_outputs(task, examples, outputs)
    new_tokens = sum(c.num_new_tokens for c in completions)
    samples = [
        {"id": row.id, "prompt": prompt, "output": output, "extracted": row.extracted, "correct": row.correct}
        for row, prompt, output in zip(scored.rows, prompts, outputs)
    ]
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
    )


def write_report(report: EvalReport, directory: str | Path) -> tuple[Path, Path]:
    """report.json + samples.jsonl in `directory`, each written atomically."""
    directory = Path(directory)
    summary_path, samples_path = directory / "report.json", directory / "samples.jsonl"
    atomic_write_text(samples_path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in report.samples))
    atomic_write_text(summary_path, json.dumps(report.summary(), indent=2, sort_keys=True) + "\n")
    return summary_path, samples_path
