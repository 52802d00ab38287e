import json
from pathlib import Path

import pytest
import torch

from t2cli.errors import SVDStoreError, TargetError
from t2cli.models import WeightFiles
from t2cli.svd_store import (
    decompose,
    empty_store,
    file_source,
    find_store,
    open_or_decompose,
    open_store,
    select_targets,
    targets_key,
)


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
    store = decompose(llama, ["mlp"], svd_dtype="float64", store_dtype="float64")
    assert store.factors(store.modules[0]).U.dtype == torch.float64
    assert store.path.name.endswith("-float64")  # the historical name of a float64 store
    with pytest.raises(SVDStoreError, match="--svd-dtype"):
        decompose(llama, ["mlp"], svd_dtype="float16")
    with pytest.raises(SVDStoreError, match="--store-dtype"):
        decompose(llama, ["mlp"], store_dtype="int8")


def test_store_dtype_defaults_to_the_model_dtype_and_sigma_stays_float32(tokenizer):
    from tests.conftest import tiny_llama

    loaded = tiny_llama(tokenizer)
    loaded.model.to(torch.bfloat16)
    store = decompose(loaded, ["mlp"])
    factors = store.factors(store.modules[0])
    assert store.dtype == "bfloat16" and factors.U.dtype == factors.Vh.dtype == torch.bfloat16
    assert factors.S.dtype == torch.float32
    # computed in float32 from the bfloat16 weight, then rounded: the factors of the float32 SVD
    weight = loaded.model.get_submodule(store.modules[0]).weight.float()
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
    assert torch.equal(factors.S, S) and torch.equal(factors.U, U.to(torch.bfloat16))
    assert open_store(loaded, ["mlp"]).path == store.path


def test_open_store_falls_back_to_another_dtype(llama):
    built = decompose(llama, ["mlp"])  # float32
    llama.model.to(torch.float16)
    assert open_store(llama, ["mlp"]).path == built.path
    assert built.factors(built.modules[0], dtype=torch.float16).U.dtype == torch.float16


def save_sharded(loaded, directory: Path) -> Path:
    loaded.model.save_pretrained(directory, max_shard_size="20KB")
    loaded.tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_streaming_decomposition_of_a_sharded_model_equals_the_in_memory_svd(tokenizer, tmp_path, family):
    from tests.conftest import tiny_gpt2, tiny_llama

    loaded = (tiny_llama if family == "llama" else tiny_gpt2)(tokenizer)
    directory = save_sharded(loaded, tmp_path / "model")
    assert len(list(directory.glob("*.safetensors"))) > 3  # really sharded
    source = file_source(str(directory), dtype="float32", device="cpu")
    assert all(p.device.type == "meta" for p in source.skeleton.parameters())  # no weights loaded
    assert source.fingerprint == loaded.fingerprint  # streamed hash = hash of the loaded weights
    streamed = decompose(source, ["all"])
    in_memory = decompose(loaded, ["all"])
    assert streamed.modules == in_memory.modules
    for name in streamed.modules:
        got, want = streamed.factors(name), in_memory.factors(name)
        assert torch.equal(got.S, want.S) and torch.equal(got.U, want.U) and torch.equal(got.Vh, want.Vh)


def test_streaming_decomposition_reads_one_matrix_at_a_time(tokenizer, tmp_path, monkeypatch):
    from tests.conftest import tiny_llama

    directory = save_sharded(tiny_llama(tokenizer), tmp_path / "model")
    source = file_source(str(directory), device="cpu")
    reads = []
    original = WeightFiles.tensor

    def spy(self, name, device="cpu"):
        reads.append(name)
        return original(self, name, device)

    monkeypatch.setattr(WeightFiles, "tensor", spy)
    store = decompose(source, ["mlp"])
    assert reads == [f"{name}.weight" for name in store.modules]  # each targeted matrix once, nothing else
    (store.path / "manifest.json").unlink()
    reads.clear()
    decompose(source, ["mlp"])
    assert reads == []  # resumed: every matrix file was already there


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


def test_open_or_decompose_builds_the_store_on_first_use_only(llama):
    assert find_store(llama, ["mlp"]) is None
    calls = []
    built = open_or_decompose(llama, ["mlp"], progress=lambda done, total, name: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]  # one report per matrix
    assert find_store(llama, ["mlp"]).path == built.path == open_store(llama, ["mlp"]).path
    again = open_or_decompose(llama, ["mlp"], progress=lambda *a: pytest.fail("the store exists: nothing to do"))
    assert again.path == built.path and again.modules == built.modules


def test_open_or_decompose_takes_any_store_unless_a_dtype_is_named(llama):
    built = decompose(llama, ["mlp"])  # float32
    llama.model.to(torch.float16)
    assert open_or_decompose(llama, ["mlp"]).path == built.path  # as open_store: the adapter casts
    half = open_or_decompose(llama, ["mlp"], dtype="float16")
    assert half.path != built.path and half.dtype == "float16"
    assert open_or_decompose(llama, ["mlp"], dtype="float16").path == half.path


def test_open_or_decompose_refuses_a_store_of_another_model(llama):
    store = decompose(llama, ["mlp"])
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 32
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SVDStoreError, match="does not match"):
        open_or_decompose(llama, ["mlp"])


def test_empty_store_has_no_matrices_and_writes_nothing(llama, isolated_home):
    store = empty_store(llama)
    assert store.modules == [] and store.ranks == {} and store.num_parameters == 0
    assert store.fingerprint == llama.fingerprint
    assert not (isolated_home / "svd").exists()
