"""Checkpoints: atomic, complete, and a stopped run resumed ends exactly where an uninterrupted run does."""

import sys

import pytest
import torch
from conftest import tiny_llama
from toy import one_thread, toy_config, toy_task  # noqa: F401 (one_thread: an autouse fixture)

from t2cli.registry import Registry
from t2cli.train import TrainError, train
from t2cli.train.checkpoint import CHECKPOINT_FILE, plot_learning_curve, read_metrics


class Stop(Exception):
    pass


def stop_after(iteration):
    def on_event(event):
        if event["event"] == "iteration" and event["iter"] == iteration:
            raise Stop

    return on_event


@pytest.mark.parametrize("k", [1, 2])  # greedy, and sampled rollouts (their seeds come from the iteration)
def test_resume_continues_exactly(tokenizer, tmp_path, k):
    settings = dict(iters=5, eval_every=2, checkpoint_every=1, rollouts_per_prompt=k, kl=0.1)
    whole = train(
        toy_config(tmp_path / "whole", name="whole", **settings),
        loaded=tiny_llama(tokenizer),
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )

    config = toy_config(tmp_path / "parts", name="parts", **settings)
    with pytest.raises(Stop):  # "killed" after iteration 3 (its checkpoint is already written)
        train(
            config,
            loaded=tiny_llama(tokenizer),
            task=toy_task(),
            registry=Registry(write_root=tmp_path / "registry"),
            on_event=stop_after(3),
        )
    resumed = train(
        config,
        loaded=tiny_llama(tokenizer),
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
        resume=True,
    )

    for name, z in whole.final_state.items():
        assert torch.equal(resumed.final_state[name], z), name  # bit-exact
    for name, z in whole.expert.z.items():
        assert torch.equal(resumed.expert.z[name], z)
    logged = read_metrics(tmp_path / "parts" / "metrics.jsonl")
    assert [m["iter"] for m in logged] == [1, 2, 3, 4, 5]  # no duplicate lines from the stopped session
    drop = ("time/iter", "time/rollout", "time/val")
    assert [{k: v for k, v in m.items() if k not in drop} for m in logged] == [
        {k: v for k, v in m.items() if k not in drop} for m in whole.metrics
    ]


def test_the_best_so_far_is_saved_from_the_checkpoint_without_touching_the_run(tokenizer, tmp_path):
    """An interim expert of a long run: the checkpoint's best z, registered under another name, its
    recipe recording the iterations done; the run's files are left as they were and it resumes exactly."""
    from t2cli.train import save_best_so_far

    settings = dict(iters=5, eval_every=2, checkpoint_every=1, rollouts_per_prompt=2, kl=0.1)
    registry = Registry(write_root=tmp_path / "registry")
    whole = train(
        toy_config(tmp_path / "whole", name="whole", **settings),
        loaded=tiny_llama(tokenizer),
        task=toy_task(),
        registry=registry,
    )
    config = toy_config(tmp_path / "parts", name="parts", **settings)
    with pytest.raises(Stop):
        train(config, loaded=tiny_llama(tokenizer), task=toy_task(), registry=registry, on_event=stop_after(3))
    run_files = {path.name: path.read_bytes() for path in (tmp_path / "parts").iterdir()}
    checkpoint = torch.load(tmp_path / "parts" / CHECKPOINT_FILE, weights_only=True)

    interim = save_best_so_far(
        toy_config(tmp_path / "parts", name="parts-so-far", **settings),
        loaded=tiny_llama(tokenizer),
        task=toy_task(),
        registry=registry,
    )
    assert interim.iterations == 3 and interim.best_iteration == checkpoint["state"]["best_iteration"]
    saved = registry.load("parts-so-far", interim.expert.base_model)  # read back from disk
    for name, z in checkpoint["state"]["best_state"].items():
        assert torch.equal(saved.z[name], z), name
    assert saved.provenance["metrics"]["iterations"] == 3 and saved.provenance["hyperparameters"]["iters"] == 5
    assert {path.name: path.read_bytes() for path in (tmp_path / "parts").iterdir()} == run_files

    resumed = train(config, loaded=tiny_llama(tokenizer), task=toy_task(), registry=registry, resume=True)
    for name, z in whole.final_state.items():
        assert torch.equal(resumed.final_state[name], z), name
    with pytest.raises(TrainError, match="nothing to resume"):
        save_best_so_far(
            toy_config(tmp_path / "none", name="none", **settings), loaded=tiny_llama(tokenizer), task=toy_task()
        )


