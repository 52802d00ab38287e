"""`t2 experts list|show|rm|import|export|push|pull`: the expert registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.syntax import Syntax
from rich.table import Table

from t2cli.cli.common import console, fail, open_registry, registry_key, user_errors
from t2cli.defaults import DEFAULT_MODEL

if TYPE_CHECKING:
    from t2cli.registry import RegistryEntry

app = typer.Typer(help="List, inspect, import, export and share expert vectors.", no_args_is_help=True)

ModelKey = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model the experts belong to.")
RegistryDir = typer.Option(None, "--registry", help="Registry to write to (default: $T2_REGISTRY or T2_HOME/registry).")


def _metrics(entry: RegistryEntry) -> str:
    metrics = entry.meta.get("provenance", {}).get("metrics", {})
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items()))


def experts_table(entries: list[RegistryEntry], title: str) -> Table:
    table = Table(title=title)
    for column in ("base model", "name", "domain", "task", "objective", "params", "metrics", "source"):
        table.add_column(column)
    for entry in entries:
        provenance = entry.meta.get("provenance", {})
        table.add_row(
            entry.base_model,
            f"[bold]{entry.name}[/]",
            entry.domain,
            str(provenance.get("task", "-")),
            str(provenance.get("objective", "-")),
            f"{entry.meta.get('num_parameters', 0):,}",
            _metrics(entry) or "-",
            "shipped" if entry.shipped else str(entry.path.parent.parent),
        )
    return table


@app.command("list")
def list_command(
    model: str = typer.Option(None, "--model", "-m", help="Only experts of this base model (default: all)."),
    registry: Path = RegistryDir,
) -> None:
    """List registered experts (user registry first, then the shipped registry/)."""
    entries = open_registry(registry).list(registry_key(model) if model else None)
    if not entries:
        console.print("No experts registered" + (f" for {model}." if model else ".") + " Train one with `t2 train`.")
        return
    console.print(experts_table(entries, f"{len(entries)} expert(s)"))


@app.command("show")
def show_command(name: str, model: str = ModelKey, registry: Path = RegistryDir) -> None:
    """Show an expert's metadata (expert.json)."""
    with user_errors():
        entry = open_registry(registry).find(name, registry_key(model))
    console.print(f"[bold]{entry.name}[/] at {entry.path}")
    console.print(Syntax(json.dumps(entry.meta, indent=2, sort_keys=True), "json", word_wrap=True))


@app.command("rm")
def rm_command(
    name: str,
    model: str = ModelKey,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    registry: Path = RegistryDir,
) -> None:
    """Remove an expert from the user registry (shipped experts are read-only)."""
    with user_errors():
        reg = open_registry(registry)
        entry = reg.find(name, registry_key(model))
        if not yes and not typer.confirm(f"Remove {entry.name} ({entry.path})?"):
            fail("not removed")
        path = reg.remove(name, registry_key(model))
    console.print(f"Removed {name} ({path}).")


@app.command("import")
def import_command(
    source: Path = typer.Argument(..., help="An expert directory (expert.json + expert.safetensors)."),
    name: str = typer.Option(None, "--name", help="Register under another name."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing expert of that name."),
    registry: Path = RegistryDir,
) -> None:
    """Validate an expert directory and copy it into the registry."""
    with user_errors():
        entry = open_registry(registry).import_dir(source, name=name, overwrite=overwrite)
    console.print(f"Imported [bold]{entry.name}[/] for {entry.base_model} → {entry.path}")


@app.command("export")
def export_command(
    name: str,
    destination: Path = typer.Argument(..., help="A new or empty directory."),
    model: str = ModelKey,
    registry: Path = RegistryDir,
) -> None:
    """Copy a registered expert out to a directory."""
    with user_errors():
        path = open_registry(registry).export(name, registry_key(model), destination)
    console.print(f"Exported {name} → {path}")


@app.command("push")
def push_command(
    repo_id: str = typer.Argument(..., help="Hub model repo, e.g. you/smollm2-t2-experts."),
    model: str = ModelKey,
    names: list[str] = typer.Option(None, "--name", help="Only these experts (repeatable; default all)."),
    private: bool = typer.Option(False, "--private"),
    token: str = typer.Option(None, "--token", envvar="HF_TOKEN", help="Hub token with write access."),
    registry: Path = RegistryDir,
) -> None:
    """Upload a base model's experts to the Hugging Face Hub with a model card (needs network)."""
    with user_errors():
        url = open_registry(registry).push(
            repo_id, registry_key(model), names=names or None, token=token, private=private
        )
    console.print(f"Pushed to {url}")


@app.command("pull")
def pull_command(
    repo_id: str = typer.Argument(..., help="Hub model repo holding <base>/<name>/expert.* files."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    token: str = typer.Option(None, "--token", envvar="HF_TOKEN"),
    registry: Path = RegistryDir,
) -> None:
    """Download and register an expert set from the Hugging Face Hub (needs network)."""
    with user_errors():
        entries = open_registry(registry).pull(repo_id, token=token, overwrite=overwrite)
    console.print(experts_table(entries, f"Pulled {len(entries)} expert(s) from {repo_id}"))
