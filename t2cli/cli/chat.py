"""`t2 chat --adapt STRATEGY`: talk to the self-adaptive model, one line per turn.

Each turn shows which expert pass 1 chose and how long each pass took. Pass 2 runs on the serving
engine in this process (t2cli.serve.engine): the chosen expert scales each matrix's singular values
per request, so changing the expert between turns recomposes no weights. The model's first use
builds its SVD store, with a progress bar. Reads stdin, so it also runs non-interactively:
`printf 'What is 2+3?\\n/quit\\n' | t2 chat --adapt loglik`.
Slash commands (/help, /experts, /expert NAME|auto, /clear, /quit): t2cli/cli/chat_session.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.text import Text

from t2cli.cli import common
from t2cli.cli.chat_session import ChatSession
from t2cli.cli.common import (
    EXPERTS_HELP,
    PASS1_DTYPE_HELP,
    PASS1_TOKENS_HELP,
    console,
    expert_names,
    progress_bar,
    show_choice,
    status,
    user_errors,
)
from t2cli.defaults import DEFAULT_MODEL
from t2cli.dispatch.table import strategy_names
from t2cli.tasks import get_task

if TYPE_CHECKING:
    from t2cli.adaptive import AdaptiveModel
    from t2cli.models import LoadedModel
    from t2cli.registry import Registry
    from t2cli.svd_store import SVDStore

ADAPT_HELP = f"Pass-1 strategy: {', '.join(strategy_names())}."
SHOTS_HELP = (
    "cem shots: a JSONL file of task rows, or a number N of examples taken from --shots-split "
    "(default: 32, or half the split when it is smaller)."
)


def chat_command(
    adapt: str = typer.Option("prompt", "--adapt", "-a", help=ADAPT_HELP),
    experts: str = typer.Option(None, "--experts", help=EXPERTS_HELP),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded model name, local directory or Hub id."),
    task: str = typer.Option(None, "--task", help="Task of the cem shots (its prompt format and checker)."),
    shots: str = typer.Option(None, "--shots", help=SHOTS_HELP),
    shots_split: str = typer.Option("train", help="Split the N shots are drawn from."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Directory laid out like the bundled data."),
    generations: int = typer.Option(50, help="cem: at most this many generations."),
    population: int = typer.Option(32, help="cem: candidates per generation."),
    patience: int = typer.Option(None, help="cem: stop after this many generations without improvement."),
    tolerance: float = typer.Option(
        None, help="cem: stop once the elite candidates' mixtures agree to within this (std of αₖ/Σα), e.g. 0.01."
    ),
    per_matrix: bool = typer.Option(False, "--per-matrix", help="cem: one α per expert per matrix."),
    seed: int = typer.Option(0, help="Seed of the shot split and the cem search."),
    save_mixture: str = typer.Option(None, "--save-mixture", help="cem: register the found mixture as NAME."),
    max_new_tokens: int = typer.Option(256, help="Answer length limit."),
    history: bool = typer.Option(True, "--history/--no-history", help="Keep the conversation between turns."),
    cache_size: int = typer.Option(
        4, help="Composed experts pass 1 keeps in memory (each a full copy of the targets)."
    ),
    pass1_tokens: int = typer.Option(None, help=PASS1_TOKENS_HELP),
    pass1_dtype: str = typer.Option(None, help=PASS1_DTYPE_HELP),
    dtype: str = common.dtype_option(),
    device: str = common.device_option(),
    device_map: str = common.device_map_option(),
) -> None:
    """Chat with the self-adaptive model: pass 1 picks an expert per turn, pass 2 answers."""
    from t2cli.adaptive import AdaptiveModel, load_shots
    from t2cli.dispatch.table import parse_strategy, strategy_options
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.serve.engine import Engine, Sampling

    with user_errors():
        task_obj = get_task(task) if task else None
        needs_shots = parse_strategy(adapt)[0].needs_shots
        wants_shots = task_obj is not None and (shots or needs_shots)
        shot_examples = load_shots(shots, task_obj, shots_split, data_dir, seed)[0] if wants_shots else []
        with status(f"loading {model}…"):
            loaded = load_model(model, dtype=dtype, device=device, device_map=device_map)
        registry = Registry()
        store = store_for_strategy(loaded, registry, adapt, expert_names(experts))
        setup = progress_bar("cem α search") if shot_examples else status(f"pass-1 set-up ({adapt})…")
        with setup as update:  # a bar for the shots' search, a spinner for any other set-up
            values = {"request_tokens": pass1_tokens, "pass1_dtype": pass1_dtype, "task": task_obj}
            values |= {"shots": shot_examples, "generations": generations, "population": population, "seed": seed}
            values |= {"patience": patience, "tolerance": tolerance, "per_matrix": per_matrix}
            if update:
                values["progress"] = lambda done, total, best: update(done, total, f"best fitness {best:.3f}")
            options = strategy_options(adapt, values)  # the options of every strategy: the chosen one takes its own
            adaptive = AdaptiveModel.open(
                loaded, adapt, registry, options, experts=expert_names(experts), cache_size=cache_size
            )
        show_choice(adaptive)
        if adaptive.cem is not None:
            show_mixture(adaptive, len(shot_examples), save_mixture)
        # After pass 1's set-up: its dense weight switch holds the model's own modules, which the
        # engine's per-row layers then wrap (they share each module's weight).
        engine = Engine(loaded, store, {}, max_batch=1, max_queue=1).start()
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(
            f"[dim]{loaded.name}, --adapt {adapt} (pass-1 set-up {adaptive.setup_s:.2f} s). "
            "/help lists the commands, /quit exits; Ctrl-C stops an answer.[/]"
        )
    session = ChatSession(adaptive, engine, Sampling(max_tokens=max_new_tokens, temperature=0.0), history)
    try:
        while True:
            try:
                line = console.input("[bold green]you>[/] ") if interactive else sys.stdin.readline()
            except (EOFError, KeyboardInterrupt):
                break
            if not interactive and line == "":
                break  # end of piped input
            if not interactive and line.strip():
                console.print("[bold green]you>[/]", Text(line.strip()))  # the user's text, literally
            if not session.handle(line):
                break
    finally:
        engine.stop(deadline_s=5.0)


def store_for_strategy(loaded: LoadedModel, registry: Registry, strategy: str, experts: list[str] | None) -> SVDStore:
    """The SVD store of the experts `strategy` may apply, decomposed on the model's first use (with
    a progress bar); an empty store when it applies none (the base model only)."""
    from t2cli.adaptive import strategy_experts
    from t2cli.svd_store import empty_store, find_store, open_or_decompose

    chosen = strategy_experts(registry, loaded.name, strategy, experts, loaded.fingerprint)
    if not chosen:  # nothing to apply, or no usable expert (AdaptiveModel.open says which)
        return empty_store(loaded)
    targets = chosen[0].targets
    store = find_store(loaded, targets)
    if store is None:
        with progress_bar(f"SVD of the {' '.join(targets)} matrices (first use only)") as update:
            store = open_or_decompose(loaded, targets, progress=update)
    return store


def show_mixture(adaptive: AdaptiveModel, shots: int, save_as: str | None) -> None:
    """What cem found on the shots; with `save_as`, the mixture registered under that name."""
    found = adaptive.cem
    weights = ", ".join(f"{name} {alpha:.3f}" for name, alpha in found.weights.items())
    fitness = "; ".join(
        f"{label} {value:.3f}"
        for label, value in (("accuracy", found.accuracy), ("log-likelihood", found.loglik))
        if value is not None
    )
    console.print(f"cem on {shots} shots: {fitness}; α: {weights}")
    if save_as:
        found.expert.name = save_as
        entry = adaptive.registry.add(found.expert)
        console.print(f"registered the mixture as {entry.name} ({entry.path})")
