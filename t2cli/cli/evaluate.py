"""`t2 eval --task T` and `t2 score --task T --predictions P.jsonl`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from t2cli.cli import common
from t2cli.cli.common import (
    EXPERTS_HELP,
    PASS1_DTYPE_HELP,
    PASS1_TOKENS_HELP,
    console,
    err_console,
    expert_names,
    fail,
    progress_bar,
    show_choice,
    status,
    task_from,
    task_options,
    user_errors,
    with_options,
)
from t2cli.cli.output import JSON_HELP, print_json
from t2cli.defaults import DEFAULT_MODEL
from t2cli.dispatch.table import strategy_names
from t2cli.tasks import TASKS, get_task

if TYPE_CHECKING:
    from t2cli.evaluate import EvalReport

TASK_HELP = f"Task: {', '.join(TASKS)}, or one added with `t2 tasks add`."


def report_table(report: EvalReport) -> Table:
    table = Table(
        title=f"{report.task} / {report.split} — {report.model}" + (f" + {report.expert}" if report.expert else "")
    )
    for column in ("accuracy", "correct / n", "cut off", "skipped rows", "wall time", "generation", "tokens/s"):
        table.add_column(column)
    table.add_row(
        f"[bold]{100 * report.accuracy:.2f}%[/]",
        f"{report.correct} / {report.n}",
        f"{report.cut_off} ({100 * report.cut_off_share:.0f}%)",
        str(report.skipped_rows),
        f"{report.wall_time_s:.1f} s",
        f"{report.new_tokens} tokens in {report.generation_s:.1f} s",
        f"{report.tokens_per_s:.1f}",
    )
    return table


def dispatch_table(report: EvalReport) -> Table | None:
    """For two-pass reports: where pass 1 sent the prompts, accuracy per choice, and pass costs."""
    dispatch = report.config.get("dispatch")
    if not dispatch:
        return None
    table = Table(title=f"pass 1 ({dispatch['strategy']}) — task domain: {dispatch['task_domain']}")
    for column in ("chosen label", "prompts", "share", "correct answers"):
        table.add_column(column)
    for label, counts in sorted(dispatch["by_label"].items(), key=lambda item: -item[1]["n"]):
        mark = " ✓" if label == dispatch["task_domain"] else ""
        table.add_row(
            f"{label}{mark}", str(counts["n"]), f"{counts['n'] / report.n:.0%}", f"{counts['correct']} / {counts['n']}"
        )
    ratio = dispatch["pass1_over_pass2"]
    table.caption = (
        f"pass 1 {dispatch['pass1_s']:.1f} s · pass 2 {dispatch['pass2_s']:.1f} s · pass 1 / pass 2 = "
        + (f"{ratio:.1%}" if ratio is not None else "-")
        + (f" · pass-1 set-up, once: {setup:.1f} s" if (setup := dispatch.get("pass1_setup_s")) else "")
    )
    return table


@with_options(task_options(TASK_HELP + " Or --task-file / --data."))
def eval_command(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded model name, local directory or Hub id."),
    split: str = typer.Option("test", help="Split to evaluate."),
    limit: int = typer.Option(None, help="Only the first N examples (a fixed, stated subset)."),
    expert: str = typer.Option(None, "--expert", "-e", help="Apply this registered expert (pass 2 only)."),
    lora: Path = typer.Option(
        None,
        "--lora",
        help="Evaluate with this PEFT LoRA adapter directory (the baseline; "
        "from `t2 train --method lora`) on the base model.",
    ),
    adapt: str = typer.Option(
        None, "--adapt", help=f"Two-pass inference: {', '.join(strategy_names())} (pass 1 picks the expert per prompt)."
    ),
    experts: str = typer.Option(None, "--experts", help=f"--adapt: {EXPERTS_HELP}"),
    shots: str = typer.Option(
        None,
        "--shots",
        help="cem: N shots of the split (not scored) or a JSONL file (default: 32, or half the split when smaller).",
    ),
    cem_generations: int = typer.Option(50, help="cem: at most this many generations of 32 candidates."),
    cem_tolerance: float = typer.Option(
        None,
        help="cem: stop once the elite candidates' mixtures agree to within this (the largest std of an "
        "expert's share αₖ/Σα), e.g. 0.01 (default: run every generation).",
    ),
    cem_fitness: str = typer.Option(
        None,
        help="cem: score candidates by loglik (the reference answers' log-likelihood, no "
        "generation; default), accuracy+loglik (shot accuracy, ties broken by it), or accuracy.",
    ),
    pass1_tokens: int = typer.Option(None, help=PASS1_TOKENS_HELP),
    pass1_dtype: str = typer.Option(None, help=PASS1_DTYPE_HELP),
    dtype: str = common.dtype_option(),
    device: str = common.device_option(),
    device_map: str = common.device_map_option(),
    data_dir: Path = typer.Option(None, "--data-dir", help="Directory laid out like the bundled data (extra splits)."),
    out: Path = typer.Option(None, "--out", help="Write report.json + samples.jsonl here (default runs/eval-…)."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue the unfinished evaluation in --out: its answered batches are kept and the rest is "
        "generated, as the unbroken run would (greedy runs; give the options of the run it continues).",
    ),
    batch_size: int = typer.Option(16, help="Prompts per generation batch."),
    max_new_tokens: int = typer.Option(None, help="Override the task's generation limit."),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (with --sample)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling p (with --sample)."),
    seed: int = typer.Option(0, help="Random seed for sampling."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    **options,
) -> None:
    """Generate answers for a task split (optionally with an expert) and score them.

    Answers are written to OUT/predictions.partial.jsonl as each batch finishes: Ctrl-C keeps them,
    scored, in OUT/samples.jsonl, and the same command with --resume goes on from them. A cem
    search keeps its state in OUT/search.partial.json after each generation and goes on from it."""
    from t2cli.dispatch.table import strategy_options
    from t2cli.embedded import answer_budget
    from t2cli.evaluate import EvalSpec, run_evaluation, write_report
    from t2cli.generation import GenerationConfig

    task_obj = task_from(options)
    if out is not None and out.exists() and not out.is_dir():
        fail(f"--out {out} is a file: give a directory for report.json and samples.jsonl")
    with user_errors():
        spec = EvalSpec(
            task=task_obj, model=model, split=split, limit=limit, data_dir=data_dir, expert=expert, lora=lora,
            adapt=adapt, experts=expert_names(experts), shots=shots, seed=seed, dtype=dtype, device=device,
            device_map=device_map, out=out, resume=resume,
            generation=GenerationConfig(
                max_new_tokens=max_new_tokens or answer_budget(model, task_obj), batch_size=batch_size,
                do_sample=sample, temperature=temperature, top_p=top_p, stop=tuple(task_obj.stop), seed=seed,
            ),
        )  # fmt: skip
        if adapt:  # the options of every strategy, by field name: the chosen one takes its own
            values = {"request_tokens": pass1_tokens, "pass1_dtype": pass1_dtype, "generations": cem_generations}
            values |= {
                "fitness": cem_fitness,
                "tolerance": cem_tolerance,
                "seed": seed,
                "max_new_tokens": max_new_tokens,
            }
            spec.adapt_options = strategy_options(adapt, values)
        journal = spec.open_journal()
        if journal.reused:
            err_console.print(f"resuming: {journal.reused} answers kept from {journal.path}", highlight=False)
        try:
            report = run_evaluation(spec, journal=journal, stage=status, progress=progress_bar, on_routing=show_choice)
        except KeyboardInterrupt:
            fail(journal.keep_interrupted(task_obj, task_obj.load(split, data_dir).examples), code=130)
        summary_path, samples_path = write_report(report, journal.directory)
        journal.close()  # report.json + samples.jsonl hold the answers now
    show_report(report, summary_path, samples_path, json_output)


def show_report(report: EvalReport, summary_path: Path, samples_path: Path, json_output: bool) -> None:
    """The report as JSON (with where it was written), or its tables."""
    if json_output:
        print_json({**report.summary(), "report_path": str(summary_path), "samples_path": str(samples_path)})
        return
    console.print(report_table(report))
    if (routing := dispatch_table(report)) is not None:
        console.print(routing)
    console.print(f"report: {summary_path}\nsamples: {samples_path}")


def score_command(
    task: str = typer.Option(..., "--task", help=TASK_HELP),
    predictions: Path = typer.Option(..., "--predictions", "-p", help='JSONL with {"id": …, "output": …} per line.'),
    split: str = typer.Option("test", help="Split the ids belong to."),
    data_dir: Path = typer.Option(None, "--data-dir", help="Directory laid out like the bundled data."),
    out: Path = typer.Option(
        None, "--out", help='Write per-item results here: JSONL, {"id", "extracted", "correct"} per scored prediction.'
    ),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Score given outputs with the task's checkers (no model needed)."""
    from t2cli.files import atomic_write_text
    from t2cli.scoring import score_predictions

    if out is not None and out.is_dir():
        fail(f"--out {out} is a directory: give a file name for the per-item JSONL")
    with user_errors():
        task_obj = get_task(task)
        started = time.perf_counter()
        report = score_predictions(task_obj, predictions, split=split, data_dir=data_dir)
        elapsed = time.perf_counter() - started
        if out is not None:
            rows = "".join(json.dumps(vars(row), ensure_ascii=False) + "\n" for row in report.rows)
            try:
                atomic_write_text(out, rows)
            except OSError as error:
                fail(f"cannot write --out {out}: {error.strerror or error}")
    if json_output:
        summary = {k: v for k, v in report.to_dict().items() if k != "rows"}
        print_json(
            {
                **summary,
                "split": split,
                "predictions": str(predictions),
                "time_s": round(elapsed, 2),
                "out": str(out) if out else None,
            }
        )
        return
    table = Table(title=f"{task} / {split} — {predictions}")
    for column in ("accuracy", "correct / scored", "split examples without prediction", "time"):
        table.add_column(column)
    table.add_row(
        f"[bold]{100 * report.accuracy:.2f}%[/]",
        f"{report.correct} / {report.n}",
        str(report.missing),
        f"{elapsed:.1f} s",
    )
    console.print(table)
    if out is not None:
        console.print(f"per-item results: {out}")


