"""Benchmark: how stable is few-shot CEM? Seeds × fitness × shots on ARC-Challenge dev.

Each cell draws its shots from ARC-Challenge's *train* split (`split_shots(train, k, seed)`: the
seed picks the shots and seeds the search), searches α over the shipped domain experts with one
fitness (`t2cli.dispatch.cem_search`: accuracy+loglik, accuracy, loglik), then answers the first
`--dev-limit` items of the dev split (the official validation file; the same items in every cell) with the
mixture, greedy, the task's generation limit. Recorded per cell: α, shot fitness, the search's wall
time and number of candidates, dev accuracy and every item's correctness, the experts' tensor
sha256 (from their expert.json), the model fingerprint.

    PYTHONPATH=. python bench/cem.py [--cells SPEC ...] [--dev-limit 50] [--out bench/results/cem.jsonl]
    PYTHONPATH=. python bench/cem.py --summary   # the table, base and loglik-cls beside it

A cell SPEC is FITNESS:SHOTS:SEEDS:POPULATION:GENERATIONS[:per-matrix], e.g. loglik:32:0,1,2:16:6.
Cells run in the order given; one JSON line per finished (cell, seed) is appended to --out and a
rerun skips what is there (resumable). A second worker may write to STEM-NAME.jsonl beside --out
(`--out bench/results/cem-2.jsonl`): the runs and --summary read both. --summary reads them and
the committed base / loglik-cls reports (docs/results/) for the same dev items, and writes
bench/results/cem.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
# In priority order, so that an interrupted run still holds whole rows (every cell: 6 candidates × 2
# generations). For one (shots, seed) the searches of one process share a memo of shot scores: the
# same seed samples the same first generation, so `accuracy` after `accuracy+loglik` re-scores only
# what differs.
DEFAULT_CELLS = (
    *(f"accuracy+loglik:10:{seed}:6:2" for seed in SEEDS),
    *(f"loglik:10:{seed}:6:2" for seed in SEEDS),
    *(f"loglik:32:{seed}:6:2" for seed in SEEDS),
    *(f"accuracy:10:{seed}:6:2" for seed in SEEDS),
    *(f"loglik:10:{seed}:6:2:per-matrix" for seed in SEEDS),
    *(f"accuracy+loglik:32:{seed}:6:2" for seed in SEEDS),
    *(f"accuracy:32:{seed}:6:2" for seed in SEEDS),
)
BASELINES = {
    "base": ROOT / "docs/results/base/arc-challenge-dev",
    "loglik-cls": ROOT / "docs/results/adaptive/arc-challenge-dev-loglik-cls",
}


def parse_cell(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) not in (5, 6) or (len(parts) == 6 and parts[5] != "per-matrix"):
        raise SystemExit(f"bad cell {spec!r}: FITNESS:SHOTS:SEEDS:POPULATION:GENERATIONS[:per-matrix]")
    fitness, shots, seeds, population, generations = parts[:5]
    return {
        "fitness": fitness,
        "shots": int(shots),
        "seeds": [int(s) for s in seeds.split(",")],
        "population": int(population),
        "generations": int(generations),
        "per_matrix": len(parts) == 6,
    }


def cell_key(cell: dict, seed: int) -> str:
    alpha = "per-matrix" if cell["per_matrix"] else "global"
    return f"{cell['fitness']}/{cell['shots']}shots/{alpha}/p{cell['population']}g{cell['generations']}/seed{seed}"


def read_lines(path: Path) -> list[dict]:
    """The results in `path` and in its siblings STEM-*.jsonl (other workers' files)."""
    files = [path, *sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))]
    return [json.loads(line) for file in files if file.is_file() for line in file.read_text().splitlines() if line]


