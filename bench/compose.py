"""Benchmark: composing all targeted matrices, and generation speed with an expert applied.

Side by side in one run, on the same model, expert, prompts and batch:
  1. compose every target as t2 does ((U * s) @ Vh, delta form) vs the reference implementation's
     naive U @ diag_embed(s) @ Vh;
  2. greedy generation tokens/s with the base weights vs with the expert applied in place.

    python bench/compose.py [--model smollm2-135m] [--repeats 5] [--batch 8] [--new-tokens 32]

Prints a table and writes bench/results/compose.json. Goals (issue 2): compose ≥ 1.8× faster than
naive; adapted generation ≥ 0.95× the base tokens/s.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from t2cli.adapt import DenseAdapter, compose_naive
from t2cli.expert import ExpertVector
from t2cli.models import load_model
from t2cli.svd_store import decompose

PROMPTS = [
    "Which gas do plants take in from the air to make food?",
    "What is 12 times 7? Think step by step.",
    "Write a python function that reverses a string.",
    "Name three planets of the solar system.",
    "Why does ice float on water?",
    "Write a python function to check if a number is prime.",
    "A farmer has 15 cows and buys 8 more. How many cows does he have?",
    "What causes the seasons on Earth?",
]


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


@torch.no_grad()
def generation_speed(loaded, batch: int, new_tokens: int) -> float:
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in (PROMPTS * batch)[:batch]
    ]
    inputs = tokenizer(texts, return_tensors="pt", padding=True).to(loaded.device)
    started = time.perf_counter()
    out = loaded.model.generate(
        **inputs,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,  # same token count for both arms
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    elapsed = time.perf_counter() - started
    return (out.shape[1] - inputs["input_ids"].shape[1]) * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "compose.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    loaded = load_model(args.model)
    store = decompose(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store)
    generator = torch.Generator().manual_seed(0)
    z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
    expert = ExpertVector(z, "bench", loaded.name, loaded.fingerprint, store.targets)

    # 1. composition, alternating the two methods so machine noise hits both alike
    ours, naive = [], []
    adapter.compose(expert)  # warm-up
    for _ in range(args.repeats):
        ours += timed(lambda: adapter.compose(expert), 1)
        naive += timed(lambda: [compose_naive(adapter.factors[n], z[n]) for n in store.modules], 1)

    # 2. generation, base vs adapted, alternating
    base_speed, adapted_speed = [], []
    generation_speed(loaded, args.batch, 4)  # warm-up
    for _ in range(max(2, args.repeats // 2)):
        adapter.revert()
        base_speed.append(generation_speed(loaded, args.batch, args.new_tokens))
        adapter.apply(expert)
        adapted_speed.append(generation_speed(loaded, args.batch, args.new_tokens))
    adapter.revert()

    result = {
        "model": loaded.name,
        "targets": store.targets,
        "matrices": len(store.modules),
        "machine": {
            "cpu_count": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": str(loaded.device),
        },
        "compose_s": {"t2": statistics.median(ours), "naive": statistics.median(naive)},
        "compose_speedup": statistics.median(naive) / statistics.median(ours),
        "generation_tok_s": {"base": statistics.median(base_speed), "adapted": statistics.median(adapted_speed)},
        "generation_ratio": statistics.median(adapted_speed) / statistics.median(base_speed),
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
    }
    table = Table(title=f"compose + generation, {loaded.name}, {len(store.modules)} MLP matrices, {loaded.device}")
    for column in ("measure", "t2 / adapted", "naive / base", "ratio", "goal"):
        table.add_column(column)
    table.add_row(
        "compose all targets (s, median)",
        f"{result['compose_s']['t2']:.3f}",
        f"{result['compose_s']['naive']:.3f}",
        f"{result['compose_speedup']:.2f}× faster",
        "≥ 1.8×",
    )
    table.add_row(
        f"greedy generation tok/s (batch {args.batch})",
        f"{result['generation_tok_s']['adapted']:.1f}",
        f"{result['generation_tok_s']['base']:.1f}",
        f"{result['generation_ratio']:.3f}×",
        "≥ 0.95×",
    )
    Console().print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
