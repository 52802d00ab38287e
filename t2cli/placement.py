"""Where a model runs and in what precision: the dtype names each option takes, and the one device
resolver every module uses.

The names are plain strings and this module imports no torch at load time, so the command line can
show them in its help at once; the functions that return torch objects import torch when called.

    >>> unknown_dtype("--svd-dtype", "float16", SVD_DTYPES)
    "--svd-dtype must be one of float32, float64, not 'float16'"
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from t2cli.errors import DispatchError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")  # --dtype: auto = bfloat16 on a GPU with it, else float32
STORE_DTYPES = ("float32", "bfloat16", "float16", "float64")  # --store-dtype: U and Vᵀ in the SVD store
SVD_DTYPES = ("float32", "float64")  # --svd-dtype: the precision the SVD runs in, whatever the model's
PASS1_DTYPES = ("float32", "bfloat16", "float16")  # --pass1-dtype: pass 1's own copy of the model
EXPORT_DTYPES = ("float32", "bfloat16", "float16")  # `t2 export --dtype`: the stored precision
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}  # bytes per element
DEVICE_MAPS = ("auto", "balanced", "sequential", "cpu")  # --device-map: how accelerate spreads a model


class PlacementError(ModelNotFoundError):
    """A dtype, device or device map that a model cannot be loaded with."""


def unknown_dtype(option: str, value: object, choices: Sequence[str]) -> str:
    """The one wording of a dtype an option does not take."""
    return f"{option} must be one of {', '.join(choices)}, not {value!r}"


def torch_dtype(name: str) -> torch.dtype:
    """`bfloat16` → torch.bfloat16, for any name in DTYPE_BYTES."""
    import torch

    if name not in DTYPE_BYTES:
        raise PlacementError(unknown_dtype("dtype", name, tuple(DTYPE_BYTES)))
    return getattr(torch, name)


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` → `bfloat16`."""
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- the device


def resolve_device(device: str | torch.device | None = "auto", *, visible: bool = True) -> torch.device:
    """`auto` (or None) = this process's GPU when there is one (cuda:LOCAL_RANK under torchrun /
    accelerate launch), else the CPU; anything else as torch spells it.

    `visible=False` accepts a CUDA device this machine does not have (to plan for one)."""
    import torch

    if device is None or device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local_rank = os.environ.get("LOCAL_RANK")
        return torch.device("cuda", int(local_rank)) if local_rank else torch.device("cuda")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise PlacementError(f"--device {device!r} is not a device: use auto, cpu, cuda or cuda:N") from error
    if visible and resolved.type == "cuda" and not torch.cuda.is_available():
        raise PlacementError(f"--device {device} asked for, but no CUDA device is visible: use --device cpu")
    return resolved


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device | None = "auto") -> torch.dtype:
    """`auto` = bfloat16 on a CUDA device that supports it (a GPU this machine does not have is
    assumed to), float32 otherwise (CPUs without bfloat16 units run it several times slower)."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        where = device if isinstance(device, torch.device) else resolve_device(device)
        cuda_bf16 = where.type == "cuda" and (not torch.cuda.is_available() or torch.cuda.is_bf16_supported())
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in MODEL_DTYPES:
        raise PlacementError(f"--dtype must be auto, float32, bfloat16 or float16, not {dtype!r}")
    return torch_dtype(dtype)


def pass1_dtype_of(name: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype for a --pass1-dtype value (None: pass 1 shares the model in its own dtype)."""
    if name is None or not isinstance(name, str):
        return name
    if name not in PASS1_DTYPES:
        raise DispatchError(unknown_dtype("--pass1-dtype", name, PASS1_DTYPES))
    return torch_dtype(name)


def check_placement(dtype: str, device: str, device_map: str | None = None) -> None:
    """Refuse a bad --dtype / --device / --device-map before anything is loaded (no torch needed)."""
    if dtype not in MODEL_DTYPES:
        hint = " (the SVD precision is --svd-dtype)" if dtype == "float64" else ""
        raise PlacementError(unknown_dtype("--dtype", dtype, MODEL_DTYPES) + hint)
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise PlacementError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise PlacementError(f"--device-map must be auto, balanced, sequential or cpu, not {device_map!r}")
