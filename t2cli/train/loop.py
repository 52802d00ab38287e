"""The one training loop, for every method (SVF, LoRA) and objective (RL, SFT), read top to bottom:

    check     refuse what cannot run before anything is loaded (`check_run`)
    set-up    task data, model, objectives, method, optimiser and schedule: fresh, or all of it
              from the checkpoint (`open_run`, which yields a `Run`)
    start     validate the base model (and --init-expert): the first "best" (`validate_start`)
    step      samples (rollouts with the current weights, or reference answers) → loss through the
              method's loss model, accumulated over micro-batches → clip, AdamW, cosine LR (`train_step`)
    keep      validate when due, keep the best state, stop on patience (`validate_and_keep`), then
              log and checkpoint (`log_and_checkpoint`)
    save      the best state (a registered expert, or an adapter) with its learning curve (`save_best`)

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t2cli.embedded import answer_budget
from t2cli.expert import ExpertVector
from t2cli.files import atomic_write_text
from t2cli.generation import GenerationConfig, generate
from t2cli.models import LoadedModel, load_model, model_key
from t2cli.placement import resolve_device
from t2cli.provenance import training_recipe
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
    init_processes,
)
from t2cli.train.method import Method
from t2cli.train.objective import Objective, Sample, prompt_text
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


@dataclass
class RunData:
    """The examples a run trains and validates on, and how it generates validation answers."""

    train: list[dict]
    validation: list[dict]
    source: str  # where the training examples came from (recorded in the provenance)
    max_new_tokens: int
    val_prompts: list[str]
    val_generation: GenerationConfig


@dataclass
class Clock:
    """The run's wall time over all its sessions, and this session's step and validation times (the ETA)."""

    session_start: float
    elapsed_before: float = 0.0  # earlier sessions' time, from the checkpoint
    last_checkpoint: float = 0.0
    iter_times: list[float] = field(default_factory=list)
    val_times: list[float] = field(default_factory=list)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.session_start


@dataclass
class Run:
    """One training run as its phases see it: made by `open_run`, stepped by `train_step`."""

    config: TrainConfig
    task: Task
    loaded: LoadedModel
    procs: Processes
    emit: Event  # progress events (rank 0 only)
    data: RunData
    objectives: dict[str, Objective]  # "rl" and "sft"; config.objective_at(iteration) picks one
    method: Method
    training: ckpt.Optimisation  # the trained parameters, the optimiser and its LR schedule
    state: ckpt.RunState
    clock: Clock

    @property
    def checkpoint_path(self) -> Path:
        return self.config.run_dir / ckpt.CHECKPOINT_FILE

    @property
    def metrics_path(self) -> Path:
        return self.config.run_dir / ckpt.METRICS_FILE


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
    task = task or get_task(config.task)
    registry = registry or Registry()
    check_run(config, task, registry, loaded.name if loaded is not None else model_key(config.model), resume)
    with open_run(config, task, registry, loaded=loaded, resume=resume, on_event=on_event) as run:
        validate_start(run)
        run.emit(start_event(run))
        if patience_spent(config, run.state):  # resumed with a --patience its validations already spent
            run.emit({"event": "early_stop", "iter": run.state.iteration, "best_iteration": run.state.best_iteration})
            return save_best(run)
        for iteration in range(run.state.iteration, config.iters):
            line = train_step(run, iteration)
            stop = validate_and_keep(run, line)
            log_and_checkpoint(run, line, stop)
            if stop:
                break
        return save_best(run)


def save_best_so_far(
    config: TrainConfig,
    *,
    loaded: LoadedModel | None = None,
    task: Task | None = None,
    registry: Registry | None = None,
    on_event: Event | None = None,
) -> TrainResult:
    """Save the best state a run has reached (its checkpoint's) without training: an interim expert
    (or adapter) of a long run, whose recipe records the iterations done. The run's checkpoint,
    config and metrics are only read, so this is safe while the run goes on in another process. SVF
    registers the expert under `config`'s name (give another name to keep it apart from the expert
    the run registers when it ends); LoRA writes the run directory's adapter, as the run's end does."""
    task = task or get_task(config.task)
    registry = registry or Registry()
    check_run(config, task, registry, loaded.name if loaded is not None else model_key(config.model), resume=True)
    with open_run(config, task, registry, loaded=loaded, resume=True, on_event=on_event, read_only=True) as run:
        return save_best(run)


# --------------------------------------------------------------------------- set-up


def check_run(config: TrainConfig, task: Task, registry: Registry, base_name: str, resume: bool) -> None:
    """Refuse, before anything is loaded, a run that cannot start or continue."""
    if not {"train", "validation"} <= set(task.splits):
        raise TrainError(f"task {task.name!r} has no train/validation splits (it is evaluation-only)")
    _method_class(config.method).check(config, base_name, registry)
    checkpoint_path = config.run_dir / ckpt.CHECKPOINT_FILE
    if resume and not checkpoint_path.is_file():
        raise TrainError(
            f"nothing to resume: no checkpoint at {checkpoint_path} (the run stopped before its first "
            "checkpoint); start it again without --resume"
        )
    if not resume and checkpoint_path.exists():
        raise TrainError(
            f"{config.run_dir} already holds a run's checkpoint: pass --resume to continue it, "
            "or choose another --name / --out"
        )


@contextmanager
def open_run(
    config: TrainConfig,
    task: Task,
    registry: Registry,
    *,
    loaded: LoadedModel | None = None,
    resume: bool = False,
    on_event: Event | None = None,
    read_only: bool = False,
) -> Iterator[Run]:
    """Set a run up (data, model, objectives, method, optimiser; restored from the checkpoint with
    `resume`) and write its run directory — or, `read_only`, only read its checkpoint, with no
    budget or memory plan stated (nothing will be trained); the block runs on torch's RNG
    forked and seeded for the run, and at its end the model is given back as it was loaded."""
    clock = Clock(time.perf_counter())
    device = loaded.device if loaded is not None else resolve_device(config.device)
    procs = init_processes(device)
    emit = _emitter(procs, on_event)
    if not read_only and procs.main and config.run_dir.is_dir():
        ckpt.remove_stale_temporaries(config.run_dir)  # left by a run killed while writing
    validation = task.load("validation", config.data_dir).examples[: config.val_limit]
    max_new_tokens = config.max_new_tokens or answer_budget(config.model, task)
    if not read_only:
        emit(budget(config, len(validation), max_new_tokens))
    if loaded is None:
        emit({"event": "setup", "message": f"loading {config.model}"})
        loaded = load_model(config.model, dtype=config.dtype, device=device)
    if not read_only:
        emit({"event": "plan", "plan": _memory_plan(config, loaded, max_new_tokens)})  # shown before any work
    data = _load_data(config, task, loaded, validation, max_new_tokens, procs)
    objectives = _make_objectives(config, task, loaded, procs, max_new_tokens)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)  # LoRA's initial A and its dropout (SVF draws nothing from it)
        emit({"event": "setup", "message": f"{config.method} on {' '.join(config.targets)}"})
        start_from = None if resume else config.init_expert
        method = _make_method(config, loaded, procs, registry, task, start_from=start_from, emit=emit)
        try:
            parameters = list(method.parameters.values())
            optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config))
            training = ckpt.Optimisation(method.parameters, optimizer, scheduler)
            state = ckpt.RunState()
            if resume:
                state = ckpt.restore(ckpt.load_checkpoint(config.run_dir / ckpt.CHECKPOINT_FILE, config), training)
            clock.elapsed_before, clock.last_checkpoint = state.elapsed_s, time.perf_counter()
            run = Run(config, task, loaded, procs, emit, data, objectives, method, training, state, clock)
            if not read_only and procs.main:
                config.run_dir.mkdir(parents=True, exist_ok=True)
                size = {"trainable_parameters": method.num_parameters}
                atomic_write_text(config.run_dir / ckpt.CONFIG_FILE, _json(config.to_dict() | size))
                ckpt.write_metrics(run.metrics_path, state.metrics)
            yield run
        finally:
            method.close()
    close_processes(procs)


def _emitter(procs: Processes, on_event: Event | None) -> Event:
    def emit(event: dict) -> None:
        if procs.main and on_event is not None:
            on_event(event)

    return emit


def _load_data(
    config: TrainConfig,
    task: Task,
    loaded: LoadedModel,
    validation: list[dict],
    max_new_tokens: int,
    procs: Processes,
) -> RunData:
    train_data = task.load("train", config.data_dir)
    train_examples = select_train_examples(task, train_data.examples, config, loaded.tokenizer)
    if not train_examples or not validation:
        raise TrainError(f"task {task.name!r} has no usable train or validation examples")
    if config.batch_size < procs.world_size:
        raise TrainError(f"batch_size {config.batch_size} is smaller than the {procs.world_size} processes")
    return RunData(
        train_examples,
        validation,
        train_data.source,
        max_new_tokens,
        val_prompts=[prompt_text(loaded.tokenizer, task, ex, config.max_prompt_tokens) for ex in validation],
        val_generation=GenerationConfig(
            max_new_tokens=max_new_tokens, batch_size=config.generation_batch_size, stop=tuple(task.stop)
        ),
    )


def _make_objectives(
    config: TrainConfig, task: Task, loaded: LoadedModel, procs: Processes, max_new_tokens: int
) -> dict[str, Objective]:
    return {
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


def _method_class(name: str):
    if name == "lora":
        from t2cli.train.lora import LoraMethod  # (imports peft)

        return LoraMethod
    from t2cli.train.svf import SVFMethod

    return SVFMethod


def _make_method(
    config: TrainConfig,
    loaded: LoadedModel,
    procs: Processes,
    registry: Registry,
    task: Task,
    start_from: str | None,
    emit: Event,
) -> Method:
    if config.method == "lora":
        from t2cli.train.lora import LoraMethod

        return LoraMethod(loaded, config, domain=task.domain)
    from t2cli.train.svf import SVFMethod

    def on_decompose(done: int, total: int, matrix: str) -> None:  # the store is built on first use
        emit({"event": "setup", "message": f"SVD of the {' '.join(config.targets)} matrices {done}/{total}"})

    return SVFMethod(
        loaded, config, procs, registry, domain=task.domain, start_from=start_from, on_decompose=on_decompose
    )


# --------------------------------------------------------------------------- validation


def validate(run: Run, base: bool = False) -> float:
    """Greedy accuracy on the validation examples (rank 0 generates; every rank gets the score)."""
    score = 0.0
    if run.procs.main:
        with run.method.generation_weights(base=base):
            completions = generate(run.loaded, run.data.val_prompts, run.data.val_generation)
        correct = run.task.check_many([c.text for c in completions], run.data.validation)
        score = sum(correct) / len(correct)
    return broadcast_float(score, run.procs)


def validate_start(run: Run) -> None:
    """The base model's accuracy is the first "best" (then --init-expert's, when given); measured once
    per run, and checkpointed at once, so an interrupted first iteration resumes without it."""
    config, state, method, emit = run.config, run.state, run.method, run.emit
    if state.base_score is not None:  # resumed: measured by an earlier session
        return
    emit({"event": "phase", "iter": 0, "phase": "validating the base model"})
    started = time.perf_counter()
    state.base_score = state.best_score = validate(run, base=True)
    run.clock.val_times.append(time.perf_counter() - started)
    state.best_state = method.base_state()
    emit({"event": "validation", "iter": 0, "accuracy": state.base_score, "best": state.best_score})
    if config.init_expert:  # the starting expert is the next candidate for "best"
        emit({"event": "phase", "iter": 0, "phase": f"validating {config.init_expert}"})
        state.init_score = validate(run)
        if state.init_score > state.best_score:
            state.best_score, state.best_state = state.init_score, method.snapshot()
        emit({"event": "validation", "iter": 0, "accuracy": state.init_score, "best": state.best_score})
    if run.procs.main:
        save_checkpoint(run, 0)


def start_event(run: Run) -> dict:
    return {
        "event": "start",
        "iters": run.config.iters,
        "start_iter": run.state.iteration,
        "train_examples": len(run.data.train),
        "val_examples": len(run.data.validation),
        "parameters": run.method.num_parameters,
        "world_size": run.procs.world_size,
        "base_accuracy": run.state.base_score,
        "init_accuracy": run.state.init_score,
        "best_accuracy": run.state.best_score,  # a resumed run's best so far (None before any validation)
        "best_iteration": run.state.best_iteration,
    }


# --------------------------------------------------------------------------- one iteration


def train_step(run: Run, iteration: int) -> dict:
    """Iteration `iteration` (0-based): this process's samples of the global batch → the loss over
    micro-batches → one optimiser step. Returns the iteration's metrics line (summed over processes)."""
    started = time.perf_counter()
    objective = run.objectives[run.config.objective_at(iteration)]
    lr = run.training.scheduler.get_last_lr()[0]
    phase = "rollouts" if objective.name == "rl" else "samples"
    run.emit({"event": "phase", "iter": iteration + 1, "phase": phase})
    samples = draw_samples(run, objective, iteration)
    rollout_s = time.perf_counter() - started
    run.emit({"event": "phase", "iter": iteration + 1, "phase": "backward"})
    loss_sum, kl_sum, grad_norm = update(run, objective, samples)
    line = {"iter": iteration + 1, "objective": objective.name, "lr": lr, "grad_norm": grad_norm}
    line |= step_metrics(run, objective, samples, loss_sum, kl_sum)
    line |= {"time/rollout": rollout_s, "time/iter": time.perf_counter() - started}
    run.state.iteration = iteration + 1
    run.clock.iter_times.append(line["time/iter"])
    return line


