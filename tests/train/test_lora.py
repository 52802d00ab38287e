"""The LoRA baseline on tiny random models: its size against SVF's, one step moves A/B, the saved
adapter reloads with PEFT to the same logits, and the CLI (`t2 train --method lora`, `t2 eval --lora`)."""

import hashlib
import json

import pytest
import torch
from toy import one_thread, toy_config, toy_task  # noqa: F401 (one_thread: an autouse fixture)
from typer.testing import CliRunner

from t2cli.cli.app import app
from t2cli.files import current_umask
from t2cli.svd_store import select_targets, weight_matrix
from t2cli.train import TrainError
from t2cli.train.peft_adapter import (
    META_FILE,
    attach_lora,
    load_lora,
    lora_parameter_count,
    save_adapter,
    svf_parameter_count,
)

pytest.importorskip("peft")


def train_lora(config, **kwargs):
    from t2cli.train import train

    return train(config, **kwargs)


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})
    return result.exit_code, result.output


def logits(loaded, text="What is the capital of France?"):
    ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return loaded.model(ids).logits


def test_parameter_count_is_16_m_plus_n_per_target(tiny_model):
    modules = dict(tiny_model.model.named_modules())
    names = select_targets(tiny_model.model, ["mlp"])
    expected = sum(16 * sum(weight_matrix(modules[n]).shape) for n in names)
    assert lora_parameter_count(tiny_model.model, ["mlp"]) == expected
    peft_model = attach_lora(tiny_model, ["mlp"])
    try:
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert trainable == expected
        wrapped = {
            n.removeprefix("base_model.model.").split(".lora_")[0]
            for n, p in peft_model.named_parameters()
            if p.requires_grad
        }
        assert wrapped == set(names)  # exactly SVF's targets, no more
    finally:
        peft_model.unload()


def test_lora_is_over_50x_svf_on_smollm2_shapes():
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    svf = svf_parameter_count(model, ["mlp"])
    lora = lora_parameter_count(model, ["mlp"])
    assert svf == 30 * 3 * 576 == 51_840  # one scale per singular value: min(576, 1536) per matrix
    assert lora == 30 * 3 * 16 * (576 + 1536) == 3_041_280
    assert lora >= 50 * svf


def test_one_iteration_moves_the_adapter_and_saves_it(tiny_model, tmp_path):
    llama = tiny_model  # both families (GPT-2: Conv1D, fan_in_fan_out)
    before = logits(llama)
    result = train_lora(
        toy_config(tmp_path / "run", method="lora", iters=1, lr=1e-2, eval_every=1), loaded=llama, task=toy_task()
    )
    line = result.metrics[0]
    assert torch.isfinite(torch.tensor(line["loss"])) and line["loss"] > 0
    moved = [k for k, v in result.final_state.items() if "lora_B" in k and float(v.abs().max()) > 0]
    assert moved  # B starts at 0: one Adam step makes it non-zero
    assert torch.equal(logits(llama), before)  # loaded.model is the base model again
    assert not any(p.requires_grad for p in llama.model.parameters())
    meta = json.loads((result.path / META_FILE).read_text())
    assert meta["base_fingerprint"] == llama.fingerprint and meta["objective"] == "sft"
    assert meta["trainable_parameters"] == lora_parameter_count(llama.model, ["mlp"])
    assert (result.path / "adapter_model.safetensors").is_file()
    with pytest.raises(TrainError, match="already holds"):
        train_lora(toy_config(tmp_path / "run", method="lora", iters=1), loaded=llama, task=toy_task())


def test_sft_steps_lower_the_loss(llama, tmp_path):
    result = train_lora(
        toy_config(tmp_path / "run", method="lora", iters=4, lr=1e-2, batch_size=12, micro_batch_size=12, eval_every=4),
        loaded=llama,
        task=toy_task(),
    )
    losses = [m["loss"] for m in result.metrics]
    assert losses[-1] < losses[0] - 0.01, losses  # the same 12 examples every step: the fit improves


