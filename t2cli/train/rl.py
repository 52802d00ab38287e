"""The RL objective (the Transformer² paper): REINFORCE on the task's reward, plus an optional KL penalty.

rollouts with the current weights (dense: generation at the base model's speed) → the task's
reward (the same checker as evaluation) → advantage (the raw ±1 reward for one greedy rollout,
as the paper; reward − group mean for k sampled rollouts) → loss −A · log π(answer) + λ · KL(π ‖ π_base).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from t2cli.generation import GenerationConfig, generate
from t2cli.models import LoadedModel
from t2cli.tasks.base import Task
from t2cli.train.objective import Forward, Rollouts, Sample, prompt_text, token_logprobs


def group_advantages(rewards: Sequence[float], k: int) -> list[float]:
    """r − mean of its group of k rollouts of one prompt; k = 1 keeps the raw reward (the paper).

    >>> group_advantages([1.0, -1.0, -1.0, -1.0], 2)
    [1.0, -1.0, 0.0, 0.0]
    """
    if k == 1:
        return list(rewards)
    out = []
    for start in range(0, len(rewards), k):
        group = rewards[start : start + k]
        mean = sum(group) / len(group)
        out += [r - mean for r in group]
    return out


def pg_loss(forward: Forward, samples: Sequence[Sample], kl_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over samples of −A · Σₜ log π(yₜ | x, y<ₜ) + λ · Σₜ KL(π(·|x, y<ₜ) ‖ π_base(·|x, y<ₜ))."""
    base_logp = None
    if kl_coef > 0:
        with torch.no_grad():  # π_base: the same model with a zero delta
            base_logits, _, _ = forward(samples, base=True)
            base_logp = torch.log_softmax(base_logits, dim=-1)  # (B, C, V)
    logits, targets, mask = forward(samples)
    logp_tokens, logp = token_logprobs(logits, targets)  # (B, C), (B, C, V)
    seq_logp = (logp_tokens * mask).sum(-1)  # (B,)
    advantages = torch.tensor([s.advantage for s in samples], device=seq_logp.device)
    loss = -advantages * seq_logp
    stats: dict[str, float] = {}
    if base_logp is not None:
        kl = ((logp.exp() * (logp - base_logp)).sum(-1) * mask).sum(-1)  # (B,): full distributions, Σ over t
        loss = loss + kl_coef * kl
        stats["kl"] = float(kl.detach().sum())
    return loss.sum(), stats


class RLObjective:
    """k rollouts per prompt with the current weights, scored by `task.reward`; the loss is `pg_loss`."""

    name = "rl"

    def __init__(
        self,
        loaded: LoadedModel,
        task: Task,
        *,
        rollouts_per_prompt: int,
        temperature: float,
        kl: float,
        seed: int,
        rank: int,
        max_prompt_tokens: int,
        max_new_tokens: int,
        generation_batch_size: int,
    ):
        self.loaded, self.task, self.k, self.kl = loaded, task, rollouts_per_prompt, kl
        self.seed, self.rank, self.max_prompt_tokens = seed, rank, max_prompt_tokens
        self.generation = GenerationConfig(
            max_new_tokens=max_new_tokens,
            batch_size=generation_batch_size,
            do_sample=rollouts_per_prompt > 1,
            temperature=temperature,
            stop=tuple(task.stop),
        )

    def samples(self, examples: Sequence[dict], iteration: int, policy: Rollouts) -> list[Sample]:
        k, tokenizer = self.k, self.loaded.tokenizer
        prompts = [prompt_text(tokenizer, self.task, ex, self.max_prompt_tokens) for ex in examples]
        # sampling seeded by (seed, iteration, rank): a resumed run needs no generator state
        seed = (self.seed * 1_000_003 + iteration) * 1024 + self.rank if k > 1 else None
        generation = replace(self.generation, seed=seed)
        with torch.no_grad(), policy.generation_weights():
            completions = generate(self.loaded, [p for p in prompts for _ in range(k)], generation)
        repeated = [ex for ex in examples for _ in range(k)]
        rewards = [float(r) for r in self.task.reward([c.text for c in completions], repeated)]
        advantages = group_advantages(rewards, k)
        return [Sample(c.prompt_ids, c.completion_ids, a, r) for c, a, r in zip(completions, advantages, rewards)]

    def loss(self, forward: Forward, samples: Sequence[Sample]) -> tuple[torch.Tensor, dict[str, float]]:
        return pg_loss(forward, samples, self.kl)

    def samples_per_example(self) -> int:
        return self.k