def test_checkpoint_holds_the_whole_run_state_and_is_written_atomically(llama, tmp_path):
    train(
        toy_config(tmp_path / "run", iters=2),
        loaded=llama,
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    files = sorted(path.name for path in (tmp_path / "run").iterdir())
    assert files == ["checkpoint.pt", "config.json", "metrics.jsonl"]  # no temporary leftovers
    checkpoint = torch.load(tmp_path / "run" / CHECKPOINT_FILE, weights_only=True)
    assert {"format", "config", "parameters", "optimizer", "scheduler", "state", "rng"} <= set(checkpoint)
    assert checkpoint["state"]["iteration"] == 2 and len(checkpoint["state"]["metrics"]) == 2
    assert set(checkpoint["state"]["best_state"]) == set(checkpoint["parameters"])
    assert checkpoint["config"]["lr"] == 0.05
    assert "torch" in checkpoint["rng"]


def test_resume_refuses_a_changed_config_or_a_missing_checkpoint(llama, tmp_path):
    registry = Registry(write_root=tmp_path / "registry")
    with pytest.raises(TrainError, match="nothing to resume"):
        train(toy_config(tmp_path / "run"), loaded=llama, task=toy_task(), registry=registry, resume=True)
    with pytest.raises(Stop):
        train(toy_config(tmp_path / "run"), loaded=llama, task=toy_task(), registry=registry, on_event=stop_after(1))
    with pytest.raises(TrainError, match="pass --resume"):
        train(toy_config(tmp_path / "run"), loaded=llama, task=toy_task(), registry=registry)
    with pytest.raises(TrainError, match="lr: checkpoint 0.05, now 0.1"):
        train(toy_config(tmp_path / "run", lr=0.1), loaded=llama, task=toy_task(), registry=registry, resume=True)
    # bookkeeping options may change
    result = train(
        toy_config(tmp_path / "run", checkpoint_every=5, name="renamed"),
        loaded=llama,
        task=toy_task(),
        registry=registry,
        resume=True,
    )
    assert result.iterations == 3 and result.expert.name == "renamed"


def test_patience_set_at_resume_stops_where_an_unbroken_run_with_it_stops(tokenizer, tmp_path):
    def run(out, on_event=None, resume=False, **overrides):
        config = toy_config(tmp_path / out, iters=8, eval_every=1, **overrides)
        registry = Registry(write_root=tmp_path / "registry" / out)
        return train(
            config, loaded=tiny_llama(tokenizer), task=toy_task(), registry=registry, on_event=on_event, resume=resume
        )

    unbroken = run("unbroken", patience=1)
    with pytest.raises(Stop):
        run("resumed", on_event=stop_after(1))  # started without patience
    resumed = run("resumed", resume=True, patience=1)
    assert resumed.iterations == unbroken.iterations < 8  # stopped early, at the same iteration
    for name, value in unbroken.final_state.items():
        assert torch.equal(resumed.final_state[name], value), name


def test_unreadable_checkpoint_is_a_clear_error(llama, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="cannot read the checkpoint"):
        train(
            toy_config(tmp_path / "run"),
            loaded=llama,
            task=toy_task(),
            registry=Registry(write_root=tmp_path / "registry"),
            resume=True,
        )


def test_learning_curve_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    metrics = [{"iter": 1, "reward/mean": -1.0}, {"iter": 2, "reward/mean": 0.0, "val/accuracy": 0.5}]
    assert plot_learning_curve(metrics, tmp_path / "a.png", "t", base=0.25) == tmp_path / "a.png"
    started = plot_learning_curve(metrics, tmp_path / "s.png", "t", base=0.01, start=("math", 0.04))
    assert started == tmp_path / "s.png" and started.stat().st_size > 1000
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    assert plot_learning_curve(metrics, tmp_path / "b.png", "t") is None
    assert not (tmp_path / "b.png").exists()


def test_a_run_committed_to_git_resumes_exactly_in_a_fresh_clone(tokenizer, tmp_path):
    """A run that outlives its machine: the stopped run's directory is committed, cloned elsewhere
    (another path, nothing else carried over) and resumed there; it ends where an unbroken run does."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    settings = dict(iters=4, eval_every=2, checkpoint_every=1, rollouts_per_prompt=2, kl=0.1)
    whole = train(
        toy_config(tmp_path / "whole", name="whole", **settings),
        loaded=tiny_llama(tokenizer),
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry"),
    )
    origin = tmp_path / "origin"
    with pytest.raises(Stop):
        train(
            toy_config(origin / "runs" / "math", name="parts", **settings),
            loaded=tiny_llama(tokenizer),
            task=toy_task(),
            registry=Registry(write_root=tmp_path / "registry"),
            on_event=stop_after(2),
        )

    def git(*args, cwd):
        env = {
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t",
        }
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, env={**env, "PATH": "/usr/bin:/bin"})

    git("init", "-q", cwd=origin)
    git("add", "runs", cwd=origin)
    git("commit", "-qm", "checkpoint", cwd=origin)
    clone = tmp_path / "elsewhere" / "clone"
    git("clone", "-q", str(origin), str(clone), cwd=tmp_path)
    shutil.rmtree(origin)  # the first machine is gone

    resumed = train(
        toy_config(clone / "runs" / "math", name="parts", **settings),
        loaded=tiny_llama(tokenizer),
        task=toy_task(),
        registry=Registry(write_root=tmp_path / "registry2"),
        resume=True,
    )
    for name, z in whole.final_state.items():
        assert torch.equal(resumed.final_state[name], z), name
    assert [m["iter"] for m in read_metrics(clone / "runs" / "math" / "metrics.jsonl")] == [1, 2, 3, 4]
