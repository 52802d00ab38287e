"""The SFT objective: next-token cross-entropy of the task's reference answer given the chat prompt.

Only answer tokens count. The paper's ablation compares this with RL; for a small model it is the
denser signal: every answer token says what to do, where an RL reward of −1 on every rollout says
almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from t2cli.models import LoadedModel
from t2cli.tasks.base import Task
from t2cli.train.objective import Forward, Rollouts, Sample, prompt_text, token_logprobs


def reference_samples(
    loaded: LoadedModel, task: Task, examples: Sequence[dict], max_prompt_tokens: int, max_answer_tokens: int
) -> list[Sample]:
    """Prompt + reference answer (+ eos, so the model also learns where to stop)."""
    tokenizer = loaded.tokenizer
    samples = []
    for example in examples:
        prompt = prompt_text(tokenizer, task, example, max_prompt_tokens)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(task.reference_output(example), add_special_tokens=False)["input_ids"]
        answer_ids = answer_ids[:max_answer_tokens]
        if tokenizer.eos_token_id is not None:
            answer_ids = answer_ids + [tokenizer.eos_token_id]
        samples.append(Sample(prompt_ids, answer_ids))
    return samples


def nll_loss(forward: Forward, samples: Sequence[Sample]) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over samples of the mean cross-entropy of each answer's tokens (the loop divides by the
    global batch size, so the step's loss is a mean over samples of per-token means)."""
    logits, targets, mask = forward(samples)
    logp_tokens, _ = token_logprobs(logits, targets)  # (B, C)
    nll = -(logp_tokens * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
    return nll.sum(), {"tokens": float(mask.sum())}


class SFTObjective:
    """Samples are the reference answers (no generation); the loss is `nll_loss`."""

    name = "sft"

    def __init__(self, loaded: LoadedModel, task: Task, max_prompt_tokens: int, max_answer_tokens: int):
        self.loaded, self.task = loaded, task
        self.max_prompt_tokens, self.max_answer_tokens = max_prompt_tokens, max_answer_tokens

    def samples(self, examples: Sequence[dict], iteration: int, policy: Rollouts) -> list[Sample]:
        return reference_samples(self.loaded, self.task, examples, self.max_prompt_tokens, self.max_answer_tokens)

    def loss(self, forward: Forward, samples: Sequence[Sample]) -> tuple[torch.Tensor, dict[str, float]]:
        return nll_loss(forward, samples)

    def samples_per_example(self) -> int:
        return 1