def run(args: argparse.Namespace) -> None:
    import torch

    from t2cli.adapt import DenseAdapter
    from t2cli.dispatch import ExpertSwitch, domain_experts, load_domain_experts
    from t2cli.dispatch.cem_search import CEMConfig, cem_search, split_shots
    from t2cli.evaluate import evaluate
    from t2cli.generation import GenerationConfig
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.svd_store import decompose
    from t2cli.tasks import get_task

    done = {line["cell"] for line in read_lines(args.out)}
    cells = [parse_cell(spec) for spec in args.cells]
    todo = [(cell, seed) for cell in cells for seed in cell["seeds"] if cell_key(cell, seed) not in done]
    print(f"{len(todo)} cell runs to do ({len(done)} already in {args.out})", flush=True)
    if not todo:
        return
    loaded = load_model(args.model)
    store = decompose(loaded, ["mlp"])
    registry = Registry()
    experts = list(load_domain_experts(registry, loaded.name).values())
    expert_files = {}
    for domain, name in domain_experts(registry, loaded.name).items():
        entry = registry.find(name, loaded.name)
        expert_files[name] = {
            "domain": domain,
            "tensors_sha256": entry.meta["tensors_sha256"],
            "path": str(entry.path.relative_to(ROOT) if entry.path.is_relative_to(ROOT) else entry.path),
        }
    switch = ExpertSwitch(DenseAdapter(loaded, store))
    task = get_task("arc-challenge")
    train = task.load("train").examples
    dev_items = task.load("dev").examples[: args.dev_limit]
    generation = GenerationConfig(max_new_tokens=task.max_new_tokens, batch_size=args.batch, stop=tuple(task.stop))
    memos: dict[tuple, dict] = {}  # (shots, seed, per-matrix) -> shot scores by α
    dev_results = {json.dumps(line["alpha_raw"]): line for line in read_lines(args.out)}  # the same α: same answers
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for cell, seed in todo:
        key = cell_key(cell, seed)
        if key in {line["cell"] for line in read_lines(args.out)}:  # another worker did it meanwhile
            continue
        shots, _ = split_shots(train, cell["shots"], seed)
        config = CEMConfig(
            population=cell["population"],
            generations=cell["generations"],
            per_matrix=cell["per_matrix"],
            seed=seed,
            fitness=cell["fitness"],
            batch_size=args.batch,
            stop_at_perfect=False,
            max_new_tokens=args.shot_tokens,
        )
        print(f"{key}: searching", flush=True)
        memo = memos.setdefault((cell["shots"], seed, cell["per_matrix"]), {})
        started, cpu = time.perf_counter(), time.process_time()
        found = cem_search(loaded, switch, experts, task, shots, config, scores=memo)
        search_s, search_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        alpha_raw = json.dumps(found.alphas.tolist())
        started, cpu = time.perf_counter(), time.process_time()
        if alpha_raw in dev_results:
            previous = dev_results[alpha_raw]
            dev = {k: previous[k] for k in ("dev_n", "dev_correct", "dev_accuracy", "dev_new_tokens", "dev_items")}
            dev["dev_from"] = previous["cell"]
        else:
            adapter = switch.adapter  # not switch.use: its cache is by name, and every cell's mixture has one name
            adapter.load_weights(adapter.compose(found.expert), key)
            try:
                report = evaluate(loaded, task, split="dev", limit=args.dev_limit, generation=generation)
            finally:
                adapter.revert()
            correct = {sample["id"]: bool(sample["correct"]) for sample in report.samples}
            dev = {
                "dev_n": report.n,
                "dev_correct": report.correct,
                "dev_accuracy": report.accuracy,
                "dev_new_tokens": report.new_tokens,
                "dev_items": "".join("1" if correct[example["id"]] else "0" for example in dev_items),
            }
        dev_s, dev_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        line = {
            "cell": key,
            "fitness": cell["fitness"],
            "shots": cell["shots"],
            "per_matrix": cell["per_matrix"],
            "population": cell["population"],
            "generations": cell["generations"],
            "seed": seed,
            "shot_ids": [example["id"] for example in shots],
            "alpha": found.weights,
            "alpha_raw": json.loads(alpha_raw),
            "alpha_matrix_std": (
                {n: round(float(a), 4) for n, a in zip(found.experts, found.alphas.std(dim=1))}
                if found.alphas.ndim == 2
                else None
            ),
            "shot_accuracy": found.accuracy,
            "shot_loglik": found.loglik,
            "shot_tokens": args.shot_tokens,
            "evaluations": found.evaluations,
            "reused": found.reused,
            "search_s": round(search_s, 1),
            "search_cpu_s": round(search_cpu_s, 1),
            "history": found.history,
            **dev,
            "dev_s": round(dev_s, 1),
            "dev_cpu_s": round(dev_cpu_s, 1),
            "experts": expert_files,
            "model": loaded.name,
            "model_fingerprint": loaded.fingerprint,
            "machine": machine,
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with args.out.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        dev_results.setdefault(alpha_raw, line)
        print(
            f"{key}: α {found.weights} · shots acc {found.accuracy} loglik {found.loglik} · search {search_s:.0f} s"
            f" ({search_cpu_s:.0f} s CPU) · dev {dev['dev_correct']}/{dev['dev_n']} ({dev_s:.0f} s)",
            flush=True,
        )


def baseline(directory: Path, ids: list[str]) -> dict:
    """A committed report's correctness on `ids` (its samples), with the experts it names."""
    samples = {}
    for line in (directory / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        samples[sample["id"]] = bool(sample["correct"])
    missing = [i for i in ids if i not in samples]
    if missing:
        raise SystemExit(f"{directory} has no sample for {len(missing)} of the dev items (e.g. {missing[0]})")
    items = "".join("1" if samples[i] else "0" for i in ids)
    return {"report": str(directory.relative_to(ROOT)), "dev_correct": items.count("1"), "dev_items": items}


def summary(args: argparse.Namespace) -> None:
    lines = read_lines(args.out)
    if not lines:
        raise SystemExit(f"no results in {args.out}: run the bench first")
    from t2cli.tasks import get_task

    n = min(line["dev_n"] for line in lines)  # cells that answered more items count their first n
    ids = [example["id"] for example in get_task("arc-challenge").load("dev").examples[:n]]
    baselines = {name: baseline(path, ids) for name, path in BASELINES.items()}
    groups: dict[str, list[dict]] = {}
    for line in lines:
        groups.setdefault(line["cell"].rsplit("/seed", 1)[0], []).append(line)
    rows = []
    base_items = baselines["base"]["dev_items"]
    for group, members in groups.items():
        accuracies = [m["dev_items"][:n].count("1") / n for m in members]
        rows.append(
            {
                "cell": group,
                "seeds": [m["seed"] for m in members],
                "dev_accuracy": accuracies,
                "mean": statistics.fmean(accuracies),
                "spread": max(accuracies) - min(accuracies),
                "alpha": [m["alpha"] for m in members],
                "search_s": [m["search_s"] for m in members],
                "search_cpu_s": [m["search_cpu_s"] for m in members],
                "evaluations": [m["evaluations"] for m in members],
                "dev_correct": [m["dev_items"][:n].count("1") for m in members],
                "p_vs_base": [paired_p(m["dev_items"][:n], base_items) for m in members],
            }
        )
    result = {
        "dev_items": f"arc-challenge dev, first {n}",
        "baselines": baselines,
        "cells": rows,
        "experts": lines[-1]["experts"],
        "machine": lines[-1]["machine"],
    }
    summary_path = args.out.with_suffix(".json")
    summary_path.write_text(json.dumps(result, indent=2) + "\n")
    for name, b in baselines.items():
        print(f"{name}: {b['dev_correct']}/{n} = {b['dev_correct'] / n:.1%}  ({b['report']})")
    for row in rows:
        accs = " ".join(f"{a:.1%}" for a in row["dev_accuracy"])
        alphas = " | ".join(" ".join(f"{v:.2f}" for v in a.values()) for a in row["alpha"])
        print(
            f"{row['cell']}: dev {accs} (mean {row['mean']:.1%}, spread {row['spread']:.1%}) · α {alphas} · "
            f"search s {row['search_s']} · p vs base {[round(p, 3) for p in row['p_vs_base']]}"
        )
    print(f"wrote {summary_path}")


def paired_p(items: str, other: str) -> float:
    from t2cli.compare import mcnemar_exact  # the paired test `t2 compare` prints

    only_a = sum(a == "1" and b == "0" for a, b in zip(items, other))
    only_b = sum(a == "0" and b == "1" for a, b in zip(items, other))
    return mcnemar_exact(only_a, only_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument(
        "--cells", nargs="+", default=list(DEFAULT_CELLS), help="FITNESS:SHOTS:SEEDS:POP:GENS[:per-matrix]"
    )
    parser.add_argument("--dev-limit", type=int, default=50, help="first N items of ARC-Challenge dev")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--shot-tokens",
        type=int,
        default=64,
        help="generation limit on the shots for the accuracy fitnesses (dev answers: the task's)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cem.jsonl")
    parser.add_argument("--summary", action="store_true", help="print the table from --out and write its .json")
    args = parser.parse_args()
    summary(args) if args.summary else run(args)


if __name__ == "__main__":
    main()
