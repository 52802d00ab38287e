import pytest
import torch

from t2cli.adapt import DenseAdapter, compose, compose_naive, factorised, scaled_singular_values
from t2cli.errors import ExpertError
from t2cli.expert import ExpertVector
from t2cli.svd_store import decompose


def random_expert(loaded, store, seed=0, name="rand"):
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
    return ExpertVector(z, name, loaded.name, loaded.fingerprint, store.targets)


def inputs(loaded, texts=("The answer is (A).", "def add(a, b): return a + b")):
    return loaded.tokenizer(list(texts), return_tensors="pt", padding=True)


def test_scaled_singular_values_keep_the_sum():
    S = torch.tensor([3.0, 2.0, 1.0])
    s = scaled_singular_values(S, torch.tensor([0.5, 1.0, 2.0]))
    assert torch.isclose(s.sum(), S.sum())
    assert torch.equal(scaled_singular_values(S, torch.ones(3)), S)


def test_compose_matches_naive_and_float64(llama):
    store = decompose(llama, ["mlp"])
    f = store.factors(store.modules[0])
    z = torch.rand(f.rank) + 0.5
    fast, naive = compose(f, z), compose_naive(f, z)
    s64 = f.S.double() * z.double()
    s64 = s64 * (f.S.double().sum() / s64.sum())
    exact = (f.U.double() * s64) @ f.Vh.double()
    assert ((fast.double() - exact).norm() / exact.norm()) < 1e-5
    assert ((naive.double() - exact).norm() / exact.norm()) < 1e-5


def test_uniform_expert_is_the_base_model_and_revert_is_exact(tiny_model):
    store = decompose(tiny_model, ["all"])
    adapter = DenseAdapter(tiny_model, store)
    batch = inputs(tiny_model)
    with torch.no_grad():
        base = tiny_model.model(**batch).logits
        adapter.apply(ExpertVector.uniform(store.ranks, "u", tiny_model.name, tiny_model.fingerprint, store.targets))
        uniform = tiny_model.model(**batch).logits
        assert (uniform - base).abs().max() <= 1e-5
        adapter.apply(random_expert(tiny_model, store))
        assert (tiny_model.model(**batch).logits - base).abs().max() > 1e-3  # the expert really changes it
        adapter.revert()
        assert all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
        assert torch.equal(tiny_model.model(**batch).logits, base)


def test_dense_weights_match_float64_formula(tiny_model):
    store = decompose(tiny_model, ["all"])
    adapter = DenseAdapter(tiny_model, store)
    expert = random_expert(tiny_model, store)
    adapter.apply(expert)
    for name, module in adapter.modules.items():
        f = adapter.factors[name]
        s = f.S.double() * expert.z[name].double()
        s = s * (f.S.double().sum() / s.sum())
        exact = (f.U.double() * s) @ f.Vh.double()
        weight = module.weight.double()
        if type(module).__name__ == "Conv1D":
            weight = weight.T
        assert ((weight - exact).norm() / exact.norm()) <= 1e-5, name


def test_switching_experts_without_reloading(llama):
    store = decompose(llama, ["mlp"])
    adapter = DenseAdapter(llama, store)
    a, b = random_expert(llama, store, 1, "a"), random_expert(llama, store, 2, "b")
    adapter.apply(a)
    weights_a = {n: m.weight.clone() for n, m in adapter.modules.items()}
    adapter.apply(b)
    adapter.apply(a)  # composes from the kept originals, never from the previous expert
    assert all(torch.equal(m.weight, weights_a[n]) for n, m in adapter.modules.items())
    cached = adapter.compose(b)
    adapter.load_weights(cached, "b")
    assert adapter.active == "b"


def test_a_second_adapter_on_an_adapted_model_is_refused(llama):
    """It would take the expert's weights for the base weights (and "revert" to them)."""
    store = decompose(llama, ["mlp"])
    adapter = DenseAdapter(llama, store)
    adapter.apply(random_expert(llama, store, 1, "a"))
    with pytest.raises(ExpertError, match="currently adapted \\(expert 'a'\\): revert that adapter first"):
        DenseAdapter(llama, store)
    adapter.revert()
    second = DenseAdapter(llama, store)
    assert all(torch.equal(second.originals[n], adapter.originals[n]) for n in adapter.modules)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda e: e.z.pop(next(iter(e.z))), "lacks"),
        (lambda e: e.z.__setitem__("model.layers.9.mlp.up_proj", torch.ones(3)), "does not target"),
        (lambda e: e.z.__setitem__(next(iter(e.z)), torch.ones(5)), "has shape"),
        (lambda e: e.z[next(iter(e.z))].__setitem__(0, float("nan")), "NaN or inf"),
        (lambda e: e.z[next(iter(e.z))].__setitem__(0, float("inf")), "NaN or inf"),
        (lambda e: setattr(e, "base_fingerprint", "f" * 32), "made for base model"),
    ],
)
def test_bad_experts_are_refused_and_the_model_is_untouched(llama, damage, message):
    store = decompose(llama, ["mlp"])
    adapter = DenseAdapter(llama, store)
    expert = random_expert(llama, store)
    damage(expert)
    with pytest.raises(ExpertError, match=message):
        adapter.apply(expert)
    assert all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
    assert adapter.active is None


