"""How far each per-row form of `t2 serve` is from `t2 eval --expert`'s composed weights, on a real model.

    python bench/serve_precision.py [-m smollm2-135m] [--max-tokens 24]

For every shipped expert of the model (the classifier aside) and the prompts of bench/serve.py:
the largest |Δ logit| over every prompt token between the per-row layers (exact and factorised)
and the dense composed weights, the share of positions whose top token agrees, and whether each
prompt's greedy answer (`--max-tokens` tokens, one request at a time on the engine) is the same text
as `t2 eval --expert`'s generation with the composed weights. Writes bench/results/serve-precision.json.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from serve import PROMPTS  # bench/serve.py's (this script's folder is on the path when it runs)

from t2cli.adapt import DenseAdapter
from t2cli.defaults import CLASSIFICATION
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.serve.engine import Adaptation, Engine, Sampling
from t2cli.serve.layer import FORMS, PerRowModel, stack_deltas
from t2cli.svd_store import open_or_decompose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--out", default="bench/results/serve-precision.json")
    args = parser.parse_args()

    loaded = load_model(args.model, dtype="float32", device="cpu")
    registry = Registry()
    experts = [
        registry.load(entry.name, loaded.name)
        for entry in registry.list(loaded.name)
        if not entry.error and entry.domain != CLASSIFICATION
    ]
    if not experts:
        raise SystemExit(f"no experts registered for {loaded.name}")
    store = open_or_decompose(loaded, experts[0].targets)
    tokenizer = loaded.tokenizer
    texts = [chat_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    mask = batch["attention_mask"].bool()
    adapter = DenseAdapter(loaded, store)
    composed_logits, composed_text = {}, {}
    with torch.no_grad():
        for expert in experts:
            adapter.apply(expert)
            composed_logits[expert.name] = loaded.model(**batch).logits
            config = GenerationConfig(max_new_tokens=args.max_tokens)
            composed_text[expert.name] = [generate(loaded, [text], config)[0].text for text in texts]
        adapter.revert()

    rows = []
    for form in FORMS:
        per_row = PerRowModel(loaded, store, form)
        with torch.no_grad():
            for expert in experts:
                deltas, _ = stack_deltas([per_row.deltas(expert)] * len(texts))
                per_row.scales.set(deltas)
                logits = loaded.model(**batch).logits
                reference = composed_logits[expert.name]
                rows.append(
                    {
                        "form": form,
                        "expert": expert.name,
                        "max_abs_logit_diff": float((logits - reference)[mask].abs().max()),
                        "top1_agreement": float((logits.argmax(-1) == reference.argmax(-1))[mask].float().mean()),
                    }
                )
        per_row.remove()
        engine = Engine(loaded, store, {e.name: e for e in experts}, per_row=form).start()
        try:
            for row in rows[-len(experts) :]:
                same = 0
                for prompt, expected in zip(texts, composed_text[row["expert"]]):
                    sampling = Sampling(max_tokens=args.max_tokens, temperature=0)
                    text, _, _ = engine.generate(engine.encode(prompt), sampling, Adaptation(expert=row["expert"]))
                    same += text == expected
                row["greedy_texts_equal"] = f"{same}/{len(texts)}"
                print(json.dumps(row), flush=True)
        finally:
            engine.stop()
    payload = {
        "model": loaded.name,
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "prompts": len(texts),
        "prompt_tokens": int(mask.sum()),
        "max_tokens": args.max_tokens,
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
