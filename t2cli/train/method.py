"""What a training method is: the small interface through which the one loop (`loop.py`) trains SVF
experts and LoRA adapters alike.

A method answers four questions for the loop:
  what is trained          `parameters`: the tensors the optimiser steps (p for SVF; A, B for LoRA)
  how rollouts get weights `generation_weights(base)`: dense weights of the current state (or of the
                           base model) on the model for the duration of a block — generation at the
                           base model's speed
  how the loss sees it     `loss_model()`: a `Forward` whose gradients reach `parameters`, and whose
                           `base=True` is the base model with a zero delta (the KL reference)
  how the best is kept     `snapshot()` / `base_state()` (what "best" holds: z, or A and B) and
                           `save(best, recipe)`, which writes it where users find it, with the
                           recipe that made it (`t2cli.provenance.training_recipe`)
`close()` gives the model back exactly as it was loaded.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch

from t2cli.train.objective import Forward

State = dict[str, torch.Tensor]


class Method(Protocol):
    name: str  # "svf" | "lora"
    parameters: dict[str, torch.Tensor]  # trained by the optimiser, in a fixed (sorted) order

    @property
    def num_parameters(self) -> int: ...

    def generation_weights(self, base: bool = False) -> AbstractContextManager[None]:
        """Inside the block `loaded.model` generates with the current state (`base`: the base model)."""
        ...

    def loss_model(self) -> AbstractContextManager[Forward]:
        """Inside the block the yielded `Forward` computes logits with gradients into `parameters`."""
        ...

    def snapshot(self) -> State:
        """A detached copy of the current state, as the best one is kept."""
        ...

    def base_state(self) -> State:
        """The state that leaves the model unchanged (the "best" before any iteration beats it)."""
        ...

    def save(self, best: State, recipe: dict) -> Path:
        """Write the best state (registered expert, or adapter directory) with the recipe that made
        it; return where it is."""
        ...

    def close(self) -> None:
        """Give `loaded.model` back as it was loaded."""
        ...
