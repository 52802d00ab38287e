"""`t2 train --task T`: train an SVF expert (RL as in the paper, or SFT) and register it.

Also runs data-parallel: `torchrun --nproc_per_node 2 "$(which t2)" train --task …` (or
`accelerate launch "$(which t2)" train …`); the global batch is split over the processes and rank 0
validates, saves and reports. On a shared CPU, OMP_NUM_THREADS=1 per process avoids the thread
oversubscription that makes generation an order of magnitude slower.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from t2cli.cli.common import console, err_console, fail, progress_bar, user_errors
from t2cli.defaults import DEFAULT_MODEL
from t2cli.tasks import TASKS
from t2cli.train.config import LORA_DEFAULTS, OBJECTIVES, TrainConfig

if TYPE_CHECKING:  # the training loop (torch) is imported when a run starts, not for `t2 --help`
    from t2cli.train import TrainResult


def _h(name: str) -> str:
    return TrainConfig.help(name)


def train_command(
    task: str = typer.Option(..., "--task", help=f"Task to train on: {', '.join(TASKS)}."),
    method: str = typer.Option("svf", "--method", help="svf: an SVF expert (the paper's method). lora: the "
                               "paper's LoRA baseline (rank 16, alpha 32, dropout 0.05, --objective sft) on the "
                               "same targets, data and budget, saved as a PEFT adapter in <run dir>/adapter."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=_h("model")),
    objective: str = typer.Option(None, "--objective", help=f"{' | '.join(OBJECTIVES)}. " + _h("objective")
                                  + " Default rl for svf, sft for lora (the paper's LoRA recipe)."),
    targets: list[str] = typer.Option(["mlp"], "--targets", "-t", help=_h("targets") + " (repeatable)"),
    kl: float = typer.Option(0.0, "--kl", help=_h("kl")),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help=_h("batch_size")),
    rollouts_per_prompt: int = typer.Option(1, "--rollouts-per-prompt", "-k", help=_h("rollouts_per_prompt")),
    temperature: float = typer.Option(1.0, help=_h("temperature")),
    sft_iters: int = typer.Option(None, "--sft-iters", help=_h("sft_iters")),
    init_expert: str = typer.Option(None, "--init-expert", help=_h("init_expert")),
    iters: int = typer.Option(100, "--iters", "-n", help=_h("iters")),
    lr: float = typer.Option(None, "--lr", help=_h("lr") + " Default 2e-3 for svf, 2e-4 for lora."),
    warmup_iters: int = typer.Option(0, help=_h("warmup_iters")),
    min_lr_ratio: float = typer.Option(0.0, help=_h("min_lr_ratio")),
    weight_decay: float = typer.Option(0.0, help=_h("weight_decay")),
    grad_clip: float = typer.Option(None, help=_h("grad_clip") + " Default 1e-3 for svf, 1.0 for lora."),
    max_multiplier: float = typer.Option(1.0, help=_h("max_multiplier")),
    micro_batch_size: int = typer.Option(8, help=_h("micro_batch_size")),
    max_new_tokens: int = typer.Option(None, help=_h("max_new_tokens")),
    max_prompt_tokens: int = typer.Option(1024, help=_h("max_prompt_tokens")),
    generation_batch_size: int = typer.Option(32, help=_h("generation_batch_size")),
    eval_every: int = typer.Option(10, help=_h("eval_every")),
    val_limit: int = typer.Option(32, help=_h("val_limit") + " 0 = all."),
    train_limit: int = typer.Option(None, help=_h("train_limit")),
    max_reference_tokens: int = typer.Option(None, help=_h("max_reference_tokens")),
    patience: int = typer.Option(0, help=_h("patience")),
    seed: int = typer.Option(0, help=_h("seed")),
    name: str = typer.Option(None, "--name", help=_h("name")),
    checkpoint_every: int = typer.Option(10, help=_h("checkpoint_every")),
    out: Path = typer.Option(None, "--out", help=_h("out_dir")),
    data_dir: Path = typer.Option(None, "--data-dir", help=_h("data_dir")),
    device: str = typer.Option(None, help=_h("device")),
    overwrite: bool = typer.Option(False, "--overwrite", help=_h("overwrite")),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in the run directory from its checkpoint."),
    registry: Path = typer.Option(None, "--registry", help="Registry to write the expert to."),
) -> None:
    """Train an SVF expert vector on a task (REINFORCE on the task reward, or SFT) and register it."""
    if method not in ("svf", "lora"):
        fail(f"--method must be svf or lora, not {method!r}")
    defaults = LORA_DEFAULTS if method == "lora" else {"lr": 2e-3, "grad_clip": 1e-3}
    lr = defaults["lr"] if lr is None else lr
    grad_clip = defaults["grad_clip"] if grad_clip is None else grad_clip
    objective = objective or ("sft" if method == "lora" else "rl")
    with user_errors():
        config = TrainConfig(
            task=task, model=model, objective=objective,
            targets=[part.strip() for value in targets for part in value.split(",") if part.strip()],
            kl=kl, batch_size=batch_size, rollouts_per_prompt=rollouts_per_prompt, temperature=temperature,
            sft_iters=sft_iters, init_expert=init_expert, iters=iters, lr=lr, warmup_iters=warmup_iters,
            min_lr_ratio=min_lr_ratio,
            weight_decay=weight_decay, grad_clip=grad_clip, max_multiplier=max_multiplier,
            micro_batch_size=micro_batch_size, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
            generation_batch_size=generation_batch_size, eval_every=eval_every, val_limit=val_limit or None,
            train_limit=train_limit, max_reference_tokens=max_reference_tokens, patience=patience, seed=seed,
            name=name, checkpoint_every=checkpoint_every,
            out_dir=str(out) if out else None, data_dir=str(data_dir) if data_dir else None, device=device,
            overwrite=overwrite,
        )
        if method == "lora":
            _train_lora(config, resume)
            return
        from t2cli.registry import Registry
        from t2cli.train import train

        reg = Registry(write_root=registry) if registry else Registry()
        # Under torchrun only rank 0 receives events: other ranks show no bar.
        main_rank = int(os.environ.get("RANK", "0")) == 0
        bar = progress_bar(f"train {config.expert_name}", total=config.iters) if main_rank else nullcontext(_ignore)
        with bar as update:
            renderer = EventRenderer(update, config.iters)
            try:
                result = train(config, registry=reg, resume=resume, on_event=renderer)
            except KeyboardInterrupt:
                every = f"every {config.checkpoint_every} iterations" if config.checkpoint_every else "at the end"
                fail(f"interrupted at iteration {renderer.iteration}; checkpoints are written {every} to "
                     f"{config.run_dir}. Continue with the same command plus --resume.", code=130)
    if result.expert_path is not None:  # rank 0 of a distributed run, or a plain run
        console.print(result_table(result, config))


def _train_lora(config: TrainConfig, resume: bool) -> None:
    from t2cli.train.lora import train_lora

    if resume:
        fail("--resume is not supported with --method lora (its runs keep no checkpoint)")
    name = config.name or f"{config.task}-lora"
    with progress_bar(f"train {name} (LoRA)", total=config.iters) as update:
        renderer = EventRenderer(update, config.iters)
        try:
            result = train_lora(config, on_event=renderer)
        except KeyboardInterrupt:
            fail(f"interrupted at iteration {renderer.iteration}; LoRA runs keep no checkpoint", code=130)
    table = run_table(
        f"Trained LoRA adapter {name}", config, result, "the adapter is the initial one, B = 0 = the base model",
        [("trainable parameters", f"{result.trainable_parameters:,}")],
        [("adapter", str(result.adapter_path))],
    )
    console.print(table)


def _ignore(*_args) -> None:
    pass


class EventRenderer:
    """Turns the library's progress events into the progress bar's label."""

    def __init__(self, update, total: int):
        self.update, self.total = update, total
        self.iteration, self.best, self.summary = 0, None, ""

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "setup":
            self.update(0, self.total, event["message"] + "…")
        elif kind == "start":
            self.iteration = event["start_iter"]
            self.best = event["base_accuracy"]
            self.update(self.iteration, self.total, f"base val {event['base_accuracy']:.1%}")
        elif kind == "phase":
            self.update(self.iteration, self.total, f"{self.summary} · {event['phase']}…".lstrip(" ·"))
        elif kind == "validation":
            self.best = event["best"]
        elif kind == "iteration":
            self.iteration = event["iter"]
            parts = [f"reward {event['reward/mean']:+.2f}" if "reward/mean" in event else f"loss {event['loss']:.3f}"]
            if "val/accuracy" in event:
                parts.append(f"val {event['val/accuracy']:.1%}")
            if self.best is not None:
                parts.append(f"best {self.best:.1%}")
            parts.append(f"{event['time/iter']:.1f} s/it")
            self.summary = " · ".join(parts)
            self.update(self.iteration, self.total, self.summary)
        elif kind == "early_stop":
            err_console.print(f"early stop at iteration {event['iter']} (best at {event['best_iteration']})")


def result_table(result: TrainResult, config: TrainConfig) -> Table:
    curve = str(result.curve_path) if result.curve_path else "- (matplotlib not installed)"
    return run_table(
        f"Trained expert {result.expert.name if result.expert else config.expert_name}", config, result,
        "the expert is a uniform z = the base model", [],
        [("expert", str(result.expert_path)), ("learning curve", curve)],
    )


def run_table(title: str, config: TrainConfig, result, if_no_gain: str, head: list, tail: list) -> Table:
    """The summary of a finished run (SVF or LoRA): accuracy before/after, time, where things are."""
    table = Table(title=title, show_header=False)
    times = [m["time/iter"] for m in result.metrics]
    best = f"{result.best_val_accuracy:.2%} at iteration {result.best_iteration}"
    start = getattr(result, "init_val_accuracy", None)
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
        ("run directory", str(result.run_dir)),
    ]
    for row in rows:
        table.add_row(*row)
    return table