def draw_samples(run: Run, objective: Objective, iteration: int) -> list[Sample]:
    """The samples of this process's share (every world_size-th prompt) of the iteration's batch."""
    batch = batch_indices(run.config.seed, iteration, len(run.data.train), run.config.batch_size)
    local = [run.data.train[i] for i in batch[run.procs.rank :: run.procs.world_size]]
    with torch.no_grad():
        return objective.samples(local, iteration, run.method)


def update(run: Run, objective: Objective, samples: Sequence[Sample]) -> tuple[float, float, float]:
    """The loss of `samples`, accumulated over micro-batches and divided by the GLOBAL sample count;
    gradients summed over processes, clipped; one AdamW and LR-schedule step. Returns this process's
    summed loss and KL and the gradient norm."""
    config, training = run.config, run.training
    global_count = config.batch_size * objective.samples_per_example()
    loss_sum, kl_sum = 0.0, 0.0
    with recomputed_activations(run.loaded.model, config.grad_checkpointing), run.method.loss_model() as forward:
        for start in range(0, len(samples), config.micro_batch_size):
            micro = [s for s in samples[start : start + config.micro_batch_size] if s.completion_ids]
            if not micro:
                continue
            loss, stats = objective.loss(forward, micro)
            (loss / global_count).backward()
            loss_sum += float(loss.detach())
            kl_sum += stats.get("kl", 0.0)
    parameters = list(training.parameters.values())
    all_reduce_grads(parameters, run.procs)
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip or math.inf)
    training.optimizer.step()
    training.optimizer.zero_grad(set_to_none=True)
    training.scheduler.step()
    return loss_sum, kl_sum, float(grad_norm)


