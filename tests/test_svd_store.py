import json

import pytest
import torch

from t2cli.errors import SVDStoreError, TargetError
from t2cli.svd_store import decompose, open_store, select_targets, targets_key


def test_presets_select_mlp_and_attention(tiny_model):
    mlp = select_targets(tiny_model.model, ["mlp"])
    attn = select_targets(tiny_model.model, ["attn"])
    both = select_targets(tiny_model.model, ["all"])
    assert mlp and attn and not set(mlp) & set(attn)
    assert set(both) == set(mlp) | set(attn)
    assert all("embed" not in n and "lm_head" not in n and "wte" not in n for n in both)


def test_llama_mlp_targets_are_gate_up_down(llama):
    names = select_targets(llama.model, ["mlp"])
    assert len(names) == 2 * 3
    assert {n.split(".")[-1] for n in names} == {"gate_proj", "up_proj", "down_proj"}


def test_pattern_targets_and_forbidden_ones(llama):
    assert select_targets(llama.model, [r"layers\.0\.mlp\.up_proj"]) == ["model.layers.0.mlp.up_proj"]
    with pytest.raises(TargetError, match="never adapts"):
        select_targets(llama.model, ["lm_head"])
    with pytest.raises(TargetError, match="never adapts"):
        select_targets(llama.model, ["embed_tokens"])
    with pytest.raises(TargetError, match="matches no adaptable"):
        select_targets(llama.model, ["no_such_module"])
    with pytest.raises(TargetError, match="not a valid regex"):
        select_targets(llama.model, ["(unclosed"])


def test_decompose_reconstructs_and_is_reused(tiny_model):
    calls = []
    store = decompose(tiny_model, ["all"], progress=lambda done, total, name: calls.append((done, total)))
    assert calls[-1] == (len(store.modules), len(store.modules))
    modules = dict(tiny_model.model.named_modules())
    for name in store.modules:
        f = store.factors(name)
        weight = modules[name].weight
        if type(modules[name]).__name__ == "Conv1D":
            weight = weight.T
        assert f.U.shape[0] == weight.shape[0] and f.Vh.shape[1] == weight.shape[1]
        assert torch.allclose((f.U * f.S) @ f.Vh, weight, atol=1e-5)
    assert store.num_parameters == sum(min(modules[n].weight.shape) for n in store.modules)
    # second call reuses the store (no recomputation, same manifest)
    again = decompose(tiny_model, ["all"], progress=lambda *a: pytest.fail("should not recompute"))
    assert again.manifest == store.manifest


def test_decompose_resumes_after_interruption(llama):
    store = decompose(llama, ["mlp"])
    (store.path / "manifest.json").unlink()  # as if killed before the manifest was written
    first = store.path / store.manifest["modules"][store.modules[0]]["file"]
    before = first.stat().st_mtime_ns
    resumed = decompose(llama, ["mlp"])
    assert first.stat().st_mtime_ns == before  # finished matrices are not recomputed
    assert resumed.modules == store.modules


def test_float64_store(llama):
    store = decompose(llama, ["mlp"], dtype="float64")
    assert store.factors(store.modules[0]).U.dtype == torch.float64
    with pytest.raises(SVDStoreError, match="--dtype"):
        decompose(llama, ["mlp"], dtype="float16")


def test_open_store_errors(llama, tokenizer):
    with pytest.raises(SVDStoreError, match="t2 decompose"):
        open_store(llama, ["mlp"])
    store = decompose(llama, ["mlp"])
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 32
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SVDStoreError, match="does not match"):
        open_store(llama, ["mlp"])


def test_targets_key_is_stable():
    assert targets_key(["mlp"]) == "mlp"
    assert targets_key(["attn", "mlp"]) == targets_key(["mlp", "attn"])
    assert targets_key([r"layers\.0"]) == targets_key([r"layers\.0"]) != targets_key([r"layers\.1"])


def test_store_lists_modules_in_model_order_after_reopening(llama):
    built = decompose(llama, ["mlp"])
    assert built.modules == select_targets(llama.model, ["mlp"])
    assert open_store(llama, ["mlp"]).modules == built.modules
