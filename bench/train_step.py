"""Benchmark: one RL training iteration, SVF (t2's loop) vs the PEFT LoRA baseline, side by side.

Same model, same batch of training prompts, same rollouts. The parent process generates the
rollouts once with the base model (both methods start as the base model) and scores them; then each
measurement runs in a FRESH subprocess, so its peak RSS (`resource.getrusage` ru_maxrss) is its own:

  update     load → set up the run (`open_run`: method, optimiser) → the loop's `update` on the shared
             rollouts (REINFORCE loss over micro-batches, backward, grad clip, AdamW and LR step),
             repeated --repeats times (the first includes the optimiser-state allocation); time per
             step and peak RSS.
  iteration  load → set up → the loop's `train_step` for iteration 0: rollouts with the method's own
             adapted model (SVF: compose dense W' then generate; LoRA: generate through the unmerged
             adapter), reward, update; time and peak RSS.

SVF: z = sigmoid(p) per singular value of the MLP matrices, loss through t2's factorised forward,
lr 2e-3, clip 1e-3 (the paper). LoRA: rank 16 / alpha 32 / dropout 0.05 on the same matrices, lr 2e-4,
clip 1.0 (t2cli.train.config.METHOD_DEFAULTS). Both are the training loop's own methods, set up and
stepped by t2cli.train.loop, with the RL objective and λ = 0 (`t2 train` refuses RL for LoRA, as the
paper trains it with SFT; here both arms time the same step).

    python bench/train_step.py [--model smollm2-135m] [--batch 8] [--new-tokens 64] [--repeats 3]
    python bench/train_step.py --model path/to/tiny-hf-dir --batch 2 --new-tokens 8   # a quick check

Prints a table and writes bench/results/train_step.json. On a shared CPU, set OMP_NUM_THREADS.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ARMS = ("svf", "lora")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def run_config(args, method: str, out_dir: Path):
    """The training config of one arm: one RL step on --batch prompts, answers of ≤ --new-tokens."""
    from t2cli.train.config import TrainConfig

    return TrainConfig(
        task=args.task,
        model=args.model,
        method=method,
        objective="rl",
        batch_size=args.batch,
        max_new_tokens=args.new_tokens,
        generation_batch_size=args.batch,
        micro_batch_size=args.micro_batch,
        iters=args.repeats + 1,  # the timed steps stay before the end of the LR schedule
        out_dir=str(out_dir),
        name=f"bench-{method}",
    )


class BaseModel:
    """The rollout weights of both arms before their first step: the loaded model as it is."""

    def generation_weights(self):
        return nullcontext()


def shared_rollouts(args) -> tuple[list, float]:
    """The loop's iteration-0 batch, rolled out and scored by its RL objective with the base model."""
    from t2cli.models import load_model
    from t2cli.tasks import get_task
    from t2cli.train.rl import RLObjective
    from t2cli.train.schedule import batch_indices, select_train_examples

    loaded = load_model(args.model, device="cpu")
    task = get_task(args.task)
    config = run_config(args, "svf", Path("unused"))
    examples = select_train_examples(task, task.load("train").examples, config, loaded.tokenizer)
    batch = [examples[i] for i in batch_indices(config.seed, 0, len(examples), config.batch_size)]
    objective = RLObjective(
        loaded,
        task,
        rollouts_per_prompt=1,
        temperature=config.temperature,
        kl=0.0,
        seed=config.seed,
        rank=0,
        max_prompt_tokens=config.max_prompt_tokens,
        max_new_tokens=args.new_tokens,
        generation_batch_size=args.batch,
    )
    started = time.perf_counter()
    samples = objective.samples(batch, 0, BaseModel())
    return samples, time.perf_counter() - started


# --------------------------------------------------------------------------- one arm, in its own process


def run_arm(args) -> dict:
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.tasks import get_task
    from t2cli.train.loop import open_run, train_step, update
    from t2cli.train.objective import Sample

    loaded = load_model(args.model, device="cpu")
    task = get_task(args.task)
    result = {"method": args.arm, "phase": args.phase, "rss_after_load_mb": max_rss_mb()}
    work = Path(args.result).parent / f"{args.arm}-{args.phase}"
    config = run_config(args, args.arm, work / "run")
    with open_run(config, task, Registry(write_root=work / "registry"), loaded=loaded) as run:
        result |= {"parameters": run.method.num_parameters, "rss_after_setup_mb": max_rss_mb()}
        if args.phase == "update":
            samples = [Sample(**row) for row in json.loads(Path(args.rollouts).read_text())]
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                update(run, run.objectives["rl"], samples)
                times.append(time.perf_counter() - started)
            result |= {"update_s": times}
        else:
            line = train_step(run, 0)
            result |= {
                "rollout_s": line["time/rollout"],
                "iteration_s": line["time/iter"],
                "completion_tokens": round(line["completion/tokens"] * args.batch),
            }
    result["peak_rss_mb"] = max_rss_mb()
    if torch.cuda.is_available():
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# --------------------------------------------------------------------------- the parent


