"""Train an SVF expert with reinforcement learning (Transformer², §2), reading top to bottom.

    load model → SVD store → p (one vector per target matrix; z = max_mult · sigmoid(p)) → for each
    iteration: a batch of prompts (a pure function of seed and iteration) → rollouts with the
    current z (dense weights: generation at base speed) → task reward → REINFORCE (+ λ·KL to the
    base model) through the factorised model, where ∂loss/∂z exists without composing W' →
    clip, AdamW, cosine LR → validate every few iterations, keep the best z → checkpoint, log
    → save + register the best z as an expert, with a learning curve beside it.

The same loop runs the SFT objective (`sft.py`): an objective is just two functions, `samples`
(rollouts, or reference answers) and `loss` (summed over samples; the loop divides by the global
batch size). Under `torchrun` / `accelerate launch` each process takes every world_size-th prompt
of the global batch and the gradients of p are summed across processes, so one or two processes
follow the same trajectory; only rank 0 validates, writes files and reports progress. The library
never prints: progress goes to `on_event(dict)`.
"""

from __future__ import annotations

import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from t2cli.adapt import DenseAdapter, FactorisedModel, factorised
from t2cli.expert import META_FILE, ExpertVector
from t2cli.files import atomic_write_text
from t2cli.generation import GenerationConfig, generate
from t2cli.models import LoadedModel, load_model, model_key
from t2cli.registry import Registry
from t2cli.svd_store import SVDStore, decompose
from t2cli.tasks import get_task
from t2cli.tasks.base import Task
from t2cli.train import checkpoint as ckpt
from t2cli.train.config import TrainConfig, TrainError
from t2cli.train.sft import Sample, completion_logits, make_sft_objective, prompt_text, token_logprobs

Event = Callable[[dict], None]


# --------------------------------------------------------------------------- processes


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


def init_processes(device: torch.device) -> Processes:
    """Join the process group when launched by torchrun / accelerate launch (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    owns = not dist.is_initialized()
    if owns:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(dist.get_rank(), dist.get_world_size(), owns, device)


def default_device(config: TrainConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def all_reduce_(tensor: torch.Tensor, procs: Processes) -> torch.Tensor:
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
    """Sum p's gradients over processes, in one flat buffer (one gloo call, not one per matrix)."""
    if procs.world_size == 1:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


# --------------------------------------------------------------------------- data, schedule, z


def batch_indices(seed: int, iteration: int, n: int, batch_size: int) -> list[int]:
    """The global batch of an iteration: positions iteration·B … of an endless stream of epochs,
    each epoch a permutation seeded by (seed, epoch). A pure function, so a resumed run (or a
    second process) sees the same batches without any sampler state."""
    indices = []
    for position in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, offset = divmod(position, n)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        indices.append(int(torch.randperm(n, generator=generator)[offset]))
    return indices


