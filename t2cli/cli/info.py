"""`t2 info MODEL [--expert E] [--memory]`: architecture, targets, SVF vs LoRA parameter counts,
expert metadata, and the memory plan — from the config alone (no weights are read or converted)."""

from __future__ import annotations

import json
from collections import Counter

import typer
from rich.syntax import Syntax
from rich.table import Table

from t2cli.cli.common import (
    console,
    device_option,
    dtype_option,
    open_registry,
    registry_key,
    status,
    user_errors,
)
from t2cli.cli.decompose import split_targets
from t2cli.cli.output import JSON_HELP, print_json
from t2cli.defaults import DEFAULT_MODEL
from t2cli.placement import check_placement

CONFIG_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)


def info_command(
    model: str = typer.Argument(DEFAULT_MODEL, help="Embedded model name, local HF directory or Hub id."),
    targets: list[str] = typer.Option(["mlp"], "--targets", "-t", help="mlp, attn, all or a regex (repeatable)."),
    expert: str = typer.Option(None, "--expert", "-e", help="Also show this registered expert's metadata."),
    memory: bool = typer.Option(False, "--memory", help="Print the memory plan: bytes per stage, and whether it fits."),
    dtype: str = dtype_option(),
    device: str = device_option(),
    batch_size: int = typer.Option(16, "--batch-size", "-b", help="--memory: sequences per batch (eval, train)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="--memory: generated tokens per sequence."),
    prompt_tokens: int = typer.Option(128, "--prompt-tokens", help="--memory: prompt tokens per sequence."),
    micro_batch: int = typer.Option(
        4, "--micro-batch", help="--memory: sequences per forward/backward of the loss (gradient accumulation)."
    ),
    checkpointing: bool = typer.Option(
        True, "--checkpointing/--no-checkpointing", help="--memory: activation checkpointing in the loss."
    ),
    keep: str = typer.Option(
        "auto", "--keep", help="--memory: where the originals for exact revert go: auto, device, cpu, files."
    ),
    gpu_memory: float = typer.Option(
        None, "--gpu-memory", help="--memory: plan for a device with this many GiB (e.g. a GPU not on this machine)."
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Describe a model and what SVF would adapt in it, from its config alone (no weights are loaded)."""
    from t2cli.memory import LORA_RANK, parameter_counts, shapes_of
    from t2cli.models import load_config, meta_model

    with user_errors():
        check_placement(dtype, device)
        with status(f"reading {model}'s config…"):
            config = load_config(model)  # config.json only: nothing converted, nothing downloaded beyond it
            skeleton = meta_model(config)  # meta device: shapes only
        names_targets = split_targets(targets)
        shapes = shapes_of(skeleton, names_targets)
        from t2cli.svd_store import select_targets, weight_matrix

        names = select_targets(skeleton, names_targets)
        modules = dict(skeleton.named_modules())
        matrix_shapes = {name: tuple(weight_matrix(modules[name]).shape) for name in names}
        entry = open_registry().find(expert, registry_key(model)) if expert else None
    counts = parameter_counts(shapes)
    total, svf, lora = counts["model"], counts["svf"], counts["lora"]
    by_shape = Counter((name.split(".")[-1], matrix_shapes[name]) for name in names)
    # the memory plan's settings, for --json and the table alike: where it runs, and how much it holds
    placement = {"dtype": dtype, "device": device, "keep": keep}
    placement["available"] = int(gpu_memory * 2**30) if gpu_memory else None
    sizes = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "prompt_tokens": prompt_tokens}
    settings = placement | sizes | {"micro_batch": micro_batch, "checkpointing": checkpointing}
    if json_output:
        with user_errors():
            plan = _plan_document(model, names_targets, **settings) if memory else None
        print_json(
            {
                "model": model,
                "architecture": {"class": type(skeleton).__name__, "model_type": config.model_type}
                | {key: getattr(config, key) for key in CONFIG_KEYS if hasattr(config, key)},
                "parameters": {"total": total, "svf": svf, f"lora_rank_{LORA_RANK}": lora},
                "targets": {
                    "selectors": names_targets,
                    "matrices": len(names),
                    "shapes": [
                        {"matrix": leaf, "shape": list(shape), "count": count, "rank": min(shape)}
                        for (leaf, shape), count in sorted(by_shape.items())
                    ],
                },
                "memory": plan,
                "expert": None if entry is None else {"name": entry.name, "path": str(entry.path), "meta": entry.meta},
            }
        )
        return

    arch = Table(title=f"{model}", show_header=False)
    arch.add_row("architecture", f"{type(skeleton).__name__} ({config.model_type})")
    for key in CONFIG_KEYS:
        if hasattr(config, key):
            arch.add_row(key, str(getattr(config, key)))
    arch.add_row("parameters", f"{total:,}")
    console.print(arch)

    target_table = Table(title=f"targets: {' '.join(names_targets)} — {len(names)} matrices")
    for column in ("matrix", "shape (out × in)", "count", "rank r = min(m, n)"):
        target_table.add_column(column)
    for (leaf, shape), count in sorted(by_shape.items()):
        target_table.add_row(leaf, f"{shape[0]} × {shape[1]}", str(count), str(min(shape)))
    console.print(target_table)

    sizes = Table(title="trainable parameters on these targets")
    for column in ("method", "parameters", "% of model", "vs SVF"):
        sizes.add_column(column)
    sizes.add_row("SVF (one scale per singular value)", f"{svf:,}", f"{100 * svf / total:.3f}%", "1×")
    sizes.add_row(f"LoRA rank {LORA_RANK}", f"{lora:,}", f"{100 * lora / total:.3f}%", f"{lora / svf:.1f}×")
    console.print(sizes)
    if memory:
        with user_errors():
            _print_plan(model, names_targets, **settings)
    if entry is not None:
        console.print(f"[bold]expert {entry.name}[/] ({entry.path})")
        console.print(Syntax(json.dumps(entry.meta, indent=2, sort_keys=True), "json", word_wrap=True))


def _plan_document(model: str, targets: list[str], **settings) -> dict:
    """The memory plan for `--json`: bytes per stage and part, and whether each stage fits."""
    from t2cli.memory import plan_for

    _, plan = plan_for(model, targets, **settings)
    return {
        "dtype": plan.dtype,
        "device": str(plan.device),
        "available_bytes": plan.available,
        "stages": [
            {
                "name": st.name,
                "total_bytes": st.total,
                "parts": dict(st.parts),
                "host": dict(st.host),
                "fits": plan.fits(st.name),
            }
            for st in plan.stages
        ],
    }


def _print_plan(model: str, targets: list[str], **settings) -> None:
    from t2cli.memory import plan_for

    _, plan = plan_for(model, targets, **settings)
    print_plan(plan)


def print_plan(plan) -> None:
    """Render a MemoryPlan (also for `t2 train`, before it starts)."""
    from t2cli.memory import format_bytes

    s = plan.settings
    title = (
        f"memory plan: {plan.dtype} model, {plan.store_dtype} factors on {plan.device}; batch {s['batch_size']} × "
        f"({s['prompt_tokens']} prompt + {s['max_new_tokens']} new tokens), loss over {s['micro_batch']} at a time"
        f"{' with activation checkpointing' if s['checkpointing'] else ''}; originals kept: {s['keep']}"
    )
    table = Table(title=title, title_justify="left")
    parts = list(dict.fromkeys(part for stage in plan.stages for part in stage.parts))
    table.add_column("")
    for stage in plan.stages:
        table.add_column(stage.name, justify="right")
    for part in parts:
        table.add_row(part, *[format_bytes(st.parts[part]) if st.parts.get(part) else "–" for st in plan.stages])
    hosts = [f"{format_bytes(sum(st.host.values()))}" if st.host else "–" for st in plan.stages]
    if any(st.host for st in plan.stages):
        table.add_row("host memory (not on the device)", *hosts)
    table.add_row("[bold]total[/]", *[f"[bold]{format_bytes(st.total)}[/]" for st in plan.stages])
    verdicts = []
    for stage in plan.stages:
        fits = plan.fits(stage.name)
        verdicts.append("?" if fits is None else ("[green]yes[/]" if fits else "[red]no[/]"))
    table.add_row("fits?", *verdicts)
    where = f"{format_bytes(plan.available)} on {plan.device}" if plan.available else "unknown"
    console.print(table)
    console.print(f"device memory: {where}", highlight=False)
