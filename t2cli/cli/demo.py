"""`t2 demo`: the README's main job on the embedded default model.

Decompose the model (on its first use), apply each shipped expert (and the mixture of the domain
experts) in place, show what changed — weights, next-token distribution, a short answer — and
revert to the exact base weights. Then answer a few mixed prompts (math, code, reasoning, other)
self-adaptively: pass 1 picks an expert per prompt, pass 2 answers with its weights; each decision
and its cost is shown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from t2cli.cli import common
from t2cli.cli.common import PASS1_DTYPE_HELP, console, progress_bar, show_choice, status, user_errors
from t2cli.defaults import CLASSIFICATION, DEFAULT_MODEL, OTHER
from t2cli.dispatch.table import routing_strategies
from t2cli.provenance import ValidationRecord, validation_record

if TYPE_CHECKING:  # the library (torch) is imported when the demo runs, not for `t2 --help`
    import torch

    from t2cli.adapt import DenseAdapter
    from t2cli.models import LoadedModel
    from t2cli.svd_store import SVDStore

PROMPT = "Which gas do plants take in from the air to make food? Options: (A) oxygen (B) carbon dioxide (C) nitrogen"
MIXED_PROMPTS = (
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "Write a Python function is_even(n) that returns True when n is even.",
    "Which of these is a mammal?\n(A) shark\n(B) dolphin\n(C) trout\n(D) octopus\n"
    'Think step by step, then end with "The answer is (X)" where X is A, B, C or D.',
    "Write a two-line poem about the sea.",
)


def _answer(loaded: LoadedModel, prompt: str, max_new_tokens: int) -> tuple[str, torch.Tensor]:
    """Greedy answer and the next-token distribution after the chat prompt."""
    import torch

    with torch.no_grad():
        return _greedy_answer(loaded, prompt, max_new_tokens)


def _greedy_answer(loaded: LoadedModel, prompt: str, max_new_tokens: int) -> tuple[str, torch.Tensor]:
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


def validation_cell(record: ValidationRecord | None) -> str:
    """An expert's validation accuracy against the base model's, as its recipe records it."""
    if record is None:
        return "-"
    cell = f"{record.base:.0%} → {record.best:.0%} ({record.items} items)"
    if record.iterations < record.planned:
        cell += f", {record.iterations} of {record.planned} iterations"
    return cell


def demo_command(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model."),
    prompt: str = typer.Option(PROMPT, help="Prompt to answer before and after adaptation."),
    max_new_tokens: int = typer.Option(40, help="Length of the shown answers."),
    adapt: str = typer.Option(
        None,
        help=f"Pass-1 strategy for the mixed prompts: {', '.join(routing_strategies())} "
        "(one that needs shots or a name: see `t2 chat`). Default: loglik-cls, or loglik where the "
        "model has no dispatch classifier.",
        show_default=False,
    ),
    pass1_dtype: str = typer.Option(None, help=PASS1_DTYPE_HELP),
    dtype: str = common.dtype_option(),
    device: str = common.device_option(),
) -> None:
    """Decompose the default model, apply shipped (and mixed) experts, show what changed, revert."""
    import torch

    from t2cli.adapt import DenseAdapter
    from t2cli.expert import mix
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.svd_store import open_or_decompose

    with user_errors():
        with status(f"loading {model} (the first run converts the GGUF once, ~30 s)…"):
            loaded = load_model(model, dtype=dtype, device=device)
        with progress_bar("SVD of MLP matrices (first use only)") as update:
            store = open_or_decompose(loaded, ["mlp"], progress=update)
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
        domain = [e for e in experts if e.domain != CLASSIFICATION]
        if len(domain) >= 2:
            weights = [1.0 / len(domain)] * len(domain)
            experts.append(mix(domain, weights, name="demo-mixture", domain=OTHER))
        adapter = DenseAdapter(loaded, store)
        base_answer, base_probs = _answer(loaded, prompt, max_new_tokens)
        console.print(f"[bold]prompt:[/] {escape(prompt)}\n[bold]base:[/] {escape(base_answer)}")
        table = Table(title="What each expert changes (validation: base → expert, from its recipe)")
        columns = ("expert", "domain", "validation", "matrices", "mean ‖ΔW‖/‖W‖", "max ‖ΔW‖/‖W‖", "KL(next token)")
        for column in (*columns, "answer"):
            table.add_column(column, overflow="fold")
        for expert in experts:
            adapter.apply(expert)
            change = adapter.weight_change()
            answer, probs = _answer(loaded, prompt, max_new_tokens)
            kl = float((probs * (probs.clamp_min(1e-12).log() - base_probs.clamp_min(1e-12).log())).sum())
            table.add_row(
                expert.name,
                expert.domain,
                validation_cell(validation_record(expert.provenance)),
                str(sum(v > 0 for v in change.values())),
                f"{sum(change.values()) / len(change):.2e}",
                f"{max(change.values()):.2e}",
                f"{kl:.3g}",
                escape(answer),
            )
        adapter.revert()
        restored = all(torch.equal(m.weight, adapter.original(n)) for n, m in adapter.modules.items())
    console.print(table)
    console.print(f"reverted to the base weights: {'bit-identical' if restored else '[red]NOT identical[/]'}")
    with user_errors():
        _self_adaptive(loaded, store, adapter, adapt, max_new_tokens, pass1_dtype)


def _self_adaptive(
    loaded: LoadedModel,
    store: SVDStore,
    adapter: DenseAdapter,
    strategy: str | None,
    max_new_tokens: int,
    pass1_dtype: str | None = None,
) -> None:
    """Answer MIXED_PROMPTS two-pass with the registered domain experts, one decision per prompt."""
    from t2cli.adaptive import AdaptiveModel
    from t2cli.dispatch.experts import choose_experts, default_routing_strategy, training_command
    from t2cli.dispatch.table import strategy_options
    from t2cli.generation import GenerationConfig
    from t2cli.registry import Registry

    if not choose_experts(Registry(), loaded.name).experts:
        console.print(
            "[yellow]No domain experts registered[/]: the self-adaptive answers need at least one "
            f"({training_command()})."
        )
        return
    if strategy is None:
        strategy = default_routing_strategy(Registry(), loaded.name)
        if strategy != "loglik-cls":
            console.print(f"[yellow]No dispatch classifier registered for {loaded.name}[/]: pass 1 uses {strategy}.")
    options = strategy_options(strategy, {"pass1_dtype": pass1_dtype})
    model = AdaptiveModel(loaded, store, Registry(), strategy, options, adapter=adapter)
    show_choice(model)
    with status(f"answering {len(MIXED_PROMPTS)} mixed prompts self-adaptively ({strategy})…"):
        answers = model.generate_many(list(MIXED_PROMPTS), GenerationConfig(max_new_tokens=max_new_tokens))
    model.base()
    table = Table(title=f"Self-adaptive answers (pass 1: {strategy}{f', {pass1_dtype}' if pass1_dtype else ''})")
    table.caption = f"pass 1's one-time set-up (not in the per-prompt times): {model.setup_s:.2f} s"
    for column in ("prompt", "pass 1 chose", "expert", "pass 1 s", "pass 2 s", "answer"):
        table.add_column(column, overflow="fold")
    for prompt, answer in zip(MIXED_PROMPTS, answers):
        table.add_row(
            prompt.split("\n")[0],
            answer.decision.label,
            answer.decision.expert_name or "base",
            f"{answer.pass1_s:.2f}",
            f"{answer.pass2_s:.2f}",
            escape(answer.text),
        )
    console.print(table)