def test_same_batches_and_loss_as_the_svf_sft_loop(llama, tmp_path):
    """At the start both methods are the base model (B = 0; uniform z with init_std 0), so the first
    iteration's loss is equal only if both loops saw the same batch and computed the same loss."""
    from t2cli.registry import Registry
    from t2cli.train import train

    config = dict(objective="sft", iters=1, batch_size=5, init_std=0.0, eval_every=1)
    svf = train(
        toy_config(tmp_path / "svf", **config),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    lora = train_lora(toy_config(tmp_path / "lora", method="lora", **config), loaded=llama, task=toy_task())
    assert lora.metrics[0]["loss"] == pytest.approx(svf.metrics[0]["loss"], abs=1e-4)
    assert lora.base_val_accuracy == svf.base_val_accuracy


def test_rl_objective_is_refused(llama, tmp_path):
    with pytest.raises(TrainError, match="policy-gradient LoRA collapsed"):
        train_lora(toy_config(tmp_path / "run", method="lora", objective="rl"), loaded=llama, task=toy_task())


def test_init_expert_is_refused(llama, tmp_path):
    with pytest.raises(TrainError, match="no z to start from"):
        train_lora(toy_config(tmp_path / "run", method="lora", init_expert="toy"), loaded=llama, task=toy_task())


def test_saved_adapter_reloads_to_the_same_logits(tokenizer, tmp_path):
    from conftest import tiny_llama

    trained = tiny_llama(tokenizer)
    peft_model = attach_lora(trained, ["mlp"])
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.eval()
    expected = logits(trained)
    save_adapter(peft_model, tmp_path / "adapter", {"base_fingerprint": trained.fingerprint})
    umask = current_umask()  # a normal directory and files, not the staging directory's 0700
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o777 & ~umask
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "adapter").iterdir()} == {0o666 & ~umask}
    fresh = tiny_llama(tokenizer)
    assert not torch.allclose(logits(fresh), expected)
    load_lora(fresh, tmp_path / "adapter")
    assert torch.allclose(logits(fresh), expected, atol=1e-5)
    other = tiny_llama(tokenizer, seed=1)
    with pytest.raises(Exception, match="was trained on"):
        load_lora(other, tmp_path / "adapter")


def test_cli_train_lora_then_eval_lora(llama, tmp_path, monkeypatch):
    from t2cli.tasks import TASKS

    monkeypatch.setitem(TASKS, "toy", toy_task())
    model_dir = tmp_path / "tiny-model"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    code, out = run(
        "train",
        "--method",
        "lora",
        "--task",
        "toy",
        "--model",
        model_dir,
        "--iters",
        "1",
        "--batch-size",
        "2",
        "--val-limit",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        tmp_path / "run",
    )
    assert code == 0, out
    assert "trainable parameters" in out
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / META_FILE).is_file()
    code, out = run(
        "train",
        "--method",
        "lora",
        "--objective",
        "rl",
        "--task",
        "toy",
        "--model",
        model_dir,
        "--out",
        tmp_path / "r2",
    )
    assert code == 2 and "policy-gradient LoRA collapsed" in out

    code, out = run(
        "eval",
        "--task",
        "arc-easy",
        "--model",
        model_dir,
        "--lora",
        adapter,
        "--limit",
        "2",
        "--max-new-tokens",
        "4",
        "--out",
        tmp_path / "eval",
    )
    assert code == 0, out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == 2 and report["config"]["lora"] == str(adapter.resolve())  # outside the working directory
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert report["config"]["lora_sha256"] == hashlib.sha256(weights).hexdigest()
    code, out = run(
        "eval", "--task", "arc-easy", "--model", model_dir, "--lora", adapter, "--expert", "x", "--limit", "2"
    )
    assert code == 2 and "--lora" in out and "--expert" in out
