"""`t2 export NAME --merged DIR` on a tiny model: the directory loads with AutoModelForCausalLM and its
logits are the adapted model's."""

import json

import pytest
import torch
from typer.testing import CliRunner

from t2cli.adapt import DenseAdapter
from t2cli.cli.app import app
from t2cli.expert import ExpertVector
from t2cli.files import current_umask
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import decompose

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


@pytest.fixture
def model_with_expert(tmp_path, llama):
    directory = tmp_path / "tiny-model"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    loaded = load_model(str(directory), device="cpu")
    store = decompose(loaded, ["mlp"])
    generator = torch.Generator().manual_seed(0)
    z = {name: 0.5 + torch.rand(rank, generator=generator) for name, rank in store.ranks.items()}
    expert = ExpertVector(z, "math", loaded.name, loaded.fingerprint, ["mlp"], domain="math")
    Registry().add(expert)
    return directory, loaded, store, expert


def adapted_logits(loaded, store, expert, ids):
    adapter = DenseAdapter(loaded, store)
    adapter.apply(expert)
    try:
        with torch.no_grad():
            return loaded.model(ids).logits
    finally:
        adapter.revert()


def test_merged_export_loads_and_its_logits_are_the_adapted_models(tmp_path, model_with_expert):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, loaded, store, expert = model_with_expert
    merged = tmp_path / "merged"
    code, out = run("export", "math", "--merged", merged, "--model", directory)
    assert code == 0, out
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert json.loads((merged / "t2_export.json").read_text())["expert"] == "math"
    umask = current_umask()  # a directory others may read as any other the user makes, not mkdtemp's 0700
    assert merged.stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in merged.iterdir()} == {0o666 & ~umask}
    exported = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    ids = tokenizer("The answer is (A). 1 + 2 = 3", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        got = exported(ids).logits
        base = loaded.model(ids).logits
    want = adapted_logits(loaded, store, expert, ids)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, base, atol=1e-3)  # the expert is in the weights

    code, out = run("export", "math", "--merged", merged, "--model", directory)
    assert code == 2 and "--overwrite" in out
    code, out = run("export", "nope", "--merged", tmp_path / "other", "--model", directory)
    assert code == 2 and "no expert named 'nope'" in out


def test_bfloat16_export_is_stored_in_bfloat16(tmp_path, model_with_expert):
    from safetensors import safe_open

    directory, _, _, _ = model_with_expert
    merged = tmp_path / "bf16"
    code, out = run("export", "math", "--merged", merged, "--model", directory, "--dtype", "bfloat16")
    assert code == 0, out
    assert json.loads((merged / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(next(merged.glob("*.safetensors")), "pt") as f:
        assert {f.get_tensor(key).dtype for key in f.keys()} == {torch.bfloat16}
