"""The running batch: its rows, their shared KV cache and the attention mask over it.

Every row is left-padded: the cache's sequence axis (and the mask's columns) end at the newest
token of every row, and a row's shorter history is zeros in front, masked out. A newly prefilled
batch joins the running one by left-padding the narrower of the two to the wider and
concatenating on the batch axis; a finished row leaves by index selection, after which the
leading columns that are padding on every remaining row are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from t2cli.serve.requests import Handle


@dataclass
class Row:
    """A running request: its expert's deltas, generated ids and what was sent of its text."""

    handle: Handle
    deltas: dict[str, torch.Tensor] | None
    label: str
    budget: int
    generator: torch.Generator
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the text already sent
    pass1_tokens: int = 0
    done: bool = False
    first_token_at: float | None = None


def left_padded(prompts: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts as one (B, L) batch of ids, padded with `pad` in front, and its mask (1 where
    a real token is)."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for index, prompt in enumerate(prompts):
        ids[index, width - len(prompt) :] = torch.tensor(prompt)
        mask[index, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def prompt_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded prompt batch: each row counts from 0 at its first real token."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """Zeros in front of `dim` up to `width` (the KV cache's sequence axis is 2, the mask's 1)."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class Batch:
    """The rows being decoded, in batch order, with their KV cache and (B, L) attention mask
    (1 where the cache holds a real token). Empty: no rows, no cache, no mask."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.cache = None
        self.mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def clear(self) -> None:
        self.rows, self.cache, self.mask = [], None, None

    def join(self, rows: list[Row], cache, mask: torch.Tensor) -> None:
        """Append rows (their cache and mask) to the batch, left-padding the shorter side."""
        if self.cache is None:
            self.cache, self.mask, self.rows = cache, mask, list(rows)
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([left_pad(mine.keys, width), left_pad(theirs.keys, width)])
            mine.values = torch.cat([left_pad(mine.values, width), left_pad(theirs.values, width)])
        self.mask = torch.cat([left_pad(self.mask, width, dim=1), left_pad(mask, width, dim=1)])
        self.rows.extend(rows)

    def next_positions(self) -> torch.Tensor:
        """Open a mask column for one more token on every row; the (B, 1) position ids it takes."""
        ones = torch.ones(len(self.rows), 1, dtype=torch.long, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        return self.mask.sum(dim=1, keepdim=True) - 1

    def keep(self, indices: list[int]) -> None:
        """Keep only the rows at `indices` (in that order), then drop the leading cache columns
        that no remaining row uses."""
        if not indices:
            self.clear()
            return
        index = torch.tensor(indices, device=self.mask.device)
        self.rows = [self.rows[i] for i in indices]
        self.mask = self.mask.index_select(0, index)
        start = int(self.mask.any(dim=0).nonzero()[0])  # the first column a remaining row uses
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]
