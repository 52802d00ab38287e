"""The two-pass model: dispatch, LRU of composed weights, exact base weights for "other"."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from conftest import count_generated_prompts
from test_dispatch import SHOTS, TOY, make_setup, random_expert

import t2cli.adaptive
from t2cli.adapt import DenseAdapter
from t2cli.adaptive import AdaptiveAnswer, AdaptiveModel, open_for_task
from t2cli.dispatch import CEMOptions, Decision, Dispatcher, DispatchError, ExpertSwitch
from t2cli.dispatch.cem_search import split_shots
from t2cli.evaluate import evaluate_adaptive
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.tasks.base import TaskData

SHORT = GenerationConfig(max_new_tokens=4)


class ByKeyword(Dispatcher):
    """A deterministic pass 1 for tests: "sum" → math, "def" → code, anything else → other."""

    name = "keyword"

    def __init__(self, registry, base_model):
        self.experts = {d: registry.load(f"{d}-expert", base_model) for d in ("math", "code")}

    def decide(self, prompts):
        labels = ["math" if "sum" in p else "code" if "def" in p else "other" for p in prompts]
        return [Decision(label, self.experts.get(label)) for label in labels]


@pytest.fixture
def setup(llama, tmp_path):
    return make_setup(llama, tmp_path)


def count_compositions(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = DenseAdapter.compose

    def spy(self, expert):
        calls.append(expert.name)
        return real(self, expert)

    monkeypatch.setattr(DenseAdapter, "compose", spy)
    return calls


@pytest.mark.parametrize("strategy", ["none", "fixed:math-expert", "prompt", "cls", "loglik"])
def test_generate_returns_an_answer_with_its_decision(llama, setup, strategy):
    store, registry, _ = setup
    model = AdaptiveModel(llama, store, registry, strategy)
    answer = model.generate("What is the sum of 1 and 2?", SHORT)
    assert isinstance(answer, AdaptiveAnswer)
    assert isinstance(answer.text, str) and answer.pass1_s >= 0 and answer.pass2_s > 0
    assert answer.decision.label in ("math", "code", "reasoning", "other")
    assert model.switch.active == answer.decision.expert_name


def test_same_domain_prompts_do_not_recompose(llama, setup, monkeypatch):
    store, registry, _ = setup
    calls = count_compositions(monkeypatch)
    model = AdaptiveModel(llama, store, registry, ByKeyword(registry, llama.name))
    model.generate("the sum of 2 and 3", SHORT)
    model.generate("the sum of 4 and 5", SHORT)
    assert calls == ["math-expert"]
    model.generate("def f(): pass", SHORT)
    model.generate("the sum of 6 and 7", SHORT)  # back to math: from the cache
    assert calls == ["math-expert", "code-expert"]


def test_cache_capacity_is_bounded(llama, setup, monkeypatch):
    store, registry, _ = setup
    calls = count_compositions(monkeypatch)
    switch = ExpertSwitch(DenseAdapter(llama, store), capacity=2)
    experts = [registry.load(f"{d}-expert", llama.name) for d in ("math", "code", "reasoning")]
    for expert in experts:
        switch.use(expert)
        assert len(switch.cache) <= 2
    assert list(switch.cache) == ["code-expert", "reasoning-expert"]
    switch.use(experts[0])  # evicted: composed again
    assert calls == ["math-expert", "code-expert", "reasoning-expert", "math-expert"]
    with pytest.raises(ValueError):
        ExpertSwitch(switch.adapter, capacity=0)


def test_other_gives_exactly_the_base_weights(llama, setup):
    store, registry, _ = setup
    prompt = chat_prompt(llama.tokenizer, [{"role": "user", "content": "hello there"}])
    base_text = generate(llama, [prompt], SHORT)[0].text
    base_weights = {n: p.detach().clone() for n, p in llama.model.named_parameters()}
    model = AdaptiveModel(llama, store, registry, ByKeyword(registry, llama.name))
    model.generate("def f(): pass", SHORT)
    assert any(not torch.equal(p, base_weights[n]) for n, p in llama.model.named_parameters())
    answer = model.generate("hello there", SHORT)
    assert answer.decision.label == "other" and answer.decision.expert is None
    assert all(torch.equal(p, base_weights[n]) for n, p in llama.model.named_parameters())
    assert answer.text == base_text


def test_generate_many_groups_pass_two_by_decision(llama, setup, monkeypatch):
    store, registry, _ = setup
    model = AdaptiveModel(llama, store, registry, ByKeyword(registry, llama.name))
    prompts = ["the sum of 1 and 2", "def f(): pass", "hello", "the sum of 3 and 4", "def g(): pass"]
    import t2cli.adaptive as adaptive

    batches: list[int] = []
    real = adaptive.generate

    def spy(loaded, texts, config=None, **kwargs):
        batches.append(len(texts))
        return real(loaded, texts, config, **kwargs)

    monkeypatch.setattr(adaptive, "generate", spy)
    answers = model.generate_many(prompts, SHORT)
    assert sorted(batches) == [1, 2, 2]  # one pass-2 generation per decision
    assert [a.decision.label for a in answers] == ["math", "code", "other", "math", "code"]
    monkeypatch.setattr(adaptive, "generate", real)
    one_by_one = [model.generate(p, SHORT).text for p in prompts]
    assert [a.text for a in answers] == one_by_one  # results come back in the caller's order


def test_chat_messages_dispatch_the_last_user_turn(llama, setup):
    store, registry, _ = setup
    model = AdaptiveModel(llama, store, registry, ByKeyword(registry, llama.name))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "def f(): pass"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "the sum of 1 and 2"},
    ]
    assert model.generate(messages, SHORT).decision.label == "math"


def test_cem_strategy_searches_once_and_reuses_the_mixture(llama, setup):
    store, registry, _ = setup
    with pytest.raises(DispatchError, match="shots"):
        AdaptiveModel(llama, store, registry, "cem")
    options = CEMOptions(population=3, generations=1, task=TOY, shots=SHOTS)
    model = AdaptiveModel(llama, store, registry, "cem", options)
    assert model.cem is not None and model.cem.evaluations == 3
    answers = model.generate_many(["What is 7 + 1?", "What is 8 + 1?"], SHORT)
    assert {a.decision.label for a in answers} == {"mixture"}
    assert answers[0].decision.weights == model.cem.weights
    registry.add(model.cem.expert)  # reusable: registered like any expert
    assert registry.load("cem-toy", llama.name).provenance["objective"] == "cem"


def test_evaluate_adaptive_never_scores_the_shots(llama, setup):
    store, registry, _ = setup
    examples = [{"id": str(i), "question": f"What is {i} + 1?", "answer": str((i + 1) % 10)} for i in range(12)]
    task = dataclasses.replace(TOY, loader=lambda split, data_dir: TaskData(examples, 0, "inline"), splits=("test",))
    shots, rest = split_shots(examples, 4, seed=0)
    options = CEMOptions(population=3, generations=1, task=task, shots=shots)
    model = AdaptiveModel(llama, store, registry, "cem", options)
    report = evaluate_adaptive(model, task, "test", generation=SHORT, exclude=shots)
    assert [s["id"] for s in report.samples] == [e["id"] for e in rest]
    assert report.n == 8 and {s["label"] for s in report.samples} == {"mixture"}
    dispatch = report.config["dispatch"]
    assert dispatch["excluded_shots"] == sorted(e["id"] for e in shots)
    assert dispatch["labels"] == {"mixture": 8}
    # Times are wall-clock: check what they are made of, never how large they are (a total that was
    # rounded to 10 ms once read 0.0 for a few fast generations).
    assert dispatch["pass2_s"] == pytest.approx(sum(s["pass2_s"] for s in report.samples), abs=1e-3)
    assert all(s["pass2_s"] >= s["switch_s"] >= 0 for s in report.samples)


def test_open_for_task_takes_default_shots_for_cem(llama, setup):
    store, registry, _ = setup
    examples = [{"id": str(i), "question": f"What is {i} + 1?", "answer": str((i + 1) % 10)} for i in range(12)]
    task = dataclasses.replace(TOY, loader=lambda split, data_dir: TaskData(examples, 0, "inline"), splits=("test",))
    options = CEMOptions(population=3, generations=1)
    model, shots = open_for_task(llama, task, "cem", options, registry=registry)  # no --shots
    assert len(shots) == 6  # half of a 12-example split (32 where the split allows)
    assert model.cem is not None and model.cem.evaluations == 3
    assert open_for_task(llama, task, "loglik", registry=registry)[1] == []  # only cem takes shots


def saved_with_experts(llama, tmp_path, domains) -> str:
    """The tiny model saved as a directory (as a CLI user passes it), random experts registered."""
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.svd_store import decompose

    model_dir = tmp_path / "tiny"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    loaded = load_model(str(model_dir), device="cpu")
    store = decompose(loaded, ["mlp"])
    for seed, domain in enumerate(domains):
        Registry().add(random_expert(loaded, store, seed, f"{domain}-expert", domain))
    return model_dir


@pytest.mark.parametrize("adapt", ["loglik", "fixed:math-expert", "none"])
def test_chat_command_runs_on_piped_input(tmp_path, llama, adapt):
    import typer
    from typer.testing import CliRunner

    from t2cli.cli.chat import chat_command

    model_dir = saved_with_experts(llama, tmp_path, ("math", "code"))
    app = typer.Typer()
    app.command()(chat_command)
    result = CliRunner().invoke(
        app,
        ["--adapt", adapt, "--model", str(model_dir), "--max-new-tokens", "3"],
        input="What is 2+3?\n/reset\nhello\n/quit\nnever read\n",
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("t2>") == 2 and "never read" not in result.output
    assert result.output.count("pass 1") == 2
    if adapt.startswith("fixed"):
        assert "math-expert (math)" in result.output


@pytest.mark.parametrize("adapt", ["loglik", "cem"])
def test_eval_command_with_adapt(tmp_path, llama, adapt):
    from typer.testing import CliRunner

    from t2cli.cli.app import app

    model_dir = saved_with_experts(llama, tmp_path, ("math", "code", "reasoning"))
    out = tmp_path / "out"
    args = ["eval", "--task", "arc-easy", "--model", str(model_dir), "--limit", "3", "--max-new-tokens", "2"]
    args += ["--adapt", adapt, "--out", str(out)]
    if adapt == "cem":
        args += ["--shots", "2", "--cem-generations", "1"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 3 and report["expert"] == f"adapt:{adapt}"
    dispatch = report["config"]["dispatch"]
    assert sum(dispatch["labels"].values()) == 3
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert not {s["id"] for s in samples} & set(dispatch["excluded_shots"])
    assert len(dispatch["excluded_shots"]) == (2 if adapt == "cem" else 0)
    by_label = dispatch["by_label"]
    assert sum(c["n"] for c in by_label.values()) == 3
    assert sum(c["correct"] for c in by_label.values()) == report["correct"]
    assert dispatch["task_domain"] == "reasoning"
    assert dispatch["routed_to_task_domain"] == pytest.approx(dispatch["labels"].get("reasoning", 0) / 3, abs=1e-4)
    assert f"pass 1 ({'cem' if adapt == 'cem' else adapt})" in result.output and "pass 1 / pass 2" in result.output


def test_eval_command_continues_a_cut_off_cem_search(tmp_path, llama, monkeypatch):
    from typer.testing import CliRunner

    import t2cli.dispatch.cem_search as cem
    from t2cli.cli.app import app

    model_dir = saved_with_experts(llama, tmp_path, ("math", "code", "reasoning"))
    args = ["eval", "--task", "arc-easy", "--model", str(model_dir), "--limit", "2", "--max-new-tokens", "2"]
    args += ["--adapt", "cem", "--shots", "2", "--cem-generations", "3"]
    unbroken = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "unbroken")])
    assert unbroken.exit_code == 0, unbroken.output
    scored: list[int] = []
    real_score = cem._Population.score

    def cut_at_generation_two(self, generation, members):
        if generation == 2:
            raise KeyboardInterrupt
        return real_score(self, generation, members)

    monkeypatch.setattr(cem._Population, "score", cut_at_generation_two)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*args, "--out", str(out)], env={"COLUMNS": "300"})
    assert result.exit_code == 130, result.output
    assert "search so far is kept in" in result.output and "the same command goes on from it" in result.output
    assert len(json.loads((out / "search.partial.json").read_text())["state"]["history"]) == 2
    monkeypatch.setattr(cem._Population, "score", lambda self, g, m: scored.append(g) or real_score(self, g, m))
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert scored == [2]  # the search went on from its last finished generation
    report, expected = (json.loads((d / "report.json").read_text()) for d in (out, tmp_path / "unbroken"))
    cem = report["config"]["dispatch"]["cem"]
    searched = expected["config"]["dispatch"]["cem"]
    assert cem.pop("search_s") > 0 and searched.pop("search_s") > 0  # wall time: only its presence
    assert cem == searched
    assert cem["generations"] == 3 and cem["evaluations"] == 3 * 32 and cem["shots"] == 2
    assert cem["fitness"] == "loglik" and cem["tolerance"] == 0.0 and cem["final_spread"] >= 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "samples.jsonl"]  # the state went with it


def test_eval_command_records_the_pass1_options(tmp_path, llama):
    from typer.testing import CliRunner

    from t2cli.cli.app import app

    model_dir = saved_with_experts(llama, tmp_path, ("math", "code", "reasoning"))
    args = ["eval", "--task", "arc-easy", "--model", str(model_dir), "--limit", "2", "--max-new-tokens", "2"]
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, args + ["--adapt", "loglik", "--pass1-tokens", "8", "--pass1-dtype", "bfloat16", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    dispatch = json.loads((out / "report.json").read_text())["config"]["dispatch"]
    assert dispatch["pass1_request_tokens"] == 8 and dispatch["pass1_dtype"] == "bfloat16"
    assert dispatch["pass1_setup_s"] > 0  # the bfloat16 copy and the calibration, paid once
    result = CliRunner().invoke(app, args + ["--adapt", "loglik", "--pass1-dtype", "int3"])
    assert result.exit_code == 2 and "--pass1-dtype must be one of float32, bfloat16, float16" in result.output
    result = CliRunner().invoke(app, args + ["--adapt", "fixed:math-expert", "--pass1-dtype", "bfloat16"])
    assert result.exit_code == 2 and "loglik, loglik-cls, centroid strategies only" in result.output


def test_pass1_set_up_is_paid_once_at_construction(llama, setup, monkeypatch):
    """The loglik pass 1's one-time work (calibration prefill, shared prefix) happens when the
    model is built, so the first prompt's pass-1 time is only its own."""
    store, registry, _ = setup
    model = AdaptiveModel(llama, store, registry, "loglik")
    dispatcher = model.dispatcher
    assert model.setup_s > 0 and dispatcher.prior is not None and dispatcher.shared is not None
    prior, shared = dispatcher.prior, dispatcher.shared
    scored: list[int] = []
    real_scores = dispatcher.scores
    monkeypatch.setattr(dispatcher, "scores", lambda prompts: scored.append(len(prompts)) or real_scores(prompts))
    model.generate("What is the sum of 1 and 2?", SHORT)
    assert scored == [1]  # the prompt only: no calibration prefill on the first call
    assert dispatcher.prior is prior and dispatcher.shared is shared


