"""Choose a model's answer-token budget per task on the validation split, from one generation.

Greedy decoding is prefix-consistent: the answer a budget of B tokens gives is the first B tokens
of the answer a larger budget gives (same prompts, same batches). So the script generates once at
the largest budget and scores every smaller one from the same token ids, cut at B — each budget's
accuracy and the share of answers it cuts off, side by side, for the cost of one run.

The chosen budget is the smallest whose validation accuracy is within --tolerance points of the
best one (longer budgets cost time in every later evaluation and rollout). Test splits are never
read.

    python bench/token_budget.py -m qwen2.5-coder-0.5b --task arc-easy --limit 50 \
        --budgets 192,320,512,768 [--dtype bfloat16] [--batch 16]

Writes bench/results/token-budget-<model>-<task>.json (per budget: accuracy, cut-off share,
mean tokens; the choice; the command, machine and provenance) and, beside it, .samples.jsonl
(the longest budget's answers).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from t2cli.generation import GenerationConfig, chat_prompt, decode_answer, generate
from t2cli.models import load_model
from t2cli.provenance import report_record as provenance
from t2cli.scoring import score_outputs
from t2cli.tasks import get_task

RESULTS = Path(__file__).resolve().parent / "results"


def budget_rows(task, examples, completions, tokenizer, budgets, stop):
    """Accuracy and cut-off share of each budget, from completions generated at max(budgets)."""
    rows = []
    for budget in sorted(budgets):
        outputs, cut = [], 0
        for completion in completions:
            text, cut_off = decode_answer(tokenizer, completion.completion_ids[:budget], budget, stop)
            cut += cut_off
            outputs.append(text)
        scored = score_outputs(task, examples, outputs)
        tokens = [min(len(c.completion_ids), budget) for c in completions]
        rows.append(
            {
                "budget": budget,
                "accuracy": round(scored.accuracy, 4),
                "correct": scored.correct,
                "n": scored.n,
                "cut_off": cut,
                "cut_off_share": round(cut / len(completions), 4),
                "mean_tokens": round(sum(tokens) / len(tokens), 1),
            }
        )
    return rows


def choose(rows, tolerance_points: float) -> int:
    best = max(row["accuracy"] for row in rows)
    return min(row["budget"] for row in rows if row["accuracy"] >= best - tolerance_points / 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--task", required=True)
    parser.add_argument("--split", default="validation", choices=["validation", "dev", "train"])
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--budgets", default="192,320,512,768")
    parser.add_argument("--tolerance", type=float, default=1.0, help="points of accuracy a shorter budget may give up")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    budgets = sorted({int(b) for b in args.budgets.split(",")})
    task = get_task(args.task)
    loaded = load_model(args.model, dtype=args.dtype)
    examples = task.load(args.split).examples[: args.limit]
    prompts = [chat_prompt(loaded.tokenizer, task.messages(example)) for example in examples]
    stop = tuple(task.stop)
    started = time.perf_counter()

    def progress(finished, total, tokens):
        elapsed = time.perf_counter() - started
        print(f"  {finished}/{total} prompts, {tokens} tokens, {elapsed:.0f} s", file=sys.stderr, flush=True)

    config = GenerationConfig(max_new_tokens=budgets[-1], batch_size=args.batch, stop=stop)
    completions = generate(loaded, prompts, config, progress=progress)
    seconds = time.perf_counter() - started
    rows = budget_rows(task, examples, completions, loaded.tokenizer, budgets, stop)
    chosen = choose(rows, args.tolerance)
    record = {
        "model": args.model,
        "task": task.name,
        "split": args.split,
        "limit": args.limit,
        "dtype": args.dtype,
        "budgets": rows,
        "chosen": chosen,
        "rule": f"smallest budget within {args.tolerance} points of the best validation accuracy",
        "generation_s": round(seconds, 1),
        "new_tokens": sum(c.num_new_tokens for c in completions),
        "command": "python bench/token_budget.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "provenance": provenance(loaded),
    }
    out = args.out or RESULTS / f"token-budget-{args.model}-{task.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    samples = out.with_suffix(".samples.jsonl")  # the longest budget's answers; shorter ones are their prefixes
    samples.write_text(
        "".join(
            json.dumps({"id": example.id, "output": completion.text, "tokens": completion.num_new_tokens}) + "\n"
            for example, completion in zip(examples, completions)
        )
    )
    print(f"{'budget':>7} {'accuracy':>9} {'cut off':>8} {'mean tokens':>12}")
    for row in rows:
        print(f"{row['budget']:>7} {row['accuracy']:>9.1%} {row['cut_off_share']:>8.0%} {row['mean_tokens']:>12}")
    print(f"chosen: {chosen} ({record['rule']}); {seconds:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
