"""Print the tables of docs/RESULTS.md (training, paired comparisons, two-pass adaptation) from the
committed reports, so every number there is read from a file a command in this repository wrote.

    .venv/bin/python docs/make_results_tables.py
    .venv/bin/python docs/make_results_tables.py --check   # exit 1 if a report's experts changed since

`--check` compares every committed report.json with the shipped registry/ (t2cli.provenance): a row
whose expert was replaced after it was measured, or a report without provenance, fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
TASKS = {  # task: (base and SVF report folder, SVF expert, LoRA run)
    "arc-easy": ("arc-easy", "reasoning", "arc-easy-lora"),
    "gsm8k": ("gsm8k-test400", "math", "gsm8k-lora150"),  # the first 400 test items (the first 100: gsm8k/)
    "mbpp-plus": ("mbpp-plus", "code", "mbpp-plus-lora"),
}
UNSEEN = {"arc-challenge": "arc-challenge-dev", "math": "math", "humaneval": "humaneval"}
PAIRS = [  # (run A, run B) report folders under docs/results, compared item by item (`t2 compare`)
    ("base/arc-easy", "svf/arc-easy"),
    ("base/arc-easy", "lora/arc-easy"),
    ("svf/arc-easy", "lora/arc-easy"),
    ("base/gsm8k-test400", "svf/gsm8k-test400"),
    ("base/gsm8k-test400", "lora/gsm8k-test400"),
    ("svf/gsm8k-test400", "lora/gsm8k-test400"),
    ("base/mbpp-plus", "svf/mbpp-plus"),
    ("base/mbpp-plus", "lora/mbpp-plus"),
    ("svf/mbpp-plus", "lora/mbpp-plus"),
    ("base/mbpp-heldout", "svf/mbpp-heldout"),  # MBPP test problems outside the code expert's pool
]


def report(path: Path) -> dict | None:
    file = path / "report.json"
    return json.loads(file.read_text()) if file.exists() else None


def accuracy(r: dict | None) -> str:
    return f"{100 * r['accuracy']:.1f}% ({r['correct']}/{r['n']})" if r else "not run"


def train_seconds(run: str) -> float:
    """Training + validation time summed over a run's iterations (metrics.jsonl; survives --resume),
    else the expert's recorded wall time (expert.json) when its metrics file was not kept."""
    metrics = RESULTS / "train" / run / "metrics.jsonl"
    if not metrics.exists():
        meta = RESULTS / "train" / run / "expert.json"
        return json.loads(meta.read_text())["provenance"]["wall_time_s"] if meta.exists() else 0.0
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return sum(m.get("time/iter", 0) + m.get("time/val", 0) for m in lines)


def training() -> None:
    print("| task (test subset) | base | LoRA r16 | SVF | trainable params LoRA / SVF | training time LoRA / SVF |")
    print("|---|---|---|---|---|---|")
    for task, (base, expert, lora) in TASKS.items():
        svf_meta = RESULTS / "train" / expert / "expert.json"
        lora_meta = RESULTS / "train" / lora / "t2_lora.json"
        svf = json.loads(svf_meta.read_text()) if svf_meta.exists() else {}
        lo = json.loads(lora_meta.read_text()) if lora_meta.exists() else {}
        lora_cell = accuracy(report(RESULTS / "lora" / base))
        if lora_cell == "not run" and lo.get("metrics", {}).get("best_iteration") == 0:
            lora_cell = "= base (no iteration beat it on validation: the saved adapter has B = 0)"
        print(
            f"| {task} | {accuracy(report(RESULTS / 'base' / base))} | {lora_cell} "
            f"| {accuracy(report(RESULTS / 'svf' / base))} "
            f"| {lo.get('trainable_parameters', 0):,} / {svf.get('num_parameters', 0):,} "
            f"| {train_seconds(lora):.0f} s / {train_seconds(expert):.0f} s |"
        )


