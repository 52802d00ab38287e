"""The one loop's contract beyond a single run: clean run directories, early and time-based
checkpoints, budget and ETA events, micro-batches and activation checkpointing that leave the
gradient unchanged, a bfloat16 model with float32 training state, and no global state touched."""

import pytest
import torch
from conftest import tiny_llama
from toy import one_thread, toy_config, toy_task  # noqa: F401 (one_thread: an autouse fixture)

from t2cli.registry import Registry
from t2cli.train import TrainConfig, train
from t2cli.train.checkpoint import CHECKPOINT_FILE


class Stop(Exception):
    pass


def stop_at(kind, iteration):
    def on_event(event):
        if event["event"] == kind and event.get("iter") == iteration:
            raise Stop

    return on_event


def run(config, loaded, tmp_path, **kwargs):
    return train(config, loaded=loaded, task=toy_task(), registry=Registry(write_root=tmp_path / "registry"), **kwargs)


def test_per_method_defaults_live_in_the_config():
    svf, lora = TrainConfig(task="t"), TrainConfig(task="t", method="lora")
    assert (svf.objective, svf.lr, svf.grad_clip, svf.expert_name) == ("rl", 2e-3, 1e-3, "t-rl")
    assert (lora.objective, lora.lr, lora.grad_clip, lora.expert_name) == ("sft", 2e-4, 1.0, "t-lora")
    assert str(lora.run_dir) == "runs/train-t-lora"
    assert TrainConfig(task="t", method="lora", lr=1e-3).lr == 1e-3


def test_stale_temporaries_are_removed_when_a_run_starts(llama, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".adapter-x1").mkdir(parents=True)
    for name in (".checkpoint.pt-a1b2", ".metrics.jsonl-zz", ".config.json-q"):
        (run_dir / name).write_bytes(b"partial")
    (run_dir / "notes.txt").write_text("mine")  # not ours: kept
    run(toy_config(run_dir, iters=1), llama, tmp_path)
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl", "notes.txt"]


def test_a_run_stopped_in_its_first_iteration_resumes_from_the_early_checkpoint(tokenizer, tmp_path):
    settings = dict(iters=3, eval_every=2, checkpoint_every=10, checkpoint_minutes=0)
    whole = run(toy_config(tmp_path / "whole", name="whole", **settings), tiny_llama(tokenizer), tmp_path)
    config = toy_config(tmp_path / "parts", name="parts", **settings)
    with pytest.raises(Stop):  # during iteration 1, after the base model's validation
        run(config, tiny_llama(tokenizer), tmp_path, on_event=stop_at("phase", 1))
    saved = torch.load(tmp_path / "parts" / CHECKPOINT_FILE, weights_only=True)
    assert saved["state"]["iteration"] == 0 and saved["state"]["base_score"] == whole.base_val_accuracy
    events = []
    resumed = run(config, tiny_llama(tokenizer), tmp_path, resume=True, on_event=events.append)
    assert not [e for e in events if e["event"] == "phase" and e["iter"] == 0]  # the base is not validated again
    for name, z in whole.final_state.items():
        assert torch.equal(resumed.final_state[name], z), name


def test_checkpoints_by_time_as_well_as_by_iteration(llama, tmp_path):
    events = []
    run(
        toy_config(tmp_path / "a", iters=3, checkpoint_every=0, checkpoint_minutes=1e-9),
        llama,
        tmp_path,
        on_event=events.append,
    )
    assert [e["iter"] for e in events if e["event"] == "checkpoint"] == [0, 1, 2, 3]
    events = []
    run(
        toy_config(tmp_path / "b", iters=3, checkpoint_every=0, checkpoint_minutes=0, name="b"),
        llama,
        tmp_path,
        on_event=events.append,
    )
    assert [e["iter"] for e in events if e["event"] == "checkpoint"] == [0, 3]  # early, and the last


def test_lora_resumes_exactly(tokenizer, tmp_path):
    pytest.importorskip("peft")
    settings = dict(method="lora", iters=4, eval_every=2, lr=1e-2)
    whole = run(toy_config(tmp_path / "whole", name="whole", **settings), tiny_llama(tokenizer), tmp_path)
    config = toy_config(tmp_path / "parts", name="parts", **settings)
    with pytest.raises(Stop):
        run(config, tiny_llama(tokenizer), tmp_path, on_event=stop_at("iteration", 2))
    resumed = run(config, tiny_llama(tokenizer), tmp_path, resume=True)
    for name, value in whole.final_state.items():
        assert torch.equal(resumed.final_state[name], value), name  # the dropout masks continue too


