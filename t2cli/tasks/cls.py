"""The dispatch classification task (two-pass inference, SPEC §3b) and the dispatch prompt.

Pass 1 asks the model to name the domain of a user prompt inside ``\\boxed{}``; the same prompt
serves the prompt-based dispatcher (base model) and the classification expert trained on
``cls``. The ``cls`` examples come ONLY from training splits (after the paper's halving), so no
evaluation item leaks into the dispatcher: GSM8K train -> "math", MBPP+ train -> "code",
ARC-Easy train -> "reasoning". Up to 400 per label are sampled with a fixed seed (MBPP+ train has
only 200), each label is split 60/20/20 into train/validation/test, and the question is the
source task's own user prompt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

from t2cli.checkers import extract_boxed
from t2cli.tasks.arc import ARC_EASY
from t2cli.tasks.base import Task, TaskData
from t2cli.tasks.gsm8k import GSM8K
from t2cli.tasks.mbpp import MBPP_PLUS

DISPATCH_LABELS = ("code", "math", "reasoning")
OTHER = "other"
LABEL_HELP = {
    "code": "writing or fixing a computer program",
    "math": "solving a math problem or calculating a number",
    "reasoning": "answering a multiple-choice question about science or everyday knowledge",
}
CLS_SOURCES = (("math", GSM8K), ("code", MBPP_PLUS), ("reasoning", ARC_EASY))
PER_LABEL = 400
SEED = 0
FRACTIONS = (0.6, 0.2)  # train, validation; the rest is test


def dispatch_system(labels: Sequence[str]) -> str:
    """The pass-1 system instruction: pick one of ``labels`` or "other", inside \\boxed{}."""
    lines = [f"- {label}: {LABEL_HELP[label]}" if label in LABEL_HELP else f"- {label}" for label in labels]
    return (
        "Classify the user's request into exactly one category. Do not answer the request.\n"
        + "\n".join(lines)
        + f"\n- {OTHER}: anything else\n"
        + "Reply with the category inside \\boxed{}, for example \\boxed{"
        + (labels[0] if labels else OTHER)
        + "}."
    )


def dispatch_user(user_prompt: str, labels: Sequence[str]) -> str:
    choices = ", ".join([*labels, OTHER])
    return f"Request:\n{user_prompt.strip()}\n\nCategory ({choices}), inside \\boxed{{}}:"


def dispatch_messages(user_prompt: str, labels: Sequence[str] = DISPATCH_LABELS) -> list[dict[str, str]]:
    """Chat messages asking the model which of ``labels`` (or "other") ``user_prompt`` belongs to."""
    return [
        {"role": "system", "content": dispatch_system(labels)},
        {"role": "user", "content": dispatch_user(user_prompt, labels)},
    ]


def parse_dispatch_label(output: str, labels: Sequence[str] = DISPATCH_LABELS) -> str:
    """The label in the last \\boxed{} of ``output`` (case, \\text{}, quotes and punctuation
    ignored), or "other" when there is none or it names no single label.

    >>> parse_dispatch_label(r"This is \\boxed{\\text{Math}}."), parse_dispatch_label("math")
    ('math', 'other')
    """
    boxed = extract_boxed(output or "")
    if boxed is None:
        return OTHER
    text = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}", r"\1", boxed)
    text = re.sub(r"[^a-z0-9_+\- ]", " ", text.lower()).strip()
    by_name = {str(label).lower(): str(label) for label in labels}
    if text in by_name:
        return by_name[text]
    words = set(text.split())
    found = [label for name, label in by_name.items() if name in words]
    return found[0] if len(found) == 1 else OTHER


def build_cls_splits(
    data_dir: str | Path | None = None, per_label: int = PER_LABEL, seed: int = SEED
) -> tuple[dict[str, list[dict]], int, str]:
    """All three splits of the classification set, its skipped-row count and its sources."""
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    skipped, sources = 0, []
    for label, task in CLS_SOURCES:
        data = task.load("train", data_dir)
        skipped += data.skipped
        sources.append(f"{task.name}:train ({data.source})")
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
    return splits, skipped, "; ".join(sources)


def _load(split: str, data_dir: str | Path | None) -> TaskData:
    splits, skipped, source = build_cls_splits(data_dir)
    return TaskData(splits[split], skipped, source)


CLS = Task(
    name="cls",
    domain="classification",
    description="Dispatch classification (math/code/reasoning) built from training splits only.",
    splits=("train", "validation", "test"),
    loader=_load,
    to_example=lambda row, fallback_id: row,
    system=dispatch_system(DISPATCH_LABELS),
    prompt=lambda example: dispatch_user(example["question"], DISPATCH_LABELS),
    extractor=lambda output, example=None: parse_dispatch_label(output, DISPATCH_LABELS),
    is_correct=lambda answer, example: answer == example["answer"],
    reference=lambda example: f"\\boxed{{{example['answer']}}}",
    max_new_tokens=24,  # a label in \boxed{}
)
