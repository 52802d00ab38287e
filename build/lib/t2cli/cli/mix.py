"""`t2 mix math:0.6 code:0.4 --name NAME`: compose registered experts into a new expert."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from t2cli.cli.common import console, fail, open_registry, registry_key, user_errors
from t2cli.cli.experts import experts_table
from t2cli.defaults import DEFAULT_MODEL, DOMAINS
from t2cli.errors import MixError


def parse_component(text: str) -> tuple[str, float]:
    """'math:0.6' → ('math', 0.6)."""
    name, sep, weight = text.rpartition(":")
    if not sep or not name:
        raise MixError(f"{text!r} is not NAME:WEIGHT (e.g. math:0.6)")
    try:
        return name, float(weight)
    except ValueError:
        raise MixError(f"weight in {text!r} is not a number") from None


def read_per_layer(path: Path) -> dict[str, dict[str, float]]:
    """JSON {expert: {module: alpha}} overriding the global weights per matrix."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise MixError(f"cannot read per-layer weights from {path}: {error}") from error
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(a, (int, float)) for a in v.values()) for v in data.values()
    ):
        raise MixError(f"{path} must be a JSON object {{expert: {{module name: weight}}}}")
    return {expert: {module: float(a) for module, a in alphas.items()} for expert, alphas in data.items()}


def mix_command(
    components: list[str] = typer.Argument(..., help="Experts and weights, e.g. math:0.6 code:0.4."),
    name: str = typer.Option(..., "--name", help="Name of the new expert."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model of the experts."),
    per_layer: Path = typer.Option(None, "--per-layer", help="JSON {expert: {module: weight}} overrides."),
    normalize: bool = typer.Option(False, "--normalize", help="Scale each matrix's weights to sum to 1."),
    domain: str = typer.Option("other", help=f"Domain label of the result: {', '.join(DOMAINS)}."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    registry: Path = typer.Option(None, "--registry", help="Registry to write to."),
) -> None:
    """z' = Σ αₖ zₖ: a linear mixture of registered experts, registered with its recipe."""
    if domain not in DOMAINS:
        fail(f"--domain must be one of {', '.join(DOMAINS)}")
    from t2cli.expert import mix

    with user_errors():
        reg = open_registry(registry)
        parsed = [parse_component(text) for text in components]
        base = registry_key(model)
        experts = [reg.load(expert_name, base) for expert_name, _ in parsed]
        mixed = mix(
            experts,
            [weight for _, weight in parsed],
            name=name,
            per_layer=read_per_layer(per_layer) if per_layer else None,
            normalize=normalize,
            domain=domain,
        )
        entry = reg.add(mixed, overwrite=overwrite)
    console.print(experts_table([entry], f"Registered mixture {name}"))
    console.print(f"recipe: {json.dumps(mixed.provenance['recipe'])}")