def lr_factor(config: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay from 1 to min_lr_ratio over the remaining iterations."""

    def factor(iteration: int) -> float:
        if iteration < config.warmup_iters:
            return (iteration + 1) / config.warmup_iters
        progress = (iteration - config.warmup_iters) / max(1, config.iters - config.warmup_iters)
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def z_of(p: Mapping[str, torch.Tensor], max_multiplier: float) -> dict[str, torch.Tensor]:
    return {name: max_multiplier * torch.sigmoid(value) for name, value in p.items()}


def p_of(expert: ExpertVector, max_multiplier: float) -> dict[str, torch.Tensor]:
    """The p whose z_of is the expert's z (the inverse of z = max_multiplier · sigmoid(p))."""
    top = max(float(z.max()) for z in expert.z.values())
    if top >= max_multiplier:
        raise TrainError(f"expert {expert.name!r} has z values up to {top:.3g}, not below --max-multiplier "
                         f"{max_multiplier:g}; pass a larger --max-multiplier to start from it")
    tiny = torch.finfo(torch.float32).eps
    return {name: torch.logit((z.float() / max_multiplier).clamp(tiny, 1 - tiny)) for name, z in expert.z.items()}


def select_train_examples(task: Task, examples: Sequence[dict], config: TrainConfig, tokenizer) -> list[dict]:
    """The first --train-limit examples, then only those whose reference answer has at most
    --max-reference-tokens tokens (shared by the SVF and LoRA loops, so both see the same data)."""
    selected = list(examples[: config.train_limit])
    limit = config.max_reference_tokens
    if limit is not None:
        selected = [ex for ex in selected
                    if len(tokenizer(task.reference_output(ex), add_special_tokens=False)["input_ids"]) <= limit]
        if not selected:
            raise TrainError(f"no {task.name} training example has a reference answer of at most {limit} tokens; "
                             "raise --max-reference-tokens")
    return selected


class InMemoryStore:
    """The two members `factorised()` uses from an SVDStore, served from factors already in memory
    (the dense adapter's), so the per-iteration swap to SVFLinear reads nothing from disk."""

    def __init__(self, store: SVDStore, factors: Mapping):
        self.modules, self._factors = store.modules, factors

    def factors(self, name: str, device=None):
        return self._factors[name]


@contextmanager
def applied(adapter: DenseAdapter, z: Mapping[str, torch.Tensor] | None) -> Iterator[None]:
    """Dense W' for z inside the block (None = the base model); the exact base weights after it."""
    if z is None:
        yield
        return
    loaded = adapter.loaded
    expert = ExpertVector({k: v.detach() for k, v in z.items()}, "in-training", loaded.name, loaded.fingerprint,
                          adapter.store.targets)
    try:
        adapter.apply(expert)
        yield
    finally:
        adapter.revert()


def validate(adapter: DenseAdapter, task: Task, examples: list[dict], prompts: list[str],
             z: Mapping[str, torch.Tensor] | None, generation: GenerationConfig) -> float:
    """Greedy accuracy on the validation examples with z (None = base), scored by the task."""
    with applied(adapter, z):
        completions = generate(adapter.loaded, prompts, generation)
    correct = task.check_many([c.text for c in completions], examples)
    return sum(correct) / len(correct)


# --------------------------------------------------------------------------- the RL objective


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


def pg_loss(model: torch.nn.Module, samples: Sequence[Sample], adapted: FactorisedModel,
            z: Mapping[str, torch.Tensor], kl_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ over samples of −A · Σₜ log π_z(yₜ | x, y<ₜ) + λ · Σₜ KL(π_z(·|x, y<ₜ) ‖ π_base(·|x, y<ₜ))."""
    base_logp = None
    if kl_coef > 0:
        with torch.no_grad():  # π_base: the same factorised forward with z = None (σ unchanged)
            adapted.set_z(None)
            base_logits, _, _ = completion_logits(model, samples)
            base_logp = torch.log_softmax(base_logits, dim=-1)  # (B, C, V)
    adapted.set_z(z)
    logits, targets, mask = completion_logits(model, samples)
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


def make_rl_objective(adapter: DenseAdapter, task: Task, config: TrainConfig, max_new_tokens: int,
                      procs: Processes):
    """(samples, loss): rollouts with the current z scored by `task.reward`, and `pg_loss`."""
    loaded, k = adapter.loaded, config.rollouts_per_prompt

    def samples(examples: Sequence[dict], z: Mapping[str, torch.Tensor], iteration: int) -> list[Sample]:
        prompts = [prompt_text(loaded.tokenizer, task, ex, config.max_prompt_tokens) for ex in examples]
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens,
            batch_size=config.generation_batch_size,
            do_sample=k > 1,
            temperature=config.temperature,
            stop=tuple(task.stop),
            # sampling seeded by (seed, iteration, rank): resume needs no generator state
            seed=(config.seed * 1_000_003 + iteration) * 1024 + procs.rank if k > 1 else None,
        )
        with applied(adapter, z):
            completions = generate(loaded, [p for p in prompts for _ in range(k)], generation)
        repeated = [ex for ex in examples for _ in range(k)]
        rewards = [float(r) for r in task.reward([c.text for c in completions], repeated)]
        advantages = group_advantages(rewards, k)
        return [Sample(c.prompt_ids, c.completion_ids, a, r) for c, a, r in zip(completions, advantages, rewards)]

    def loss(model, batch, adapted, z):
        return pg_loss(model, batch, adapted, z, config.kl)

    return samples, loss


# --------------------------------------------------------------------------- the loop


@dataclass
class TrainResult:
    expert: ExpertVector | None  # the best z (None on ranks other than 0)
    expert_path: Path | None
    run_dir: Path
    base_val_accuracy: float
    best_val_accuracy: float
    best_iteration: int
    iterations: int
    final_z: dict[str, torch.Tensor]  # z after the last iteration (tests compare runs with it)
    curve_path: Path | None
    wall_time_s: float
    metrics: list[dict] = field(default_factory=list)
    init_val_accuracy: float | None = None  # validation accuracy of --init-expert, when one was given


def train(
    config: TrainConfig,
    *,
    loaded: LoadedModel | None = None,
    task: Task | None = None,
    registry: Registry | None = None,
    resume: bool = False,
    on_event: Event | None = None,
) -> TrainResult:
    """Train one expert as `config` says; `loaded` / `task` override config.model / config.task."""
    session_start = time.perf_counter()
    device = loaded.device if loaded is not None else default_device(config)
    procs = init_processes(device)

    def emit(event: dict) -> None:
        if procs.main and on_event is not None:
            on_event(event)

    # ---- model, task, names, run directory
    task = task or get_task(config.task)
    if not {"train", "validation"} <= set(task.splits):
        raise TrainError(f"task {task.name!r} has no train/validation splits (it is evaluation-only)")
    registry = registry or Registry()
    name, base_name = config.expert_name, loaded.name if loaded is not None else model_key(config.model)
    if (registry.write_root / base_name / name / META_FILE).exists() and not config.overwrite:
        raise TrainError(f"an expert named {name!r} already exists for {base_name}; choose another --name "
                         "or pass --overwrite")
    run_dir = config.run_dir
    checkpoint_path, metrics_path = run_dir / ckpt.CHECKPOINT_FILE, run_dir / ckpt.METRICS_FILE
    if resume and not checkpoint_path.is_file():
        raise TrainError(f"nothing to resume: no checkpoint at {checkpoint_path}")
    if not resume and checkpoint_path.exists():
        raise TrainError(f"{run_dir} already holds a run's checkpoint: pass --resume to continue it, "
                         "or choose another --name / --out")

    if loaded is None:
        emit({"event": "setup", "message": f"loading {config.model}"})
        loaded = load_model(config.model, device=device)

    # ---- SVD store (rank 0 decomposes, the others then read its files)
    emit({"event": "setup", "message": f"SVD store for {' '.join(config.targets)}"})
    if procs.main:
        store = decompose(loaded, config.targets)
    if procs.world_size > 1:
        dist.barrier()
    if not procs.main:
        store = decompose(loaded, config.targets)
    adapter = DenseAdapter(loaded, store)  # dense W' for generation; also holds U, σ, V in memory
    in_memory = InMemoryStore(store, adapter.factors)

    # ---- data
    train_data = task.load("train", config.data_dir)
    train_examples = select_train_examples(task, train_data.examples, config, loaded.tokenizer)
    val_examples = task.load("validation", config.data_dir).examples[: config.val_limit]
    if not train_examples or not val_examples:
        raise TrainError(f"task {task.name!r} has no usable train or validation examples")
    if config.batch_size < procs.world_size:
        raise TrainError(f"batch_size {config.batch_size} is smaller than the {procs.world_size} processes")
    max_new_tokens = config.max_new_tokens or task.max_new_tokens
    val_prompts = [prompt_text(loaded.tokenizer, task, ex, config.max_prompt_tokens) for ex in val_examples]
    val_generation = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=config.generation_batch_size,
                                      stop=tuple(task.stop))
    objectives = {
        "rl": make_rl_objective(adapter, task, config, max_new_tokens, procs),
        "sft": make_sft_objective(loaded, task, config.max_prompt_tokens, max_new_tokens),
    }

    # ---- p, optimiser, schedule: fresh, or everything restored from the checkpoint
    # Sorted names: a fresh store lists modules in model order, a reopened one (JSON, sorted keys) in
    # name order; p's noise draws and the flat all-reduce buffer must not depend on which one we got.
    generator = torch.Generator().manual_seed(config.seed)
    p = {
        module: (config.init_mean + config.init_std * torch.randn(store.ranks[module], generator=generator))
        .to(device)
        .requires_grad_()
        for module in sorted(store.ranks)
    }
    if config.init_expert and not resume:  # (a resumed run restores p from its checkpoint)
        start = registry.load(config.init_expert, loaded.name)
        start.validate_for(store.ranks, loaded.name, loaded.fingerprint)
        with torch.no_grad():
            for module, value in p_of(start, config.max_multiplier).items():
                p[module].copy_(value)
    params = list(p.values())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
    if resume:
        state = ckpt.restore(ckpt.load_checkpoint(checkpoint_path, config), p=p, optimizer=optimizer,
                             scheduler=scheduler)
    else:
        torch.manual_seed(config.seed)
        state = ckpt.RunState()
    elapsed_before = state.elapsed_s
    if procs.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", _json(config.to_dict()))
        ckpt.write_metrics(metrics_path, state.metrics)

    # ---- validation of the base model; the base (a uniform z) is the first "best"
    if state.base_score is None:
        emit({"event": "phase", "iter": 0, "phase": "validating the base model"})
        score = validate(adapter, task, val_examples, val_prompts, None, val_generation) if procs.main else 0.0
        state.base_score = state.best_score = broadcast_float(score, procs)
        uniform = config.max_multiplier * torch.sigmoid(torch.tensor(config.init_mean))
        state.best_z = {module: torch.full((rank,), float(uniform), device=device)
                        for module, rank in store.ranks.items()}
        emit({"event": "validation", "iter": 0, "accuracy": state.base_score, "best": state.best_score})
        if config.init_expert:  # the starting expert is the next candidate for "best"
            emit({"event": "phase", "iter": 0, "phase": f"validating {config.init_expert}"})
            z_start = {k: v.detach().clone() for k, v in z_of(p, config.max_multiplier).items()}
            score = validate(adapter, task, val_examples, val_prompts, z_start, val_generation) if procs.main else 0.0
            state.init_score = broadcast_float(score, procs)
            if state.init_score > state.best_score:
                state.best_score, state.best_z = state.init_score, z_start
            emit({"event": "validation", "iter": 0, "accuracy": state.init_score, "best": state.best_score})
    emit({"event": "start", "iters": config.iters, "start_iter": state.iteration, "train_examples":
          len(train_examples), "val_examples": len(val_examples), "parameters": store.num_parameters,
          "world_size": procs.world_size, "base_accuracy": state.base_score, "init_accuracy": state.init_score})

    for it in range(state.iteration, config.iters):
        started = time.perf_counter()
        objective = config.objective_at(it)
        make_samples, loss_fn = objectives[objective]
        lr = scheduler.get_last_lr()[0]

        # -- this process's share of the global batch (rank::world_size)
        batch = batch_indices(config.seed, it, len(train_examples), config.batch_size)
        local = [train_examples[i] for i in batch[procs.rank :: procs.world_size]]
        emit({"event": "phase", "iter": it + 1, "phase": "rollouts" if objective == "rl" else "samples"})
        with torch.no_grad():
            samples = make_samples(local, z_of(p, config.max_multiplier), it)
        rollout_s = time.perf_counter() - started

        # -- loss through the factorised model, gradients into p; divide by the GLOBAL sample count
        emit({"event": "phase", "iter": it + 1, "phase": "backward"})
        global_count = config.batch_size * config.samples_per_prompt(it)
        loss_sum, kl_sum = 0.0, 0.0
        with factorised(loaded, in_memory) as adapted:
            for start in range(0, len(samples), config.micro_batch_size):
                micro = [s for s in samples[start : start + config.micro_batch_size] if s.completion_ids]
                if not micro:
                    continue
                loss, stats = loss_fn(loaded.model, micro, adapted, z_of(p, config.max_multiplier))
                (loss / global_count).backward()
                loss_sum += float(loss.detach())
                kl_sum += stats.get("kl", 0.0)
        all_reduce_grads(params, procs)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip if config.grad_clip > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        # -- metrics summed over processes
        rewards = [s.reward for s in samples if s.reward is not None]
        totals = all_reduce_(torch.tensor([
            loss_sum, kl_sum, sum(rewards), len(rewards), sum(r > 0 for r in rewards),
            sum(len(s.completion_ids) for s in samples), len(samples),
        ], dtype=torch.float64), procs).tolist()
        line = {"iter": it + 1, "objective": objective, "lr": lr, "loss": totals[0] / global_count,
                "grad_norm": float(grad_norm), "completion/tokens": totals[5] / max(1.0, totals[6]),
                "time/rollout": rollout_s, "time/iter": time.perf_counter() - started}
        if totals[3]:
            line |= {"reward/mean": totals[2] / totals[3], "train/accuracy": totals[4] / totals[3]}
        if config.kl > 0 and objective == "rl":
            line["kl"] = totals[1] / global_count
        state.iteration = it + 1

        # -- validation and early stopping (rank 0 generates; every rank gets the score)
        stop = False
        if (it + 1) % config.eval_every == 0 or it + 1 == config.iters:
            emit({"event": "phase", "iter": it + 1, "phase": "validating"})
            z_now = {k: v.detach().clone() for k, v in z_of(p, config.max_multiplier).items()}
            score = validate(adapter, task, val_examples, val_prompts, z_now, val_generation) if procs.main else 0.0
            score = broadcast_float(score, procs)
            line |= {"val/accuracy": score, "time/val": time.perf_counter() - started - line["time/iter"]}
            if score > state.best_score:  # strictly better: on ties the earlier (closer to base) z stays
                state.best_score, state.best_iteration, state.best_z = score, it + 1, z_now
                state.evals_since_best = 0
            else:
                state.evals_since_best += 1
            stop = 0 < config.patience <= state.evals_since_best
            emit({"event": "validation", "iter": it + 1, "accuracy": score, "best": state.best_score})

        # -- log, checkpoint (before the event, so a run stopped at an event resumes from here)
        state.metrics.append(line)
        state.elapsed_s = elapsed_before + time.perf_counter() - session_start
        if procs.main:
            ckpt.append_metrics(metrics_path, line)
            last = stop or it + 1 == config.iters
            if last or (config.checkpoint_every and (it + 1) % config.checkpoint_every == 0):
                ckpt.save_checkpoint(checkpoint_path, p=p, optimizer=optimizer, scheduler=scheduler, state=state,
                                     config=config)
                emit({"event": "checkpoint", "iter": it + 1, "path": str(checkpoint_path)})
        emit({"event": "iteration", **line})
        if stop:
            emit({"event": "early_stop", "iter": it + 1, "best_iteration": state.best_iteration})
            break

    # ---- the best z becomes an expert, registered, with its learning curve beside it
    final_z = {k: v.detach().cpu().clone() for k, v in z_of(p, config.max_multiplier).items()}
    wall_time = elapsed_before + time.perf_counter() - session_start
    expert = entry_path = curve = None
    if procs.main:
        expert = ExpertVector(
            z={k: v.detach().cpu() for k, v in state.best_z.items()},
            name=name,
            base_model=loaded.name,
            base_fingerprint=loaded.fingerprint,
            targets=list(store.targets),
            domain=task.domain,
            parameterisation={"kind": "sigmoid", "max_multiplier": config.max_multiplier},
            provenance=_provenance(config, task, state, train_data.source, len(train_examples),
                                   len(val_examples), wall_time, procs.world_size),
        )
        entry_path = registry.add(expert, overwrite=config.overwrite).path
        curve = ckpt.plot_learning_curve(state.metrics, entry_path / ckpt.CURVE_FILE,
                                         f"{name}: {task.name} ({config.objective}) on {loaded.name}",
                                         base=state.base_score,
                                         start=None if state.init_score is None else (config.init_expert,
                                                                                      state.init_score))
        emit({"event": "done", "expert": name, "path": str(entry_path), "best_accuracy": state.best_score,
              "best_iteration": state.best_iteration, "base_accuracy": state.base_score})
    if procs.world_size > 1:
        dist.barrier()
        if procs.owns_group:
            dist.destroy_process_group()
    return TrainResult(expert, entry_path, run_dir, state.base_score, state.best_score, state.best_iteration,
                       state.iteration, final_z, curve, wall_time, state.metrics, state.init_score)


def _provenance(config: TrainConfig, task: Task, state: ckpt.RunState, source: str, n_train: int, n_val: int,
                wall_time: float, world_size: int) -> dict:
    times = [m["time/iter"] for m in state.metrics]
    rewards = [m["reward/mean"] for m in state.metrics[-10:] if "reward/mean" in m]
    return {
        "task": task.name,
        "objective": config.objective,
        "hyperparameters": config.to_dict(),
        "metrics": {
            "base_val_accuracy": state.base_score,
            "init_val_accuracy": state.init_score,
            "best_val_accuracy": state.best_score,
            "best_iteration": state.best_iteration,
            "iterations": state.iteration,
            "val_examples": n_val,
            "train_examples": n_train,
            "final_train_reward": sum(rewards) / len(rewards) if rewards else None,
            "seconds_per_iter": sum(times) / len(times) if times else None,
        },
        "data_source": source,
        "world_size": world_size,
        "wall_time_s": round(wall_time, 2),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _json(data: dict) -> str:
    import json

    return json.dumps(data, indent=2, sort_keys=True) + "\n"
