"""The SFT objective: samples are prompt + reference (+ eos), the loss counts answer tokens only,
training lowers it, and sft+rl switches objective."""

import pytest
import torch
from test_rl import svf_forward
from toy import one_thread, toy_config, toy_examples, toy_task  # noqa: F401 (one_thread: an autouse fixture)

from t2cli.generation import chat_prompt
from t2cli.registry import Registry
from t2cli.svd_store import decompose
from t2cli.train import TrainConfig, TrainError, train
from t2cli.train.objective import prompt_text
from t2cli.train.sft import nll_loss, reference_samples


def test_reference_samples_are_prompt_plus_answer_plus_eos(llama):
    task, example = toy_task(), toy_examples("train")[3]
    [sample] = reference_samples(llama, task, [example], max_prompt_tokens=1024, max_answer_tokens=64)
    tok = llama.tokenizer
    assert sample.prompt_ids == tok(chat_prompt(tok, task.messages(example)), add_special_tokens=False)["input_ids"]
    assert tok.decode(sample.completion_ids[:-1]) == "The answer is 5."
    assert sample.completion_ids[-1] == tok.eos_token_id
    [short] = reference_samples(llama, task, [example], max_prompt_tokens=1024, max_answer_tokens=2)
    assert len(short.completion_ids) == 3


def test_long_prompts_keep_their_end(llama):
    task, example = toy_task(), toy_examples("train")[0]
    text = prompt_text(llama.tokenizer, task, example, max_prompt_tokens=8)
    full = chat_prompt(llama.tokenizer, task.messages(example))
    assert full.endswith(text) and len(llama.tokenizer(text, add_special_tokens=False)["input_ids"]) <= 9


def test_nll_counts_answer_tokens_only(llama):
    """Same value as HF's own loss with the prompt positions labelled −100, per sample."""
    store = decompose(llama, ["mlp"])
    samples = reference_samples(llama, toy_task(), toy_examples("train")[:3], 1024, 64)
    uniform = {n: torch.ones(r) for n, r in store.ranks.items()}
    with torch.no_grad():
        with svf_forward(llama, store, uniform) as forward:
            total, stats = nll_loss(forward, samples)
        expected = 0.0
        for s in samples:
            ids = torch.tensor([s.prompt_ids + s.completion_ids])
            labels = ids.clone()
            labels[0, : len(s.prompt_ids)] = -100
            expected += float(llama.model(ids, labels=labels).loss)
    assert float(total) == pytest.approx(expected, abs=1e-4)
    assert stats["tokens"] == sum(len(s.completion_ids) for s in samples)


def test_sft_training_lowers_the_loss_and_registers(llama, tmp_path):
    result = train(
        toy_config(
            tmp_path / "run", objective="sft", iters=8, lr=0.2, batch_size=12, eval_every=4, micro_batch_size=12
        ),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    losses = [m["loss"] for m in result.metrics]
    assert all(m["objective"] == "sft" and "reward/mean" not in m for m in result.metrics)
    # the same 12 examples every step (a 12-example epoch): the fit improves step after step
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.01, losses
    assert result.expert.provenance["objective"] == "sft"


def test_sft_then_rl_switches_objective(llama, tmp_path):
    result = train(
        toy_config(tmp_path / "run", objective="sft+rl", iters=3, sft_iters=1),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    assert [m["objective"] for m in result.metrics] == ["sft", "rl", "rl"]
    assert "reward/mean" in result.metrics[1]


def test_sft_on_a_real_task_runs(llama, tmp_path):
    """ARC-Easy's bundled data and reference answers go through the same path."""
    config = TrainConfig(
        task="arc-easy",
        model=llama.name,
        objective="sft",
        iters=1,
        batch_size=2,
        val_limit=2,
        max_new_tokens=4,
        max_prompt_tokens=128,
        out_dir=str(tmp_path / "run"),
    )
    result = train(config, loaded=llama, registry=Registry(write_root=tmp_path / "registry"))
    assert result.expert.name == "arc-easy-sft" and result.expert.domain == "reasoning"
    assert torch.isfinite(torch.tensor(result.metrics[0]["loss"]))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(objective="ppo"), "objective must be one of"),
        (dict(batch_size=0), "batch_size"),
        (dict(objective="sft", sft_iters=2), "sft_iters only applies"),
        (dict(objective="sft+rl", iters=1), "sft_iters must be between"),
        (dict(name="no spaces"), "invalid expert name"),
        (dict(kl=-0.1), "kl must be"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(TrainError, match=message):
        TrainConfig(task="toy", **overrides)


def test_config_round_trip_and_help():
    config = TrainConfig(task="gsm8k", objective="sft+rl", iters=10)
    assert config.sft_iters == 5 and config.expert_name == "gsm8k-sft-rl"
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert "λ" in TrainConfig.help("kl")
    assert config.objective_at(4) == "sft" and config.objective_at(5) == "rl"
