"""The RL loop on tiny random models: the pieces (data order, advantages, log-probs, KL, the
REINFORCE sign) and the whole run (p moves, a valid expert is registered, the CLI works)."""

import json
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
import typer
from toy import one_thread, toy_config, toy_task  # noqa: F401 (one_thread: an autouse fixture)
from typer.testing import CliRunner

from t2cli.adapt import factorised
from t2cli.errors import RegistryError
from t2cli.expert import ExpertVector
from t2cli.registry import Registry
from t2cli.svd_store import decompose
from t2cli.train import TrainError, train
from t2cli.train.distributed import Processes
from t2cli.train.loop import step_metrics
from t2cli.train.objective import Sample, completion_logits
from t2cli.train.rl import group_advantages, pg_loss
from t2cli.train.schedule import batch_indices, select_train_examples
from t2cli.train.svf import p_of, z_of


@contextmanager
def svf_forward(llama, store, z):
    """The SVF method's Forward for a fixed z (or a function giving it)."""
    with factorised(llama, store) as adapted:

        def forward(samples, *, base=False):
            adapted.set_z(None if base else (z() if callable(z) else z))
            return completion_logits(llama.model, samples)

        yield forward


def initial_p(store, seed=0, mean=0.1, std=0.01):
    generator = torch.Generator().manual_seed(seed)
    return {n: mean + std * torch.randn(store.ranks[n], generator=generator) for n in sorted(store.ranks)}


def samples_for(loaded):
    tok = loaded.tokenizer
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return [
        Sample(ids("What is the capital of France?"), ids(" The answer is (A)."), advantage=1.0),
        Sample(ids("1 + 2 ="), ids(" 3"), advantage=-1.0),
        Sample(ids("def add(a, b): return a + b"), ids(" The answer is 3. 1 + 2"), advantage=0.5),
    ]


def test_batch_indices_are_a_pure_function_covering_each_epoch():
    first = [batch_indices(7, it, 10, 4) for it in range(5)]
    assert first == [batch_indices(7, it, 10, 4) for it in range(5)]  # no hidden state
    stream = sum(first, [])
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert batch_indices(8, 0, 10, 4) != first[0]


def test_group_advantages():
    assert group_advantages([1.0, -1.0], 1) == [1.0, -1.0]  # k = 1: the raw reward, as in the paper
    assert group_advantages([1.0, -1.0, -1.0, -1.0, 1.0, 1.0], 3) == pytest.approx(
        [4 / 3, -2 / 3, -2 / 3, -4 / 3, 2 / 3, 2 / 3]
    )


def test_completion_logprobs_match_unpadded_forwards(tiny_model):
    """Left-padded prompts + right-padded completions give each sequence's own log-probs (Llama: RoPE;
    GPT-2: absolute positions, so the position ids must skip the padding)."""
    samples = samples_for(tiny_model)
    with torch.no_grad():
        logits, targets, mask = completion_logits(tiny_model.model, samples)
        logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0] * mask
        for row, s in enumerate(samples):
            full = torch.tensor([s.prompt_ids + s.completion_ids])
            ref = torch.log_softmax(tiny_model.model(full).logits[0].float(), -1)
            P = len(s.prompt_ids)
            expected = sum(ref[P - 1 + j, t] for j, t in enumerate(s.completion_ids))
            assert float(logp[row].sum()) == pytest.approx(float(expected), abs=1e-4)
            assert int(mask[row].sum()) == len(s.completion_ids)


def test_kl_is_zero_at_uniform_z_and_positive_elsewhere(llama):
    store = decompose(llama, ["mlp"])
    samples = samples_for(llama)
    uniform = {n: torch.full((r,), 0.5) for n, r in store.ranks.items()}
    with svf_forward(llama, store, uniform) as forward, torch.no_grad():
        _, stats = pg_loss(forward, samples, kl_coef=1.0)
        assert abs(stats["kl"]) < 1e-6
    generator = torch.Generator().manual_seed(0)
    random = {n: torch.rand(r, generator=generator) * 2 for n, r in store.ranks.items()}
    with svf_forward(llama, store, random) as forward, torch.no_grad():
        loss_with, stats = pg_loss(forward, samples, kl_coef=1.0)
        loss_without, _ = pg_loss(forward, samples, kl_coef=0.0)
        assert stats["kl"] > 1e-4
        assert float(loss_with - loss_without) == pytest.approx(stats["kl"], abs=2e-5)


