"""Pass-1 strategies on a tiny random Llama with tiny random experts in a temporary registry."""

from __future__ import annotations

import pytest
import torch

from t2cli.adapt import DenseAdapter
from t2cli.dispatch import (
    CEMOptions,
    CentroidOptions,
    Decision,
    DispatchError,
    ExpertSwitch,
    LoglikDispatcher,
    LoglikOptions,
    SharedPrefix,
    choose_experts,
    classification_expert,
    classifier_task,
    domain_experts,
    first_token_logits,
    label_logliks,
    label_logliks_batch,
    last_tokens,
    make_dispatcher,
)
from t2cli.errors import RegistryError
from t2cli.expert import ExpertVector
from t2cli.registry import Registry
from t2cli.svd_store import decompose
from t2cli.tasks.base import Task

DOMAINS = ("math", "code", "reasoning", "classification")


TASK_OF = {"math": "gsm8k", "code": "mbpp-plus", "reasoning": "arc-easy", "classification": "cls"}


def random_expert(loaded, store, seed: int, name: str, domain: str, task: str | None = None) -> ExpertVector:
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
    provenance = {"task": task or TASK_OF.get(domain, "arc-challenge")}
    return ExpertVector(z, name, loaded.name, loaded.fingerprint, store.targets, domain=domain, provenance=provenance)


def make_setup(loaded, tmp_path, domains=DOMAINS):
    store = decompose(loaded, ["mlp"])
    registry = Registry(roots=[tmp_path / "reg"], write_root=tmp_path / "reg")
    for seed, domain in enumerate(domains):
        registry.add(random_expert(loaded, store, seed, f"{domain}-expert", domain))
    switch = ExpertSwitch(DenseAdapter(loaded, store))
    return store, registry, switch


@pytest.fixture
def setup(llama, tmp_path):
    return make_setup(llama, tmp_path)


TOY = Task(
    name="toy",
    domain="math",
    description="one-token answers",
    to_example=lambda row, fallback_id: row,
    prompt=lambda example: example["question"],
    extractor=lambda output, example=None: output.strip()[:1] or None,
    is_correct=lambda answer, example: answer == example["answer"],
    reference=lambda example: example["answer"],
    max_new_tokens=2,
)
SHOTS = [{"id": str(i), "question": f"What is {i} + 1?", "answer": str((i + 1) % 10)} for i in range(4)]


def test_experts_are_found_by_domain_metadata(llama, setup):
    _, registry, _ = setup
    assert domain_experts(registry, llama.name) == {
        "code": "code-expert",
        "math": "math-expert",
        "reasoning": "reasoning-expert",
    }
    assert classification_expert(registry, llama.name).name == "classification-expert"


def test_cls_without_a_classification_expert_says_how_to_train_one(llama, tmp_path):
    _, registry, switch = make_setup(llama, tmp_path, domains=("math", "code"))
    with pytest.raises(DispatchError, match="t2 train --task cls"):
        make_dispatcher("cls", llama, switch, registry)


@pytest.mark.parametrize("strategy", ["none", "fixed:code-expert", "prompt", "cls", "loglik", "loglik-cls"])
def test_every_strategy_returns_a_valid_decision(llama, setup, strategy):
    _, registry, switch = setup
    dispatcher = make_dispatcher(strategy, llama, switch, registry)
    decisions = dispatcher.decide(["What is 1 + 2?", "def add(a, b): return a + b"])
    assert len(decisions) == 2
    for decision in decisions:
        assert isinstance(decision, Decision)
        assert decision.label in ("math", "code", "reasoning", "other")
        assert (decision.expert is None) == (decision.label == "other")
        if decision.expert is not None:
            assert decision.expert.domain == decision.label
        assert decision.seconds >= 0
    if strategy == "fixed:code-expert":
        assert decisions[0].expert_name == "code-expert"


def test_unknown_strategy_and_cem_without_shots_are_refused(llama, setup):
    _, registry, switch = setup
    with pytest.raises(DispatchError, match="unknown dispatch strategy 'vibes'; choose one of none, fixed:NAME"):
        make_dispatcher("vibes", llama, switch, registry)
    with pytest.raises(DispatchError, match="shots"):
        make_dispatcher("cem", llama, switch, registry)
    with pytest.raises(DispatchError, match="needs an argument: fixed:NAME"):
        make_dispatcher("fixed", llama, switch, registry)
    with pytest.raises(DispatchError, match="takes no argument"):
        make_dispatcher("loglik:3", llama, switch, registry)


