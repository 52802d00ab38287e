"""`t2 train --task T`: train an SVF expert (RL as in the paper, or SFT) or the LoRA baseline.

Also runs data-parallel: `torchrun --nproc_per_node 2 "$(which t2)" train --task …` (or
`accelerate launch "$(which t2)" train …`); the global batch is split over the processes and rank 0
validates, saves and reports. On a shared CPU, OMP_NUM_THREADS=1 per process avoids the thread
oversubscription that makes generation an order of magnitude slower.
"""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from t2cli.cli.common import (
    AnswerFieldOpt,
    CheckerOpt,
    DataOpt,
    DomainOpt,
    PromptFieldOpt,
    SplitFieldOpt,
    SystemOpt,
    TargetFieldOpt,
    TaskFileOpt,
    TemplateOpt,
    ValFractionOpt,
    choose_task,
    console,
    err_console,
    fail,
    progress_bar,
    user_errors,
)
from t2cli.tasks import TASKS
from t2cli.train.config import DTYPES, METHODS, OBJECTIVES, TrainConfig

if TYPE_CHECKING:  # the training loop (torch) is imported when a run starts, not for `t2 --help`
    from t2cli.train import TrainResult


def _h(name: str) -> str:
    return TrainConfig.help(name)


def _d(name: str):
    """The option's default: the config's (defined there once)."""
    return TrainConfig.default(name)


