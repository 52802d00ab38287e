"""The dispatch classification task (two-pass inference, SPEC §3b) and the dispatch prompt.

Pass 1 asks the model to name the domain of a user prompt: the instruction comes first (the
system turn), the request last, and the answer is the bare category name. The same prompt serves
the prompt-based dispatcher (base model), the classification expert trained on ``cls`` and the
log-likelihood dispatchers. Its layout is what makes pass 1 cheap: everything before the request is
the same for every prompt (its KV cache is computed once), and after the request come only the
chat template's five closing tokens, after which the category's first token decides.

The ``cls`` examples come ONLY from training splits (after the paper's halving), so no
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
    prompt=lambda example: dispatch_user(example["question"]),
    extractor=lambda output, example=None: parse_dispatch_label(output, DISPATCH_LABELS),
    is_correct=lambda answer, example: answer == example["answer"],
    reference=lambda example: example["answer"],
    max_new_tokens=8,  # a category name
)
