"""`t2 chat` on the serving engine, and the SVD store built on a model's first use (chat and eval)."""

import shutil

import pytest
import torch
from typer.testing import CliRunner

from t2cli.cli.app import app
from t2cli.expert import ExpertVector
from t2cli.models import load_model
from t2cli.registry import Registry
from t2cli.svd_store import decompose, find_store

runner = CliRunner()


@pytest.fixture
def model_dir(tmp_path, llama):
    """The tiny model saved as a directory, with two random experts registered (math, code) and
    no SVD store: the state right after the set-up, when a user has pulled experts and run nothing."""
    directory = tmp_path / "tiny-model"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    loaded = load_model(str(directory), device="cpu")
    store = decompose(loaded, ["mlp"])
    for seed, domain in enumerate(("math", "code"), start=1):
        generator = torch.Generator().manual_seed(seed)
        z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
        Registry().add(ExpertVector(z, domain, loaded.name, loaded.fingerprint, ["mlp"], domain=domain))
    shutil.rmtree(store.path)
    return directory


def has_store(model_dir) -> bool:
    return find_store(load_model(str(model_dir), device="cpu"), ["mlp"]) is not None


def run(*args, text: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], input=text, env={"COLUMNS": "250"})
    return result.exit_code, result.output


@pytest.mark.parametrize("adapt", ["loglik", "fixed:math"])
def test_chat_builds_the_svd_store_on_first_use(model_dir, adapt):
    assert not has_store(model_dir)
    code, out = run("chat", "--model", model_dir, "--adapt", adapt, "--max-new-tokens", "2", text="hello\n")
    assert code == 0, out
    assert "first use only" in out and "t2 decompose" not in out  # a progress line, not a hint-and-stop
    assert out.count("t2> ") == 1 and has_store(model_dir)
    code, out = run("chat", "--model", model_dir, "--adapt", adapt, "--max-new-tokens", "2", text="hello\n")
    assert code == 0 and "first use only" not in out  # built once


def test_eval_with_an_expert_builds_the_svd_store_on_first_use(model_dir, tmp_path):
    assert not has_store(model_dir)
    args = ("eval", "--task", "arc-easy", "--model", model_dir, "--expert", "math", "--limit", "1")
    code, out = run(*args, "--max-new-tokens", "2", "--out", tmp_path / "out")
    assert code == 0, out
    assert "first use only" in out and "t2 decompose" not in out and has_store(model_dir)


def test_chat_without_experts_needs_no_store(model_dir):
    code, out = run("chat", "--model", model_dir, "--adapt", "none", "--max-new-tokens", "2", text="hello\n")
    assert code == 0, out
    assert out.count("t2> ") == 1 and not has_store(model_dir)


# --------------------------------------------------------------------------- the engine behind the chat


def chat_session(loaded, strategy: str, max_tokens: int):
    """What `t2 chat` builds: pass 1 (its dense switch made first), then the engine around the model."""
    from t2cli.adaptive import AdaptiveModel
    from t2cli.cli.chat_session import ChatSession
    from t2cli.serve.engine import Engine, Sampling
    from t2cli.svd_store import open_store

    adaptive = AdaptiveModel.open(loaded, strategy)
    engine = Engine(loaded, open_store(loaded, ["mlp"]), {}, max_batch=1, max_queue=1).start()
    return ChatSession(adaptive, engine, Sampling(max_tokens=max_tokens, temperature=0.0)), engine


def test_chat_answers_equal_the_dense_composition_and_switching_recomposes_nothing(model_dir):
    from t2cli.generation import GenerationConfig, chat_prompt, generate

    loaded = load_model(str(model_dir), device="cpu")
    decompose(loaded, ["mlp"])
    session, engine = chat_session(loaded, "fixed:math", max_tokens=8)
    try:
        session.handle("What is 2+3?")
        session.handle("/expert code")
        session.handle("And 4+4?")  # another expert, on the conversation so far
        session.handle("/expert auto")
        session.handle("Thanks.")
    finally:
        engine.stop(deadline_s=5)
    answers = session.messages[1::2]
    assert len(answers) == 3 and session.adaptive.switch.compositions == 0  # no weights composed
    registry = Registry()
    for turn, name in enumerate(["math", "code", "math"]):
        # the same turn answered as before the engine: the expert composed into the weights, generate
        session.adaptive.switch.use(registry.load(name, loaded.name))
        prompt = chat_prompt(loaded.tokenizer, session.messages[: 2 * turn + 1])
        dense = generate(loaded, [prompt], GenerationConfig(max_new_tokens=8, batch_size=1))[0]
        assert answers[turn]["content"] == dense.text
    session.adaptive.base()


def test_engine_stream_sends_text_as_it_comes_and_a_failing_reader_cancels(llama):
    from t2cli.serve.engine import Engine, Sampling

    store = decompose(llama, ["mlp"])
    engine = Engine(llama, store, {}, max_batch=1, max_queue=1).start()
    try:
        ids = engine.chat_ids([{"role": "user", "content": "hello there"}])
        greedy = Sampling(max_tokens=6, temperature=0.0)
        pieces = []
        text, finished, _ = engine.stream(ids, greedy, on_text=pieces.append)
        assert "".join(pieces) == text == engine.generate(ids, greedy)[0] and finished.reason in ("stop", "length")

        def stop_reading(piece):
            raise KeyboardInterrupt  # Ctrl-C while the answer streams

        with pytest.raises(KeyboardInterrupt):
            engine.stream(ids, Sampling(max_tokens=200, temperature=0.0), on_text=stop_reading)
        engine.wait_idle(timeout_s=5)  # its slot is free
        assert engine.generate(ids, greedy)[0] == text
    finally:
        engine.stop(deadline_s=5)
