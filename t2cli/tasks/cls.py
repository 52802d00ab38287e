"""The dispatch classification task (two-pass inference) and the dispatch prompt.

Pass 1 asks the model to name the domain of a user prompt: the instruction comes first (the
system turn), the request last, and the answer is the bare category name. The same prompt serves
the prompt-based dispatcher (base model), the classification expert trained on ``cls`` and the
log-likelihood dispatchers. Its layout is what makes pass 1 cheap: everything before the request is
the same for every prompt (its KV cache is computed once), and after the request come only the
chat template's five closing tokens, after which the category's first token decides.

The labels are data: a classification set is built from *sources*, (domain, task) pairs — the
domain experts to route between and the tasks they were trained on (`cls_task`;
`t2cli.dispatch.classifier_task` makes the pairs from registered experts). Its examples come ONLY
from the sources' training splits, so no evaluation item leaks into the dispatcher: up to 400 per
label are sampled with a fixed seed, each label is split 60/20/20 into train/validation/test, and
the question is the source task's own user prompt. The registered ``cls`` task is the set the
shipped classifier was trained on: GSM8K train -> "math", MBPP+ train -> "code", ARC-Easy train ->
"reasoning" (each label is its task's ``domain``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

from t2cli.checkers.latex import extract_boxed
from t2cli.defaults import CLASSIFICATION, OTHER
from t2cli.tasks.arc import ARC_EASY
from t2cli.tasks.base import Task, TaskData
from t2cli.tasks.gsm8k import GSM8K
from t2cli.tasks.mbpp import MBPP_PLUS

Sources = Sequence[tuple[str, Task]]  # (label, the task whose training prompts carry it)
SHIPPED_CLS_SOURCES: Sources = tuple((task.domain, task) for task in (GSM8K, MBPP_PLUS, ARC_EASY))
DISPATCH_LABELS = tuple(sorted(label for label, _ in SHIPPED_CLS_SOURCES))  # the shipped classifier's labels
# How the dispatch prompt describes a label (wording only: any other label is listed by its name).
LABEL_HELP = {
    "code": "writing or fixing a computer program",
    "math": "solving a math problem or calculating a number",
    "reasoning": "answering a multiple-choice question about science or everyday knowledge",
}
PER_LABEL = 400
SEED = 0
FRACTIONS = (0.6, 0.2)  # train, validation; the rest is test


def dispatch_system(labels: Sequence[str]) -> str:
    """The pass-1 system instruction: name one of ``labels`` or "other", nothing else."""
    lines = [f"- {label}: {LABEL_HELP[label]}" if label in LABEL_HELP else f"- {label}" for label in labels]
    choices = ", ".join([*labels, OTHER])
    return (
        "Classify the user's request into exactly one category. Do not answer the request.\n"
        + "\n".join(lines)
        + f"\n- {OTHER}: anything else\n"
        + f"Reply with the category name only ({choices})."
    )


def dispatch_user(user_prompt: str) -> str:
    """The request, last: nothing of the dispatch prompt follows it but the chat template's tokens."""
    return f"Request:\n{user_prompt.strip()}"


def dispatch_messages(user_prompt: str, labels: Sequence[str] = DISPATCH_LABELS) -> list[dict[str, str]]:
    """Chat messages asking the model which of ``labels`` (or "other") ``user_prompt`` belongs to."""
    return [
        {"role": "system", "content": dispatch_system(labels)},
        {"role": "user", "content": dispatch_user(user_prompt)},
    ]


def parse_dispatch_label(output: str, labels: Sequence[str] = DISPATCH_LABELS) -> str:
    """The category ``output`` names: its first word, or the label in its last \\boxed{} (case,
    \\text{}, quotes and punctuation ignored); "other" when it names no single label.

    >>> parse_dispatch_label("Math."), parse_dispatch_label(r"It is \\boxed{\\text{code}}"), parse_dispatch_label("2+2")
    ('math', 'code', 'other')
    """
    by_name = {str(label).lower(): str(label) for label in labels}
    boxed = extract_boxed(output or "")
    if boxed is None:
        words = _words(output or "").split()
        return by_name.get(words[0], OTHER) if words else OTHER
    text = _words(re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", boxed))
    if text in by_name:
        return by_name[text]
    words = set(text.split())
    found = [label for name, label in by_name.items() if name in words]
    return found[0] if len(found) == 1 else OTHER


def _words(text: str) -> str:
    return re.sub(r"[^a-z0-9_+\- ]", " ", text.lower()).strip()


def build_cls_splits(
    data_dir: str | Path | None = None,
    per_label: int = PER_LABEL,
    seed: int = SEED,
    sources: Sources = SHIPPED_CLS_SOURCES,
) -> tuple[dict[str, list[dict]], int, str]:
    """All three splits of the classification set of `sources`, its skipped-row count and where
    its rows came from. The sources' order matters (it is the order before the seeded shuffle)."""
    if len({label for label, _ in sources}) != len(sources):
        raise ValueError("each label of a classification set needs exactly one source task")
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    skipped, origins = 0, []
    for label, task in sources:
        data = task.load("train", data_dir)
        skipped += data.skipped
        origins.append(f"{task.name}:train ({data.source})")
        picked = random.Random(f"{seed}:{label}").sample(data.examples, min(per_label, len(data.examples)))
        n_train, n_val = round(FRACTIONS[0] * len(picked)), round(FRACTIONS[1] * len(picked))
        parts = {
            "train": picked[:n_train],
            "validation": picked[n_train : n_train + n_val],
            "test": picked[n_train + n_val :],
        }
        for split, examples in parts.items():
            splits[split] += [
                {
                    "id": f"{task.name}:{ex['id']}",
                    "question": task.prompt(ex),
                    "answer": label,
                    "source_task": task.name,
                }
                for ex in examples
            ]
    for split, examples in splits.items():  # interleave labels, deterministically
        random.Random(f"{seed}:{split}").shuffle(examples)
    return splits, skipped, "; ".join(origins)


def cls_task(sources: Sources = SHIPPED_CLS_SOURCES, name: str = "cls") -> Task:
    """The classification task over `sources`' labels: its prompt lists them (sorted), its
    examples are the sources' training prompts labelled with their domain."""
    labels = tuple(sorted(label for label, _ in sources))
    if not labels or any(label in (OTHER, CLASSIFICATION) for label in labels):
        raise ValueError(f"a classification set needs domain labels other than {OTHER!r} and {CLASSIFICATION!r}")

    def load(split: str, data_dir: str | Path | None) -> TaskData:
        splits, skipped, origin = build_cls_splits(data_dir, sources=sources)
        return TaskData(splits[split], skipped, origin)

    return Task(
        name=name,
        domain=CLASSIFICATION,
        description=f"Dispatch classification ({'/'.join(labels)}) built from training splits only.",
        splits=("train", "validation", "test"),
        loader=load,
        to_example=lambda row, fallback_id: row,
        system=dispatch_system(labels),
        prompt=lambda example: dispatch_user(example["question"]),
        extractor=lambda output, example=None: parse_dispatch_label(output, labels),
        is_correct=lambda answer, example: answer == example["answer"],
        reference=lambda example: example["answer"],
        max_new_tokens=8,  # a category name
    )


CLS = cls_task()