def step_metrics(run: Run, objective: Objective, samples: Sequence[Sample], loss_sum: float, kl_sum: float) -> dict:
    """Loss, completion length, reward and KL of a step, summed over processes. For RL,
    `train/zero_advantage` is the share of rollouts whose advantage is 0 — with a group baseline,
    those whose whole group earned the same reward — which add nothing but the KL term to the update."""
    global_count = run.config.batch_size * objective.samples_per_example()
    rewarded_samples = [s for s in samples if s.reward is not None]
    local = [
        loss_sum,
        kl_sum,
        sum(s.reward for s in rewarded_samples),
        len(rewarded_samples),
        sum(s.reward > 0 for s in rewarded_samples),
        sum(s.advantage == 0 for s in rewarded_samples),
        sum(len(s.completion_ids) for s in samples),
        len(samples),
    ]
    loss, kl, reward, rewarded, positive, zero_advantage, tokens, count = all_reduce_(
        torch.tensor(local, dtype=torch.float64), run.procs
    ).tolist()
    metrics = {"loss": loss / global_count, "completion/tokens": tokens / max(1.0, count)}
    if rewarded:
        metrics |= {
            "reward/mean": reward / rewarded,
            "train/accuracy": positive / rewarded,
            "train/zero_advantage": zero_advantage / rewarded,
        }
    if run.config.kl > 0 and objective.name == "rl":
        metrics["kl"] = kl / global_count
    return metrics