def child(args, arm: str, phase: str, rollouts_file: Path, workdir: Path) -> dict:
    out = workdir / f"{arm}-{phase}.json"
    command = [
        sys.executable,
        __file__,
        "--arm",
        arm,
        "--phase",
        phase,
        "--rollouts",
        str(rollouts_file),
        "--result",
        str(out),
        "--model",
        args.model,
        "--task",
        args.task,
        "--batch",
        str(args.batch),
        "--new-tokens",
        str(args.new_tokens),
        "--repeats",
        str(args.repeats),
        "--micro-batch",
        str(args.micro_batch),
    ]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="Update steps timed per method.")
    parser.add_argument("--micro-batch", type=int, default=8, help="Samples per forward/backward (as the loop).")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_step.json"))
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # internal: run one arm
    parser.add_argument("--phase", choices=("update", "iteration"), help=argparse.SUPPRESS)
    parser.add_argument("--rollouts", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        Path(args.result).write_text(json.dumps(run_arm(args)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    shared, base_rollout_s = shared_rollouts(args)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="t2-bench-") as tmp:
        workdir = Path(tmp)
        rollouts_file = workdir / "rollouts.json"
        rollouts_file.write_text(json.dumps([vars(s) for s in shared]))
        for arm in ARMS:
            for phase in ("update", "iteration"):
                console.print(f"[dim]{arm}: {phase} (fresh process)…[/]")
                results.setdefault(arm, {})[phase] = child(args, arm, phase, rollouts_file, workdir)

    def summary(arm: str) -> dict:
        update, iteration = results[arm]["update"], results[arm]["iteration"]
        steady = update["update_s"][1:] or update["update_s"]
        return {
            "parameters": update["parameters"],
            "update_s_median": statistics.median(steady),
            "update_s_first": update["update_s"][0],
            "update_s_all": update["update_s"],
            "rollout_reward_s": iteration["rollout_s"],
            "iteration_s": iteration["iteration_s"],
            "completion_tokens": iteration["completion_tokens"],
            "rss_after_load_mb": update["rss_after_load_mb"],
            "peak_rss_update_mb": update["peak_rss_mb"],
            "peak_rss_iteration_mb": iteration["peak_rss_mb"],
            **({"cuda_max_allocated_mb": update["cuda_max_allocated_mb"]} if "cuda_max_allocated_mb" in update else {}),
        }

    arms = {arm: summary(arm) for arm in ARMS}
    result = {
        "model": args.model,
        "task": args.task,
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "micro_batch": args.micro_batch,
        "repeats": args.repeats,
        "shared_rollouts": {
            "completion_tokens": sum(len(s.completion_ids) for s in shared),
            "mean_reward": sum(s.reward for s in shared) / len(shared),
            "base_generation_s": base_rollout_s,
        },
        "machine": {
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "device": "cpu",
        },
        "arms": arms,
        "raw": results,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    table = Table(
        title=f"one RL iteration: SVF vs LoRA r=16 — {args.model}, {args.task}, batch {args.batch}, "
        f"≤{args.new_tokens} new tokens"
    )
    for column in ("measure", "SVF", "LoRA", "LoRA / SVF"):
        table.add_column(column)

    def row(label: str, key: str, fmt: str) -> None:
        svf, lora = arms["svf"][key], arms["lora"][key]
        ratio = f"{lora / svf:.2f}×" if svf and math.isfinite(lora / svf) else "-"
        table.add_row(label, format(svf, fmt), format(lora, fmt), ratio)

    row("trainable parameters", "parameters", ",")
    row(f"update step, same rollouts (s, median of {max(1, args.repeats - 1)})", "update_s_median", ".3f")
    row("first update step (s, + optimiser state)", "update_s_first", ".3f")
    row("rollout + reward, own adapter (s)", "rollout_reward_s", ".3f")
    row("whole iteration (s)", "iteration_s", ".3f")
    row("RSS after model load (MB)", "rss_after_load_mb", ".0f")
    row("peak RSS, update steps (MB)", "peak_rss_update_mb", ".0f")
    row("peak RSS, whole iteration (MB)", "peak_rss_iteration_mb", ".0f")
    console.print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
