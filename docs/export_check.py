"""Merged-export check: `t2 export EXPERT --merged DIR`, then the largest |logit difference| between
AutoModelForCausalLM loaded from DIR and the adapted model (base + expert through t2) on 3 prompts.

    OMP_NUM_THREADS=1 python docs/export_check.py --expert reasoning

Both in float32 on the CPU; the whole logit tensor of every prompt position is compared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = (
    "Which gas do plants take in from the air to make food? Options: (A) oxygen (B) carbon dioxide (C) nitrogen",
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "Write a Python function is_even(n) that returns True when n is even.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--expert", default="reasoning")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--dir", type=Path, default=None, help="export here (default: a temporary directory)")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from t2cli.adapt import DenseAdapter
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.svd_store import open_store

    target = args.dir or Path(tempfile.mkdtemp(prefix="t2-export-")) / args.expert
    command = [
        sys.executable,
        "-m",
        "t2cli.cli.app",
        "export",
        args.expert,
        "--merged",
        str(target),
        "--model",
        args.model,
        "--overwrite",
    ]
    print("$", " ".join(["t2", *command[3:]]))
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(
        f"export: {time.perf_counter() - started:.1f} s; files: {', '.join(sorted(p.name for p in target.iterdir()))}"
    )

    exported = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    loaded = load_model(args.model, device="cpu")
    expert = Registry().load(args.expert, loaded.name)
    adapter = DenseAdapter(loaded, open_store(loaded, expert.targets))
    worst_base = 0.0
    worst = 0.0
    with torch.no_grad():
        for prompt in PROMPTS:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            base = loaded.model(ids).logits
            adapter.apply(expert)
            adapted = loaded.model(ids).logits
            adapter.revert()
            merged = exported(ids).logits
            difference = (merged - adapted).abs().max().item()
            from_base = (adapted - base).abs().max().item()
            worst, worst_base = max(worst, difference), max(worst_base, from_base)
            print(
                f"{ids.shape[1]:4d} tokens: max |merged - adapted| = {difference:.3e}   "
                f"(max |adapted - base| = {from_base:.3e})  {prompt[:50]}…"
            )
    verdict = "PASS" if worst <= 1e-4 else "FAIL"
    print(
        f"{verdict}: max |logit difference| over {len(PROMPTS)} prompts = {worst:.3e} (limit 1e-4); "
        f"the expert itself moves the logits by up to {worst_base:.3e}"
    )
    sys.exit(0 if worst <= 1e-4 else 1)


if __name__ == "__main__":
    main()
