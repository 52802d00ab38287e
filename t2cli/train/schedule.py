"""What each iteration sees: which training examples, in which batch, at which learning rate.

All pure functions of the config and the iteration number, so a resumed run (or a second process)
sees the same batches without any sampler state, and the SVF and LoRA methods see identical data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from t2cli.tasks.base import Task
from t2cli.train.config import TrainConfig, TrainError


def select_train_examples(task: Task, examples: Sequence[dict], config: TrainConfig, tokenizer) -> list[dict]:
    """The first --train-limit examples, then only those whose reference answer has at most
    --max-reference-tokens tokens."""
    selected = list(examples[: config.train_limit])
    limit = config.max_reference_tokens
    if limit is not None:
        selected = [
            ex
            for ex in selected
            if len(tokenizer(task.reference_output(ex), add_special_tokens=False)["input_ids"]) <= limit
        ]
        if not selected:
            raise TrainError(
                f"no {task.name} training example has a reference answer of at most {limit} tokens; "
                "raise --max-reference-tokens"
            )
    return selected


def batch_indices(seed: int, iteration: int, n: int, batch_size: int) -> list[int]:
    """The global batch of an iteration: positions iteration·B … of an endless stream of epochs,
    each epoch a permutation seeded by (seed, epoch)."""
    indices = []
    for position in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, offset = divmod(position, n)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        indices.append(int(torch.randperm(n, generator=generator)[offset]))
    return indices


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay from 1 to min_lr_ratio over the remaining iterations.

    >>> f = lr_factor(TrainConfig(task="t", iters=10, warmup_iters=2))
    >>> [round(f(i), 3) for i in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """

    def factor(iteration: int) -> float:
        if iteration < config.warmup_iters:
            return (iteration + 1) / config.warmup_iters
        progress = (iteration - config.warmup_iters) / max(1, config.iters - config.warmup_iters)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def validates_at(config: TrainConfig, iteration: int) -> bool:
    """Whether the loop validates after `iteration` (1-based): every --eval-every, and after the last."""
    return iteration % config.eval_every == 0 or iteration == config.iters
