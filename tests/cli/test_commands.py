"""The Typer layer end to end on a tiny random model saved as a local HF directory."""

import json

import pytest
import torch
from typer.testing import CliRunner

from t2cli.cli.app import app
from t2cli.cli.completions import SHELLS, completion_script
from t2cli.expert import ExpertVector
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import open_store

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path, llama):
    directory = tmp_path / "tiny-model"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    return directory


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def register_random(model_dir, name, domain, seed):
    loaded = load_model(str(model_dir), device="cpu")
    store = open_store(loaded, ["mlp"])
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) for n, r in store.ranks.items()}
    expert = ExpertVector(z, name, loaded.name, loaded.fingerprint, ["mlp"], domain=domain)
    Registry().add(expert)
    return expert


def test_decompose_info_and_errors(model_dir):
    code, out = run("decompose", model_dir)
    assert code == 0, out
    assert "matrices" in out and "decomposed" in out
    code, out = run("decompose", model_dir)
    assert code == 0 and "reused" in out
    code, out = run("info", model_dir, "--targets", "all")
    assert code == 0, out
    assert "LoRA rank 16" in out and "gate_proj" in out and "q_proj" in out
    code, out = run("decompose", model_dir, "--targets", "lm_head")
    assert code == 2 and "never adapts" in out
    code, out = run("decompose", "./no/such/model")
    assert code == 2 and "not found" in out


def test_mix_command_equals_hand_computed_sum(model_dir):
    assert run("decompose", model_dir)[0] == 0
    math_expert = register_random(model_dir, "math", "math", 1)
    code_expert = register_random(model_dir, "code", "code", 2)
    code, out = run("mix", "math:0.6", "code:0.4", "--name", "blend", "--model", model_dir)
    assert code == 0, out
    blend = Registry().load("blend", model_dir.name)
    for n in math_expert.z:
        assert torch.allclose(blend.z[n], 0.6 * math_expert.z[n] + 0.4 * code_expert.z[n])
    assert blend.provenance["recipe"]["experts"] == ["math", "code"]
    assert blend.provenance["recipe"]["weights"] == [0.6, 0.4]

    code, out = run("mix", "math:0.6", "nope:0.4", "--name", "x", "--model", model_dir)
    assert code == 2 and "no expert named 'nope'" in out
    code, out = run("mix", "math:-1", "code:0.4", "--name", "x", "--model", model_dir)
    assert code == 2 and "≥ 0" in out
    code, out = run("mix", "math:0", "code:0", "--name", "x", "--model", model_dir)
    assert code == 2 and "zero" in out
    code, out = run("mix", "math", "--name", "x", "--model", model_dir)
    assert code == 2 and "NAME:WEIGHT" in out


def test_mix_per_layer_file(model_dir, tmp_path):
    assert run("decompose", model_dir)[0] == 0
    a = register_random(model_dir, "a", "math", 1)
    b = register_random(model_dir, "b", "code", 2)
    module = next(iter(a.z))
    per_layer = tmp_path / "alphas.json"
    per_layer.write_text(json.dumps({"b": {module: 0.0}}))
    code, out = run("mix", "a:0.5", "b:0.5", "--name", "pl", "--per-layer", per_layer, "--model", model_dir)
    assert code == 0, out
    mixed = Registry().load("pl", model_dir.name)
    assert torch.allclose(mixed.z[module], 0.5 * a.z[module])
    other = list(a.z)[1]
    assert torch.allclose(mixed.z[other], 0.5 * a.z[other] + 0.5 * b.z[other])


def test_experts_commands(model_dir, tmp_path):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    code, out = run("experts", "list", "--model", model_dir)
    assert code == 0 and "math" in out
    code, out = run("experts", "show", "math", "--model", model_dir)
    assert code == 0 and '"format_version": 1' in out
    code, out = run("experts", "export", "math", tmp_path / "out", "--model", model_dir)
    assert code == 0, out
    code, out = run("experts", "import", tmp_path / "out", "--name", "math2")
    assert code == 0 and "math2" in out
    code, out = run("experts", "rm", "math2", "--model", model_dir, "--yes")
    assert code == 0
    code, out = run("experts", "show", "math2", "--model", model_dir)
    assert code == 2 and "no expert named" in out
    (tmp_path / "broken").mkdir()
    code, out = run("experts", "import", tmp_path / "broken")
    assert code == 2 and "is missing" in out


def test_experts_json_and_a_broken_expert(model_dir):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    register_random(model_dir, "code", "code", 2)
    code, out = run("experts", "list", "--model", model_dir, "--json")
    assert code == 0 and [e["name"] for e in json.loads(out)] == ["code", "math"]
    code, out = run("experts", "show", "math", "--model", model_dir, "--json")
    assert code == 0 and json.loads(out)["meta"]["domain"] == "math"
    meta_path = Registry().find("code", model_dir.name).path / "expert.json"
    meta = json.loads(meta_path.read_text())
    meta["provenance"] = "trained"
    meta_path.write_text(json.dumps(meta))
    code, out = run("experts", "list", "--model", model_dir)
    assert code == 0 and "broken" in out and "math" in out and "Traceback" not in out
    code, out = run("experts", "list", "--model", model_dir, "--json")
    assert code == 0 and "'provenance' must be a JSON object" in json.loads(out)[0]["error"]
    assert run("experts", "show", "math", "--model", model_dir)[0] == 0  # a healthy neighbour still shows
    code, out = run("experts", "show", "code", "--model", model_dir)
    assert code == 2 and "'provenance' must be a JSON object" in out and len(out.strip().splitlines()) == 1
    code, out = run("mix", "math:0.5", "code:0.5", "--name", "m", "--model", model_dir)
    assert code == 2 and "'provenance'" in out
    code, out = run("eval", "--task", "arc-easy", "--model", model_dir, "--expert", "code", "--limit", "1")
    assert code == 2 and "'provenance'" in out


def test_demo_applies_registered_experts_and_reverts(model_dir):
    assert run("decompose", model_dir)[0] == 0
    register_random(model_dir, "math", "math", 1)
    register_random(model_dir, "code", "code", 2)
    code, out = run("demo", "--model", model_dir, "--max-new-tokens", "3", "--adapt", "loglik")
    assert code == 0, out
    assert "demo-mixture" in out and "bit-identical" in out
    assert "Self-adaptive answers (pass 1: loglik)" in out and "Tom has 3 boxes" in out
    code, out = run("demo", "--model", model_dir, "--max-new-tokens", "3", "--adapt", "cls")
    assert code == 2 and "no classification expert" in out  # cls needs the dispatch classifier


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_completion_scripts_are_in_sync_with_the_app(shell):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "completions" / SHELLS[shell]
    assert shipped.read_text() == completion_script(shell), "run `python -m t2cli.cli.completions`"


def test_help_and_completion_do_not_import_torch():
    """`t2 --help` and Tab completion only build the command tree: the library (torch,
    transformers) is imported when a command runs, so they answer at once."""
    import subprocess
    import sys

    code = "import sys, t2cli.cli.app; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