def test_the_strategy_names_shown_come_from_the_table():
    from t2cli.dispatch.table import STRATEGIES, strategy_names

    assert strategy_names()[:2] == ["none", "fixed:NAME"]
    assert set(strategy_names()) == {s.usage for s in STRATEGIES.values()}
    assert {"prompt", "cls", "loglik", "loglik-cls", "centroid", "cem"} <= set(STRATEGIES)


def test_cem_searches_in_prepare_once(llama, setup, monkeypatch):
    import t2cli.dispatch.cem as cem_strategy

    _, registry, switch = setup
    searches: list[int] = []
    real = cem_strategy.cem_search
    monkeypatch.setattr(cem_strategy, "cem_search", lambda *a, **k: searches.append(1) or real(*a, **k))
    options = CEMOptions(population=2, generations=1, task=TOY, shots=SHOTS)
    dispatcher = make_dispatcher("cem", llama, switch, registry, options)
    assert searches == [] and dispatcher.cem is None  # building is cheap: the search is set-up
    assert dispatcher.prepare() > 0 and searches == [1]
    decisions = dispatcher.decide(["What is 5 + 1?"])
    assert searches == [1] and decisions[0].label == "mixture" and decisions[0].weights == dispatcher.cem.weights
    assert set(dispatcher.report()["cem"]["weights"]) == {"math-expert", "code-expert", "reasoning-expert"}


# --------------------------------------------------------------------------- which experts


@pytest.fixture
def shipped_root(tmp_path, monkeypatch):
    """A stand-in for the shipped registry/ (read-only experts that come with t2)."""
    import t2cli.registry

    root = tmp_path / "shipped"
    monkeypatch.setattr(t2cli.registry, "SHIPPED_REGISTRY", root)
    return root


def test_a_user_expert_claiming_a_shipped_domain_does_not_replace_it(llama, tmp_path, shipped_root):
    store = decompose(llama, ["mlp"])
    Registry(roots=[shipped_root], write_root=shipped_root).add(
        random_expert(llama, store, 0, "reasoning", "reasoning")
    )
    Registry(roots=[shipped_root], write_root=shipped_root).add(random_expert(llama, store, 1, "math", "math"))
    user = Registry(roots=[tmp_path / "user", shipped_root], write_root=tmp_path / "user")
    user.add(random_expert(llama, store, 2, "arc-easy-rl", "reasoning"))  # sorts before "reasoning"
    choice = choose_experts(user, llama.name)
    assert {label: e.name for label, e in choice.experts.items()} == {"math": "math", "reasoning": "reasoning"}
    assert len(choice.notes) == 1
    assert "'reasoning': using reasoning (shipped), not arc-easy-rl; choose with --experts" in choice.notes[0]
    chosen = choose_experts(user, llama.name, ["arc-easy-rl", "math"])  # the user's choice, explicitly
    assert {label: e.name for label, e in chosen.experts.items()} == {"math": "math", "reasoning": "arc-easy-rl"}
    with pytest.raises(DispatchError, match="both claim the domain 'reasoning'"):
        choose_experts(user, llama.name, ["arc-easy-rl", "reasoning"])


def test_a_broken_user_expert_is_reported_and_skipped(llama, setup):
    store, registry, switch = setup
    broken = registry.add(random_expert(llama, store, 7, "zz-broken", "math"))
    (broken.path / "expert.safetensors").write_bytes(b"not a tensor file")
    unreadable = registry.add(random_expert(llama, store, 8, "zz-unreadable", "science"))
    (unreadable.path / "expert.json").write_text("{ truncated")
    choice = choose_experts(registry, llama.name)
    assert choice.experts["math"].name == "math-expert" and "science" not in choice.experts
    assert any(line.startswith("zz-broken:") for line in choice.skipped)
    assert any(line.startswith("zz-unreadable:") for line in choice.skipped)
    dispatcher = make_dispatcher("loglik", llama, switch, registry)
    assert dispatcher.labels == ["code", "math", "reasoning"] and dispatcher.decide(["1 + 1?"])
    with pytest.raises(DispatchError, match="'zz-broken' cannot be used"):
        choose_experts(registry, llama.name, ["zz-broken"])  # named explicitly: an error, not a skip