def test_factorised_equals_dense_and_gives_z_gradients(tiny_model):
    store = decompose(tiny_model, ["all"])
    expert = random_expert(tiny_model, store)
    batch = inputs(tiny_model)

    # dense reference, with autograd through the composed weights
    z_dense = {n: v.clone().requires_grad_(True) for n, v in expert.z.items()}
    modules = dict(tiny_model.model.named_modules())
    originals = {n: modules[n].weight.data.clone() for n in store.modules}
    factors = store.load_all()
    for name in store.modules:
        weight = compose(factors[name], z_dense[name])
        if type(modules[name]).__name__ == "Conv1D":
            weight = weight.T
        del modules[name].weight
        modules[name].weight = weight  # a non-leaf tensor: gradients flow back to z
    dense_logits = tiny_model.model(**batch).logits
    dense_logits.square().mean().backward()
    for name in store.modules:
        modules[name].weight = torch.nn.Parameter(originals[name], requires_grad=False)

    z_fact = {n: v.clone().requires_grad_(True) for n, v in expert.z.items()}
    with factorised(tiny_model, store) as svf:
        svf.set_z(z_fact)
        fact_logits = tiny_model.model(**batch).logits
        fact_logits.square().mean().backward()
    rel = (fact_logits - dense_logits).norm() / dense_logits.norm()
    assert rel <= 1e-5
    for name in store.modules:
        g_dense, g_fact = z_dense[name].grad, z_fact[name].grad
        assert g_dense is not None and g_fact is not None
        assert torch.allclose(g_fact, g_dense, rtol=1e-3, atol=1e-6 * g_dense.abs().max().item() + 1e-9), name
    # the original modules are back after the context
    assert all(type(modules[n]).__name__ in ("Linear", "Conv1D") for n in store.modules)


def test_factorised_per_row_experts(llama):
    """Each batch row can use its own expert: row i of a mixed batch equals a run with expert i alone."""
    store = decompose(llama, ["mlp"])
    a, b = random_expert(llama, store, 1), random_expert(llama, store, 2)
    batch = inputs(llama, ["The answer is (A).", "The answer is (A)."])
    with torch.no_grad(), factorised(llama, store) as svf:
        svf.set_z({n: torch.stack([a.z[n], b.z[n]]) for n in store.modules})
        mixed = llama.model(**batch).logits
        svf.set_z(a.z)
        only_a = llama.model(**batch).logits
        svf.set_z(b.z)
        only_b = llama.model(**batch).logits
    assert torch.allclose(mixed[0], only_a[0], atol=1e-5)
    assert torch.allclose(mixed[1], only_b[1], atol=1e-5)
    assert not torch.allclose(only_a[0], only_b[0], atol=1e-4)


# --------------------------------------------------------------------------- half precision


def half_llama(tokenizer, dtype):
    from tests.conftest import tiny_llama

    loaded = tiny_llama(tokenizer)
    loaded.model.to(dtype)
    return loaded


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_uniform_is_exact_and_revert_is_bit_exact(tokenizer, dtype):
    loaded = half_llama(tokenizer, dtype)
    store = decompose(loaded, ["mlp"])  # stored in the model's dtype, σ in float32
    assert store.dtype == str(dtype).removeprefix("torch.")
    adapter = DenseAdapter(loaded, store)
    batch = inputs(loaded)
    with torch.no_grad():
        base = loaded.model(**batch).logits
        adapter.apply(ExpertVector.uniform(store.ranks, "u", loaded.name, loaded.fingerprint, store.targets))
        assert all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
        assert torch.equal(loaded.model(**batch).logits, base)
        adapter.apply(random_expert(loaded, store))
        assert not torch.equal(loaded.model(**batch).logits, base)
        adapter.revert()
        assert torch.equal(loaded.model(**batch).logits, base)


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_half_precision_factorised_equals_dense_within_dtype_tolerance(tokenizer, dtype, tolerance):
    """Both round differently (dense: W' rounded once; factorised: x·Vᵀ, ·s, ·U each rounded), so they
    agree to the dtype's precision: bfloat16 has 8 significant bits (2⁻⁸ ≈ 4e-3 per rounding)."""
    loaded = half_llama(tokenizer, dtype)
    store = decompose(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store)
    expert = random_expert(loaded, store)
    batch = inputs(loaded)
    with torch.no_grad():
        adapter.apply(expert)
        dense = loaded.model(**batch).logits.float()
        adapter.revert()
        with factorised(loaded, store, factors=adapter.factors) as svf:
            svf.set_z(expert.z)
            fact = loaded.model(**batch).logits.float()
    rel = float((fact - dense).norm() / dense.norm())
    assert rel <= tolerance, rel
    assert rel > 0  # really two different computations


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_training_step_gives_float32_gradients(tokenizer, dtype):
    loaded = half_llama(tokenizer, dtype)
    store = decompose(loaded, ["mlp"])
    p = {n: torch.zeros(r, requires_grad=True) for n, r in store.ranks.items()}
    optimiser = torch.optim.Adam(p.values(), lr=1e-2)
    batch = inputs(loaded)
    with factorised(loaded, store) as svf:
        svf.set_z({n: 2 * torch.sigmoid(v) for n, v in p.items()})
        logits = loaded.model(**batch).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch["input_ids"][:, 1:].flatten())
        loss.backward()
    assert all(
        v.grad is not None and v.grad.dtype == torch.float32 and torch.isfinite(v.grad).all() for v in p.values()
    )
    assert any(v.grad.abs().max() > 0 for v in p.values())
    optimiser.step()
    assert any(v.abs().max() > 0 for v in p.values())


