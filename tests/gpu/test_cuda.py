"""On a CUDA device, in bfloat16: the exactness guarantees of the adapter, factorised = dense, a
training step, the SVD on the GPU, and the memory plan against PyTorch's measured peak.

Skipped without CUDA (bench/gpu_check.sh runs them on a GPU machine).
"""

import pytest
import torch

from t2cli.adapt import DenseAdapter, factorised
from t2cli.expert import ExpertVector
from t2cli.memory import plan, shapes_of
from t2cli.models import from_model
from t2cli.svd_store import decompose

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_llama(tokenizer, hidden=256, layers=2, dtype=torch.bfloat16):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    return from_model(LlamaForCausalLM(config).to(dtype), tokenizer, "cuda-llama", device="cuda")


def random_expert(loaded, store, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
    return ExpertVector(z, "rand", loaded.name, loaded.fingerprint, store.targets)


def batch(loaded):
    return loaded.tokenizer(
        ["The answer is (A).", "def add(a, b): return a + b"], return_tensors="pt", padding=True
    ).to("cuda")


def test_bf16_uniform_is_the_base_and_revert_is_bit_exact(tokenizer):
    loaded = cuda_llama(tokenizer)
    store = decompose(loaded, ["mlp"])  # the SVD runs on the GPU, in float32
    assert store.dtype == "bfloat16"
    for keep in ("device", "cpu"):
        adapter = DenseAdapter(loaded, store, keep=keep)
        assert all(f.U.device.type == "cuda" for f in adapter.factors.values())
        inputs = batch(loaded)
        with torch.no_grad():
            base = loaded.model(**inputs).logits
            adapter.apply(ExpertVector.uniform(store.ranks, "u", loaded.name, loaded.fingerprint, store.targets))
            assert torch.equal(loaded.model(**inputs).logits, base)
            adapter.apply(random_expert(loaded, store))
            assert not torch.equal(loaded.model(**inputs).logits, base)
            adapter.revert()
            assert torch.equal(loaded.model(**inputs).logits, base)
        del adapter


def test_bf16_factorised_equals_dense_within_tolerance(tokenizer):
    loaded = cuda_llama(tokenizer)
    store = decompose(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store)
    expert = random_expert(loaded, store)
    inputs = batch(loaded)
    with torch.no_grad():
        adapter.apply(expert)
        dense = loaded.model(**inputs).logits.float()
        adapter.revert()
        with factorised(loaded, store, factors=adapter.factors) as svf:
            svf.set_z({n: z.cuda() for n, z in expert.z.items()})
            fact = loaded.model(**inputs).logits.float()
    assert float((fact - dense).norm() / dense.norm()) <= 2e-2


def test_training_step_on_cuda(tokenizer):
    loaded = cuda_llama(tokenizer)
    store = decompose(loaded, ["mlp"])
    p = {n: torch.zeros(r, device="cuda", requires_grad=True) for n, r in store.ranks.items()}
    optimiser = torch.optim.Adam(p.values(), lr=1e-2)
    inputs = batch(loaded)
    with factorised(loaded, store) as svf:
        svf.set_z({n: 2 * torch.sigmoid(v) for n, v in p.items()})
        logits = loaded.model(**inputs).logits.float()
        ids = inputs["input_ids"]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
    assert all(
        v.grad is not None and v.grad.dtype == torch.float32 and torch.isfinite(v.grad).all() for v in p.values()
    )
    optimiser.step()
    assert any(v.abs().max() > 0 for v in p.values())


def test_gpu_svd_matches_the_weights(tokenizer):
    loaded = cuda_llama(tokenizer, dtype=torch.float32)
    store = decompose(loaded, ["mlp"], device="cuda")
    for name in store.modules:
        f = store.factors(name)
        weight = loaded.model.get_submodule(name).weight.cpu()
        assert torch.allclose((f.U * f.S) @ f.Vh, weight, atol=1e-4)


def test_plan_against_the_measured_cuda_peak(tokenizer):
    loaded = cuda_llama(tokenizer, hidden=512, layers=4)
    store = decompose(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store, keep="device")
    shapes = shapes_of(loaded.model, ["mlp"])
    size, prompt, new = 8, 128, 128
    ids = torch.randint(0, len(tokenizer), (size, prompt + new), device="cuda")
    attention = torch.ones_like(ids)
    attention[0, :10] = 0
    z = {n: torch.ones(r, device="cuda", requires_grad=True) for n, r in store.ranks.items()}
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with factorised(loaded, store, factors=adapter.factors) as svf:
        svf.set_z(z)
        logits = loaded.model(
            input_ids=ids[:, :-1], attention_mask=attention[:, :-1], logits_to_keep=new, use_cache=False
        ).logits.float()
        loss = -torch.log_softmax(logits, -1).gather(-1, ids[:, -new:].unsqueeze(-1)).mean()
        loss.backward()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated()
    planned = (
        plan(
            shapes,
            dtype="bfloat16",
            device="cuda",
            batch_size=size,
            prompt_tokens=prompt,
            max_new_tokens=new,
            objective="sft",
            keep="device",
        )
        .stage("train")
        .total
    )
    assert 0.8 * measured <= planned <= 1.2 * measured, (measured, planned)
