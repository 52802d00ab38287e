"""The LoRA baseline (Transformer², §2): rank 16, alpha 32, dropout 0.05, next-token loss, through PEFT.

The paper compares SVF with LoRA trained on the same data with the same budget, and trains LoRA with
the next-token (SFT) loss because policy-gradient LoRA collapsed. This module does the same:

    load model → LoRA on exactly SVF's targets (`select_targets`) → for each iteration: the same
    global batch as the SVF loop (`batch_indices`, a pure function of seed and iteration) → prompt +
    reference answer (`reference_samples`) → the SFT loop's `nll_loss` → clip, AdamW, cosine LR
    (`lr_factor`) → validate every few iterations, keep the best adapter → save it atomically.

It is its own short loop rather than a mode of `rl.py`: that loop is built around p, z and the SVD
store (dense W' for rollouts, the factorised forward, z checkpoints, the expert registry); here the
trainable parameters are PEFT's A and B and the model is used as it is. Every piece that decides
*what* is trained on and *how the loss is computed* is imported from the SVF loop, so the two
methods see identical batches and identical losses.

Output: a normal PEFT adapter directory (`save_pretrained`: adapter_config.json +
adapter_model.safetensors) plus `t2_lora.json` (base model and fingerprint, hyperparameters,
metrics, parameter counts), written to a temporary directory and `os.replace`d into place.
Not supported (clear errors): the rl / sft+rl objectives, data-parallel runs, `--resume`.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from t2cli.errors import T2Error
from t2cli.files import atomic_write_text
from t2cli.generation import GenerationConfig, generate
from t2cli.models import LoadedModel, load_model
from t2cli.svd_store import select_targets, weight_matrix
from t2cli.tasks import get_task
from t2cli.tasks.base import Task
from t2cli.train import checkpoint as ckpt
from t2cli.train.config import LORA_DEFAULTS, TrainConfig, TrainError
from t2cli.train.rl import batch_indices, default_device, lr_factor, select_train_examples
from t2cli.train.sft import make_sft_objective, nll_loss, prompt_text

LORA_RANK, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05  # the paper's LoRA baseline
META_FILE = "t2_lora.json"
META_FORMAT = 1
# TrainConfig's lr 2e-3 and grad clip 1e-3 are SVF's (one scale per singular value). For LoRA we use
# 2e-4, the common LoRA rate for r = 16 (the PEFT/QLoRA examples; the paper does not state its LoRA
# rate here), and clip at 1.0 (the Hugging Face Trainer's default max_grad_norm).
RL_REFUSAL = ("the LoRA baseline trains with the next-token loss only (--objective sft): the paper trains LoRA "
              "that way because policy-gradient LoRA collapsed")

Event = Callable[[dict], None]


def lora_train_config(**values) -> TrainConfig:
    """A TrainConfig with the LoRA defaults (objective sft, lr 2e-4, grad clip 1.0) unless overridden."""
    return TrainConfig(**({"objective": "sft"} | LORA_DEFAULTS | values))


# --------------------------------------------------------------------------- targets, sizes, attach


def target_shapes(model: nn.Module, targets: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(m, n) = (out, in) of every targeted matrix; works on a meta-device model (no weights)."""
    modules = dict(model.named_modules())
    return {name: tuple(weight_matrix(modules[name]).shape) for name in select_targets(model, targets)}


def lora_parameter_count(model: nn.Module, targets: Sequence[str], rank: int = LORA_RANK) -> int:
    """Σ r·(m + n): A is r×n, B is m×r for every targeted m×n matrix."""
    return sum(rank * (m + n) for m, n in target_shapes(model, targets).values())


def svf_parameter_count(model: nn.Module, targets: Sequence[str]) -> int:
    """Σ min(m, n): one scale per singular value (SVF's size, for comparison)."""
    return sum(min(m, n) for m, n in target_shapes(model, targets).values())