def test_experts_choose_the_labels_and_a_new_domain_needs_no_code(llama, setup):
    """A domain is whatever an expert declares: a user's 'science' expert is routed like the others."""
    store, registry, switch = setup
    registry.add(random_expert(llama, store, 9, "my-science", "science", task="arc-challenge"))
    dispatcher = make_dispatcher("loglik", llama, switch, registry, experts=["math-expert", "my-science"])
    assert dispatcher.labels == ["math", "science"] and dispatcher.candidates == ["math", "science", "other"]
    assert dispatcher.decide(["Why is the sky blue?"])[0].label in ("math", "science", "other")
    assert make_dispatcher("loglik", llama, switch, registry).labels == ["code", "math", "reasoning", "science"]
    with pytest.raises(RegistryError, match="no expert named 'nope'"):
        make_dispatcher("loglik", llama, switch, registry, experts=["nope"])


def test_the_classifier_task_is_built_from_the_chosen_experts_tasks(llama, setup):
    from t2cli.tasks import get_task

    store, registry, _ = setup
    shipped_like = classifier_task(registry, llama.name)
    assert shipped_like.system == get_task("cls").system  # the shipped set: the same prompt …
    assert shipped_like.load("test").examples == get_task("cls").load("test").examples  # … and the same split
    registry.add(random_expert(llama, store, 9, "my-science", "science", task="arc-challenge"))
    task = classifier_task(registry, llama.name)
    assert "- science" in task.system and "(code, math, reasoning, science, other)" in task.system
    train = task.load("train").examples
    assert {e["answer"] for e in train} == {"code", "math", "reasoning", "science"}
    assert {e["source_task"] for e in train if e["answer"] == "science"} == {"arc-challenge"}
    assert task.check("science", train[0]) == (train[0]["answer"] == "science")
    only = classifier_task(registry, llama.name, ["math-expert", "my-science"])
    assert {e["answer"] for e in only.load("validation").examples} == {"math", "science"}
    with pytest.raises(RegistryError, match=r"only one domain expert .*\(science\).* register another"):
        classifier_task(registry, llama.name, ["my-science"])  # one label: it would learn a constant


def test_centroid_routes_each_training_prompt_to_its_own_domain(llama, setup):
    _, registry, switch = setup
    prompts = {"code": ["def add(a, b): return a + b"], "math": ["What is 1 + 2?"], "reasoning": ["Which is (A)?"]}
    dispatcher = make_dispatcher("centroid", llama, switch, registry)
    dispatcher.prompts = prompts
    assert dispatcher.prepare() > 0 and dispatcher.centroids.shape == (3, llama.model.config.hidden_size)
    decisions = dispatcher.decide([text for texts in prompts.values() for text in texts])
    assert [d.label for d in decisions] == ["code", "math", "reasoning"]
    assert all(d.expert.domain == d.label and d.details["scores"][d.label] == pytest.approx(1.0) for d in decisions)


def test_centroid_takes_its_prompts_from_the_experts_training_tasks(llama, setup):
    """No training: the centroids come from each expert's task's training prompts (the cls train
    split), so a prompt of one of those splits lands in a valid domain, and the split measured is
    never among them."""
    from t2cli.tasks import get_task

    _, registry, switch = setup
    dispatcher = make_dispatcher("centroid", llama, switch, registry, CentroidOptions(request_tokens=16))
    dispatcher.per_label = 3
    prompts = dispatcher.training_prompts()
    assert {label: len(texts) for label, texts in prompts.items()} == {"code": 3, "math": 3, "reasoning": 3}
    test_questions = {e["question"] for e in get_task("cls").load("test").examples}
    assert not test_questions & {text for texts in prompts.values() for text in texts}
    decisions = dispatcher.decide(["Write a Python function that reverses a list."])
    assert decisions[0].label in ("code", "math", "reasoning") and decisions[0].seconds >= 0


