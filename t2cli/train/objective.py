"""What a training objective is, and the log-probability code the objectives share.

An objective turns a batch of examples into `Sample`s (rollouts scored by the task, or reference
answers) and the samples into a loss. The loss sees the model only through a `Forward`: the logits
predicting each completion token under the trained weights, or under the base model's (`base=True`,
the KL reference: the same model with a zero delta, never a second copy). The training method
(`svf`, `lora`) provides the `Forward`, so an objective works for every method.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from t2cli.generation import chat_prompt
from t2cli.tasks.base import Task


@dataclass(frozen=True)
class Sample:
    """One training sequence: prompt tokens, answer tokens, and how the loss weighs it."""

    prompt_ids: list[int]
    completion_ids: list[int]
    advantage: float = 0.0  # RL: reward − baseline; unused by SFT
    reward: float | None = None  # RL: the task's reward of this completion


class Forward(Protocol):
    """Logits (B, C, V) predicting each completion token, targets (B, C), mask (B, C) — see
    `completion_logits` — under the trained weights, or the base model's with `base=True`."""

    def __call__(
        self, samples: Sequence[Sample], *, base: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class Rollouts(Protocol):
    """What an objective needs from the method to generate: the current weights, dense, for a block."""

    def generation_weights(self) -> AbstractContextManager[None]: ...


class Objective(Protocol):
    """A training objective: `name` ("rl", "sft") is logged with every iteration."""

    name: str

    def samples(self, examples: Sequence[dict], iteration: int, policy: Rollouts) -> list[Sample]:
        """The samples of this process's share of an iteration's batch (may generate with `policy`)."""
        ...

    def loss(self, forward: Forward, samples: Sequence[Sample]) -> tuple[torch.Tensor, dict[str, float]]:
        """Σ over `samples` of the per-sample loss (the loop divides by the global sample count)."""
        ...

    def samples_per_example(self) -> int:
        """How many samples each example gives (the divisor of the summed loss is batch × this)."""
        ...


def prompt_text(tokenizer, task: Task, example: dict, max_prompt_tokens: int) -> str:
    """The templated chat prompt; an over-long prompt keeps its last `max_prompt_tokens` tokens.

    The end of a prompt (the question's tail and the opened assistant turn) is what the answer
    depends on most; a chat template's default system text at the start is the first to go.
    """
    text = chat_prompt(tokenizer, task.messages(example))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_prompt_tokens:
        return text
    return tokenizer.decode(ids[-max_prompt_tokens:])


def completion_logits(model: torch.nn.Module, samples: Sequence[Sample]) -> tuple[torch.Tensor, ...]:
    """Logits (B, C, V) predicting each completion token, the targets (B, C) and their mask (B, C).

    Layout: prompts left-padded to P, completions right-padded to C, so every completion starts at
    column P and `logits_to_keep=C` returns exactly the positions that predict them:
        [pad pad p0 p1 p2 | c0 c1 pad]      position P−1+j predicts c_j
    Position ids count real tokens only (as `generate` does with left padding), which matters for
    absolute position embeddings (GPT-2); the last column predicts nothing and is not fed. Only the
    completion positions go through the LM head: a 49k vocabulary × 200 prompt tokens × 8 rows would
    be 300 MB of float32 logits for nothing.
    """
    device = next(model.parameters()).device
    P = max(len(s.prompt_ids) for s in samples)
    C = max(len(s.completion_ids) for s in samples)
    ids = torch.zeros(len(samples), P + C, dtype=torch.long)
    attention = torch.zeros(len(samples), P + C, dtype=torch.long)
    for row, sample in enumerate(samples):
        prompt, completion = sample.prompt_ids, sample.completion_ids
        ids[row, P - len(prompt) : P] = torch.tensor(prompt)
        ids[row, P : P + len(completion)] = torch.tensor(completion, dtype=torch.long)
        attention[row, P - len(prompt) : P + len(completion)] = 1
    ids, attention = ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=ids[:, :-1],
        attention_mask=attention[:, :-1],
        position_ids=positions[:, :-1],
        logits_to_keep=C,
        use_cache=False,
    )
    logits = out.logits.float()  # (B, C, V): float32 log-softmax even for a bf16 model
    return logits, ids[:, P:], attention[:, P:].float()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t) of the targets (B, C) and the full log-distributions (B, C, V)."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1), logp
