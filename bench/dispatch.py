"""Benchmark: pass-1 dispatch accuracy and cost on the cls test split, every method side by side.

Methods (t2cli.dispatch): `prompt` (the base model writes the label, the paper's prompt-based
pass 1), `cls` (the classification expert writes it, the paper's classification-expert pass 1),
`loglik` / `loglik-cls` (no decoding: the label set is scored by log-likelihood after the same
dispatch prompt, base model / classification expert), `centroid` (no training: the nearest domain
centroid of the base model's hidden states, centroids made once from each expert's training
prompts — the cls *train* split, so never from the prompts measured), and the methods that read
only the last N tokens of each prompt (--request-tokens), and on a copy of the model in another
dtype (--pass1-dtypes float32,bfloat16). Same model, prompts and batch for all. One-time set-up
(centroids, calibration, model copy) is timed apart from the per-prompt seconds.

    python bench/dispatch.py [--model smollm2-135m] [--split test|validation] [--limit N] [--batch 16]
                             [--pass1-dtypes float32,bfloat16]

Over experts of one's own (a new domain): `--experts code,math,reasoning,geography` routes over those
and measures on the cls split built from their tasks (`t2cli.dispatch.classifier_task`);
`--held-out geography` adds that expert's task's validation rows (prompts no expert or classifier
was trained on), labelled with its domain (`geography:validation:bare`: the question alone, as typed
in a chat, without the task's answer-format instruction); `--classifiers dispatch-cls-4,dispatch-cls` runs the
classifier methods once per classifier. Accuracy is also reported per set and per domain.

Prints a table (accuracy, confusion, seconds per prompt) and writes bench/results/dispatch.json.
Needs the shipped domain experts and the dispatch classifier in the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from t2cli.adapt import DenseAdapter
from t2cli.adaptive import strategy_experts
from t2cli.dispatch import ExpertSwitch, classifier_task, make_dispatcher
from t2cli.dispatch.experts import domain_experts, expert_task
from t2cli.dispatch.table import STRATEGIES, strategy_options
from t2cli.evaluate import experts_record
from t2cli.expert import ExpertVector
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import decompose
from t2cli.tasks import get_task
from t2cli.tasks.datafile import task_from_spec

METHODS = ("prompt", "cls", "loglik", "loglik-cls", "centroid")
CLASSIFIED = ("cls", "loglik-cls")  # the methods that read with the classification expert


def routed_experts(experts: list[str] | None, classifier: str | None) -> list[str] | None:
    """The experts a run routes over: the chosen ones (None: the default set), and its classifier."""
    return (experts or []) + [classifier] if classifier else experts


def used_experts(registry: Registry, model: str, runs: list[tuple], experts: list[str] | None) -> list[ExpertVector]:
    """Every expert the runs could apply, as `t2 eval --adapt` records them (`strategy_experts`)."""
    used = {}
    for method, _, _, classifier in runs:
        used |= {e.name: e for e in strategy_experts(registry, model, method, routed_experts(experts, classifier))}
    return [used[name] for name in sorted(used)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--split", default="test", help="cls split: test, or validation to choose settings on")
    parser.add_argument("--limit", type=int, default=None, help="first N of the split (default all 200)")
    parser.add_argument("--batch", type=int, default=16, help="prompts per pass-1 batch")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--request-tokens",
        default="8,12,16",
        help="also run the loglik methods reading only N tokens of each prompt, for each N",
    )
    parser.add_argument(
        "--skip-full", action="store_true", help="skip the loglik/centroid runs that read whole prompts"
    )
    parser.add_argument(
        "--pass1-dtypes",
        default="float32",
        help="run the loglik methods on a copy of the model in each of these dtypes "
        "(float32, bfloat16, float16); bfloat16 pays off only on CPUs with bfloat16 units",
    )
    parser.add_argument("--experts", default=None, help="domain experts to route over (default: the registered set)")
    parser.add_argument(
        "--held-out",
        default="",
        help="also measure on these experts' tasks' validation rows (NAME, NAME:SPLIT, or NAME:SPLIT:bare for a "
        "data-file task's prompt field alone, without the answer-format instruction), labelled with their domain",
    )
    parser.add_argument(
        "--classifiers", default="", help="run the cls/loglik-cls methods once with each of these classifiers"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dispatch.json")
    args = parser.parse_args()

    console = Console()
    loaded = load_model(args.model)
    store = decompose(loaded, ["mlp"])
    switch = ExpertSwitch(DenseAdapter(loaded, store))
    registry = Registry()
    experts = args.experts.split(",") if args.experts else None
    if args.classifiers and experts is None:  # each classifier is named beside the default domain experts
        experts = list(domain_experts(registry, args.model).values())
    cls = classifier_task(registry, args.model, experts) if experts else get_task("cls")
    examples = cls.load(args.split).examples[: args.limit]
    questions = [example["question"] for example in examples]
    truth = [example["answer"] for example in examples]
    sets = [f"cls/{args.split}"] * len(examples)
    for spec in filter(None, args.held_out.split(",")):
        name, split, *bare = spec.split(":") + ([] if ":" in spec else ["validation"])
        expert = registry.load(name, args.model)
        task = expert_task(expert)
        if bare:  # a data-file task's prompt field alone, as a user would type it: no answer-format instruction
            task = task_from_spec({**expert.provenance["task_spec"], "instruction": ""})
        held_out = task.load(split).examples
        questions += [task.prompt(example) for example in held_out]
        truth += [expert.domain] * len(held_out)
        sets += [f"{task.name}/{split}" + (" (bare)" if bare else "")] * len(held_out)

    methods = args.methods.split(",")
    lengths = ([] if args.skip_full else [None]) + [int(n) for n in filter(None, args.request_tokens.split(","))]
    reads = [method for method in methods if STRATEGIES[method].takes("pass1_dtype")]  # prefill methods
    runs = [(method, None, None) for method in methods if method not in reads]
    runs += [(method, n, dtype) for dtype in args.pass1_dtypes.split(",") for method in reads for n in lengths]
    classifiers = list(filter(None, args.classifiers.split(",")))
    if classifiers:  # the classifier methods once per classifier
        runs = [
            (method, n, dtype, c)
            for method, n, dtype in runs
            for c in (classifiers if method in CLASSIFIED else [None])
        ]
    else:
        runs = [(method, n, dtype, None) for method, n, dtype in runs]
    results = {}
    for method, request_tokens, dtype, classifier in runs:
        options = strategy_options(
            method,
            {
                "request_tokens": request_tokens,
                "batch_size": args.batch,
                "pass1_dtype": None if dtype == "float32" else dtype,  # float32: the shared model itself
            },
        )
        dispatcher = make_dispatcher(
            method, loaded, switch, registry, options, experts=routed_experts(experts, classifier)
        )
        method += f" (≤{request_tokens} tokens)" if request_tokens else ""
        method += f", {dtype} copy" if dtype and dtype != "float32" else ""
        method += f" [{classifier}]" if classifier else ""
        setup_s = dispatcher.prepare()  # one-time: model copy, calibration prefill, centroids, first composition
        dispatcher.decide(questions[:2])  # warm-up: allocator
        started, cpu_started = time.perf_counter(), time.process_time()
        decisions = []
        for i in range(0, len(questions), args.batch):
            decisions += dispatcher.decide(questions[i : i + args.batch])
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started  # this process's CPU time: steadier on a shared machine
        labels = [decision.label for decision in decisions]
        correct = sum(label == answer for label, answer in zip(labels, truth))
        confusion = Counter(f"{answer}->{label}" for label, answer in zip(labels, truth))
        results[method] = {
            "accuracy": correct / len(truth),
            "correct": correct,
            "n": len(truth),
            "seconds": round(seconds, 2),
            "seconds_per_prompt": round(seconds / len(truth), 4),
            "cpu_seconds_per_prompt": round(cpu_seconds / len(truth), 4),
            "setup_seconds": round(setup_s, 2),
            "confusion": dict(sorted(confusion.items())),
            "per_domain": per_domain(labels, truth, sets),
        }
        console.print(f"{escape(method)}: {correct}/{len(truth)} in {seconds:.1f} s ({cpu_seconds:.1f} s CPU)")
    switch.use(None)

    table = Table(title=f"Pass-1 dispatch on cls/{args.split} ({len(truth)} prompts), {args.model}, batch {args.batch}")
    columns = ("method", "accuracy", "s / prompt", "CPU s / prompt", "vs fastest", "set-up s", "errors (truth->chosen)")
    for column in columns:
        table.add_column(column, overflow="fold")
    fastest = min(r["seconds_per_prompt"] for r in results.values())
    for method, r in results.items():
        table.add_row(
            escape(method),
            f"{100 * r['accuracy']:.1f}% ({r['correct']}/{r['n']})",
            f"{r['seconds_per_prompt']:.3f}",
            f"{r['cpu_seconds_per_prompt']:.3f}",
            f"{r['seconds_per_prompt'] / fastest:.1f}×",
            f"{r['setup_seconds']:.1f}",
            ", ".join(f"{k}: {v}" for k, v in r["confusion"].items() if k.split("->")[0] != k.split("->")[1]) or "—",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": shlex.join(["python", "bench/dispatch.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"CPU {torch.backends.cpu.get_cpu_capability()}, bfloat16 units: {cpu_has_bf16_units()}",
        "load_average_at_end": round(os.getloadavg()[0], 1),  # other jobs on the machine (1-minute load)
        "split": f"cls/{args.split}",
        "sets": dict(sorted(Counter(sets).items())),
        "experts": experts,
        "results": results,
        "provenance": experts_record(loaded, used_experts(registry, args.model, runs, experts)),
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {args.out}")


def per_domain(labels: list[str], truth: list[str], sets: list[str]) -> dict[str, dict]:
    """{set: {domain: correct, n, accuracy}}: how each domain's prompts of each set were routed."""
    counts: dict[str, dict[str, list[int]]] = {}
    for label, answer, name in zip(labels, truth, sets):
        tally = counts.setdefault(name, {}).setdefault(answer, [0, 0])
        tally[0] += label == answer
        tally[1] += 1
    return {
        name: {d: {"correct": c, "n": n, "accuracy": round(c / n, 4)} for d, (c, n) in sorted(domains.items())}
        for name, domains in sorted(counts.items())
    }


def cpu_has_bf16_units() -> bool:
    """Whether the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); without, bfloat16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


if __name__ == "__main__":
    main()