# --------------------------------------------------------------------------- keep the best, log, checkpoint


def validate_and_keep(run: Run, line: dict) -> bool:
    """After the iteration of `line`: validate when due and keep a strictly better state (on ties the
    earlier one, closer to the base model, stays); adds the accuracy to `line`. True when --patience
    validations in a row found nothing better."""
    config, state, done = run.config, run.state, line["iter"]
    if not validates_at(config, done):
        return False
    started = time.perf_counter()
    run.emit({"event": "phase", "iter": done, "phase": "validating"})
    snapshot = run.method.snapshot()
    score = validate(run)
    line |= {"val/accuracy": score, "time/val": time.perf_counter() - started}
    run.clock.val_times.append(line["time/val"])
    if score > state.best_score:
        state.best_score, state.best_iteration, state.best_state = score, done, snapshot
        state.evals_since_best = 0
    else:
        state.evals_since_best += 1
    run.emit({"event": "validation", "iter": done, "accuracy": score, "best": state.best_score})
    return patience_spent(config, state)


def patience_spent(config: TrainConfig, state: ckpt.RunState) -> bool:
    """--patience validations in a row found nothing better, counted over the whole run (a session
    that resumes it with a patience its earlier validations already spent has nothing to do)."""
    return 0 < config.patience <= state.evals_since_best


