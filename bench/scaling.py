"""Cost against model size: random-weight Llama-family models at real shapes, no download.

    OMP_NUM_THREADS=1 python bench/scaling.py --sizes 135m,360m,1.7b          # the CPU rows
    python bench/scaling.py --sizes 8b --device cuda                          # on one GPU
    python bench/scaling.py --cpu-dry-run                                     # the whole path, tiny shape
    python bench/scaling.py --plot-only                                       # redraw from the JSON

Per size, each stage in its own process (its peak resident set is read with os.wait4, the number
`/usr/bin/time -v` prints as "Maximum resident set size"; on a GPU the stage also reports
torch.cuda.max_memory_allocated):
  build      a random model of the shape, saved as safetensors with the SmolLM2 tokenizer (once)
  decompose  `t2 decompose DIR` (streams the matrices from the shards), cold: no cached fingerprint
  eval       load; base generation tok/s (batch 8, greedy, exactly --new-tokens each); apply a random
             expert (compose-all time); adapted tok/s; revert time with the originals kept in memory
             and re-read from the files (keep=device vs keep=files)
  rl / sft   one iteration of each objective by the training loop's own `train_step` (rollouts with
             dense composed weights, loss through the factorised layers, backward, AdamW step)
and beside each measured peak, the memory plan's prediction (t2cli.memory, from the config alone).
Results accumulate in bench/results/scaling.json (a size already measured is skipped unless
--force), then bench/results/scaling.png is drawn.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results" / "scaling.json"
PLOT = ROOT / "bench" / "results" / "scaling.png"
TOKENIZER = ROOT / "bench" / "assets" / "smollm2-tokenizer"
LLAMA3_8B = ROOT / "bench" / "configs" / "llama-3-8b" / "config.json"  # Llama-3-8B-Instruct's config.json

SMOLLM2 = {"vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 8192, "rope_theta": 100000.0}
SHAPES = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **SMOLLM2,
    },
    "135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        **SMOLLM2,
    },
    "360m": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        **SMOLLM2,
    },
    "1.7b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        **SMOLLM2,
    },
}
PROMPTS = [
    "Question: Which gas do plants take in from the air to make food?\nAnswer:",
    "Write a Python function that returns the sum of a list of numbers.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?",
    "The capital of France is",
    "Explain in one sentence why the sky is blue.",
    "def fibonacci(n):",
    "Question: What is 17 times 3?\nAnswer:",
    "List three prime numbers greater than ten.",
]
ANSWER = "The answer is 42 because six times seven is forty-two, as the question asks."


def shape(size: str) -> dict:
    if size == "8b":
        config = json.loads(LLAMA3_8B.read_text())
        return {k: v for k, v in config.items() if k not in ("architectures", "model_type", "torch_dtype")}
    return dict(SHAPES[size])


# --------------------------------------------------------------------------- build


def build(size: str, directory: Path, device: str) -> None:
    """A random model of the shape in bfloat16 (as real checkpoints ship), saved with the tokenizer."""
    if (directory / "config.json").is_file() and (directory / "tokenizer.json").is_file():
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    config = LlamaConfig(**shape(size), bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialised in bfloat16: no float32 copy of a large model
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(tmp, max_shard_size="2GB")
    del model
    for file in TOKENIZER.iterdir():
        if file.suffix == ".gz":
            (tmp / file.stem).write_bytes(gzip.decompress(file.read_bytes()))
        else:
            shutil.copy(file, tmp / file.name)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


# --------------------------------------------------------------------------- measured child processes


TIME = Path("/usr/bin/time")


def run_child(command: list[str], env: dict) -> tuple[float, int, str]:
    """(seconds, peak resident set in bytes, stdout) of one child process.

    Measured by `/usr/bin/time -v` when it exists: a child started from this process inherits this
    process's own peak in its rusage (fork/vfork, then exec), so the command runs as a grandchild of
    `time` (whose own footprint is a few MB). Without it: wait4 on the child, and the parent keeps
    itself small (models are built in a child too)."""
    started = time.time()
    timed = TIME.is_file()
    full = [str(TIME), "-v", *command] if timed else command
    process = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = process.communicate()
    seconds = time.time() - started
    out, err = out.decode(), err.decode()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{err[-3000:]}")
    if timed:
        line = next(line for line in err.splitlines() if "Maximum resident set size" in line)
        peak = int(line.split(":")[-1]) * 1024
    else:
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return seconds, peak, out


# --------------------------------------------------------------------------- stages (in the child)


def _timed(fn):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started, out


def _random_expert(loaded, store, seed: int = 0):
    import torch

    from t2cli.expert import ExpertVector

    generator = torch.Generator().manual_seed(seed)
    z = {name: torch.rand(rank, generator=generator) * 1.5 + 0.25 for name, rank in store.ranks.items()}
    return ExpertVector(z, "bench", loaded.name, loaded.fingerprint, store.targets)


def stage_eval(args) -> dict:
    import torch

    from t2cli.adapt import DenseAdapter
    from t2cli.models import load_model
    from t2cli.svd_store import open_store

    loaded = load_model(args.dir, dtype=args.dtype, device=args.device)
    store = open_store(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store, keep="device")
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    batch = tokenizer(PROMPTS[: args.batch], return_tensors="pt", padding=True).to(loaded.device)

    def generate(tokens: int):
        with torch.no_grad():
            return loaded.model.generate(
                **batch,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )

    generate(2)  # warm-up
    base_s, _ = _timed(lambda: generate(args.new_tokens))
    expert = _random_expert(loaded, store)
    compose_s, _ = _timed(partial(adapter.apply, expert))
    adapted_s, _ = _timed(lambda: generate(args.new_tokens))
    revert_device_s, _ = _timed(adapter.revert)
    del adapter
    files_adapter = DenseAdapter(loaded, store, keep="files")
    files_adapter.apply(expert)
    revert_files_s, _ = _timed(files_adapter.revert)
    tokens = args.batch * args.new_tokens
    return {
        "prompt_tokens": int(batch["input_ids"].shape[1]),
        "base_tok_s": tokens / base_s,
        "adapted_tok_s": tokens / adapted_s,
        "compose_all_s": compose_s,
        "revert_keep_device_s": revert_device_s,
        "revert_keep_files_s": revert_files_s,
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }


def scaling_task(batch: int):
    """PROMPTS as a task for the training loop: `batch` examples, the i-th asking PROMPTS[i % 8] with
    ANSWER as its reference; the reward alternates +1 / −1 by example, so the loss never vanishes."""
    from t2cli.tasks.base import Task, TaskData

    examples = [{"id": str(i), "question": PROMPTS[i % len(PROMPTS)], "index": i} for i in range(batch)]
    return Task(
        name="scaling",
        domain="other",
        description="The scaling benchmark's prompts.",
        to_example=lambda row, fallback_id: row,
        prompt=lambda example: example["question"],
        extractor=lambda output, example=None: output,
        reference=lambda example: ANSWER,
        is_correct=lambda answer, example: example["index"] % 2 == 1,
        loader=lambda split, data_dir=None: TaskData(examples, 0, "bench/scaling.py"),
        splits=("train", "validation"),
    )


def stage_train(args) -> dict:
    """One iteration of the training loop (`train_step`, objective --stage) from z = 1 (the base model):
    (rl) rollouts with dense composed weights, then the policy-gradient loss through the factorised
    layers; (sft) the NLL of the reference answers. Backward, one AdamW step on p."""
    import tempfile
    from functools import partial
    from unittest.mock import patch

    import torch

    from t2cli.adapt import DenseAdapter
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.train.config import TrainConfig
    from t2cli.train.loop import open_run, train_step
    from t2cli.train.objective import prompt_text

    loaded = load_model(args.dir, dtype=args.dtype, device=args.device)
    task = scaling_task(args.batch)
    with tempfile.TemporaryDirectory(prefix="t2-scaling-") as tmp:
        config = TrainConfig(
            task=task.name,
            model=args.dir,
            objective=args.stage,
            targets=["mlp"],
            iters=1,
            batch_size=args.batch,
            micro_batch_size=args.micro_batch or args.batch,
            grad_checkpointing=args.checkpointing,
            max_multiplier=2.0,
            init_mean=0.0,  # z = 2 · sigmoid(0) = 1
            init_std=0.0,
            max_new_tokens=args.new_tokens,
            generation_batch_size=args.batch,
            dtype=args.dtype,
            device=args.device,
            out_dir=tmp,
            name="scaling",
        )
        # the loop's SVF method keeps the originals for an exact revert where --keep says
        with patch("t2cli.train.svf.DenseAdapter", partial(DenseAdapter, keep=args.keep)):
            with open_run(config, task, Registry(write_root=Path(tmp) / "registry"), loaded=loaded) as run:
                seconds, _ = _timed(lambda: train_step(run, 0))
    tokenizer = loaded.tokenizer
    prompts = [prompt_text(tokenizer, task, ex, config.max_prompt_tokens) for ex in task.load("train").examples]
    return {
        "iteration_s": seconds,
        "prompt_tokens": max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in prompts),
        "cuda_peak_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }


# --------------------------------------------------------------------------- the parent


def theory(size: str) -> dict:
    from transformers import LlamaConfig

    from t2cli.memory import parameter_counts, shapes_of
    from t2cli.models import meta_model

    shapes = shapes_of(meta_model(LlamaConfig(**shape(size))), ["mlp"])
    return {
        "parameters": shapes.parameters,
        "matrices": len(shapes.targets),
        "svd_flops_proxy": sum(m * n * min(m, n) for m, n in shapes.targets),  # Σ m·n·min(m, n)
        "svf_parameters": parameter_counts(shapes)["svf"],
        "bf16_weight_bytes": 2 * shapes.parameters,
    }


def planned(directory: Path, device: str, dtype: str, **settings) -> dict[str, int]:
    from t2cli.memory import plan_for

    settings.setdefault("keep", "device")
    _, plan = plan_for(str(directory), ["mlp"], dtype=dtype, device=device, **settings)
    return {stage.name: stage.total for stage in plan.stages}


def measure(size: str, args, row: dict | None = None, save=lambda row: None) -> dict:
    """Measure the --stages of one size (into `row`, keeping the stages it already has)."""
    work = Path(args.work).expanduser()
    directory = work / f"llama-{size}"
    home = work / f"t2home-{size}"
    stages = args.stages.split(",")
    where = "cuda" if args.device.startswith("cuda") else "cpu"
    row = dict(row or {})
    if not (directory / "config.json").is_file():  # built in a child, so this process stays small
        here = str(Path(__file__).resolve())
        started = time.time()
        subprocess.run([sys.executable, here, "--build", size, "--dir", str(directory), "--device", where], check=True)
        row["build_s"] = time.time() - started
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)  # an installed t2 first
    env = {**os.environ, "T2_HOME": str(home), "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    row.update(
        size=size,
        dtype=args.dtype,
        device=args.device,
        new_tokens=args.new_tokens,
        train_batch=args.train_batch,
        micro_batch=args.micro_batch,
        checkpointing=args.checkpointing,
        keep=args.keep,
        **theory(size),
    )
    if "decompose" in stages:
        shutil.rmtree(home / "fingerprints", ignore_errors=True)  # cold: the decompose hashes the weights too
        command = [
            sys.executable,
            "-m",
            "t2cli.cli.app",
            "decompose",
            str(directory),
            "--dtype",
            args.dtype,
            "--device",
            args.device,
            "--force",
        ]
        seconds, peak, _ = run_child(command, env)
        shown = "t2 " + " ".join(command[3:])
        row["decompose"] = {"seconds": seconds, "peak_rss_bytes": peak, "command": shown}
        save(row)  # each stage is recorded as soon as it is measured
    child = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--dir",
        str(directory),
        "--dtype",
        args.dtype,
        "--device",
        args.device,
        "--new-tokens",
        str(args.new_tokens),
        "--keep",
        args.keep,
    ]
    if args.micro_batch:
        child += ["--micro-batch", str(args.micro_batch)]
    if args.checkpointing:
        child += ["--checkpointing"]
    for stage, batch in (("eval", 8), ("rl", args.train_batch), ("sft", args.train_batch)):
        if stage not in stages:
            continue
        seconds, peak, out = run_child([*child, "--stage", stage, "--batch", str(batch)], env)
        measured = json.loads(out.strip().splitlines()[-1])
        row[stage] = {"wall_s": seconds, "peak_rss_bytes": peak, "batch": batch, **measured}
        save(row)
    row["plan"] = plan_row(row, directory, args)
    return row


def plan_row(row: dict, directory: Path, args) -> dict:
    """The plan, from the config alone, for the settings each stage ran with (prompt lengths as measured)."""
    common = {"max_new_tokens": args.new_tokens}
    train = {
        "micro_batch": row.get("micro_batch"),
        "checkpointing": row.get("checkpointing", False),
        "keep": row.get("keep", "device"),
    }
    plan = {"decompose": planned(directory, args.device, args.dtype, **common)["decompose"]}
    if not all(stage in row for stage in ("eval", "rl", "sft")):
        return plan | _ratios(row, plan, args)
    plan = {
        "decompose": plan["decompose"],
        "eval": planned(
            directory, args.device, args.dtype, batch_size=8, prompt_tokens=row["eval"]["prompt_tokens"], **common
        )["eval"],
        "rl": planned(
            directory,
            args.device,
            args.dtype,
            batch_size=args.train_batch,
            prompt_tokens=row["rl"]["prompt_tokens"],
            **train,
            **common,
        )["train"],
        "sft": planned(
            directory,
            args.device,
            args.dtype,
            batch_size=args.train_batch,
            objective="sft",
            prompt_tokens=row["sft"]["prompt_tokens"],
            **train,
            **common,
        )["train"],
    }
    return plan | _ratios(row, plan, args)


def _ratios(row: dict, plan: dict, args) -> dict:
    ratios = {}
    for stage in plan:
        if stage not in row:
            continue
        measured = row[stage]["peak_rss_bytes"] if args.device == "cpu" else row[stage].get("cuda_peak_bytes")
        if measured:
            ratios[f"{stage}_ratio"] = plan[stage] / measured
    return ratios


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:  # e.g. on a GPU machine without it: the JSON is the result
        print("matplotlib not installed: no plot", flush=True)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in results["rows"].values() if r["size"] != "tiny"), key=lambda r: r["parameters"])
    if not rows:
        return
    getters = {
        "decompose (s)": (lambda r: r["decompose"]["seconds"], "svd_flops_proxy"),
        "compose all (s)": (lambda r: r["eval"]["compose_all_s"], "svd_flops_proxy"),
        "generation, s per token (batch 8)": (lambda r: 1 / r["eval"]["base_tok_s"], "parameters"),
        "RL iteration (s)": (lambda r: r["rl"]["iteration_s"], "parameters"),
        "SFT iteration (s)": (lambda r: r["sft"]["iteration_s"], "parameters"),
    }
    figure, axis = plt.subplots(figsize=(7.5, 5.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, (get, ideal)), colour in zip(getters.items(), colours):
        points = []
        for r in rows:
            try:
                points.append((r["parameters"], get(r), r[ideal]))
            except KeyError:  # a stage not measured (yet) for this size
                continue
        if not points:
            continue
        xs, ys, costs = zip(*points)
        axis.plot(xs, ys, "o-", color=colour, label=label)
        axis.plot(
            xs,
            [ys[0] * c / costs[0] for c in costs],
            "--",
            color=colour,
            alpha=0.5,
            label=f"  ideal ∝ {'Σ m·n·min(m,n)' if ideal == 'svd_flops_proxy' else 'parameters'}",
        )
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("parameters")
    axis.set_ylabel("cost")
    axis.set_title(f"t2 cost vs model size ({rows[0]['device']}, {rows[0]['dtype']}; random weights)")
    axis.legend(fontsize=7)
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def _gib(count) -> str:
    return f"{count / 2**30:.2f}" if count else "–"


def table(results: dict) -> str:
    """The rows as a Markdown table (for docs/RESULTS.md): peaks in GiB, the plan's in brackets."""
    head = [
        "size",
        "parameters",
        "decompose s",
        "decompose peak (plan)",
        "bf16 weights",
        "compose all s",
        "tok/s base → adapted",
        "eval peak (plan)",
        "RL iteration s, peak (plan)",
        "SFT iteration s, peak (plan)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(results["rows"].values(), key=lambda r: r["parameters"]):
        plan = row.get("plan", {})

        def peak(stage: str, row: dict = row, plan: dict = plan) -> str:
            if stage not in row:
                return "not run"
            return f"{_gib(row[stage]['peak_rss_bytes'])} ({_gib(plan.get(stage))})"

        ev = row.get("eval")
        cells = [
            f"{row['size']} ({row['device']}, {row['dtype']})",
            f"{row['parameters'] / 1e6:.0f}M",
            f"{row['decompose']['seconds']:.0f}" if "decompose" in row else "not run",
            peak("decompose"),
            _gib(row["bf16_weight_bytes"]),
            f"{ev['compose_all_s']:.2f}" if ev else "–",
            f"{ev['base_tok_s']:.1f} → {ev['adapted_tok_s']:.1f}" if ev else "–",
            peak("eval"),
            (f"{row['rl']['iteration_s']:.1f}, " if "rl" in row else "") + peak("rl"),
            (f"{row['sft']['iteration_s']:.1f}, " if "sft" in row else "") + peak("sft"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + growth_table(results)


GROWTH = {  # cost name → how to read it from a complete row
    "decompose (s)": lambda row: row["decompose"]["seconds"],
    "compose all (s)": lambda row: row["eval"]["compose_all_s"],
    "generation, s per token (batch 8)": lambda row: 1 / row["eval"]["base_tok_s"],
    "RL iteration (s)": lambda row: row["rl"]["iteration_s"],
    "RL iteration without composing (s)": lambda row: row["rl"]["iteration_s"] - row["eval"]["compose_all_s"],
    "SFT iteration (s)": lambda row: row["sft"]["iteration_s"],
}


def growth_table(results: dict) -> str:
    """Each cost's growth between consecutive complete sizes, and its log-log slope from the
    smallest to the largest against parameters and against Σ m·n·min(m, n) (the SVD's work)."""
    import math

    rows = sorted((r for r in results["rows"].values() if r.get("complete")), key=lambda r: r["parameters"])
    if len(rows) < 2:
        return ""
    steps = list(zip(rows, rows[1:]))
    head = ["cost", *(f"{a['size']} → {b['size']}" for a, b in steps), f"{rows[0]['size']} → {rows[-1]['size']}"]
    head += ["slope vs parameters", "slope vs Σ m·n·min(m,n)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first, last = rows[0], rows[-1]
    for name, read in [("parameters", lambda r: r["parameters"]), ("Σ m·n·min(m,n)", lambda r: r["svd_flops_proxy"])]:
        ratios = [f"{read(b) / read(a):.1f}×" for a, b in steps] + [f"{read(last) / read(first):.1f}×"]
        lines.append("| " + " | ".join([name, *ratios, "", ""]) + " |")
    for name, read in GROWTH.items():
        ratios = [f"{read(b) / read(a):.1f}×" for a, b in steps] + [f"{read(last) / read(first):.1f}×"]
        growth = math.log(read(last) / read(first))
        slopes = [f"{growth / math.log(last[key] / first[key]):.2f}" for key in ("parameters", "svd_flops_proxy")]
        lines.append("| " + " | ".join([name, *ratios, *slopes]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="135m,360m,1.7b", help="comma-separated: tiny, 135m, 360m, 1.7b, 8b")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=None, help="rl/sft: sequences per forward/backward")
    parser.add_argument("--checkpointing", action="store_true", help="rl/sft: activation checkpointing")
    parser.add_argument("--keep", default="device", help="rl/sft: where the originals for exact revert go")
    parser.add_argument("--work", default=os.environ.get("T2_BENCH_WORK", "~/.cache/t2-bench"))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--force", action="store_true", help="re-measure sizes already in the results")
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the results as a Markdown table")
    parser.add_argument("--merge", nargs="*", default=[], help="also take the rows of these result files")
    parser.add_argument("--replan", action="store_true", help="recompute the plan columns of the stored rows")
    parser.add_argument("--cpu-dry-run", action="store_true", help="the tiny shape on the CPU, to a scratch JSON")
    # internal: one stage in a child process
    parser.add_argument("--stage", choices=("eval", "rl", "sft"))
    parser.add_argument("--dir")
    parser.add_argument("--build", help="internal: build the random model of this size in --dir")
    parser.add_argument(
        "--stages",
        default="decompose,eval,rl,sft",
        help="measure only these stages (the others of a stored row are kept)",
    )
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    if args.build:
        build(args.build, Path(args.dir), args.device)
        return
    if args.stage:
        result = stage_eval(args) if args.stage == "eval" else stage_train(args)
        print(json.dumps(result))
        return
    out = Path(args.out)
    if args.cpu_dry_run:
        args.sizes, args.device, args.new_tokens = "tiny", "cpu", 4
        out = Path(args.work).expanduser() / "dry-run.json"
    results = json.loads(out.read_text()) if out.is_file() else {"rows": {}}
    for other in args.merge:
        merged = json.loads(Path(other).read_text())
        for key, row in merged["rows"].items():  # stage by stage: a re-measured stage replaces the old one
            kept = results["rows"].get(key, {})
            results["rows"][key] = {**kept, **{k: v for k, v in row.items() if k not in ("plan", "complete")}}
            results["rows"][key]["complete"] = kept.get("complete", False) or row.get("complete", False)
        results.setdefault("machine", merged.get("machine"))
    if args.replan:
        for row in results["rows"].values():
            args.device, args.dtype, args.new_tokens = row["device"], row["dtype"], row["new_tokens"]
            args.train_batch = row["train_batch"]
            row["plan"] = plan_row(row, Path(args.work).expanduser() / f"llama-{row['size']}", args)
        out.write_text(json.dumps(results, indent=2))
    elif not args.plot_only:
        for size in args.sizes.split(","):
            key = f"{size}-{args.device.split(':')[0]}-{args.dtype}"
            done = results["rows"].get(key, {})
            if done.get("complete", bool(done)) and not args.force and args.stages == "decompose,eval,rl,sft":
                print(f"{key}: already measured (use --force)", flush=True)
                continue
            print(f"{time.strftime('%H:%M:%S')} {key}: measuring", flush=True)
            results["machine"] = {"cpu_threads": os.environ.get("OMP_NUM_THREADS"), "python": sys.version.split()[0]}
            out.parent.mkdir(parents=True, exist_ok=True)

            def save(row: dict, key: str = key) -> None:
                results["rows"][key] = {**row, "complete": False}
                out.write_text(json.dumps(results, indent=2))

            previous = results["rows"].get(key)
            results["rows"][key] = {**measure(size, args, previous, save), "complete": True}
            out.write_text(json.dumps(results, indent=2))
            print(json.dumps(results["rows"][key], indent=2), flush=True)
    if args.merge:
        out.write_text(json.dumps(results, indent=2))
    plot(results, out.with_suffix(".png"))
    if args.table:
        print(table(results))


if __name__ == "__main__":
    main()
