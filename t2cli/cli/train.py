"""`t2 train --task T`: train an SVF expert (RL as in the paper, or SFT) or the LoRA baseline.

Also runs data-parallel: `torchrun --nproc_per_node 2 "$(which t2)" train --task …` (or
`accelerate launch "$(which t2)" train …`); the global batch is split over the processes and rank 0
validates, saves and reports. On a shared CPU, OMP_NUM_THREADS=1 per process avoids the thread
oversubscription that makes generation an order of magnitude slower.
"""

from __future__ import annotations

import inspect
import os
import shlex
import sys
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, get_type_hints

import typer
from rich.table import Table

from t2cli.cli.common import (
    console,
    err_console,
    fail,
    option,
    progress_bar,
    task_from,
    task_options,
    user_errors,
    with_options,
)
from t2cli.tasks import TASKS
from t2cli.train.config import DTYPES, METHODS, OBJECTIVES, TrainConfig

if TYPE_CHECKING:  # the training loop (torch) is imported when a run starts, not for `t2 --help`
    from t2cli.train import TrainResult

# How TrainConfig's fields appear on the command line. Each field is an option `--its-name` with the
# field's default and help text, except these: other flags, a list of choices before the help, a
# conversion of the given value, or not an option at all (the task comes from the task options).
FLAGS = {
    "model": ("--model", "-m"),
    "targets": ("--targets", "-t"),
    "batch_size": ("--batch-size", "-b"),
    "rollouts_per_prompt": ("--rollouts-per-prompt", "-k"),
    "iters": ("--iters", "-n"),
    "micro_batch_size": ("--micro-batch", "--micro-batch-size"),
    "out_dir": ("--out",),
}
CHOICES = {"method": METHODS, "objective": OBJECTIVES, "dtype": DTYPES}
HELP_SUFFIX = {"targets": " (repeatable, or comma-separated)", "val_limit": " 0 = all."}
FROM_CLI = {
    "targets": lambda values: [part.strip() for value in values for part in value.split(",") if part.strip()],
    "val_limit": lambda value: value or None,
}
NOT_OPTIONS = {"task", "init_mean", "init_std", "command"}


def config_options() -> list[inspect.Parameter]:
    """TrainConfig's fields as CLI options: one definition of each default and help text (the config's)."""
    hints = get_type_hints(TrainConfig)
    options = []
    for spec in fields(TrainConfig):
        if spec.name in NOT_OPTIONS:
            continue
        choices = f"{' | '.join(CHOICES[spec.name])}. " if spec.name in CHOICES else ""
        text = choices + TrainConfig.help(spec.name) + HELP_SUFFIX.get(spec.name, "")
        default = TrainConfig.default(spec.name)
        options.append(option(spec.name, hints[spec.name], default, *FLAGS.get(spec.name, ()), help=text))
    return options


def config_from(options: dict, task: str) -> TrainConfig:
    """The run's TrainConfig from the values of `config_options` (taken out of `options`)."""
    values = {name: options.pop(name) for name in [p.name for p in config_options()]}
    values = {name: FROM_CLI.get(name, lambda value: value)(value) for name, value in values.items()}
    return TrainConfig(task=task, command=shlex.join(["t2", *sys.argv[1:]]), **values)


@with_options(
    task_options(
        f"Task to train on: {', '.join(TASKS)}, or one added with `t2 tasks add` (or use --task-file / --data)."
    ),
    config_options(),
)
def train_command(
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the run directory from its checkpoint."),
    registry: Path = typer.Option(None, "--registry", help="Registry to write the expert to."),
    save_best: bool = typer.Option(
        False,
        "--save-best",
        help="With --resume: save the best state the run has reached so far (an interim expert of a "
        "run still going on, under --name) and stop without training; the run directory is only read.",
    ),
    **options,
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
    task_obj = task_from(options)
    with user_errors():
        config = config_from(options, task_obj.name)
        if save_best and not resume:
            fail("--save-best saves a run's best state so far from its checkpoint: add --resume")
        from t2cli.registry import Registry
        from t2cli.train import save_best_so_far, train

        reg = Registry(write_root=registry) if registry else Registry()
        if config.task == "cls":  # the classifier learns the domains of the registered experts
            from t2cli.cli.common import registry_key
            from t2cli.dispatch import classifier_task

            task_obj = classifier_task(reg, registry_key(config.model))
        # Under torchrun only rank 0 receives events: other ranks show no bar.
        main_rank = int(os.environ.get("RANK", "0")) == 0
        label = f"train {config.expert_name}" + (" (LoRA)" if config.method == "lora" else "")
        bar = progress_bar(label, total=config.iters) if main_rank else nullcontext(_ignore)
        with bar as update:
            renderer = EventRenderer(update, config.iters)
            try:
                if save_best:
                    result = save_best_so_far(config, task=task_obj, registry=reg, on_event=renderer)
                else:
                    result = train(config, task=task_obj, registry=reg, resume=resume, on_event=renderer)
            except KeyboardInterrupt:
                fail(interrupted_message(config, renderer), code=130)
    if result.path is not None:  # rank 0 of a distributed run, or a plain run
        console.print(result_table(result, config, so_far=save_best))


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
            best = event.get("best_accuracy")
            self.best = event["base_accuracy"] if best is None else best
            message = f"base val {event['base_accuracy']:.1%}"
            if self.iteration and event.get("best_iteration"):
                message += f" · resumed, best {self.best:.1%} at iteration {event['best_iteration']}"
            self.update(self.iteration, self.total, message)
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


def result_table(result: TrainResult, config: TrainConfig, so_far: bool = False) -> Table:
    """The summary of a finished run (SVF or LoRA), or of the best state so far of a run going on
    (`so_far`): accuracy before/after, time, where things are."""
    curve = str(result.curve_path) if result.curve_path else "- (matplotlib not installed)"
    if result.method == "lora":
        title, if_no_gain = f"Trained LoRA adapter {config.expert_name}", "the adapter is the initial one, B = 0"
        head, tail = [("trainable parameters", f"{result.trainable_parameters:,}")], [("adapter", str(result.path))]
    else:
        title, if_no_gain = f"Trained expert {config.expert_name}", "the expert is a uniform z = the base model"
        head, tail = [], [("expert", str(result.path))]
    if so_far:
        title = title.replace("Trained", "Saved the best so far:", 1)
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
        ("iterations", f"{result.iterations} of {config.iters} ({sum(times) / max(1, len(times)):.1f} s/iter)"),
        ("wall time", f"{result.wall_time_s:.0f} s"),
        *tail,
        ("learning curve", curve),
        ("run directory", str(result.run_dir)),
    ]
    for row in rows:
        table.add_row(*row)
    return table