def test_budget_comes_first_and_eta_after_every_iteration(llama, tmp_path):
    events = []
    config = toy_config(tmp_path / "run", iters=3, batch_size=4, rollouts_per_prompt=2, eval_every=2, val_limit=4)
    run(config, llama, tmp_path, on_event=events.append)
    budget = events[0]
    assert budget["event"] == "budget"
    assert (budget["rollouts"], budget["rollout_tokens"]) == (3 * 4 * 2, 3 * 4 * 2 * 6)
    assert (budget["validations"], budget["validation_tokens"]) == (3, 3 * 4 * 6)  # base, after 2, after 3
    assert budget["sft_samples"] == 0 and budget["rl_iters"] == 3
    (plan,) = [e["plan"] for e in events if e["event"] == "plan"]  # before the first iteration, from the shapes
    assert [e["event"] for e in events].index("plan") < [e["event"] for e in events].index("iteration")
    train = plan.stage("train")
    assert train.parts["factors"] > 0 and train.total > train.parts["factors"]
    etas = [e for e in events if e["event"] == "eta"]
    assert [e["iter"] for e in etas] == [1, 2, 3]
    first = etas[0]
    expected = 2 * first["seconds_per_iter"] + 2 * first["seconds_per_validation"]  # 2 iterations, 2 validations
    assert first["remaining_s"] == pytest.approx(expected) and first["remaining_s"] > 0
    assert etas[-1]["remaining_s"] == 0


def test_a_resumed_runs_eta_counts_the_validations_left_before_it_validates_again(llama, tmp_path):
    config = toy_config(tmp_path / "run", iters=4, batch_size=2, eval_every=2, val_limit=4, checkpoint_every=1)
    with pytest.raises(Stop):
        run(config, llama, tmp_path, on_event=stop_at("iteration", 2))
    events = []
    run(config, llama, tmp_path, resume=True, on_event=events.append)
    after_3 = next(e for e in events if e["event"] == "eta" and e["iter"] == 3)
    assert after_3["seconds_per_validation"] > 0  # from the first session's validation after iteration 2
    assert after_3["remaining_s"] == pytest.approx(after_3["seconds_per_iter"] + after_3["seconds_per_validation"])


def test_sft_budget_counts_samples_not_rollouts():
    from t2cli.train.loop import budget

    config = TrainConfig(task="t", objective="sft+rl", iters=10, sft_iters=4, batch_size=8, rollouts_per_prompt=2)
    event = budget(config, val_examples=32, max_new_tokens=64)
    assert (event["sft_samples"], event["rl_iters"], event["rollouts"]) == (32, 6, 6 * 8 * 2)
    assert event["validations"] == 2  # the base model, then iteration 10 (--eval-every 10 and the last: once)


@pytest.mark.parametrize("option", ["micro_batch_size", "grad_checkpointing"])
def test_micro_batches_and_activation_checkpointing_keep_the_gradient(tokenizer, tmp_path, option):
    """One SFT step on a batch of 4: the same loss, gradient norm and z as one micro-batch of 4."""
    base = dict(objective="sft", iters=1, batch_size=4, micro_batch_size=4, eval_every=1)
    changed = base | ({"micro_batch_size": 1} if option == "micro_batch_size" else {"grad_checkpointing": True})
    one = run(toy_config(tmp_path / "one", name="one", **base), tiny_llama(tokenizer), tmp_path)
    other = run(toy_config(tmp_path / "other", name="other", **changed), tiny_llama(tokenizer), tmp_path)
    for key in ("loss", "grad_norm"):
        assert other.metrics[0][key] == pytest.approx(one.metrics[0][key], rel=1e-5), key
    for name, z in one.final_state.items():
        assert torch.allclose(other.final_state[name], z, atol=1e-6), name


def test_activation_checkpointing_recomputes_the_layers(llama):
    from t2cli.train.activations import checkpointable_layers, recomputed_activations

    layer = checkpointable_layers(llama.model)[0]
    calls = []
    handle = layer.mlp.register_forward_pre_hook(lambda *_: calls.append(1))  # a child: runs inside the replay
    ids = torch.tensor([[1, 2, 3, 4]])
    embeddings = llama.model.get_input_embeddings()
    try:
        for enabled in (False, True):
            calls.clear()
            embeddings.weight.requires_grad_(True)
            with recomputed_activations(llama.model, enabled):
                llama.model(ids, use_cache=False).logits.sum().backward()
            embeddings.weight.requires_grad_(False)
            embeddings.weight.grad = None
            assert len(calls) == (2 if enabled else 1)  # forward, and again in the backward
    finally:
        handle.remove()
    assert not layer.training and not getattr(layer, "gradient_checkpointing", False)  # restored


