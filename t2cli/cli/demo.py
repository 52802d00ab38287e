"""`t2 demo`: the README's main job on the embedded default model.

Decompose the model, apply each shipped expert (and their mixture) in place, show what changed —
weights, next-token distribution, a short answer — and revert to the exact base weights.
"""

from __future__ import annotations

import torch
import typer
from rich.table import Table

from t2cli.adapt import DenseAdapter
from t2cli.cli.common import console, progress_bar, status, user_errors
from t2cli.expert import mix
from t2cli.models import DEFAULT_MODEL, LoadedModel, load_model
from t2cli.registry import Registry
from t2cli.svd_store import decompose

PROMPT = "Which gas do plants take in from the air to make food? Options: (A) oxygen (B) carbon dioxide (C) nitrogen"


@torch.no_grad()
def _answer(loaded: LoadedModel, prompt: str, max_new_tokens: int) -> tuple[str, torch.Tensor]:
    """Greedy answer and the next-token distribution after the chat prompt."""
    tokenizer = loaded.tokenizer
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer(text, return_tensors="pt").to(loaded.device)
    probs = loaded.model(**inputs).logits[0, -1].float().softmax(-1)
    output = loaded.model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip(), probs


def demo_command(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model."),
    prompt: str = typer.Option(PROMPT, help="Prompt to answer before and after adaptation."),
    max_new_tokens: int = typer.Option(40, help="Length of the shown answers."),
) -> None:
    """Decompose the default model, apply shipped (and mixed) experts, show what changed, revert."""
    with user_errors():
        with status(f"loading {model} (the first run converts the GGUF once, ~30 s)…"):
            loaded = load_model(model)
        with progress_bar("SVD of MLP matrices") as update:
            store = decompose(loaded, ["mlp"], progress=update)
        console.print(
            f"SVD store: {len(store.modules)} matrices, {store.num_parameters:,} singular values → {store.path}"
        )
        experts = [
            e
            for e in (Registry().load(entry.name, entry.base_model) for entry in Registry().list(loaded.name))
            if e.targets == store.targets
        ]
        if not experts:
            console.print(f"[yellow]No registered experts for {loaded.name} yet[/]: train one with `t2 train`.")
            raise typer.Exit(0)
        if len(experts) >= 2:
            weights = [1.0 / len(experts)] * len(experts)
            experts.append(mix(experts, weights, name="demo-mixture", domain="other"))
        adapter = DenseAdapter(loaded, store)
        base_answer, base_probs = _answer(loaded, prompt, max_new_tokens)
        console.print(f"[bold]prompt:[/] {prompt}\n[bold]base:[/] {base_answer}")
        table = Table(title="What each expert changes")
        for column in ("expert", "domain", "matrices", "mean ‖ΔW‖/‖W‖", "max ‖ΔW‖/‖W‖", "KL(next token)", "answer"):
            table.add_column(column, overflow="fold")
        for expert in experts:
            adapter.apply(expert)
            change = adapter.weight_change()
            answer, probs = _answer(loaded, prompt, max_new_tokens)
            kl = float((probs * (probs.clamp_min(1e-12).log() - base_probs.clamp_min(1e-12).log())).sum())
            table.add_row(
                expert.name,
                expert.domain,
                str(sum(v > 0 for v in change.values())),
                f"{sum(change.values()) / len(change):.2e}",
                f"{max(change.values()):.2e}",
                f"{kl:.3g}",
                answer,
            )
        adapter.revert()
        restored = all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
    console.print(table)
    console.print(f"reverted to the base weights: {'bit-identical' if restored else '[red]NOT identical[/]'}")
