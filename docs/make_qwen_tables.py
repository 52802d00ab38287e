"""Print the tables of docs/RESULTS.md §0 (the embedded instruct models) from the committed reports:
the base table, the qwen2.5-coder-0.5b experts against base and LoRA on their test subsets (the
paper's Table 1), and two-pass adaptation on unseen tasks (its Table 2), each comparison with
McNemar's exact p (`t2 compare`). A cell whose report does not exist yet reads "—".

    .venv/bin/python docs/make_qwen_tables.py

The reports come from docs/run_qwen_base_evals.sh, docs/run_qwen_experts.sh and
docs/run_qwen_unseen.sh (their folders are the paths below).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from t2cli.compare import compare, load_run  # noqa: E402

RESULTS = ROOT / "docs" / "results"
MODEL = "qwen2.5-coder-0.5b"
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
BASE_ROWS = {  # task: its row's name (split, first n)
    "arc-challenge": "ARC-Challenge (dev, 200)",
    "arc-easy": "ARC-Easy (test, 200)",
    "gsm8k": "GSM8K (test, 200)",
    "math": "MATH (test, 200)",
    "mbpp-plus": "MBPP-Plus (test: the paper's MBPP-Pro, all 99)",
    "humaneval": "HumanEval (test, all 164)",
}
# expert: its trained task (the dispatch classifier has no LoRA baseline)
EXPERT_TASKS = {"math": "gsm8k", "code": "mbpp-plus", "reasoning": "arc-easy", "dispatch-cls": "cls"}
UNSEEN = ("arc-challenge", "humaneval", "math")
ROWS = ("expert-math", "expert-code", "expert-reasoning", "prompt", "cls", "loglik-cls", "centroid", "cem")


def report(folder: Path) -> dict | None:
    file = folder / "report.json"
    return json.loads(file.read_text()) if file.exists() else None


def accuracy(r: dict | None, cut_off: bool = False) -> str:
    if r is None:
        return "—"
    cell = f"{100 * r['accuracy']:.1f}% ({r['correct']}/{r['n']})"
    cell += f", {round(100 * r.get('cut_off_share', 0), 1):g}% cut off" if cut_off else ""
    # reports record their dtype; the ones written before they did are float32 runs
    dtype = r.get("provenance", {}).get("dtype", "float32")
    return cell + (f", {dtype}" if dtype != "float32" else "")


def p_value(a: Path, b: Path) -> str:
    """McNemar's exact p of run b against run a, with who gained ("+3 / −1": items only b / only a got)."""
    if report(a) is None or report(b) is None:
        return "—"
    c = compare(load_run(a, "a"), load_run(b, "b"))
    return f"{c.p_value:.2g} (+{c.only_b} / −{c.only_a})"


def base_table() -> None:
    print("| task (split, first n) | " + " | ".join(MODELS) + " |")
    print("|---" * (len(MODELS) + 1) + "|")
    for task, name in BASE_ROWS.items():
        cells = [accuracy(report(RESULTS / "base-models" / model / task), cut_off=True) for model in MODELS]
        print(f"| {name} | " + " | ".join(cells) + " |")


def registered_svf(expert: str, task: str, model: str = MODEL) -> tuple[Path, str]:
    """The test report folder of the registered SVF expert (it names the iteration of the expert's
    state) and how far its run had got."""
    file = ROOT / "registry" / model / expert / "expert.json"
    if not file.exists():
        return RESULTS / "svf" / model / f"{task}-rl-not-registered", "not registered yet"
    recipe = json.loads(file.read_text())["provenance"]
    metrics, iters = recipe["metrics"], recipe["hyperparameters"]["iters"]
    best = metrics["best_iteration"]
    run = f"{metrics['iterations']} of {iters} iterations"
    if recipe["hyperparameters"].get("dtype", "float32") != "float32":
        run += f", trained in {recipe['hyperparameters']['dtype']}"
    if "--save-best" in recipe["command"]:  # registered from a run still going on
        run += ", interim"
    elif metrics["iterations"] < iters:
        run += f", stopped early (--patience {recipe['hyperparameters']['patience']})"
    return RESULTS / "svf" / model / f"{task}-rl-iteration-{best}", f"best validation state: iteration {best}; {run}"


