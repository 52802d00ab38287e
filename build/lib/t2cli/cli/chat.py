"""`t2 chat --adapt STRATEGY`: talk to the self-adaptive model, one line per turn.

Each turn shows which expert pass 1 chose and how long each pass took. Reads stdin, so it also
runs non-interactively: `printf 'What is 2+3?\\n/quit\\n' | t2 chat --adapt loglik`.
Commands: /quit (or end of input), /reset (forget the conversation).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from t2cli.cli import common
from t2cli.cli.common import (
    PASS1_DTYPE_HELP,
    PASS1_TOKENS_HELP,
    console,
    err_console,
    progress_bar,
    status,
    user_errors,
)
from t2cli.defaults import DEFAULT_MODEL, STRATEGIES
from t2cli.errors import DispatchError
from t2cli.tasks import get_task
from t2cli.tasks.base import Task, read_jsonl

if TYPE_CHECKING:  # the library (torch) is imported when a command runs, not for `t2 --help`
    from t2cli.adaptive import AdaptiveModel
    from t2cli.cem import CEMConfig
    from t2cli.evaluate import EvalReport
    from t2cli.models import LoadedModel

ADAPT_HELP = f"Pass-1 strategy: {', '.join(STRATEGIES)}."
SHOTS_HELP = "cem shots: a JSONL file of task rows, or a number N of examples taken from --shots-split."



def load_shots(spec: str, task: Task, split: str, data_dir: Path | None, seed: int) -> tuple[list[dict], list[dict]]:
    """(shots, the split's other examples): from a JSONL file of rows, or N seeded picks of the split."""
    path = Path(spec)
    if path.is_file():
        rows = read_jsonl(path)
        try:
            shots = [task.to_example(row, f"shot-{i}") for i, row in enumerate(rows) if row is not None]
        except (KeyError, ValueError, TypeError) as error:
            raise DispatchError(f"{path}: a row is not a {task.name} example ({error})") from error
        if not shots:
            raise DispatchError(f"{path} holds no {task.name} examples")
        return shots, []
    if not spec.isdigit():
        raise DispatchError(f"--shots {spec!r} is neither a file nor a number of examples")
    from t2cli.cem import split_shots

    return split_shots(task.load(split, data_dir).examples, int(spec), seed)


def open_adaptive(
    loaded: LoadedModel,
    adapt: str,
    task: Task | None = None,
    shots: Sequence[dict] = (),
    cem_config: CEMConfig | None = None,
    cache_size: int = 4,
    request_tokens: int | None = None,
    pass1_dtype: str | None = None,
) -> AdaptiveModel:
    """The two-pass model, with the SVD store its registered experts were made with."""
    from t2cli.adaptive import AdaptiveModel
    from t2cli.cem import CEMConfig
    from t2cli.registry import Registry
    from t2cli.svd_store import open_store

    registry = Registry()
    entries = [entry for entry in registry.list(loaded.name) if "targets" in entry.meta]
    if adapt.startswith("fixed:"):
        entries = [entry for entry in entries if entry.name == adapt.removeprefix("fixed:")] or entries
    store = open_store(loaded, entries[0].meta["targets"]) if entries else None
    if store is None and adapt != "none":
        raise DispatchError(
            f"no experts are registered for {loaded.name}: train some with `t2 train` or pull a set with "
            "`t2 experts pull`, then retry"
        )
    if adapt == "cem" and task is None:
        raise DispatchError("--adapt cem needs --task T and --shots FILE|N")
    if adapt == "cem":
        with progress_bar("cem α search") as update:
            return AdaptiveModel(
                loaded,
                store,
                registry,
                "cem",
                task=task,
                shots=shots,
                cem_config=cem_config or CEMConfig(),
                cache_size=cache_size,
                cem_progress=lambda done, total, best: update(done, total, f"best shot accuracy {best:.2f}"),
            )
    return AdaptiveModel(
        loaded,
        store,
        registry,
        adapt,
        cache_size=cache_size,
        request_tokens=request_tokens,
        pass1_dtype=pass1_dtype,
    )


def chat_command(
    adapt: str = typer.Option("prompt", "--adapt", "-a", help=ADAPT_HELP),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded model name, local directory or Hub id."),
    task: str = typer.Option(None, "--task", help="Task of the cem shots (its prompt format and checker)."),
    shots: str = typer.Option(None, "--shots", help=SHOTS_HELP),
    shots_split: str = typer.Option("train", help="Split the N shots are drawn from."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Directory laid out like the bundled data."),
    generations: int = typer.Option(50, help="cem: at most this many generations."),
    population: int = typer.Option(32, help="cem: candidates per generation."),
    patience: int = typer.Option(None, help="cem: stop after this many generations without improvement."),
    per_matrix: bool = typer.Option(False, "--per-matrix", help="cem: one α per expert per matrix."),
    seed: int = typer.Option(0, help="Seed of the shot split and the cem search."),
    save_mixture: str = typer.Option(None, "--save-mixture", help="cem: register the found mixture as NAME."),
    max_new_tokens: int = typer.Option(256, help="Answer length limit."),
    history: bool = typer.Option(True, "--history/--no-history", help="Keep the conversation between turns."),
    cache_size: int = typer.Option(4, help="Composed experts kept in memory (each a full copy of the targets)."),
    pass1_tokens: int = typer.Option(None, help=PASS1_TOKENS_HELP),
    pass1_dtype: str = typer.Option(None, help=PASS1_DTYPE_HELP),
    dtype: str = common.dtype_option(),
    device: str = common.device_option(),
    device_map: str = common.device_map_option(),
) -> None:
    """Chat with the self-adaptive model: pass 1 picks an expert per turn, pass 2 answers."""
    from t2cli.cem import CEMConfig
    from t2cli.generation import GenerationConfig
    from t2cli.models import load_model

    with user_errors():
        task_obj = get_task(task) if task else None
        shot_examples: list[dict] = []
        if adapt == "cem":
            if task_obj is None or not shots:
                raise DispatchError("--adapt cem needs --task T and --shots FILE|N")
            shot_examples, _ = load_shots(shots, task_obj, shots_split, data_dir, seed)
        with status(f"loading {model}…"):
            loaded = load_model(model, dtype=dtype, device=device, device_map=device_map)
        config = CEMConfig(
            population=population, generations=generations, patience=patience, per_matrix=per_matrix, seed=seed
        )
        adaptive = open_adaptive(
            loaded, adapt, task_obj, shot_examples, config, cache_size, pass1_tokens, pass1_dtype
        )
        if adaptive.cem is not None:
            weights = ", ".join(f"{name} {alpha:.3f}" for name, alpha in adaptive.cem.weights.items())
            console.print(f"cem on {len(shot_examples)} shots: accuracy {adaptive.cem.accuracy:.2f}; α: {weights}")
            if save_mixture:
                adaptive.cem.expert.name = save_mixture
                entry = adaptive.registry.add(adaptive.cem.expert)
                console.print(f"registered the mixture as {entry.name} ({entry.path})")
    generation = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=1)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(
            f"[dim]{loaded.name}, --adapt {adapt} (pass-1 set-up {adaptive.setup_s:.2f} s). "
            "/reset forgets the conversation, /quit exits.[/]"
        )
    messages: list[dict[str, str]] = []
    while True:
        try:
            line = console.input("[bold green]you>[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and line == "":
            break  # end of piped input
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            messages = []
            console.print("[dim]conversation cleared[/]")
            continue
        messages = (messages if history else []) + [{"role": "user", "content": line}]
        with user_errors():
            answer = adaptive.generate(messages, generation)
        messages.append({"role": "assistant", "content": answer.text})
        decision = answer.decision
        chosen = f"{decision.expert_name} ({decision.label})" if decision.expert else "base model (other)"
        if not interactive:
            console.print(f"[bold green]you>[/] {line}")
        console.print(f"[bold cyan]t2>[/] {answer.text.strip()}", highlight=False)
        err_console.print(
            f"[dim]expert: {chosen} · pass 1 {answer.pass1_s:.2f} s · pass 2 {answer.pass2_s:.2f} s "
            f"(switching weights {answer.switch_s:.2f} s) · "
            f"{answer.num_new_tokens} tokens[/]",
            highlight=False,
        )


def adaptive_evaluator(
    loaded: LoadedModel,
    task: Task,
    adapt: str,
    shots: str | None,
    split: str,
    data_dir: Path | None,
    seed: int,
    cem_generations: int = 50,
    max_new_tokens: int | None = None,
    request_tokens: int | None = None,
    pass1_dtype: str | None = None,
) -> Callable[..., EvalReport]:
    """For `t2 eval --adapt`: a drop-in for `t2cli.evaluate.evaluate` that answers in two passes.

    cem shots (N examples of the evaluated split, or a file) are excluded from the evaluation.
    """
    from t2cli.adaptive import evaluate_adaptive
    from t2cli.cem import CEMConfig

    shot_examples: list[dict] = []
    if adapt == "cem":
        if not shots:
            raise DispatchError("--adapt cem needs --shots N (examples of the split, then not evaluated) or FILE")
        shot_examples, _ = load_shots(shots, task, split, data_dir, seed)
    config = CEMConfig(generations=cem_generations, seed=seed, max_new_tokens=max_new_tokens)
    adaptive = open_adaptive(
        loaded, adapt, task, shot_examples, config, request_tokens=request_tokens, pass1_dtype=pass1_dtype
    )

    def run(loaded: LoadedModel, task: Task, expert_name: str | None = None, **options) -> EvalReport:
        report = evaluate_adaptive(adaptive, task, exclude=shot_examples, **options)
        if adaptive.cem is not None:
            report.config["dispatch"]["cem"]["generations"] = len(adaptive.cem.history)
        return report

    return run