def lora_config(model: nn.Module, targets: Sequence[str], rank: int = LORA_RANK, alpha: float = LORA_ALPHA,
                dropout: float = LORA_DROPOUT):
    """PEFT's LoraConfig on exactly the modules SVF adapts (full module names, not suffixes)."""
    from peft import LoraConfig

    names = select_targets(model, targets)
    modules = dict(model.named_modules())
    conv1d = all(type(modules[name]).__name__ == "Conv1D" for name in names)  # GPT-2: weights stored (in, out)
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none",
                      fan_in_fan_out=conv1d, task_type="CAUSAL_LM")


def attach_lora(loaded: LoadedModel, targets: Sequence[str] = ("mlp",), rank: int = LORA_RANK,
                alpha: float = LORA_ALPHA, dropout: float = LORA_DROPOUT):
    """Wrap `loaded.model` in a fresh PEFT LoRA (B = 0, so it starts as the base model).

    PEFT injects its layers into `loaded.model` in place: generation through `loaded` uses the
    adapter until `peft_model.unload()` puts the original modules back.
    """
    from peft import get_peft_model

    config = lora_config(loaded.model, targets, rank, alpha, dropout)
    with _quiet():
        return get_peft_model(loaded.model, config)


@contextmanager
def _quiet() -> Iterator[None]:
    """PEFT asks transformers 5 a deprecated question (a FutureWarning); nothing the user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_lora(loaded: LoadedModel, directory: str | Path):
    """A saved adapter on `loaded.model` (in place, eval mode); refuses one trained on other weights."""
    from peft import PeftModel

    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file():
        raise T2Error(f"{directory} is not a PEFT adapter directory (no adapter_config.json)")
    meta_file = directory / META_FILE
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        if meta.get("base_fingerprint") not in (None, loaded.fingerprint):
            raise T2Error(f"the LoRA adapter {directory} was trained on {meta.get('base_model')} "
                          f"(weights {meta['base_fingerprint'][:12]}), not on {loaded.name} "
                          f"(weights {loaded.fingerprint[:12]})")
    with _quiet():
        peft_model = PeftModel.from_pretrained(loaded.model, str(directory), is_trainable=False)
    peft_model.eval()
    return peft_model


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the trainable (LoRA A/B) parameters, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def _set_dropout(model: nn.Module, training: bool) -> None:
    # Only LoRA's own dropout follows the training phase; the base model stays in eval mode (as in SVF
    # training, so the two methods differ in the adapter only).
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            module.train(training)


class _NoZ:
    """`nll_loss` sets SVF's z on its factorised model; LoRA has nothing to set."""

    def set_z(self, z) -> None:
        pass