def test_bfloat16_model_trains_with_float32_state(tokenizer, tmp_path):
    loaded = tiny_llama(tokenizer)
    loaded.model.to(torch.bfloat16)
    events = []
    result = run(
        toy_config(tmp_path / "run", objective="sft", iters=1, eval_every=1), loaded, tmp_path, on_event=events.append
    )
    start = torch.sigmoid(torch.tensor(0.1))
    assert all(z.dtype == torch.float32 for z in result.final_state.values())
    assert max(float((z - start).abs().max()) for z in result.final_state.values()) > 1e-3  # p moved
    assert torch.isfinite(torch.tensor(result.metrics[0]["loss"]))
    saved = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)
    assert all(t.dtype == torch.float32 for t in saved["parameters"].values())
    assert all(s["exp_avg"].dtype == torch.float32 for s in saved["optimizer"]["state"].values())
    assert next(loaded.model.parameters()).dtype == torch.bfloat16  # the model is given back as it was


def test_the_loop_leaves_global_state_alone(tokenizer, tmp_path, monkeypatch):
    pytest.importorskip("peft")
    monkeypatch.setattr("sys.argv", ["not-the-command", "--lr", "9"])
    loaded = tiny_llama(tokenizer)  # (seeds torch itself)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    result = run(toy_config(tmp_path / "run", method="lora", iters=1, command="t2 train --task toy"), loaded, tmp_path)
    assert torch.equal(torch.get_rng_state(), before)  # LoRA draws A and dropout from its own stream
    import json

    meta = json.loads((result.path / "t2_lora.json").read_text())
    assert meta["command"] == "t2 train --task toy"


def test_an_interrupted_run_says_whether_there_is_anything_to_resume(tmp_path):
    from t2cli.cli.train import EventRenderer, interrupted_message

    config = toy_config(tmp_path / "run")
    renderer = EventRenderer(lambda *args: None, 3)
    message = interrupted_message(config, renderer)
    assert "nothing to resume" in message and "--resume" not in message
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_FILE).write_bytes(b"saved")
    renderer({"event": "checkpoint", "iter": 2, "path": str(tmp_path / "run" / CHECKPOINT_FILE)})
    message = interrupted_message(config, renderer)
    assert "last checkpoint (iteration 2)" in message and "--resume" in message


def test_budget_line_states_the_work():
    from t2cli.cli.train import budget_line
    from t2cli.train.loop import budget

    line = budget_line(budget(TrainConfig(task="t", iters=20, batch_size=8, eval_every=10), 32, 64))
    assert line == (
        "budget: 20 iterations: 160 rollouts (20 RL iterations × 8 prompts × 1 rollouts) of ≤ 64 new "
        "tokens; 3 validations × 32 items × ≤ 64 new tokens"
    )


def test_each_iterations_progress_line_has_its_time_and_the_eta():
    from t2cli.cli.train import EventRenderer

    lines = []
    renderer = EventRenderer(lambda done, total, label: lines.append((done, label)), 120)
    renderer({"event": "iteration", "iter": 3, "reward/mean": 0.25, "time/iter": 412.0})
    assert lines == []  # shown once, with the estimate that follows it
    event = {"event": "eta", "iter": 3, "seconds_per_iter": 412.0, "seconds_per_validation": 300.0}
    renderer(event | {"remaining_s": 117 * 412.0 + 12 * 300.0})
    assert lines == [(3, "reward +0.25 · 412.0 s/it · ETA 14 h 23 min")]


def test_train_step_on_an_open_run_is_the_loops_first_iteration(tokenizer, tmp_path):
    """The phases the benchmarks call: `open_run` then one `train_step` give the same z and metrics
    as the first iteration of `train`."""
    from t2cli.train.loop import open_run, train_step

    whole = run(toy_config(tmp_path / "whole", name="whole", iters=1, eval_every=1), tiny_llama(tokenizer), tmp_path)
    config = toy_config(tmp_path / "step", name="step", iters=1, eval_every=1)
    registry = Registry(write_root=tmp_path / "registry")
    with open_run(config, toy_task(), registry, loaded=tiny_llama(tokenizer)) as opened:
        line = train_step(opened, 0)
        stepped = opened.method.snapshot()
    for name, z in whole.final_state.items():
        assert torch.equal(stepped[name], z), name
    untimed = ("time/iter", "time/rollout", "time/val", "val/accuracy")
    assert {k: v for k, v in line.items() if k not in untimed} == {
        k: v for k, v in whole.metrics[0].items() if k not in untimed
    }