@pytest.mark.parametrize("keep", ["device", "cpu", "files"])
@pytest.mark.parametrize(
    "stored, loaded_as", [("float32", "bfloat16"), ("bfloat16", "bfloat16"), ("float32", "float32")]
)
def test_keep_modes_revert_bit_exact(tokenizer, tmp_path, keep, stored, loaded_as):
    from t2cli.models import load_model
    from tests.conftest import tiny_llama

    source = tiny_llama(tokenizer)
    source.model.to(getattr(torch, stored)).save_pretrained(tmp_path / "m", max_shard_size="30KB")
    source.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"), dtype=loaded_as, device="cpu")
    assert loaded.dtype == getattr(torch, loaded_as)
    store = decompose(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store, keep=keep)
    assert adapter.keep == keep and (adapter.originals[store.modules[0]] is None) == (keep == "files")
    before = {n: m.weight.clone() for n, m in adapter.modules.items()}
    expert = random_expert(loaded, store)
    adapter.apply(expert)
    applied = {n: m.weight.clone() for n, m in adapter.modules.items()}
    assert min(adapter.weight_change().values()) > 0
    adapter.apply(random_expert(loaded, store, seed=5))
    adapter.apply(expert)  # composed from the originals (read back from the files with keep=files)
    assert all(torch.equal(m.weight, applied[n]) for n, m in adapter.modules.items())
    adapter.revert()
    assert all(torch.equal(m.weight, before[n]) for n, m in adapter.modules.items())


def test_keep_mode_is_checked_and_files_needs_a_directory(llama):
    store = decompose(llama, ["mlp"])
    with pytest.raises(ExpertError, match="keep must be one of"):
        DenseAdapter(llama, store, keep="gpu")
    with pytest.raises(ExpertError, match="needs a model loaded from a directory"):
        DenseAdapter(llama, store, keep="files")
    assert DenseAdapter(llama, store).keep == "device"  # auto on a CPU


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uniform_z_other_than_one_gives_the_base_weights_bit_for_bit(tokenizer, dtype):
    """An RL run starts from a uniform z of max_multiplier · sigmoid(init_mean) (0.52…, not 1): its
    rescaled σ equals σ only to within an ulp, which would change most float32 weights and the exact
    zeros of a de-quantised bfloat16 checkpoint (mimicked here) unless composing treats it as W."""
    loaded = half_llama(tokenizer, dtype)
    with torch.no_grad():
        for module in loaded.model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight[module.weight.abs() < module.weight.abs().median() / 8] = 0.0
    store = decompose(loaded, ["mlp"])
    adapter = DenseAdapter(loaded, store)
    start = {name: torch.full((rank,), 0.5249791741371155) for name, rank in store.ranks.items()}
    adapter.apply(ExpertVector(start, "start", loaded.name, loaded.fingerprint, store.targets))
    assert all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
    cached = adapter.compose(ExpertVector(start, "start", loaded.name, loaded.fingerprint, store.targets))
    assert all(c.data_ptr() != m.weight.data_ptr() for c, m in zip(cached.values(), adapter.modules.values()))
    nearly = {name: z.clone() for name, z in start.items()}
    for z in nearly.values():
        z[0] += 1e-3
    adapter.apply(ExpertVector(nearly, "nearly", loaded.name, loaded.fingerprint, store.targets))
    assert not all(torch.equal(m.weight, adapter.originals[n]) for n, m in adapter.modules.items())
