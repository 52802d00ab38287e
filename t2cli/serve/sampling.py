"""Choosing a row's next token, and how much of its text may be sent before a stop string could
still cut it."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from t2cli.serve.requests import Sampling


def sample(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """The next token: argmax at temperature 0, else a draw from the top-p nucleus."""
    if sampling.temperature == 0:
        return int(logits.argmax())
    probs = (logits.float() / sampling.temperature).softmax(-1).cpu()
    if sampling.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(0) - ordered > sampling.top_p  # keep the smallest set reaching top_p
        ordered[outside] = 0
        probs = torch.zeros_like(probs).scatter(0, order, ordered)
    return int(torch.multinomial(probs, 1, generator=generator))


def held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters could be the start of a stop string (not sent yet)."""
    held = 0
    for marker in stop:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if text.endswith(marker[:size]):
                held = max(held, size)
                break
    return held