def train_command(
    task: str = typer.Option(
        None,
        "--task",
        help=f"Task to train on: {', '.join(TASKS)}, or one added with `t2 tasks add` (or use --task-file / --data).",
    ),
    task_file: Path = TaskFileOpt,
    data: str = DataOpt,
    prompt_field: str = PromptFieldOpt,
    template: str = TemplateOpt,
    answer_field: str = AnswerFieldOpt,
    checker: str = CheckerOpt,
    target_field: str = TargetFieldOpt,
    split_field: str = SplitFieldOpt,
    val_fraction: float = ValFractionOpt,
    domain: str = DomainOpt,
    system: str = SystemOpt,
    method: str = typer.Option(_d("method"), "--method", help=f"{' | '.join(METHODS)}. " + _h("method")),
    model: str = typer.Option(_d("model"), "--model", "-m", help=_h("model")),
    objective: str = typer.Option(_d("objective"), "--objective", help=f"{' | '.join(OBJECTIVES)}. " + _h("objective")),
    targets: list[str] = typer.Option(_d("targets"), "--targets", "-t", help=_h("targets") + " (repeatable)"),
    kl: float = typer.Option(_d("kl"), "--kl", help=_h("kl")),
    batch_size: int = typer.Option(_d("batch_size"), "--batch-size", "-b", help=_h("batch_size")),
    rollouts_per_prompt: int = typer.Option(
        _d("rollouts_per_prompt"), "--rollouts-per-prompt", "-k", help=_h("rollouts_per_prompt")
    ),
    temperature: float = typer.Option(_d("temperature"), help=_h("temperature")),
    sft_iters: int = typer.Option(_d("sft_iters"), "--sft-iters", help=_h("sft_iters")),
    init_expert: str = typer.Option(_d("init_expert"), "--init-expert", help=_h("init_expert")),
    iters: int = typer.Option(_d("iters"), "--iters", "-n", help=_h("iters")),
    lr: float = typer.Option(_d("lr"), "--lr", help=_h("lr")),
    warmup_iters: int = typer.Option(_d("warmup_iters"), help=_h("warmup_iters")),
    min_lr_ratio: float = typer.Option(_d("min_lr_ratio"), help=_h("min_lr_ratio")),
    weight_decay: float = typer.Option(_d("weight_decay"), help=_h("weight_decay")),
    grad_clip: float = typer.Option(_d("grad_clip"), help=_h("grad_clip")),
    max_multiplier: float = typer.Option(_d("max_multiplier"), help=_h("max_multiplier")),
    micro_batch_size: int = typer.Option(
        _d("micro_batch_size"), "--micro-batch", "--micro-batch-size", help=_h("micro_batch_size")
    ),
    grad_checkpointing: bool = typer.Option(
        _d("grad_checkpointing"), "--grad-checkpointing", help=_h("grad_checkpointing")
    ),
    dtype: str = typer.Option(_d("dtype"), "--dtype", help=f"{' | '.join(DTYPES)}. " + _h("dtype")),
    max_new_tokens: int = typer.Option(_d("max_new_tokens"), help=_h("max_new_tokens")),
    max_prompt_tokens: int = typer.Option(_d("max_prompt_tokens"), help=_h("max_prompt_tokens")),
    generation_batch_size: int = typer.Option(_d("generation_batch_size"), help=_h("generation_batch_size")),
    eval_every: int = typer.Option(_d("eval_every"), help=_h("eval_every")),
    val_limit: int = typer.Option(_d("val_limit"), help=_h("val_limit") + " 0 = all."),
    train_limit: int = typer.Option(_d("train_limit"), help=_h("train_limit")),
    max_reference_tokens: int = typer.Option(_d("max_reference_tokens"), help=_h("max_reference_tokens")),
    patience: int = typer.Option(_d("patience"), help=_h("patience")),
    seed: int = typer.Option(_d("seed"), help=_h("seed")),
    name: str = typer.Option(_d("name"), "--name", help=_h("name")),
    checkpoint_every: int = typer.Option(_d("checkpoint_every"), help=_h("checkpoint_every")),
    checkpoint_minutes: float = typer.Option(_d("checkpoint_minutes"), help=_h("checkpoint_minutes")),
    out: Path = typer.Option(_d("out_dir"), "--out", help=_h("out_dir")),
    data_dir: Path = typer.Option(_d("data_dir"), "--data-dir", help=_h("data_dir")),
    device: str = typer.Option(_d("device"), help=_h("device")),
    overwrite: bool = typer.Option(_d("overwrite"), "--overwrite", help=_h("overwrite")),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the run directory from its checkpoint."),
    registry: Path = typer.Option(None, "--registry", help="Registry to write the expert to."),
) -> None:
    """Train an SVF expert vector (or the LoRA baseline) on a task, by REINFORCE on its reward or SFT.

    Training is slow on a CPU: every iteration generates (RL rollouts) or runs forward and backward
    over a batch, and every validation generates answers for --val-limit items. Before any work the
    run states its budget (iterations × batch × rollouts × new tokens); after the first iteration it
    states when it will finish. CPU-sized settings for the default 135M model: SFT, which generates
    only to validate, e.g. `--objective sft --iters 20 -b 8 --max-new-tokens 64 --val-limit 32
    --eval-every 10 --lr 5e-2`; RL with short answers, e.g. `--iters 20 -b 8 -k 1 --max-new-tokens 64`.
    The seconds per iteration of the shipped experts are in their recipes (`t2 experts show NAME`).
    """
    task_obj = choose_task(
        task,
        task_file,
        data,
        prompt_field=prompt_field,
        template=template,
        answer_field=answer_field,
        checker=checker,
        target_field=target_field,
        split_field=split_field,
        val_fraction=val_fraction,
        domain=domain,
        system=system,
    )
    with user_errors():
        config = TrainConfig(
            task=task_obj.name,
            method=method,
            model=model,
            objective=objective,
            targets=[part.strip() for value in targets for part in value.split(",") if part.strip()],
            kl=kl,
            batch_size=batch_size,
            rollouts_per_prompt=rollouts_per_prompt,
            temperature=temperature,
            sft_iters=sft_iters,
            init_expert=init_expert,
            iters=iters,
            lr=lr,
            warmup_iters=warmup_iters,
            min_lr_ratio=min_lr_ratio,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            max_multiplier=max_multiplier,
            micro_batch_size=micro_batch_size,
            grad_checkpointing=grad_checkpointing,
            dtype=dtype,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            generation_batch_size=generation_batch_size,
            eval_every=eval_every,
            val_limit=val_limit or None,
            train_limit=train_limit,
            max_reference_tokens=max_reference_tokens,
            patience=patience,
            seed=seed,
            name=name,
            checkpoint_every=checkpoint_every,
            checkpoint_minutes=checkpoint_minutes,
            out_dir=str(out) if out else None,
            data_dir=str(data_dir) if data_dir else None,
            device=device,
            overwrite=overwrite,
            command=shlex.join(["t2", *sys.argv[1:]]),
        )
        from t2cli.registry import Registry
        from t2cli.train import train

        reg = Registry(write_root=registry) if registry else Registry()
        if config.task == "cls":  # the classifier learns the domains of the registered experts
            from t2cli.cli.common import registry_key
            from t2cli.dispatch import classifier_task

            task_obj = classifier_task(reg, registry_key(model))
        # Under torchrun only rank 0 receives events: other ranks show no bar.
        main_rank = int(os.environ.get("RANK", "0")) == 0
        label = f"train {config.expert_name}" + (" (LoRA)" if config.method == "lora" else "")
        bar = progress_bar(label, total=config.iters) if main_rank else nullcontext(_ignore)
        with bar as update:
            renderer = EventRenderer(update, config.iters)
            try:
                result = train(config, task=task_obj, registry=reg, resume=resume, on_event=renderer)
            except KeyboardInterrupt:
                fail(interrupted_message(config, renderer), code=130)
    if result.path is not None:  # rank 0 of a distributed run, or a plain run
        console.print(result_table(result, config))