def experts_table() -> None:
    print(
        "| expert (task, test subset; its state) | base | SVF | LoRA r16 | p SVF vs base | p LoRA vs base "
        "| p SVF vs LoRA |"
    )
    print("|---|---|---|---|---|---|---|")
    # the 0.5B's experts, then the 1.5B's one CPU-trained expert (no LoRA baseline)
    rows = [(MODEL, expert, task) for expert, task in EXPERT_TASKS.items()] + [("qwen2.5-coder-1.5b", "math", "gsm8k")]
    for model, expert, task in rows:
        base = RESULTS / "base-models" / model / task
        lora = RESULTS / "lora" / model / task
        svf, state = registered_svf(expert, task, model)
        name = expert if model == MODEL else f"{expert}, {model}"
        print(
            f"| {name} ({task}; {state}) | {accuracy(report(base))} | {accuracy(report(svf))} "
            f"| {accuracy(report(lora))} | {p_value(base, svf)} | {p_value(base, lora)} | {p_value(lora, svf)} |"
        )


def unseen_table(dtype: str = "float32") -> None:
    """Table 2 in one dtype: float32's base column is the base table's reports; another dtype's rows
    sit in adaptive/<model>-<dtype>/ beside their own base rows (<task>-base)."""
    folder_of = RESULTS / "adaptive" / (MODEL if dtype == "float32" else f"{MODEL}-{dtype}")
    if dtype != "float32":
        print(f"Rows in {dtype}:\n")
    header = (
        "task",
        "pass 2 answers with",
        "accuracy",
        "p vs base",
        "routed to the task's domain",
        "pass 1 / total time",
    )
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for task in UNSEEN:
        base = RESULTS / "base-models" / MODEL / task if dtype == "float32" else folder_of / f"{task}-base"
        print(f"| {task} | base model | {accuracy(report(base))} | | | |")
        if not any((folder_of / f"{task}-{row}" / "report.json").exists() for row in ROWS):
            print(f"| {task} | each expert, {', '.join(ROWS[3:])} | not run yet | | | |")
            continue
        for row in ROWS:
            folder = folder_of / f"{task}-{row}"
            r = report(folder)
            if r is None:
                print(f"| {task} | {row} | — | | | |")
                continue
            dispatch = r["config"].get("dispatch")
            routed = share = ""
            if dispatch:
                routed = f"{100 * dispatch['routed_to_task_domain']:.0f}%"
                total = dispatch["pass1_s"] + dispatch["pass2_s"]
                share = f"{100 * dispatch['pass1_s'] / total:.1f}%" if total else ""
                setup = dispatch.get("pass1_setup_s", 0.0)
                if "cem" in dispatch:
                    alphas = sorted(dispatch["cem"]["weights"].items(), key=lambda kv: -kv[1])
                    routed = "one mixture: " + ", ".join(f"{k} {v:.2f}" for k, v in alphas)
                    searched = dispatch["cem"].get("search_s", setup)  # over every run that continued it
                    share += f" (+ {searched:.0f} s search, {dispatch['cem']['generations']} generations, once)"
                elif setup >= 1:
                    share += f" (+ {setup:.0f} s set-up, once)"
            print(f"| {task} | {row} | {accuracy(r)} | {p_value(base, folder)} | {routed} | {share} |")


if __name__ == "__main__":
    base_table()
    print()
    experts_table()
    print()
    unseen_table()
    for other in sorted((RESULTS / "adaptive").glob(f"{MODEL}-*")):
        print()
        unseen_table(other.name.removeprefix(f"{MODEL}-"))