def test_reinforce_step_raises_the_logprob_of_a_rewarded_answer(llama):
    store = decompose(llama, ["mlp"])
    sample = samples_for(llama)[:1]  # advantage +1
    p = {n: v.requires_grad_() for n, v in initial_p(store).items()}
    optimizer = torch.optim.SGD(list(p.values()), lr=0.5)
    with svf_forward(llama, store, lambda: z_of(p, 1.0)) as forward:
        before, _ = pg_loss(forward, sample, 0.0)
        for _ in range(3):
            loss, _ = pg_loss(forward, sample, 0.0)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        after, _ = pg_loss(forward, sample, 0.0)
    assert float(after.detach()) < float(before.detach())  # loss = −log π(answer): the rewarded answer got likelier


def test_rl_run_moves_p_and_registers_a_valid_expert(llama, tmp_path):
    registry = Registry(write_root=tmp_path / "registry")
    events = []
    result = train(
        toy_config(tmp_path / "run", iters=2, eval_every=1),
        loaded=llama,
        task=toy_task(),
        registry=registry,
        on_event=events.append,
    )
    store = decompose(llama, ["mlp"])
    z0 = z_of(initial_p(store), 1.0)
    moved = max(float((result.final_state[n] - z0[n]).abs().max()) for n in z0)
    assert moved > 1e-4  # p moved (lr 0.05 with Adam: each p moves ~lr per step)

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iter"] for m in lines] == [1, 2]
    for key in ("reward/mean", "loss", "lr", "time/iter", "val/accuracy", "grad_norm"):
        assert all(key in m for m in lines), key
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in lines)
    assert lines[1]["lr"] < lines[0]["lr"]  # cosine decay

    expert = ExpertVector.load(result.path)
    expert.validate_for(store.ranks, llama.name, llama.fingerprint)
    assert expert.name == "toy" and expert.provenance["task"] == "toy" and expert.provenance["objective"] == "rl"
    assert expert.provenance["hyperparameters"]["lr"] == 0.05
    metrics = expert.provenance["metrics"]
    assert metrics["base_val_accuracy"] == result.base_val_accuracy and "best_val_accuracy" in metrics
    assert expert.parameterisation == {"kind": "sigmoid", "max_multiplier": 1.0}
    assert registry.find("toy", llama.name).path == result.path
    assert (result.path / "learning_curve.png").stat().st_size > 1000
    kinds = {e["event"] for e in events}
    assert {"start", "iteration", "validation", "checkpoint", "done"} <= kinds
    svd = [e["message"] for e in events if e["event"] == "setup" and e["message"].startswith("SVD of the mlp")]
    assert svd and svd[-1].endswith(f"{len(store.ranks)}/{len(store.ranks)}")  # the store was built on first use

    with pytest.raises(TrainError, match="already exists"):  # the name is taken now
        train(toy_config(tmp_path / "run2"), loaded=llama, task=toy_task(), registry=registry)