def plan_line(plan) -> str:
    """One line: what training needs on its device and whether it fits (`t2 info --memory` shows every stage)."""
    from t2cli.memory import format_bytes

    stage = plan.stage("train")
    fits = plan.fits("train")
    verdict = "" if fits is None else (" — fits" if fits else " — does NOT fit: lower --batch-size or --micro-batch")
    available = "" if plan.available is None else f" of {format_bytes(plan.available)} available"
    return f"memory plan: training needs ~{format_bytes(stage.total)} on {plan.device}{available}{verdict}"


def interrupted_message(config: TrainConfig, renderer: EventRenderer) -> str:
    """What an interrupted run leaves, truthfully: a checkpoint to resume from, or nothing."""
    from t2cli.train.checkpoint import CHECKPOINT_FILE

    where = f"interrupted at iteration {renderer.iteration}"
    if not (config.run_dir / CHECKPOINT_FILE).is_file():
        return f"{where}, before the first checkpoint: there is nothing to resume; run the same command again"
    at = "" if renderer.checkpoint is None else f" (iteration {renderer.checkpoint})"
    return f"{where}; the last checkpoint{at} is in {config.run_dir}: continue with the same command plus --resume"


def _ignore(*_args) -> None:
    pass


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def budget_line(event: dict) -> str:
    """The run's work, stated before it starts."""
    parts = []
    if event["rollouts"]:
        parts.append(
            f"{event['rollouts']:,} rollouts ({event['rl_iters']} RL iterations"
            f" × {event['batch_size']} prompts × {event['rollouts_per_prompt']} rollouts) of "
            f"≤ {event['max_new_tokens']} new tokens"
        )
    if event["sft_samples"]:
        parts.append(f"{event['sft_samples']:,} SFT samples (forward + backward, no generation)")
    parts.append(
        f"{event['validations']} validations × {event['val_examples']} items × ≤ {event['max_new_tokens']} new tokens"
    )
    return f"budget: {event['iters']} iterations: " + "; ".join(parts)


