"""The memory plan: the bytes each stage needs, from the model's config alone (no weights).

A plan counts what t2 itself holds — the model, the SVD factors, the weights kept for an exact
revert, z and its optimiser, the KV cache of rollouts, the activations a backward pass keeps, the
logits — plus the resident size of the Python process itself on a CPU. The counts follow from the
shapes; the per-token activation factors and the process size are estimates of what PyTorch and
transformers keep (the scaling benchmark, bench/scaling.py, compares them with measured peaks).

Stages:
  decompose  one tensor at a time: the largest tensor read and its float32 copy (the fingerprint
             pass), or the largest target, its float copy, the SVD's factors and workspace and the
             store-dtype copies being written, whichever is larger.
  eval       the model, the factors, the kept originals, generation (KV cache, one layer's
             prefill activations, the last position's logits).
  train      eval's residents, z with Adam, rollouts' KV cache, and the loss's forward/backward
             through the factorised layers over one micro-batch (all layers' activations, or one
             layer's plus the layer inputs with activation checkpointing) and its float32 logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from t2cli.errors import T2Error
from t2cli.placement import DTYPE_BYTES, dtype_name, resolve_device, resolve_dtype

LORA_RANK = 16  # the paper's LoRA baseline rank (t2 info compares SVF with it)
PROCESS_BYTES_CPU = 370 * 2**20  # resident size of a t2 process with torch and transformers imported
PROCESS_BYTES_CUDA = 0  # device memory: the CUDA context is outside what PyTorch allocates
# Activations kept per token per decoder layer for a backward pass through factorised MLP layers,
# in units of (hidden, key/value width, intermediate): norms, projections, attention output,
# the SVF layers' (r-sized) inner products, the gate/up/down products.
TRAIN_ACT_HIDDEN, TRAIN_ACT_KV, TRAIN_ACT_INTER = 15, 4, 4
# A forward without gradients holds about one layer's worth at a time.
INFER_ACT_HIDDEN, INFER_ACT_INTER = 4, 3
LOGIT_COPIES_F32 = 3  # float32 logits, their log-softmax, and its gradient
ADAM_COPIES = 5  # p, its gradient, two moments, z = f(p)
HEADROOM = 0.85  # keep="auto" keeps the originals on a GPU only if the train stage then uses ≤ this share of it


class PlanError(T2Error):
    """The plan's inputs make no sense (e.g. a zero batch)."""


@dataclass(frozen=True)
class Shapes:
    """What the plan needs to know about an architecture."""

    parameters: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    largest_tensor: int  # elements of the largest stored tensor (usually the embeddings)
    targets: tuple[tuple[int, int], ...]  # (out, in) of each targeted matrix

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def shapes_of(skeleton: nn.Module, targets: Sequence[str] = ("mlp",)) -> Shapes:
    """Shapes from a model on the meta device (or any model: only shapes are read)."""
    from t2cli.svd_store import select_targets, weight_matrix

    config = skeleton.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    names = select_targets(skeleton, targets)
    modules = dict(skeleton.named_modules())
    heads = text.num_attention_heads
    hidden = text.hidden_size
    parameters = list(skeleton.parameters())
    return Shapes(
        parameters=sum(p.numel() for p in parameters),
        layers=text.num_hidden_layers,
        hidden=hidden,
        intermediate=getattr(text, "intermediate_size", None) or 4 * hidden,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or hidden // heads,
        vocab=text.vocab_size,
        largest_tensor=max(p.numel() for p in parameters),
        targets=tuple(tuple(weight_matrix(modules[name]).shape) for name in names),
    )


def parameter_counts(shapes: Shapes, lora_rank: int = LORA_RANK) -> dict[str, int]:
    """Trainable parameters on the targets: SVF (one per singular value) and LoRA of `lora_rank`."""
    return {
        "model": shapes.parameters,
        "svf": sum(min(m, n) for m, n in shapes.targets),
        "lora": sum(lora_rank * (m + n) for m, n in shapes.targets),
    }


@dataclass(frozen=True)
class Stage:
    name: str
    parts: dict[str, int]  # what → bytes on the compute device (or in RAM on a CPU)
    host: dict[str, int] = field(default_factory=dict)  # bytes in host memory when the device is a GPU

    @property
    def total(self) -> int:
        return sum(self.parts.values())