def compare_command(
    report_a: Path = typer.Argument(..., help="A `t2 eval --out` directory (report.json + samples.jsonl)."),
    report_b: Path = typer.Argument(..., help="Another one, of the same task split."),
    label_a: str = typer.Option(None, help="Name for the first run (default: its expert or model)."),
    label_b: str = typer.Option(None, help="Name for the second run."),
) -> None:
    """Compare two evaluations of one task item by item: who got what right, and McNemar's exact p."""
    from t2cli.compare import compare, load_run

    with user_errors():
        result = compare(load_run(report_a, label_a), load_run(report_b, label_b))
    table = Table(title=f"{result.task} / {result.split}: {result.n} items scored by both")
    for column in ("run", "accuracy", "correct", "only this run correct"):
        table.add_column(column)
    table.add_row(result.a, f"{result.a_accuracy:.2%}", str(result.a_correct), str(result.only_a))
    table.add_row(result.b, f"{result.b_accuracy:.2%}", str(result.b_correct), str(result.only_b))
    console.print(table)
    verdict = "a difference this large is rare by chance" if result.p_value < 0.05 else "within chance"
    console.print(
        f"both correct: {result.both} · McNemar exact two-sided p = {result.p_value:.3g} ({verdict} at 0.05)",
        highlight=False,
    )