class EventRenderer:
    """Turns the library's progress events into the progress bar's label and a few lines."""

    def __init__(self, update, total: int):
        self.update, self.total = update, total
        self.iteration, self.best, self.summary, self.checkpoint = 0, None, "", None
        self.eta_shown = False

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "budget":
            err_console.print(budget_line(event), highlight=False, soft_wrap=True)
        elif kind == "plan" and event["plan"] is not None:
            err_console.print(plan_line(event["plan"]), highlight=False, soft_wrap=True)
        elif kind == "setup":
            self.update(0, self.total, event["message"] + "…")
        elif kind == "start":
            self.iteration = event["start_iter"]
            self.best = event["base_accuracy"]
            self.update(self.iteration, self.total, f"base val {event['base_accuracy']:.1%}")
        elif kind == "phase":
            self.update(self.iteration, self.total, f"{self.summary} · {event['phase']}…".lstrip(" ·"))
        elif kind == "validation":
            self.best = event["best"]
        elif kind == "checkpoint":
            self.checkpoint = event["iter"]
        elif kind == "iteration":
            self.iteration = event["iter"]
            parts = [f"reward {event['reward/mean']:+.2f}" if "reward/mean" in event else f"loss {event['loss']:.3f}"]
            if "val/accuracy" in event:
                parts.append(f"val {event['val/accuracy']:.1%}")
            if self.best is not None:
                parts.append(f"best {self.best:.1%}")
            parts.append(f"{event['time/iter']:.1f} s/it")
            self.summary = " · ".join(parts)
        elif kind == "eta":  # follows each iteration: the line shows both, once
            left = f" · ETA {_duration(event['remaining_s'])}" if event["remaining_s"] > 0 else ""
            self.update(self.iteration, self.total, self.summary + left)
            if not self.eta_shown and event["remaining_s"] > 0:
                self.eta_shown = True
                err_console.print(
                    f"estimate after iteration {event['iter']}: {event['seconds_per_iter']:.1f} s per iteration, "
                    f"{event['seconds_per_validation']:.1f} s per validation: about "
                    f"{_duration(event['remaining_s'])} to go",
                    highlight=False,
                    soft_wrap=True,
                )
        elif kind == "early_stop":
            err_console.print(f"early stop at iteration {event['iter']} (best at {event['best_iteration']})")


def result_table(result: TrainResult, config: TrainConfig) -> Table:
    """The summary of a finished run (SVF or LoRA): accuracy before/after, time, where things are."""
    curve = str(result.curve_path) if result.curve_path else "- (matplotlib not installed)"
    if result.method == "lora":
        title, if_no_gain = f"Trained LoRA adapter {config.expert_name}", "the adapter is the initial one, B = 0"
        head, tail = [("trainable parameters", f"{result.trainable_parameters:,}")], [("adapter", str(result.path))]
    else:
        title, if_no_gain = f"Trained expert {config.expert_name}", "the expert is a uniform z = the base model"
        head, tail = [], [("expert", str(result.path))]
    table = Table(title=title, show_header=False)
    times = [m["time/iter"] for m in result.metrics]
    best = f"{result.best_val_accuracy:.2%} at iteration {result.best_iteration}"
    start = result.init_val_accuracy
    if result.best_iteration == 0 and start is not None and start > result.base_val_accuracy:
        best += f" (no iteration beat the starting expert {config.init_expert})"
    elif result.best_iteration == 0:
        best += f" (no iteration beat the base model: {if_no_gain})"
    started = [] if start is None else [(f"{config.init_expert} validation accuracy", f"{start:.2%}")]
    rows = [
        ("task / objective", f"{config.task} / {config.objective}"),
        *head,
        ("base validation accuracy", f"{result.base_val_accuracy:.2%}"),
        *started,
        ("best validation accuracy", best),
        ("iterations", f"{result.iterations} ({sum(times) / max(1, len(times)):.1f} s/iter)"),
        ("wall time", f"{result.wall_time_s:.0f} s"),
        *tail,
        ("learning curve", curve),
        ("run directory", str(result.run_dir)),
    ]
    for row in rows:
        table.add_row(*row)
    return table
