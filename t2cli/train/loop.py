"""The one training loop, for every method (SVF, LoRA) and objective (RL, SFT), read top to bottom:

    set-up (task, names, run directory, model, method, data, optimiser; or all of it from the
    checkpoint) → validate the base model → for each iteration: samples (rollouts with the current
    weights, or reference answers) → loss through the method's loss model, accumulated over
    micro-batches → clip, AdamW, cosine LR → validate / keep the best / checkpoint / log
    → save the best state (a registered expert, or an adapter) with its learning curve.

A method (`method.py`) says what is trained and how its weights reach generation and the loss; an
objective (`objective.py`) makes samples and a loss from them. Under `torchrun` / `accelerate launch`
each process takes every world_size-th prompt of the global batch and the gradients are summed
across processes (`distributed.py`), so one or N processes follow the same trajectory; only rank 0
validates, writes files and reports progress. The library never prints: progress, the budget and
the ETA go to `on_event(dict)`. The run's random stream is its own: torch's RNG is forked for the
run (the caller's state is untouched) and seeded with `--seed`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t2cli.embedded import answer_budget
from t2cli.expert import ExpertVector
from t2cli.files import atomic_write_text
from t2cli.generation import GenerationConfig, generate
from t2cli.models import LoadedModel, load_model, model_key
from t2cli.registry import Registry
from t2cli.tasks import get_task
from t2cli.tasks.base import Task
from t2cli.train import checkpoint as ckpt
from t2cli.train.activations import recomputed_activations
from t2cli.train.config import TrainConfig, TrainError
from t2cli.train.distributed import (
    Processes,
    all_reduce_,
    all_reduce_grads,
    broadcast_float,
    close_processes,
    default_device,
    init_processes,
)
from t2cli.train.method import Method
from t2cli.train.objective import Objective, prompt_text
from t2cli.train.rl import RLObjective
from t2cli.train.schedule import batch_indices, lr_factor, select_train_examples, validates_at
from t2cli.train.sft import SFTObjective

Event = Callable[[dict], None]


@dataclass
class TrainResult:
    method: str  # "svf" | "lora"
    path: Path | None  # the registered expert's directory, or the adapter's (None on ranks other than 0)
    expert: ExpertVector | None  # SVF: the best z as registered (None on other ranks, and for LoRA)
    run_dir: Path
    base_val_accuracy: float
    best_val_accuracy: float
    best_iteration: int
    iterations: int
    final_state: dict[str, torch.Tensor]  # z (SVF) or A and B (LoRA) after the last iteration
    curve_path: Path | None
    wall_time_s: float
    metrics: list[dict] = field(default_factory=list)
    init_val_accuracy: float | None = None  # validation accuracy of --init-expert, when one was given
    trainable_parameters: int = 0

    @property
    def final_z(self) -> dict[str, torch.Tensor]:
        return self.final_state

    @property
    def expert_path(self) -> Path | None:
        return self.path if self.method == "svf" else None

    @property
    def adapter_path(self) -> Path | None:
        return self.path if self.method == "lora" else None


def train(
    config: TrainConfig,
    *,
    loaded: LoadedModel | None = None,
    task: Task | None = None,
    registry: Registry | None = None,
    resume: bool = False,
    on_event: Event | None = None,
) -> TrainResult:
    """Train as `config` says; `loaded` / `task` override config.model / config.task."""
    session_start = time.perf_counter()
    device = loaded.device if loaded is not None else default_device(config.device)
    procs = init_processes(device)

    def emit(event: dict) -> None:
        if procs.main and on_event is not None:
            on_event(event)

    # ---- set-up: everything that can be refused is refused before the model is loaded
    task = task or get_task(config.task)
    if not {"train", "validation"} <= set(task.splits):
        raise TrainError(f"task {task.name!r} has no train/validation splits (it is evaluation-only)")
    registry = registry or Registry()
    base_name = loaded.name if loaded is not None else model_key(config.model)
    method_class = _method_class(config.method)
    method_class.check(config, base_name, registry)
    run_dir = config.run_dir
    checkpoint_path, metrics_path = run_dir / ckpt.CHECKPOINT_FILE, run_dir / ckpt.METRICS_FILE
    if procs.main and run_dir.is_dir():
        ckpt.remove_stale_temporaries(run_dir)  # left by a run killed while writing
    if resume and not checkpoint_path.is_file():
        raise TrainError(
            f"nothing to resume: no checkpoint at {checkpoint_path} (the run stopped before its first "
            "checkpoint); start it again without --resume"
        )
    if not resume and checkpoint_path.exists():
        raise TrainError(
            f"{run_dir} already holds a run's checkpoint: pass --resume to continue it, "
            "or choose another --name / --out"
        )
    val_examples = task.load("validation", config.data_dir).examples[: config.val_limit]
    max_new_tokens = config.max_new_tokens or answer_budget(config.model, task)
    emit(budget(config, len(val_examples), max_new_tokens))

    if loaded is None:
        emit({"event": "setup", "message": f"loading {config.model}"})
        loaded = load_model(config.model, dtype=config.dtype, device=device)

    # ---- the memory plan of this run, from the loaded shapes (the CLI shows it before any work)
    emit({"event": "plan", "plan": _memory_plan(config, loaded, max_new_tokens)})

    # ---- data
    train_data = task.load("train", config.data_dir)
    train_examples = select_train_examples(task, train_data.examples, config, loaded.tokenizer)
    if not train_examples or not val_examples:
        raise TrainError(f"task {task.name!r} has no usable train or validation examples")
    if config.batch_size < procs.world_size:
        raise TrainError(f"batch_size {config.batch_size} is smaller than the {procs.world_size} processes")
    val_prompts = [prompt_text(loaded.tokenizer, task, ex, config.max_prompt_tokens) for ex in val_examples]
    val_generation = GenerationConfig(
        max_new_tokens=max_new_tokens, batch_size=config.generation_batch_size, stop=tuple(task.stop)
    )
    objectives: dict[str, Objective] = {
        "rl": RLObjective(
            loaded,
            task,
            rollouts_per_prompt=config.rollouts_per_prompt,
            temperature=config.temperature,
            kl=config.kl,
            seed=config.seed,
            rank=procs.rank,
            max_prompt_tokens=config.max_prompt_tokens,
            max_new_tokens=max_new_tokens,
            generation_batch_size=config.generation_batch_size,
        ),
        "sft": SFTObjective(loaded, task, config.max_prompt_tokens, max_new_tokens),
    }

    def validate(base: bool = False) -> float:
        """Greedy accuracy on the validation examples (rank 0 generates; every rank gets the score)."""
        score = 0.0
        if procs.main:
            with method.generation_weights(base=base):
                completions = generate(loaded, val_prompts, val_generation)
            correct = task.check_many([c.text for c in completions], val_examples)
            score = sum(correct) / len(correct)
        return broadcast_float(score, procs)

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # LoRA's initial A and its dropout (SVF draws nothing from it)
        # ---- the method, optimiser, schedule: fresh, or everything restored from the checkpoint
        emit({"event": "setup", "message": f"{config.method} on {' '.join(config.targets)}"})
        method = _make_method(config, loaded, procs, registry, task, start_from=None if resume else config.init_expert)
        try:
            params = list(method.parameters.values())
            optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
            training = ckpt.Optimisation(method.parameters, optimizer, scheduler)
            state = ckpt.restore(ckpt.load_checkpoint(checkpoint_path, config), training) if resume else ckpt.RunState()
            elapsed_before, last_checkpoint = state.elapsed_s, time.perf_counter()

            def save_checkpoint(iteration: int) -> None:
                nonlocal last_checkpoint
                state.elapsed_s = elapsed_before + time.perf_counter() - session_start
                ckpt.save_checkpoint(checkpoint_path, training, state, config)
                last_checkpoint = time.perf_counter()
                emit({"event": "checkpoint", "iter": iteration, "path": str(checkpoint_path)})

            if procs.main:
                run_dir.mkdir(parents=True, exist_ok=True)
                size = {"trainable_parameters": method.num_parameters}
                atomic_write_text(run_dir / ckpt.CONFIG_FILE, _json(config.to_dict() | size))
                ckpt.write_metrics(metrics_path, state.metrics)

            # ---- validate the base model: the first "best" (then --init-expert, when given)
            val_times: list[float] = []
            if state.base_score is None:
                emit({"event": "phase", "iter": 0, "phase": "validating the base model"})
                started = time.perf_counter()
                state.base_score = state.best_score = validate(base=True)
                val_times.append(time.perf_counter() - started)
                state.best_state = method.base_state()
                emit({"event": "validation", "iter": 0, "accuracy": state.base_score, "best": state.best_score})
                if config.init_expert:  # the starting expert is the next candidate for "best"
                    emit({"event": "phase", "iter": 0, "phase": f"validating {config.init_expert}"})
                    state.init_score = validate()
                    if state.init_score > state.best_score:
                        state.best_score, state.best_state = state.init_score, method.snapshot()
                    emit({"event": "validation", "iter": 0, "accuracy": state.init_score, "best": state.best_score})
                if procs.main:  # early: an interrupted first iteration resumes without validating again
                    save_checkpoint(0)
            emit(
                {
                    "event": "start",
                    "iters": config.iters,
                    "start_iter": state.iteration,
                    "train_examples": len(train_examples),
                    "val_examples": len(val_examples),
                    "parameters": method.num_parameters,
                    "world_size": procs.world_size,
                    "base_accuracy": state.base_score,
                    "init_accuracy": state.init_score,
                }
            )

            iter_times: list[float] = []
            for it in range(state.iteration, config.iters):
                started = time.perf_counter()
                objective = objectives[config.objective_at(it)]
                lr = scheduler.get_last_lr()[0]

                # -- samples for this process's share of the global batch (rank::world_size)
                batch = batch_indices(config.seed, it, len(train_examples), config.batch_size)
                local = [train_examples[i] for i in batch[procs.rank :: procs.world_size]]
                emit({"event": "phase", "iter": it + 1, "phase": "rollouts" if objective.name == "rl" else "samples"})
                with torch.no_grad():
                    samples = objective.samples(local, it, method)
                rollout_s = time.perf_counter() - started

                # -- loss, accumulated over micro-batches; divided by the GLOBAL sample count
                emit({"event": "phase", "iter": it + 1, "phase": "backward"})
                global_count = config.batch_size * objective.samples_per_example()
                loss_sum, kl_sum = 0.0, 0.0
                with recomputed_activations(loaded.model, config.grad_checkpointing), method.loss_model() as forward:
                    for start in range(0, len(samples), config.micro_batch_size):
                        micro = [s for s in samples[start : start + config.micro_batch_size] if s.completion_ids]
                        if not micro:
                            continue
                        loss, stats = objective.loss(forward, micro)
                        (loss / global_count).backward()
                        loss_sum += float(loss.detach())
                        kl_sum += stats.get("kl", 0.0)

                # -- step
                all_reduce_grads(params, procs)
                grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()

                # -- metrics, summed over processes
                rewards = [s.reward for s in samples if s.reward is not None]
                totals = all_reduce_(
                    torch.tensor(
                        [
                            loss_sum,
                            kl_sum,
                            sum(rewards),
                            len(rewards),
                            sum(r > 0 for r in rewards),
                            sum(len(s.completion_ids) for s in samples),
                            len(samples),
                        ],
                        dtype=torch.float64,
                    ),
                    procs,
                ).tolist()
                line = {
                    "iter": it + 1,
                    "objective": objective.name,
                    "lr": lr,
                    "loss": totals[0] / global_count,
                    "grad_norm": float(grad_norm),
                    "completion/tokens": totals[5] / max(1.0, totals[6]),
                    "time/rollout": rollout_s,
                    "time/iter": time.perf_counter() - started,
                }
                if totals[3]:
                    line |= {"reward/mean": totals[2] / totals[3], "train/accuracy": totals[4] / totals[3]}
                if config.kl > 0 and objective.name == "rl":
                    line["kl"] = totals[1] / global_count
                state.iteration = it + 1
                iter_times.append(line["time/iter"])

                # -- validate, keep the best (strictly better: on ties the earlier, closer to base, stays)
                stop = False
                if validates_at(config, it + 1):
                    emit({"event": "phase", "iter": it + 1, "phase": "validating"})
                    snapshot = method.snapshot()
                    score = validate()
                    line |= {"val/accuracy": score, "time/val": time.perf_counter() - started - line["time/iter"]}
                    val_times.append(line["time/val"])
                    if score > state.best_score:
                        state.best_score, state.best_iteration, state.best_state = score, it + 1, snapshot
                        state.evals_since_best = 0
                    else:
                        state.evals_since_best += 1
                    stop = 0 < config.patience <= state.evals_since_best
                    emit({"event": "validation", "iter": it + 1, "accuracy": score, "best": state.best_score})

                # -- log, checkpoint (before the event, so a run stopped at an event resumes from here)
                state.metrics.append(line)
                if procs.main:
                    ckpt.append_metrics(metrics_path, line)
                    due = config.checkpoint_every and (it + 1) % config.checkpoint_every == 0
                    since = time.perf_counter() - last_checkpoint
                    late = config.checkpoint_minutes and since >= 60 * config.checkpoint_minutes
                    if stop or it + 1 == config.iters or due or late:
                        save_checkpoint(it + 1)
                emit({"event": "iteration", **line})
                emit(eta(config, it + 1, iter_times, val_times))
                if stop:
                    emit({"event": "early_stop", "iter": it + 1, "best_iteration": state.best_iteration})
                    break

            # ---- the best state is saved (expert or adapter), with its learning curve beside it
            final_state = {k: v.cpu() for k, v in method.snapshot().items()}
            wall_time = elapsed_before + time.perf_counter() - session_start
            path = curve = None
            if procs.main:
                path = method.save(
                    state.best_state,
                    provenance(
                        config,
                        task,
                        state,
                        train_data.source,
                        len(train_examples),
                        len(val_examples),
                        wall_time,
                        procs.world_size,
                    ),
                )
                curve = ckpt.plot_learning_curve(
                    state.metrics,
                    path / ckpt.CURVE_FILE,
                    f"{config.expert_name}: {task.name} ({config.objective}) on {loaded.name}",
                    base=state.base_score,
                    start=None if state.init_score is None else (config.init_expert, state.init_score),
                )
                emit(
                    {
                        "event": "done",
                        "expert": config.expert_name,
                        "path": str(path),
                        "best_accuracy": state.best_score,
                        "best_iteration": state.best_iteration,
                        "base_accuracy": state.base_score,
                    }
                )
        finally:
            method.close()
    close_processes(procs)
    return TrainResult(
        config.method,
        path,
        method.expert,
        run_dir,
        state.base_score,
        state.best_score,
        state.best_iteration,
        state.iteration,
        final_state,
        curve,
        wall_time,
        state.metrics,
        state.init_score,
        method.num_parameters,
    )


# --------------------------------------------------------------------------- set-up helpers


def _method_class(name: str):
    if name == "lora":
        from t2cli.train.lora import LoraMethod  # (imports peft)

        return LoraMethod
    from t2cli.train.svf import SVFMethod

    return SVFMethod


def _make_method(
    config: TrainConfig, loaded: LoadedModel, procs: Processes, registry: Registry, task: Task, start_from: str | None
) -> Method:
    if config.method == "lora":
        from t2cli.train.lora import LoraMethod

        return LoraMethod(loaded, config, domain=task.domain)
    from t2cli.train.svf import SVFMethod

    return SVFMethod(loaded, config, procs, registry, domain=task.domain, start_from=start_from)


# --------------------------------------------------------------------------- what the run costs


def budget(config: TrainConfig, val_examples: int, max_new_tokens: int) -> dict:
    """The run's work before it starts: generated sequences and tokens (upper bounds: answers stop early)."""
    rl_iters = sum(config.objective_at(it) == "rl" for it in range(config.iters))
    rollouts = rl_iters * config.batch_size * config.rollouts_per_prompt
    validations = 1 + sum(validates_at(config, it) for it in range(1, config.iters + 1))
    return {
        "event": "budget",
        "method": config.method,
        "objective": config.objective,
        "iters": config.iters,
        "rl_iters": rl_iters,
        "batch_size": config.batch_size,
        "rollouts_per_prompt": config.rollouts_per_prompt,
        "max_new_tokens": max_new_tokens,
        "rollouts": rollouts,
        "rollout_tokens": rollouts * max_new_tokens,
        "sft_samples": (config.iters - rl_iters) * config.batch_size,
        "validations": validations,
        "val_examples": val_examples,
        "validation_tokens": validations * val_examples * max_new_tokens,
    }