def log_and_checkpoint(run: Run, line: dict, stop: bool) -> None:
    """Append the iteration's metrics; checkpoint when due (every --checkpoint-every iterations, after
    --checkpoint-minutes, at the last iteration or an early stop), before the iteration's event, so a
    run stopped at an event resumes from here; then report the iteration and the ETA."""
    config, done = run.config, line["iter"]
    run.state.metrics.append(line)
    if run.procs.main:
        ckpt.append_metrics(run.metrics_path, line)
        due = config.checkpoint_every and done % config.checkpoint_every == 0
        since = time.perf_counter() - run.clock.last_checkpoint
        late = config.checkpoint_minutes and since >= 60 * config.checkpoint_minutes
        if stop or done == config.iters or due or late:
            save_checkpoint(run, done)
    run.emit({"event": "iteration", **line})
    run.emit(eta(config, done, run.clock.iter_times, run.clock.val_times or earlier_val_times(run.state.metrics)))
    if stop:
        run.emit({"event": "early_stop", "iter": done, "best_iteration": run.state.best_iteration})


def save_checkpoint(run: Run, iteration: int) -> None:
    run.state.elapsed_s = run.clock.elapsed()
    ckpt.save_checkpoint(run.checkpoint_path, run.training, run.state, run.config)
    run.clock.last_checkpoint = time.perf_counter()
    run.emit({"event": "checkpoint", "iter": iteration, "path": str(run.checkpoint_path)})


def save_best(run: Run) -> TrainResult:
    """Save the best state (expert or adapter) with its learning curve beside it (rank 0)."""
    config, state, method = run.config, run.state, run.method
    final_state = {k: v.cpu() for k, v in method.snapshot().items()}
    wall_time = run.clock.elapsed()
    path = curve = None
    if run.procs.main:
        recipe = training_recipe(
            config.to_dict(),
            run.task.name,
            run_metrics(state, len(run.data.train), len(run.data.validation)),
            data_source=run.data.source,
            task_spec=run.task.spec,  # a task from a data file: how to rebuild it
            world_size=run.procs.world_size,
            wall_time=wall_time,
        )
        path = method.save(state.best_state, recipe)
        curve = ckpt.plot_learning_curve(
            state.metrics,
            path / ckpt.CURVE_FILE,
            f"{config.expert_name}: {run.task.name} ({config.objective}) on {run.loaded.name}",
            base=state.base_score,
            start=None if state.init_score is None else (config.init_expert, state.init_score),
        )
        run.emit(
            {
                "event": "done",
                "expert": config.expert_name,
                "path": str(path),
                "best_accuracy": state.best_score,
                "best_iteration": state.best_iteration,
                "base_accuracy": state.base_score,
            }
        )
    return TrainResult(
        config.method,
        path,
        method.expert,
        config.run_dir,
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


def earlier_val_times(metrics: list[dict]) -> list[float]:
    """The validation times an earlier session recorded: a resumed run's estimate until it validates."""
    return [line["time/val"] for line in metrics if "time/val" in line]


def eta(config: TrainConfig, done: int, iter_times: list[float], val_times: list[float]) -> dict:
    """Time left, from this session's mean iteration and validation times (a resumed run that has not
    validated yet passes the earlier sessions' validation times)."""
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


# --------------------------------------------------------------------------- the outcome, for the recipe


def run_metrics(state: ckpt.RunState, n_train: int, n_val: int) -> dict:
    """The run's outcome as the saved recipe records it: the scores, the data's size, the last
    iterations' reward and loss, and the time per iteration."""
    times = [m["time/iter"] for m in state.metrics]
    rewards = [m["reward/mean"] for m in state.metrics[-10:] if "reward/mean" in m]
    return {
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