# --------------------------------------------------------------------------- a strategy is one entry


class FirstWord(Dispatcher):
    """A toy pass 1 defined only here: the prompt's first word names the domain."""

    name = "first-word"

    def __init__(self, experts):
        self.experts = experts
        self.prepared = 0

    def prepare(self) -> float:
        self.prepared += 1
        return 0.0

    def decide(self, prompts):
        words = [(p.split() or ["other"])[0].lower().strip(":") for p in prompts]
        return [Decision(w if w in self.experts else "other", self.experts.get(w)) for w in words]


@pytest.fixture
def first_word(monkeypatch):
    """Registers the toy strategy in the table for this test only (no library file touched)."""
    from t2cli.dispatch import table as strategies

    monkeypatch.setattr(strategies, "STRATEGIES", dict(strategies.STRATEGIES))
    built: list[FirstWord] = []

    def factory(context, argument):
        built.append(FirstWord(context.domain_experts()))
        return built[-1]

    strategies.register_strategy(strategies.Strategy("first-word", "the first word names the domain", factory))
    return built


def test_a_strategy_registered_outside_the_library_runs_through_adaptive_model(llama, setup, first_word):
    store, registry, _ = setup
    model = AdaptiveModel(llama, store, registry, "first-word")
    assert first_word[0].prepared == 1  # its set-up ran once, at construction
    answers = model.generate_many(["math: 1 + 1?", "code: def f(): pass", "hello"], SHORT)
    assert [a.decision.label for a in answers] == ["math", "code", "other"]
    assert [a.decision.expert_name for a in answers] == ["math-expert", "code-expert", None]