@dataclass(frozen=True)
class MemoryPlan:
    dtype: str
    store_dtype: str
    device: str
    available: int | None  # bytes the device has (GPU total, or RAM available), None if unknown
    stages: tuple[Stage, ...]
    settings: dict

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def fits(self, name: str) -> bool | None:
        return None if self.available is None else self.stage(name).total <= self.available


def device_memory(device: str | torch.device = "cpu") -> int | None:
    """Total memory of a CUDA device, or the RAM available now on the host (Linux); None if unknown
    (a CUDA device this machine does not have)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory if torch.cuda.is_available() else None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _bytes(dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise PlanError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPE_BYTES)}")
    return DTYPE_BYTES[dtype]


def plan(
    shapes: Shapes,
    *,
    dtype: str = "float32",
    store_dtype: str | None = None,
    file_dtype: str | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    max_new_tokens: int = 512,
    prompt_tokens: int = 128,
    micro_batch: int | None = None,
    checkpointing: bool = False,
    keep: str = "auto",
    objective: str = "rl",
    available: int | None = None,
) -> MemoryPlan:
    """Bytes per stage for a model of these shapes.

    `dtype`: the model's compute dtype; `store_dtype`: of U and Vᵀ (default `dtype`); `file_dtype`:
    how the weights are stored on disk (default `dtype`). `batch_size` sequences of `prompt_tokens`
    + `max_new_tokens`; the loss runs over `micro_batch` of them at a time (default all).
    `keep`: where the originals for an exact revert go — device, cpu (host memory), files (none
    kept), auto (device when it fits in `available`, else cpu; like DenseAdapter's auto).
    `objective`: rl (rollouts, then the loss) or sft (the loss over reference answers of
    `max_new_tokens` tokens, no rollouts).
    """
    if batch_size < 1 or max_new_tokens < 0 or prompt_tokens < 1:
        raise PlanError("batch size and prompt tokens must be at least 1, new tokens at least 0")
    store_dtype = store_dtype or dtype
    file_dtype = file_dtype or dtype
    b, bs, bf = _bytes(dtype), _bytes(store_dtype), _bytes(file_dtype)
    s = shapes
    micro = min(micro_batch or batch_size, batch_size)
    cpu = torch.device(device).type == "cpu"
    process = PROCESS_BYTES_CPU if cpu else PROCESS_BYTES_CUDA
    seq = prompt_tokens + max_new_tokens

    weights = s.parameters * b
    factors = sum((m + n) * min(m, n) for m, n in s.targets) * bs + sum(min(m, n) for m, n in s.targets) * 4
    originals = sum(m * n for m, n in s.targets) * b

    def kv(batch: int, tokens: int) -> int:
        return 2 * batch * tokens * s.layers * s.kv_width * b

    def generation(batch: int) -> int:
        prefill = batch * prompt_tokens * (INFER_ACT_HIDDEN * s.hidden + INFER_ACT_INTER * s.intermediate) * b
        scores = batch * s.heads * prompt_tokens**2 * b
        return kv(batch, seq) + prefill + scores + 2 * batch * s.vocab * 4

    per_token_layer = (TRAIN_ACT_HIDDEN * s.hidden + TRAIN_ACT_KV * s.kv_width + TRAIN_ACT_INTER * s.intermediate) * b
    scores_layer = 2 * micro * s.heads * seq**2 * b
    if checkpointing:  # each layer's input kept; one layer recomputed at a time during backward
        activations = micro * seq * s.layers * s.hidden * b + 2 * (micro * seq * per_token_layer + scores_layer)
    else:
        activations = s.layers * (micro * seq * per_token_layer + scores_layer)
    logits = micro * max_new_tokens * s.vocab * (b + LOGIT_COPIES_F32 * 4)
    optimiser = ADAM_COPIES * sum(min(m, n) for m, n in s.targets) * 4

    if keep == "auto":
        resident = weights + factors + originals + generation(batch_size) + activations + logits
        keep = "device" if cpu or available is None or resident <= HEADROOM * available else "cpu"
    if keep not in ("device", "cpu", "files"):
        raise PlanError(f"keep must be auto, device, cpu or files, not {keep!r}")
    kept_on_device = originals if keep == "device" or (cpu and keep == "cpu") else 0
    kept_on_host = originals if keep == "cpu" and not cpu else 0

    largest = max(s.targets, key=lambda mn: mn[0] * mn[1])
    m, n = largest
    r = min(m, n)
    svd = (
        m * n * bf  # the matrix as stored
        + m * n * 4  # its float copy
        + (m * r + r * r + r * n + m * n) * 4  # U, σ, Vᵀ and the LAPACK workspace
        + 2 * (m * r + r * n) * bs  # the store-dtype copies and their serialised form
    )
    fingerprint = s.largest_tensor * bf + (s.largest_tensor * 4 if bf != 4 else 0)  # as read, and in float32
    stages = (
        Stage("decompose", {"process": process, "one tensor at a time": max(svd, fingerprint)}),
        Stage(
            "eval",
            {
                "process": process,
                "model": weights,
                "factors": factors,
                "kept weights": kept_on_device,
                "generation": generation(batch_size),
            },
            {"kept weights": kept_on_host} if kept_on_host else {},
        ),
        Stage(
            "train",
            {
                "process": process,
                "model": weights,
                "factors": factors,
                "kept weights": kept_on_device,
                "z + optimiser": optimiser,
                "rollouts (KV cache)": max(generation(batch_size), 0),
                "activations": activations,
                "logits": logits,
            },
            {"kept weights": kept_on_host} if kept_on_host else {},
        ),
    )
    # Rollouts and the backward pass do not overlap: the train peak is residents + the larger phase.
    train = stages[2]
    phase = max(train.parts["rollouts (KV cache)"], train.parts["activations"] + train.parts["logits"])
    if objective == "sft":
        parts = {**train.parts, "rollouts (KV cache)": 0}
    elif objective != "rl":
        raise PlanError(f"objective must be rl or sft, not {objective!r}")
    elif phase == train.parts["rollouts (KV cache)"]:
        parts = {**train.parts, "activations": 0, "logits": 0}
    else:
        parts = {**train.parts, "rollouts (KV cache)": 0}
    stages = (stages[0], stages[1], Stage("train", parts, train.host))
    settings = {
        "batch_size": batch_size,
        "micro_batch": micro,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": max_new_tokens,
        "checkpointing": checkpointing,
        "keep": keep,
        "file_dtype": file_dtype,
        "objective": objective,
    }
    return MemoryPlan(dtype, store_dtype, str(device), available, stages, settings)


def plan_for(
    name_or_path: str,
    targets: Sequence[str] = ("mlp",),
    *,
    dtype: str = "auto",
    device: str = "auto",
    **settings,
) -> tuple[Shapes, MemoryPlan]:
    """The plan for a model by name, from its config alone (meta device; nothing else is read).

    `dtype`/`device` auto resolve as `load_model` would. A CUDA device may be planned for on a
    machine without one (auto dtype = bfloat16 there; pass `available` for its memory).
    The rest goes to `plan`."""
    from t2cli.models import meta_model

    where = resolve_device(device, visible=False)
    compute = dtype_name(resolve_dtype(dtype, where))
    skeleton = meta_model(name_or_path)
    shapes = shapes_of(skeleton, targets)
    config_dtype = getattr(skeleton.config, "dtype", None)
    file_dtype = dtype_name(config_dtype) if isinstance(config_dtype, torch.dtype) else config_dtype
    settings.setdefault("file_dtype", file_dtype if file_dtype in DTYPE_BYTES else compute)
    if settings.get("available") is None:
        settings["available"] = device_memory(where)
    return shapes, plan(shapes, dtype=compute, device=str(where), **settings)


def training_plan(loaded, targets: Sequence[str], *, batch_size: int, max_new_tokens: int, **settings) -> MemoryPlan:
    """The plan of a training run for a model already loaded (what `t2 train` prints before it starts)."""
    shapes = shapes_of(loaded.model, targets)
    settings.setdefault("available", device_memory(loaded.device))
    return plan(
        shapes,
        dtype=dtype_name(loaded.dtype),
        device=str(loaded.device),
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        **settings,
    )


def format_bytes(count: int | float) -> str:
    """1536 → '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
