"""`t2 info MODEL [--expert E]`: architecture, targets, SVF vs LoRA parameter counts, expert metadata."""

from __future__ import annotations

import json
from collections import Counter

import typer
from rich.syntax import Syntax
from rich.table import Table

from t2cli.cli.common import console, open_registry, registry_key, status, user_errors
from t2cli.cli.decompose import split_targets
from t2cli.cli.output import JSON_HELP, print_json
from t2cli.defaults import DEFAULT_MODEL

LORA_RANK = 16
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
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Describe a model and what SVF would adapt in it (no weights are loaded)."""
    from t2cli.models import meta_model
    from t2cli.svd_store import select_targets, weight_matrix

    with user_errors():
        with status(f"reading {model}…"):
            skeleton = meta_model(model)  # meta device: shapes only
        names = select_targets(skeleton, split_targets(targets))
        modules = dict(skeleton.named_modules())
        shapes = {name: tuple(weight_matrix(modules[name]).shape) for name in names}
        entry = open_registry().find(expert, registry_key(model)) if expert else None
    config = skeleton.config
    total = sum(p.numel() for p in skeleton.parameters())
    svf = sum(min(shape) for shape in shapes.values())
    lora = sum(LORA_RANK * (m + n) for m, n in shapes.values())
    by_shape = Counter((name.split(".")[-1], shapes[name]) for name in names)
    if json_output:
        print_json(
            {
                "model": model,
                "architecture": {"class": type(skeleton).__name__, "model_type": config.model_type}
                | {key: getattr(config, key) for key in CONFIG_KEYS if hasattr(config, key)},
                "parameters": {"total": total, "svf": svf, f"lora_rank_{LORA_RANK}": lora},
                "targets": {
                    "selectors": split_targets(targets),
                    "matrices": len(names),
                    "shapes": [
                        {"matrix": leaf, "shape": list(shape), "count": count, "rank": min(shape)}
                        for (leaf, shape), count in sorted(by_shape.items())
                    ],
                },
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

    target_table = Table(title=f"targets: {' '.join(split_targets(targets))} — {len(names)} matrices")
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
    if entry is not None:
        console.print(f"[bold]expert {entry.name}[/] ({entry.path})")
        console.print(Syntax(json.dumps(entry.meta, indent=2, sort_keys=True), "json", word_wrap=True))