def eta(config: TrainConfig, done: int, iter_times: list[float], val_times: list[float]) -> dict:
    """Time left, from this session's mean iteration and validation times."""
    remaining = config.iters - done
    validations_left = sum(validates_at(config, it) for it in range(done + 1, config.iters + 1))
    per_iter = sum(iter_times) / len(iter_times)
    per_val = sum(val_times) / len(val_times) if val_times else 0.0
    return {
        "event": "eta",
        "iter": done,
        "seconds_per_iter": per_iter,
        "seconds_per_validation": per_val,
        "remaining_s": remaining * per_iter + validations_left * per_val,
    }


# --------------------------------------------------------------------------- provenance


def provenance(
    config: TrainConfig,
    task: Task,
    state: ckpt.RunState,
    source: str,
    n_train: int,
    n_val: int,
    wall_time: float,
    world_size: int,
) -> dict:
    """How the saved state was made: the recipe, the outcome, the data, the command."""
    times = [m["time/iter"] for m in state.metrics]
    rewards = [m["reward/mean"] for m in state.metrics[-10:] if "reward/mean" in m]
    return {
        "task": task.name,
        "method": config.method,
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
            "final_train_loss": state.metrics[-1]["loss"] if state.metrics else None,
            "seconds_per_iter": sum(times) / len(times) if times else None,
        },
        "data_source": source,
        **({"task_spec": dict(task.spec)} if task.spec else {}),  # a task from a data file: how to rebuild it
        "world_size": world_size,
        "wall_time_s": round(wall_time, 2),
        "command": config.command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _memory_plan(config: TrainConfig, loaded: LoadedModel, max_new_tokens: int):
    """The bytes the run needs on its device (`t2cli.memory`), or None when the targets cannot be
    resolved here (the method then raises its own clear error)."""
    from t2cli.memory import PlanError, training_plan

    try:
        return training_plan(
            loaded,
            config.targets,
            batch_size=config.batch_size * config.rollouts_per_prompt,
            max_new_tokens=max_new_tokens,
            micro_batch=config.micro_batch_size,
            checkpointing=config.grad_checkpointing,
            objective="sft" if config.objective == "sft" else "rl",
        )
    except (PlanError, ValueError):
        return None
