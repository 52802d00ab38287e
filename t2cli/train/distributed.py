"""Data-parallel process-group helpers: join the group, sum gradients, share rank 0's numbers.

Under `torchrun` / `accelerate launch` (WORLD_SIZE > 1) each process takes every world_size-th
prompt of the global batch and the gradients are summed across processes, so one or N processes
follow the same trajectory; only rank 0 validates, writes files and reports progress. With one
process every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from t2cli.placement import resolve_device as default_device  # noqa: F401  (the loop's name: the one resolver)


@dataclass(frozen=True)
class Processes:
    """This process's place among the data-parallel processes (world_size 1 = a plain run)."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # we initialised the process group, so we tear it down
    device: torch.device = torch.device("cpu")  # where collectives run (NCCL only takes CUDA tensors)

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """How many processes the launcher started (1 without torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_processes(device: torch.device) -> Processes:
    """Join the process group when launched by torchrun / accelerate launch (WORLD_SIZE > 1)."""
    if launched_world_size() <= 1:
        return Processes()
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), owns, device)


def close_processes(procs: Processes) -> None:
    """Wait for every process, then leave the group if we joined it."""
    if procs.world_size > 1:
        dist.barrier()
        if procs.owns_group:
            dist.destroy_process_group()


def barrier(procs: Processes) -> None:
    if procs.world_size > 1:
        dist.barrier()


def all_reduce_(tensor: torch.Tensor, procs: Processes) -> torch.Tensor:
    """Sum `tensor` over processes, in place."""
    if procs.world_size > 1:
        on_device = tensor.to(procs.device)
        dist.all_reduce(on_device)  # sum
        tensor.copy_(on_device)
    return tensor


def broadcast_float(value: float, procs: Processes) -> float:
    """Rank 0's value on every rank (so all ranks take the same early-stopping decision)."""
    if procs.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=procs.device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def all_reduce_grads(params: Sequence[torch.Tensor], procs: Processes) -> None:
    """Sum the parameters' gradients over processes, in one flat buffer (one call, not one per tensor)."""
    if procs.world_size == 1:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()