def adaptive() -> None:
    print("| task (subset) | strategy | accuracy | routed to the task's domain | pass 1 / pass 2 time |")
    print("|---|---|---|---|---|")
    for task, folder in UNSEEN.items():
        print(f"| {task} | base (none) | {accuracy(report(RESULTS / 'base' / folder))} | - | - |")
        for path in sorted((RESULTS / "adaptive").glob(f"{folder}-*")):
            r = report(path)
            if r is None:
                continue
            d = r["config"]["dispatch"]
            strategy = path.name.removeprefix(f"{folder}-")
            ratio = f"{100 * d['pass1_over_pass2']:.1f}% ({d['pass1_s']:.0f} s / {d['pass2_s']:.0f} s)"
            labels = ", ".join(f"{k} {v}" for k, v in sorted(d["labels"].items(), key=lambda kv: -kv[1]))
            routed = f"{100 * d['routed_to_task_domain']:.0f}% ({labels})"
            if "cem" in d:  # one mixture for every prompt, searched once on the shots
                alphas = sorted(d["cem"]["weights"].items(), key=lambda kv: -kv[1])
                weights = ", ".join(f"{k} {v:.2f}" for k, v in alphas)
                routed = f"one mixture, α: {weights}"
                ratio = f"no per-prompt pass 1 (α searched once: {d['cem']['generations']} generations on the shots)"
            print(f"| {task} | {strategy} | {accuracy(r)} | {routed} | {ratio} |")


def paired() -> None:
    """McNemar's exact test on the items both runs answered (t2cli.compare, as `t2 compare A B`)."""
    import sys

    sys.path.insert(0, str(ROOT))
    from t2cli.compare import compare, load_run

    print("| task (items) | A | B | A correct | B correct | only A | only B | p (McNemar exact) |")
    print("|---|---|---|---|---|---|---|---|")
    for a, b in PAIRS:
        if report(RESULTS / a) is None or report(RESULTS / b) is None:
            continue
        c = compare(load_run(RESULTS / a, a.split("/")[0]), load_run(RESULTS / b, b.split("/")[0]))
        print(
            f"| {c.task} ({c.n}) | {c.a} | {c.b} | {c.a_correct} | {c.b_correct} | {c.only_a} | {c.only_b} "
            f"| {c.p_value:.2g} |"
        )


def check() -> int:
    import sys

    sys.path.insert(0, str(ROOT))
    from t2cli.provenance import check_record, check_reports
    from t2cli.registry import Registry

    shipped = ROOT / "registry"
    registry = Registry(roots=[shipped], write_root=shipped)
    findings = check_reports(RESULTS, registry)
    print(f"{len(list(RESULTS.rglob('report.json')))} reports checked against registry/")
    records, elsewhere = bench_records(registry)
    for source, record in records:
        findings += check_record(source, record, registry)
    print(f"{len(records)} benchmark records (bench/results) checked against registry/")
    for source in elsewhere:  # e.g. the new-domain experts, made in a scratch registry on purpose
        print(f"not checked: {source.relative_to(ROOT)} names experts made outside registry/")
    for finding in findings:
        print(f"stale: {finding.report.relative_to(ROOT)}: {finding.problem}")
    print(f"{len(findings)} finding(s)")
    return 1 if findings else 0


def bench_records(registry) -> tuple[list[tuple[Path, dict]], list[Path]]:
    """The provenance of the benchmark outputs that used registered experts: bench JSON files with a
    `provenance` key, and every line of bench/results/cem*.jsonl (its `experts`: {name: {tensors_sha256}}).
    Second: the files whose experts were made outside the shipped registry (not checkable here)."""
    bench = ROOT / "bench" / "results"
    records, elsewhere = [], []
    for path in sorted(bench.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "provenance" in data:
            names = data["provenance"]["experts"]
            shipped = {entry.name for entry in registry.list(data["provenance"]["base_model"])}
            (records.append((path, data["provenance"])) if set(names) <= shipped else elsewhere.append(path))
    for path in sorted(bench.glob("cem*.jsonl")):
        for line in path.read_text().splitlines():
            cell = json.loads(line)
            experts = {name: entry["tensors_sha256"] for name, entry in cell["experts"].items()}
            record = {"base_model": cell["model"], "base_fingerprint": cell["model_fingerprint"], "experts": experts}
            records.append((path, record))
    return records, elsewhere


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--check"]:
        raise SystemExit(check())
    training()
    print()
    paired()
    print()
    adaptive()