def test_sampled_rollouts_with_group_baseline_and_kl(llama, tmp_path):
    result = train(
        toy_config(tmp_path / "run", iters=2, rollouts_per_prompt=3, kl=0.2, temperature=1.0),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    for line in result.metrics:
        assert -1.0 <= line["reward/mean"] <= 1.0
        assert line["kl"] >= -1e-6 and torch.isfinite(torch.tensor(line["loss"]))
    # rewards vary under sampling, so the group baseline gives non-zero advantages
    assert 0 < result.metrics[0]["train/accuracy"] < 1


def test_step_metrics_count_the_rollouts_without_advantage():
    # two prompts × 2 rollouts: the first group split (advantages ±1), the second both wrong (0, 0)
    rewards = [1.0, -1.0, -1.0, -1.0]
    samples = [Sample([1], [2, 3], a, r) for a, r in zip(group_advantages(rewards, 2), rewards)]
    run = SimpleNamespace(config=SimpleNamespace(batch_size=2, kl=0.1), procs=Processes())
    objective = SimpleNamespace(name="rl", samples_per_example=lambda: 2)
    metrics = step_metrics(run, objective, samples, loss_sum=4.0, kl_sum=0.8)
    assert metrics["train/zero_advantage"] == 0.5
    assert metrics["train/accuracy"] == 0.25 and metrics["reward/mean"] == -0.5
    assert metrics["loss"] == 1.0 and metrics["kl"] == pytest.approx(0.2)


def test_patience_stops_early_and_keeps_the_best_z(llama, tmp_path):
    result = train(
        toy_config(tmp_path / "run", iters=10, eval_every=1, patience=2),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    # the random model's greedy answers never contain an "e": no validation beats the base model
    assert result.base_val_accuracy == result.best_val_accuracy == 0.0
    assert result.iterations == 2 and result.best_iteration == 0
    for z in result.expert.z.values():  # the "best" is the base model: a uniform z (W' = W)
        assert torch.equal(z, torch.full_like(z, float(z[0])))


def test_cli_train_registers_an_expert(llama, tmp_path, monkeypatch):
    from t2cli.cli.train import train_command
    from t2cli.tasks import TASKS

    monkeypatch.setitem(TASKS, "toy", toy_task())
    model_dir = tmp_path / "tiny-model"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    app = typer.Typer()
    app.command("train")(train_command)
    app.command("noop")(lambda: None)  # two commands, so `train` stays a sub-command
    args = [
        "train",
        "--task",
        "toy",
        "--model",
        str(model_dir),
        "--iters",
        "2",
        "--batch-size",
        "2",
        "--eval-every",
        "1",
        "--val-limit",
        "2",
        "--max-new-tokens",
        "4",
        "--name",
        "cli-toy",
        "--out",
        str(tmp_path / "run"),
        "--registry",
        str(tmp_path / "registry"),
        "--lr",
        "0.01",
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "best validation accuracy" in result.output
    assert "budget: 2 iterations: 4 rollouts" in result.output and "to go" in result.output  # budget, then ETA
    entry = Registry(write_root=tmp_path / "registry").find("cli-toy", "tiny-model")
    assert entry.meta["provenance"]["objective"] == "rl"

    again = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 2 and "already exists" in again.output
    again = CliRunner().invoke(app, args + ["--overwrite"], env={"COLUMNS": "200"})  # the run dir holds a checkpoint
    assert again.exit_code == 2 and "--resume" in again.output
    bad = CliRunner().invoke(app, args[:3] + ["--model", str(model_dir), "--kl", "-1"])
    assert bad.exit_code == 2 and "kl must be" in bad.output


def test_p_of_inverts_z_of_and_refuses_z_beyond_the_multiplier():
    p = {"a": torch.tensor([-3.0, 0.0, 0.1, 4.0]), "b": torch.tensor([2.5])}
    expert = ExpertVector(z_of(p, 2.0), "start", "tiny", "f" * 64, ["mlp"])
    back = p_of(expert, 2.0)
    for name in p:
        assert torch.allclose(back[name], p[name], atol=1e-4)
    with pytest.raises(TrainError, match="larger --max-multiplier"):
        p_of(expert, 1.0)  # z reaches ~1.96: no sigmoid scaled by 1 gives it


def test_init_expert_starts_from_its_z_and_is_validated_first(llama, tmp_path):
    registry = Registry(write_root=tmp_path / "registry")
    ranks = decompose(llama, ["mlp"]).ranks
    generator = torch.Generator().manual_seed(1)  # far from the uniform p₀: a run ignoring it cannot pass
    start = {name: 0.2 + 0.6 * torch.rand(rank, generator=generator) for name, rank in ranks.items()}
    registry.add(ExpertVector(start, "toy", llama.name, llama.fingerprint, ["mlp"]))
    events = []
    second = train(
        toy_config(tmp_path / "run2", iters=1, lr=1e-9, name="toy2", init_expert="toy"),
        loaded=llama,
        task=toy_task(),
        registry=registry,
        on_event=events.append,
    )
    for name, z in start.items():  # one step of lr 1e-9 from the expert's p: still the expert's z
        assert torch.allclose(second.final_state[name], z, atol=1e-5)
    assert second.init_val_accuracy is not None
    validations = [e for e in events if e["event"] == "validation" and e["iter"] == 0]
    assert [e["accuracy"] for e in validations] == [second.base_val_accuracy, second.init_val_accuracy]
    expert = registry.load("toy2", llama.name)
    assert expert.provenance["hyperparameters"]["init_expert"] == "toy"
    assert expert.provenance["metrics"]["init_val_accuracy"] == second.init_val_accuracy

    with pytest.raises(RegistryError, match="no expert named 'missing'"):
        train(
            toy_config(tmp_path / "run3", name="toy3", init_expert="missing"),
            loaded=llama,
            task=toy_task(),
            registry=registry,
        )


def test_max_reference_tokens_keeps_the_short_references(llama):
    task, tokenizer = toy_task(), llama.tokenizer
    examples = task.load("train").examples
    lengths = [len(tokenizer(task.reference_output(ex), add_special_tokens=False)["input_ids"]) for ex in examples]
    limit = sorted(lengths)[len(lengths) // 2]
    kept = select_train_examples(task, examples, toy_config("unused", max_reference_tokens=limit), tokenizer)
    assert kept == [ex for ex, n in zip(examples, lengths) if n <= limit] and 0 < len(kept)
    assert select_train_examples(task, examples, toy_config("unused", train_limit=3), tokenizer) == examples[:3]
    with pytest.raises(TrainError, match="raise --max-reference-tokens"):
        select_train_examples(task, examples, toy_config("unused", max_reference_tokens=1), tokenizer)