def brute_force(loaded, prefix: str, continuation: str) -> float:
    tok = loaded.tokenizer
    p = tok(prefix, add_special_tokens=False)["input_ids"]
    c = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = loaded.model(input_ids=torch.tensor([p + c])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(sum(logp[len(p) - 1 + j, t] for j, t in enumerate(c)))


def first_token(loaded, text: str) -> str:
    return loaded.tokenizer.decode(loaded.tokenizer(text, add_special_tokens=False)["input_ids"][:1])


def first_token_scores(loaded, prefix: str, continuations) -> list[float]:
    """Each continuation's first-token log-probability, renormalised over the continuations."""
    full = torch.tensor([brute_force(loaded, prefix, first_token(loaded, c)) for c in continuations])
    return (full - torch.logsumexp(full, 0)).tolist()


def test_loglik_matches_a_forward_per_label(llama, setup):
    """Labels with different first tokens are scored by that token, from the prefill alone."""
    tiny_model = llama  # (the dispatch prompt is longer than the tiny GPT-2's 256 positions)
    _, registry, switch = setup
    dispatcher = make_dispatcher("loglik", tiny_model, switch, registry)
    assert isinstance(dispatcher, LoglikDispatcher) and dispatcher.first_token_only
    prompt = "What is the capital of France?"
    decision = dispatcher.decide([prompt])[0]
    labels = dispatcher.candidates
    raw = first_token_scores(tiny_model, dispatcher.prefix(prompt), labels)
    prior = first_token_scores(tiny_model, dispatcher.prefix("N/A"), labels)
    assert decision.details["raw"] == pytest.approx(raw, abs=1e-4)
    calibrated = [r - p for r, p in zip(raw, prior)]
    assert decision.label == labels[max(range(len(labels)), key=calibrated.__getitem__)]
    dispatcher.calibrate, dispatcher.prior = False, None
    assert dispatcher.decide([prompt])[0].label == labels[max(range(len(labels)), key=raw.__getitem__)]


def test_labels_that_start_alike_are_scored_by_all_their_tokens(llama, setup):
    _, registry, switch = setup
    expert = next(iter(make_dispatcher("loglik", llama, switch, registry).experts.values()))
    dispatcher = LoglikDispatcher(llama, switch, {"math": expert, "math_word": expert}, calibrate=False)
    assert first_token(llama, "math_word") == first_token(llama, "math") and not dispatcher.first_token_only
    prompt = "What is 2 + 2?"
    raw = dispatcher.decide([prompt])[0].details["raw"]
    expected = [brute_force(llama, dispatcher.prefix(prompt), label) for label in dispatcher.candidates]
    assert raw == pytest.approx(expected, abs=1e-4)


def test_first_token_only_scores_the_first_token(tiny_model):
    """Only the candidates' rows of the output layer are computed, on GPT-2 and Llama alike."""
    loaded = tiny_model
    prefixes = ["1 + 2 = ", "Which planet is the largest in the solar system? The answer is"]
    continuations = ["a}", "code}", "The answer is (A)."]
    scores = label_logliks_batch(loaded, prefixes, continuations, batch_size=2, first_token_only=True)
    for prefix, row in zip(prefixes, scores):
        assert row == pytest.approx(first_token_scores(loaded, prefix, continuations), abs=1e-4)


def test_first_token_logits_apply_the_models_softcapping(llama):
    inputs = {"input_ids": torch.tensor([[5, 6, 7]])}
    token_ids = [3, 9, 11]
    with torch.no_grad():
        full = llama.model(**inputs).logits[:, -1, token_ids]
        assert first_token_logits(llama.model, inputs, token_ids) == pytest.approx(full, abs=1e-5)
        llama.model.config.final_logit_softcapping = 2.0
        try:
            capped = first_token_logits(llama.model, inputs, token_ids)
        finally:
            llama.model.config.final_logit_softcapping = None
    assert capped == pytest.approx(torch.tanh(full / 2.0) * 2.0, abs=1e-5)


def test_loglik_scores_continuations_of_different_lengths(tiny_model):
    continuations = ["a", "The answer is (A).", "def add(a, b):"]
    scores = label_logliks(tiny_model, "1 + 2 = ", continuations)
    for text, score in zip(continuations, scores):
        assert score == pytest.approx(brute_force(tiny_model, "1 + 2 = ", text), abs=1e-4)


def test_batched_loglik_equals_one_prefix_at_a_time(tiny_model):
    """Left-padded prefixes of different lengths score exactly as each prefix alone."""
    prefixes = ["1 + 2 = ", "Which planet is the largest in the solar system? The answer is", "x"]
    continuations = ["a}", "code}", "The answer is (A)."]
    batched = label_logliks_batch(tiny_model, prefixes, continuations, batch_size=3)
    for prefix, scores in zip(prefixes, batched):
        expected = [brute_force(tiny_model, prefix, text) for text in continuations]
        assert scores == pytest.approx(expected, abs=1e-4)
    in_twos = label_logliks_batch(tiny_model, prefixes, continuations, batch_size=2)
    assert sum(in_twos, []) == pytest.approx(sum(batched, []), abs=1e-5)


def test_shared_prefix_cache_gives_the_same_scores(tiny_model):
    """Prefilling the common instruction once and only the rest per prompt changes no score; a
    batch that does not start with the shared tokens is prefilled whole."""
    head = "Classify the request into one category: code, math, other.\nRequest: "
    prompts = [head + "What is 2 + 2?", head + "Write a sort function in Python please", head + "hi"]
    continuations = ["math}", "code}", "other}"]
    shared = SharedPrefix.common_to(tiny_model, [head + "N/A", head + "1 2"])
    assert shared is not None and len(shared.ids) >= 5
    with_cache = label_logliks_batch(tiny_model, prompts, continuations, batch_size=2, shared=shared)
    without = label_logliks_batch(tiny_model, prompts, continuations, batch_size=2)
    assert sum(with_cache, []) == pytest.approx(sum(without, []), abs=1e-4)
    unrelated = label_logliks_batch(tiny_model, ["1 + 2 = "], continuations, shared=shared)
    assert unrelated[0] == pytest.approx(label_logliks(tiny_model, "1 + 2 = ", continuations), abs=1e-5)


def test_request_tokens_keep_the_end_of_long_prompts(llama, setup):
    tokenizer = llama.tokenizer
    long = " ".join(f"w{i}" for i in range(200))
    short = last_tokens(tokenizer, long, 10)
    assert short.endswith("w199") and "w0 " not in short and "w100" not in short
    assert len(tokenizer(short, add_special_tokens=False)["input_ids"]) == 10
    assert (
        tokenizer(long, add_special_tokens=False)["input_ids"][-10:]
        == tokenizer(short, add_special_tokens=False)["input_ids"]
    )
    assert last_tokens(tokenizer, "w1 w2", 10) == "w1 w2"
    _, registry, switch = setup
    dispatcher = make_dispatcher("loglik", llama, switch, registry, LoglikOptions(request_tokens=10))
    assert short.strip() in dispatcher.prefix(long) and "w100" not in dispatcher.prefix(long)
    assert dispatcher.decide([long])[0].label in dispatcher.candidates
    with pytest.raises(DispatchError, match="≥ 2 tokens"):
        make_dispatcher("loglik", llama, switch, registry, LoglikOptions(request_tokens=1))


@pytest.mark.parametrize("strategy", ["loglik", "loglik-cls"])
def test_a_pass1_dtype_scores_on_its_own_copy_of_the_model(llama, setup, strategy):
    """With a dtype, pass 1 reads a cast copy made once with pass 1's weights (the classification
    expert composed in for loglik-cls, the base weights for loglik), even while the shared model
    holds another expert; the shared model is never switched, and the scores stay close to
    float32's on the shared model."""
    _, registry, switch = setup
    prompts = ["What is 2 + 2?", "Write a sort function in Python.", "Which gas do plants absorb?"]
    reference = make_dispatcher(strategy, llama, switch, registry).decide(prompts)
    switch.use(registry.load("math-expert", llama.name))  # pass 2's expert in place
    dispatcher = make_dispatcher(strategy, llama, switch, registry, LoglikOptions(pass1_dtype=torch.bfloat16))
    before = {name: p.clone() for name, p in llama.model.named_parameters()}
    decisions = dispatcher.decide(prompts)
    assert dispatcher.scorer is not None and dispatcher.scorer.model is not llama.model
    assert next(dispatcher.scorer.model.parameters()).dtype == torch.bfloat16
    assert switch.active == "math-expert"
    assert all(torch.equal(before[name], p) for name, p in llama.model.named_parameters())
    for got, want in zip(decisions, reference):
        assert got.details["raw"] == pytest.approx(want.details["raw"], abs=0.1)
    scorer = dispatcher.scorer
    dispatcher.decide(prompts)
    assert dispatcher.scorer is scorer  # made once


def test_train_cls_learns_the_registered_experts_domains(llama, tmp_path, monkeypatch):
    """`t2 train --task cls` trains on the classification set of the registered domain experts,
    so a domain added by the user is routed after that one command."""
    from typer.testing import CliRunner

    import t2cli.train
    from t2cli.cli.app import app
    from t2cli.models import load_model

    model_dir = tmp_path / "tiny"
    llama.model.save_pretrained(model_dir)
    llama.tokenizer.save_pretrained(model_dir)
    loaded = load_model(str(model_dir), device="cpu")
    store = decompose(loaded, ["mlp"])
    for seed, domain in enumerate(("math", "science")):
        Registry().add(random_expert(loaded, store, seed, f"{domain}-expert", domain))
    seen = []

    def fake_train(config, task=None, **kwargs):
        seen.append(task)
        raise KeyboardInterrupt  # stop before any work: only the task handed over matters here

    monkeypatch.setattr(t2cli.train, "train", fake_train)
    result = CliRunner().invoke(app, ["train", "--task", "cls", "--model", str(model_dir), "--iters", "1"])
    assert seen and seen[0].name == "cls", result.output
    assert "(math, science, other)" in seen[0].system
    assert {e["answer"] for e in seen[0].load("validation").examples} == {"math", "science"}