def save_adapter(peft_model, directory: str | Path, meta: dict, overwrite: bool = False) -> Path:
    """`save_pretrained` + t2_lora.json into a temporary sibling directory, then `os.replace` it in."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise TrainError(f"{directory} already exists; pass --overwrite or choose another --name / --out")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    old = None
    try:
        peft_model.save_pretrained(str(tmp))
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if directory.exists():  # a directory cannot be replaced by os.replace: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}-old-", dir=directory.parent))
            os.replace(directory, old / directory.name)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return directory


# --------------------------------------------------------------------------- the loop


@dataclass
class LoraResult:
    adapter_path: Path
    run_dir: Path
    base_val_accuracy: float
    best_val_accuracy: float
    best_iteration: int
    iterations: int
    trainable_parameters: int
    final_state: dict[str, torch.Tensor]  # A/B after the last iteration (tests compare with the start)
    wall_time_s: float
    metrics: list[dict] = field(default_factory=list)


def _validate(loaded: LoadedModel, task: Task, examples: list[dict], prompts: list[str],
              generation: GenerationConfig) -> float:
    completions = generate(loaded, prompts, generation)
    correct = task.check_many([c.text for c in completions], examples)
    return sum(correct) / len(correct)


def train_lora(
    config: TrainConfig,
    *,
    loaded: LoadedModel | None = None,
    task: Task | None = None,
    rank: int = LORA_RANK,
    alpha: float = LORA_ALPHA,
    dropout: float = LORA_DROPOUT,
    on_event: Event | None = None,
) -> LoraResult:
    """Train the LoRA baseline as `config` says (its task, targets, batches, iters, lr, schedule,
    validation); the best adapter goes to `<run dir>/adapter`. `loaded` is restored afterwards."""
    started = time.perf_counter()
    emit = on_event or (lambda event: None)
    if config.objective != "sft":
        raise TrainError(f"objective {config.objective!r}: {RL_REFUSAL}")
    if config.init_expert:
        raise TrainError("--init-expert starts an SVF run from an expert's z; a LoRA adapter has no z to start from")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TrainError("the LoRA baseline runs in one process (no torchrun / accelerate launch)")
    task = task or get_task(config.task)
    if not {"train", "validation"} <= set(task.splits):
        raise TrainError(f"task {task.name!r} has no train/validation splits (it is evaluation-only)")
    name = config.name or f"{config.task}-lora"
    run_dir = Path(config.out_dir) if config.out_dir else Path("runs") / f"train-{name}"
    adapter_dir = run_dir / "adapter"
    if adapter_dir.exists() and not config.overwrite:
        raise TrainError(f"{adapter_dir} already holds a LoRA adapter; pass --overwrite or choose another "
                         "--name / --out")
    if loaded is None:
        emit({"event": "setup", "message": f"loading {config.model}"})
        loaded = load_model(config.model, device=default_device(config))

    # ---- data: the same split, limits and prompts as the SVF loop
    train_data = task.load("train", config.data_dir)
    train_examples = select_train_examples(task, train_data.examples, config, loaded.tokenizer)
    val_examples = task.load("validation", config.data_dir).examples[: config.val_limit]
    if not train_examples or not val_examples:
        raise TrainError(f"task {task.name!r} has no usable train or validation examples")
    max_new_tokens = config.max_new_tokens or task.max_new_tokens
    val_prompts = [prompt_text(loaded.tokenizer, task, ex, config.max_prompt_tokens) for ex in val_examples]
    val_generation = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=config.generation_batch_size,
                                      stop=tuple(task.stop))
    make_samples, _ = make_sft_objective(loaded, task, config.max_prompt_tokens, max_new_tokens)

    # ---- adapter, optimiser, schedule
    emit({"event": "setup", "message": f"LoRA r={rank} on {' '.join(config.targets)}"})
    torch.manual_seed(config.seed)  # A's initialisation and LoRA dropout
    target_modules = select_targets(loaded.model, config.targets)  # before PEFT wraps them
    peft_model = attach_lora(loaded, config.targets, rank, alpha, dropout)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        n_params = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(
            config.to_dict() | {"method": "lora", "lora_rank": rank, "lora_alpha": alpha, "lora_dropout": dropout},
            indent=2, sort_keys=True) + "\n")
        metrics_path = run_dir / ckpt.METRICS_FILE
        ckpt.write_metrics(metrics_path, [])

        # ---- B = 0: the adapter starts as the base model, the first "best"
        emit({"event": "phase", "iter": 0, "phase": "validating the base model"})
        with torch.no_grad():
            base_score = _validate(loaded, task, val_examples, val_prompts, val_generation)
        best_score, best_iteration, best_state = base_score, 0, trainable_state(peft_model)
        evals_since_best, metrics = 0, []
        emit({"event": "validation", "iter": 0, "accuracy": base_score, "best": best_score})
        emit({"event": "start", "iters": config.iters, "start_iter": 0, "train_examples": len(train_examples),
              "val_examples": len(val_examples), "parameters": n_params, "world_size": 1,
              "base_accuracy": base_score})

        for it in range(config.iters):
            iter_started = time.perf_counter()
            lr = scheduler.get_last_lr()[0]
            batch = batch_indices(config.seed, it, len(train_examples), config.batch_size)
            samples = make_samples([train_examples[i] for i in batch], {}, it)
            emit({"event": "phase", "iter": it + 1, "phase": "backward"})
            _set_dropout(peft_model, True)
            loss_sum = 0.0
            for start in range(0, len(samples), config.micro_batch_size):
                micro = [s for s in samples[start : start + config.micro_batch_size] if s.completion_ids]
                if not micro:
                    continue
                loss, _ = nll_loss(loaded.model, micro, _NoZ(), {})
                (loss / config.batch_size).backward()
                loss_sum += float(loss.detach())
            _set_dropout(peft_model, False)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            line = {"iter": it + 1, "objective": "sft", "lr": lr, "loss": loss_sum / config.batch_size,
                    "grad_norm": float(grad_norm), "time/iter": time.perf_counter() - iter_started}

            stop = False
            if (it + 1) % config.eval_every == 0 or it + 1 == config.iters:
                emit({"event": "phase", "iter": it + 1, "phase": "validating"})
                with torch.no_grad():
                    score = _validate(loaded, task, val_examples, val_prompts, val_generation)
                line |= {"val/accuracy": score, "time/val": time.perf_counter() - iter_started - line["time/iter"]}
                if score > best_score:  # strictly better: on ties the earlier adapter stays
                    best_score, best_iteration, best_state = score, it + 1, trainable_state(peft_model)
                    evals_since_best = 0
                else:
                    evals_since_best += 1
                stop = 0 < config.patience <= evals_since_best
                emit({"event": "validation", "iter": it + 1, "accuracy": score, "best": best_score})
            metrics.append(line)
            ckpt.append_metrics(metrics_path, line)
            emit({"event": "iteration", **line})
            if stop:
                emit({"event": "early_stop", "iter": it + 1, "best_iteration": best_iteration})
                break

        # ---- the best A/B become the saved adapter
        final_state = {k: v.cpu() for k, v in trainable_state(peft_model).items()}
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if param.requires_grad:
                    param.copy_(best_state[param_name])
        wall_time = time.perf_counter() - started
        times = [m["time/iter"] for m in metrics]
        meta = {
            "format": META_FORMAT,
            "method": "lora",
            "name": name,
            "base_model": loaded.name,
            "base_fingerprint": loaded.fingerprint,
            "task": task.name,
            "domain": task.domain,
            "objective": "sft",
            "lora": {"rank": rank, "alpha": alpha, "dropout": dropout, "targets": list(config.targets),
                     "target_modules": target_modules},
            "trainable_parameters": n_params,
            "hyperparameters": config.to_dict(),
            "metrics": {
                "base_val_accuracy": base_score,
                "best_val_accuracy": best_score,
                "best_iteration": best_iteration,
                "iterations": len(metrics),
                "val_examples": len(val_examples),
                "train_examples": len(train_examples),
                "final_train_loss": metrics[-1]["loss"] if metrics else None,
                "seconds_per_iter": sum(times) / len(times) if times else None,
            },
            "data_source": train_data.source,
            "wall_time_s": round(wall_time, 2),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        save_adapter(peft_model, adapter_dir, meta, overwrite=config.overwrite)
        emit({"event": "done", "expert": name, "path": str(adapter_dir), "best_accuracy": best_score,
              "best_iteration": best_iteration, "base_accuracy": base_score})
    finally:
        _set_dropout(peft_model, False)
        peft_model.unload()  # the original modules back into loaded.model (no merge)
        for param in loaded.model.parameters():
            param.requires_grad_(False)
    return LoraResult(adapter_dir, run_dir, base_score, best_score, best_iteration, len(metrics), n_params,
                      final_state, time.perf_counter() - started, metrics)
