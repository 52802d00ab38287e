"""ARC (Clark et al. 2018) multiple-choice science questions: ARC-Easy trains the reasoning expert,
ARC-Challenge is an unseen task.

Splits (paper protocol): train = even rows of train.jsonl, validation = odd rows, test = test.jsonl;
"dev" = the official validation file. ARC-Challenge's test file is not bundled: pass --data-dir or
let it come from the Hub (allenai/ai2_arc). Scoring is strict: no readable option label = wrong.
The reference code's random-letter credit is available with ``make_arc_task(...,
random_letter_credit=True)``.
"""

from __future__ import annotations

import random

from t2cli.checkers.choices import choice_correct, choice_instruction, extract_choice, option_lines, stated_choice
from t2cli.tasks.base import HubSource, SplitSource, Task, paper_splits, require_str
from t2cli.tasks.example import Example

_FIELDS = '"id", "question", "choices" {"text": [...], "label": [...]} and "answerKey"'


def _example(row: dict, fallback_id: str) -> Example:
    choices = row["choices"]
    labels = [str(label).strip() for label in choices["label"]]
    options = [str(text).strip() for text in choices["text"]]
    if len(labels) < 2 or len(labels) != len(options) or len(set(labels)) != len(labels):
        raise ValueError("choices must pair distinct labels with texts")
    answer = str(row["answerKey"]).strip()
    if answer not in labels:
        raise ValueError(f"answerKey {answer!r} is not one of the labels {labels}")
    return Example(
        str(row.get("id") or fallback_id),
        question=require_str(row, "question").strip(),
        labels=labels,
        options=options,
        answer=answer,
    )


def _prompt(example: dict) -> str:
    labels = example["labels"]
    which = ", ".join(labels[:-1]) + f" or {labels[-1]}"
    return f"{example['question']}\n{option_lines(labels, example['options'])}\n{choice_instruction(which)}"


def _reference(example: dict) -> str:
    text = example["options"][example["labels"].index(example["answer"])]
    # The option's text first, then its label: the 135M model knows ARC answers by their text (as
    # cloze scoring shows) far better than by letter, and copying the label of a text it has just
    # written is easy for it.
    return f'The correct option is "{text}". {stated_choice(example["answer"])}'


def make_arc_task(
    name: str,
    folder: str,
    hub_config: str,
    description: str,
    *,
    random_letter_credit: bool = False,
    credit_seed: int = 0,
    aliases: tuple[str, ...] = (),
) -> Task:
    """An ARC task. ``random_letter_credit`` reproduces the reference code: an answer with no
    readable label gets a label drawn from ``random.Random(f"{credit_seed}:{example id}")``."""

    def is_correct(answer: str | None, example: dict) -> bool:
        rng = random.Random(f"{credit_seed}:{example['id']}")
        return choice_correct(
            answer, example["answer"], example["labels"], random_letter_credit=random_letter_credit, rng=rng
        )

    return Task(
        name=name,
        domain="reasoning",
        description=description,
        sources={
            **paper_splits(folder, "allenai/ai2_arc", hub_config, _FIELDS),
            "dev": SplitSource(
                f"{folder}/validation.jsonl", hub=HubSource("allenai/ai2_arc", hub_config, "validation"), fields=_FIELDS
            ),
        },
        to_example=_example,
        prompt=_prompt,
        extractor=lambda output, example=None: (
            extract_choice(output, example["labels"]) if example else extract_choice(output)
        ),
        is_correct=is_correct,
        reference=_reference,
        max_new_tokens=192,  # CPU budget: the 135M model rarely reasons usefully past this
        aliases=aliases,
    )


ARC_EASY = make_arc_task(
    "arc-easy",
    "arc_easy",
    "ARC-Easy",
    "ARC-Easy grade-school science multiple choice; answer = the option label (strict).",
    aliases=("arc-e",),
)
ARC_CHALLENGE = make_arc_task(
    "arc-challenge",
    "arc_challenge",
    "ARC-Challenge",
    "ARC-Challenge harder science multiple choice (unseen task); answer = the option label (strict).",
    aliases=("arc-c",),
)
