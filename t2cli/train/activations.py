"""Activation checkpointing for the loss forward: keep only each decoder layer's input, recompute
the layer in the backward pass. Memory for activations drops from every layer's intermediates to
one layer's; the price is about one extra forward.

transformers' own switch (`gradient_checkpointing_enable`) only acts on a model in training mode,
which would also turn on the base model's dropout; training keeps the base model in eval mode. So
this sets the switch on the decoder layers alone (their dropout modules are children and stay in
eval mode) for the duration of a block, with the non-reentrant checkpoint that works although the
model's own weights are frozen.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from t2cli.train.config import TrainError


def checkpointable_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's decoder layers that transformers can checkpoint (GradientCheckpointingLayer)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]


@contextmanager
def recomputed_activations(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block, forwards with gradients keep only each decoder layer's input."""
    if not enabled:
        yield
        return
    layers = checkpointable_layers(model)
    if not layers:
        raise TrainError(
            f"{type(model).__name__} has no layers transformers can checkpoint; run without --grad-checkpointing"
        )
    saved = [(layer.training, layer.__dict__.get("gradient_checkpointing")) for layer in layers]
    try:
        for layer in layers:
            layer.gradient_checkpointing = True
            layer._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            layer.training = True  # the layer module only (not its children: dropout stays off)
        yield
    finally:
        for layer, (training, flag) in zip(layers, saved):
            layer.training = training
            if flag is None:
                layer.__dict__.pop("gradient_checkpointing", None)
            else:
                layer.gradient_checkpointing = flag
            layer.__dict__.pop("_gradient_checkpointing_func", None)