def test_a_strategy_registered_outside_the_library_runs_through_eval(tmp_path, llama, first_word):
    from typer.testing import CliRunner

    from t2cli.cli.app import app

    model_dir = saved_with_experts(llama, tmp_path, ("math", "code", "reasoning"))
    out = tmp_path / "out"
    args = ["eval", "--task", "arc-easy", "--model", str(model_dir), "--limit", "2", "--max-new-tokens", "2"]
    result = CliRunner().invoke(app, args + ["--adapt", "first-word", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["expert"] == "adapt:first-word" and report["config"]["dispatch"]["labels"] == {"other": 2}
    assert report["config"]["dispatch"]["experts"] == {
        "code": "code-expert",
        "math": "math-expert",
        "reasoning": "reasoning-expert",
    }


@dataclass(frozen=True)
class FirstWordsOptions:
    """The toy strategy's own options, as a strategy module declares them."""

    words: int = field(default=1, metadata={"help": "how many leading words may name the domain"})

    def __post_init__(self) -> None:
        if self.words < 1:
            raise DispatchError(f"words must be ≥ 1 (got {self.words})")


class FirstWords(Dispatcher):
    """A domain named among a prompt's first `words` words answers it."""

    name = "first-words"

    def __init__(self, experts, words: int):
        self.experts, self.words = experts, words

    def decide(self, prompts):
        found = [[w.lower().strip(":") for w in p.split()[: self.words]] for p in prompts]
        labels = [next((w for w in words if w in self.experts), "other") for words in found]
        return [Decision(label, self.experts.get(label)) for label in labels]


def build_first_words(context, argument):
    return FirstWords(context.domain_experts(), context.options.words)


def test_a_strategy_with_its_own_options_is_one_table_entry(llama, setup, monkeypatch):
    """The example of docs/DEVELOPING.md: an options dataclass, a dispatcher, a factory, one entry."""
    from t2cli.dispatch import LoglikOptions, make_dispatcher, table

    monkeypatch.setattr(table, "STRATEGIES", dict(table.STRATEGIES))
    table.register_strategy(
        table.Strategy("first-words", "a domain named in the first words", build_first_words, FirstWordsOptions)
    )
    store, registry, switch = setup
    prompts = ["math: 1 + 1?", "please code: def f(): pass", "hello"]
    dispatcher = make_dispatcher("first-words", llama, switch, registry)  # its defaults: the first word only
    assert [d.label for d in dispatcher.decide(prompts)] == ["math", "other", "other"]
    model = AdaptiveModel(llama, store, registry, "first-words", FirstWordsOptions(words=2))
    answers = model.generate_many(prompts, SHORT)
    assert [a.decision.label for a in answers] == ["math", "code", "other"]
    assert [a.decision.expert_name for a in answers] == ["math-expert", "code-expert", None]
    assert table.strategy_options("first-words", {"words": 2, "request_tokens": 8}) == FirstWordsOptions(words=2)
    assert "first-words" in table.routing_strategies() and "first-words" in table.strategy_names()
    with pytest.raises(DispatchError, match="words must be ≥ 1"):
        FirstWordsOptions(words=0)
    with pytest.raises(DispatchError, match="takes FirstWordsOptions, not LoglikOptions"):
        make_dispatcher("first-words", llama, switch, registry, LoglikOptions())
    with pytest.raises(DispatchError, match="a pass-1 dtype applies to the loglik, loglik-cls, centroid strategies"):
        table.strategy_options("first-words", {"pass1_dtype": "bfloat16"})


# --------------------------------------------------------------------------- the experts routed over, from the CLI


def test_chat_names_a_doubled_domain_and_survives_a_broken_expert(tmp_path, llama, monkeypatch):
    """A user expert claiming the shipped 'reasoning' domain does not replace the shipped expert
    silently; a corrupt user expert is reported and skipped; --experts picks explicitly."""
    import typer
    from typer.testing import CliRunner

    import t2cli.registry
    from t2cli.cli.chat import chat_command
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.svd_store import open_store

    model_dir = saved_with_experts(llama, tmp_path, ())
    loaded = load_model(str(model_dir), device="cpu")
    store = open_store(loaded, ["mlp"])
    shipped_root = tmp_path / "shipped"
    shipped = Registry(roots=[shipped_root], write_root=shipped_root)
    for seed, domain in enumerate(("math", "reasoning")):
        shipped.add(random_expert(loaded, store, seed, domain, domain))
    monkeypatch.setattr(t2cli.registry, "SHIPPED_REGISTRY", shipped_root)
    user = Registry()
    user.add(random_expert(loaded, store, 5, "arc-easy-rl", "reasoning"))
    broken = user.add(random_expert(loaded, store, 6, "mine", "poetry"))
    (broken.path / "expert.safetensors").write_bytes(b"corrupt")

    app = typer.Typer()
    app.command()(chat_command)
    args = ["--adapt", "fixed:math", "--model", str(model_dir), "--max-new-tokens", "2"]
    result = CliRunner().invoke(app, args[:1] + ["loglik"] + args[2:], input="hello\n", env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "reasoning → reasoning" in result.output and "poetry" not in result.output.split("routing over:")[1][:80]
    assert "using reasoning (shipped), not arc-easy-rl; choose with --experts" in result.output
    assert "skipped mine:" in result.output
    result = CliRunner().invoke(
        app, ["--adapt", "loglik", "--experts", "arc-easy-rl,math"] + args[2:], input="hello\n", env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    assert "math → math, reasoning → arc-easy-rl" in result.output and "note:" not in result.output
    result = CliRunner().invoke(app, ["--adapt", "loglik", "--experts", "mine"] + args[2:], input="hello\n")
    assert result.exit_code == 2 and "'mine' cannot be used" in result.output


def test_a_two_pass_run_cut_off_goes_on_to_the_unbroken_runs_answers(llama, setup, tmp_path, monkeypatch):
    """Answers kept batch by batch (per expert) are reused; only the rest is generated, in the same batches."""
    from t2cli.answer_journal import AnswerJournal

    store, registry, _ = setup
    questions = ["the sum of 1 and 2", "def f(): pass", "hello", "sum 3 4 5", "def g(x): return x", "sum 9"] * 2
    examples = [{"id": str(i), "question": q, "answer": "3"} for i, q in enumerate(questions)]
    task = dataclasses.replace(TOY, loader=lambda split, data_dir: TaskData(examples, 0, "inline"), splits=("test",))
    config = GenerationConfig(max_new_tokens=5, batch_size=2)
    model = AdaptiveModel(llama, store, registry, ByKeyword(registry, llama.name))
    unbroken = evaluate_adaptive(model, task, "test", generation=config)

    class Killed(Exception):
        pass

    journal = AnswerJournal(tmp_path, {"run": "two-pass"})

    def add_then_die(batch_examples, answers):
        journal.add(batch_examples, answers)
        if journal._batches == 4:  # math's three batches and the first of code's
            raise Killed

    with pytest.raises(Killed):
        evaluate_adaptive(model, task, "test", generation=config, on_completions=add_then_die)
    journal = AnswerJournal(tmp_path, {"run": "two-pass"}, resume=True)
    assert journal.reused == 8
    generated = count_generated_prompts(monkeypatch, t2cli.adaptive)
    resumed = evaluate_adaptive(
        model, task, "test", generation=config, on_completions=journal.add, finished=journal.finished_two_pass()
    )
    assert generated == [2, 2]  # the rest of code's group, then other's; math's is not generated again
    fields = ("id", "output", "label", "expert", "correct", "cut_off")
    assert [tuple(s[f] for f in fields) for s in resumed.samples] == [
        tuple(s[f] for f in fields) for s in unbroken.samples
    ]
    assert resumed.config["resumed_answers"] == 8 and resumed.config["dispatch"]["labels"] == {
        "math": 6,
        "code": 4,
        "other": 2,
    }


def test_a_kept_answer_whose_label_pass_1_no_longer_chooses_is_generated_again(llama, setup, monkeypatch):
    """Only the answers reused count as resumed; one kept under another label is answered anew."""
    store, registry, _ = setup
    questions = ["the sum of 1 and 2", "def f(): pass", "hello", "sum 3 4 5"]
    examples = [{"id": str(i), "question": q, "answer": "3"} for i, q in enumerate(questions)]
    task = dataclasses.replace(TOY, loader=lambda split, data_dir: TaskData(examples, 0, "inline"), splits=("test",))
    config = GenerationConfig(max_new_tokens=5, batch_size=2)
    model = AdaptiveModel(llama, store, registry, ByKeyword(registry, llama.name))
    unbroken = evaluate_adaptive(model, task, "test", generation=config)
    kept = {sample["id"]: answer for sample, answer in zip(unbroken.samples, _answers(model, task, config))}
    kept["0"] = dataclasses.replace(kept["0"], decision=dataclasses.replace(kept["0"].decision, label="code"))
    generated = count_generated_prompts(monkeypatch, t2cli.adaptive)
    resumed = evaluate_adaptive(model, task, "test", generation=config, finished=kept)
    assert generated == [1]  # prompt 0 alone: pass 1 chose math for it, its kept answer says code
    assert resumed.config["resumed_answers"] == 3
    assert [s["output"] for s in resumed.samples[1:]] == [s["output"] for s in unbroken.samples[1:]]


def _answers(model: AdaptiveModel, task, config: GenerationConfig):
    """The two-pass answers to `task`'s test prompts, in order."""
    examples = task.load("test", None).examples
    return model.generate_many([task.messages(example) for example in examples], config)
