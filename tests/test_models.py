"""Loading with a dtype and a device, weight files read one tensor at a time, config-only views.
(What each dtype and device name resolves to: tests/test_placement.py.)"""

import pytest
import torch

from t2cli.errors import ModelNotFoundError
from t2cli.models import (
    WeightFiles,
    file_fingerprint,
    load_config,
    load_model,
    meta_model,
    weight_fingerprint,
)
from t2cli.placement import resolve_dtype


@pytest.fixture
def model_dir(tmp_path, llama):
    directory = tmp_path / "tiny"
    llama.model.save_pretrained(directory, max_shard_size="30KB")
    llama.tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("dtype", ["auto", "float32", "bfloat16", "float16"])
def test_load_model_in_a_dtype_keeps_the_fingerprint(model_dir, llama, dtype):
    loaded = load_model(str(model_dir), dtype=dtype, device="cpu")
    assert loaded.dtype == resolve_dtype(dtype, "cpu")
    assert loaded.device == torch.device("cpu") and loaded.device_map is None
    # the fingerprint identifies the weights on disk, whatever dtype they are loaded in
    assert loaded.fingerprint == llama.fingerprint == weight_fingerprint(llama.model)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_half_precision_cpu_head_gets_a_contiguous_input(model_dir, dtype):
    """generate's last-position slice is strided; in half precision on a CPU the head would
    materialise its weight once per sequence for it (see models.contiguous_head_input)."""
    loaded = load_model(str(model_dir), dtype=dtype, device="cpu")
    head = loaded.model.get_output_embeddings()
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(3, 5, head.in_features, dtype=loaded.dtype)
    strided = hidden[:, -1:, :]
    assert not strided.is_contiguous()
    with torch.no_grad():
        logits = head(strided)
    assert seen == [dtype != "float32"]  # float32 is left exactly as it was (its numbers unchanged)
    given = strided if dtype == "float32" else strided.contiguous()
    assert torch.equal(logits, torch.nn.functional.linear(given, head.weight))


def test_weight_files_read_single_tensors_from_shards(model_dir, llama):
    files = WeightFiles(model_dir)
    assert len(set(files.where.values())) > 1  # sharded
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(files.tensor(name), llama.model.get_submodule("model.layers.1.mlp.up_proj").weight)
    with pytest.raises(ModelNotFoundError, match="stores no tensor"):
        files.tensor("nope")


def test_file_fingerprint_is_cached_per_file_stamp(model_dir, llama, isolated_home):
    skeleton = meta_model(str(model_dir))
    assert all(p.device.type == "meta" for p in skeleton.parameters())
    assert file_fingerprint(model_dir, skeleton) == llama.fingerprint
    assert len(list((isolated_home / "fingerprints").iterdir())) == 1


def test_config_only_view_reads_no_weights(model_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(WeightFiles, "tensor", refuse)
    config = load_config(str(model_dir))
    assert config.hidden_size == 32
    assert meta_model(config).config.num_hidden_layers == 2


def test_device_map_places_the_model(model_dir):
    pytest.importorskip("accelerate")
    loaded = load_model(str(model_dir), dtype="float32", device_map="cpu")
    assert loaded.device == torch.device("cpu") and not any(p.device.type == "meta" for p in loaded.model.parameters())
