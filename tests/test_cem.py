"""Few-shot CEM search of mixing weights on a tiny random Llama with tiny random experts."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_dispatch import SHOTS, TOY, make_setup

from t2cli.dispatch import DispatchError, load_domain_experts
from t2cli.dispatch.cem_search import (
    FITNESSES,
    CEMConfig,
    cem_search,
    mixture_spread,
    reference_loglik,
    split_shots,
)
from t2cli.generation import chat_prompt


@pytest.fixture
def setup(llama, tmp_path):
    return make_setup(llama, tmp_path)


def test_split_shots_is_deterministic_and_disjoint():
    examples = [{"id": str(i)} for i in range(20)]
    shots, rest = split_shots(examples, 5, seed=3)
    assert (shots, rest) == split_shots(examples, 5, seed=3)
    assert len(shots) == 5 and len(rest) == 15
    assert not {e["id"] for e in shots} & {e["id"] for e in rest}
    assert sorted(e["id"] for e in shots + rest) == sorted(e["id"] for e in examples)
    assert [e["id"] for e in rest] == sorted((e["id"] for e in rest), key=int)  # original order kept
    with pytest.raises(DispatchError):
        split_shots(examples, 20)


def test_load_shots_defaults_to_32_where_the_split_allows():
    import dataclasses

    from t2cli.adaptive import load_shots
    from t2cli.tasks.base import TaskData

    def task_of(n: int):
        examples = [{"id": str(i), "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(n)]
        return dataclasses.replace(
            TOY, loader=lambda split, data_dir: TaskData(examples, 0, "inline"), splits=("train", "test")
        )

    shots, rest = load_shots(None, task_of(100), seed=1)
    assert (len(shots), len(rest)) == (32, 68)
    assert (shots, rest) == load_shots("32", task_of(100), seed=1)  # the same as naming 32
    shots, rest = load_shots(None, task_of(10))
    assert (len(shots), len(rest)) == (5, 5)  # a small split: half of it, the rest stays evaluable
    with pytest.raises(DispatchError, match="too few"):
        load_shots(None, task_of(1))


@pytest.mark.parametrize(
    ("per_matrix", "fitness"),
    [(False, "accuracy+loglik"), (True, "accuracy+loglik"), (False, "accuracy"), (True, "loglik")],
)
def test_cem_is_reproducible_and_clamped(llama, setup, per_matrix, fitness):
    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    config = CEMConfig(
        population=5, generations=2, seed=7, per_matrix=per_matrix, stop_at_perfect=False, fitness=fitness
    )
    first = cem_search(llama, switch, experts, TOY, SHOTS, config)
    second = cem_search(llama, switch, experts, TOY, SHOTS, config)
    assert torch.equal(first.alphas, second.alphas)
    assert first.accuracy == second.accuracy and first.loglik == second.loglik
    assert first.alphas.shape == ((3, len(experts[0].z)) if per_matrix else (3,))
    assert bool((first.alphas >= 0).all() and (first.alphas <= 1).all())
    assert first.evaluations == 10 and len(first.history) == 2
    assert switch.active is None  # the search leaves the base weights in place
    assert first.expert.provenance["objective"] == "cem"
    assert first.expert.provenance["cem"]["fitness"] == fitness
    assert (first.accuracy is None) == (fitness == "loglik") and (first.loglik is None) == (fitness == "accuracy")
    assert first.expert.provenance["cem"]["shots"] == ["0", "1", "2", "3"]
    first.expert.validate_for(setup[0].ranks, llama.name, llama.fingerprint)
    assert set(first.weights) == {"math-expert", "code-expert", "reasoning-expert"}
    other = cem_search(
        llama,
        switch,
        experts,
        TOY,
        SHOTS,
        CEMConfig(population=5, generations=2, seed=8, per_matrix=per_matrix, stop_at_perfect=False, fitness=fitness),
    )
    assert not torch.equal(first.alphas, other.alphas)


def test_cem_best_member_is_reevaluated_and_never_gets_worse(llama, setup, monkeypatch):
    import t2cli.dispatch.cem_search as cem

    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    evaluated: list[torch.Tensor] = []
    real_mixture = cem.mixture

    def spy(experts, alphas, modules, name):
        evaluated.append(alphas.clone())
        return real_mixture(experts, alphas, modules, name)

    monkeypatch.setattr(cem, "mixture", spy)
    config = CEMConfig(population=4, generations=3, stop_at_perfect=False)
    result = cem_search(llama, switch, experts, TOY, SHOTS, config)
    best = [(h["best_accuracy"], h["best_loglik"]) for h in result.history]
    assert best == sorted(best)
    generations = [evaluated[g * 4 : (g + 1) * 4] for g in range(3)]
    for previous, current in zip(generations, generations[1:]):
        assert any(torch.equal(current[0], member) for member in previous)  # the best so far, again
    assert any(torch.equal(result.alphas, a) for a in evaluated)


def test_cem_stops_early(llama, setup):
    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    result = cem_search(llama, switch, experts, TOY, SHOTS, CEMConfig(population=3, generations=10, patience=1))
    assert len(result.history) < 10


def test_mixture_spread_measures_the_shares_that_reach_the_weights():
    same_mixture = torch.tensor([[0.3, 0.0, 0.0], [0.9, 0.0, 0.0], [0.5, 0.0, 0.0]])
    assert mixture_spread(same_mixture) == 0.0  # one expert alone, at any scale
    assert mixture_spread(torch.tensor([[0.2, 0.2], [0.6, 0.6], [0.0, 0.0]])) == 0.0  # all uniform
    assert mixture_spread(torch.tensor([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.5)
    per_matrix = torch.zeros(2, 2, 3)
    per_matrix[:, 0] = 1.0  # the first expert everywhere, except one matrix of one member
    per_matrix[1, :, 2] = torch.tensor([0.0, 1.0])
    assert mixture_spread(per_matrix) == pytest.approx(0.5)


def test_cem_stops_once_the_elites_agree(llama, setup):
    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    config = CEMConfig(population=8, elite_ratio=0.5, generations=40, stop_at_perfect=False, fitness="loglik")
    converged = cem_search(llama, switch, experts, TOY, SHOTS, dataclasses.replace(config, tolerance=0.05))
    spreads = [h["spread"] for h in converged.history]
    assert spreads[-1] < 0.05 <= min(spreads[:-1])  # stopped at the first generation below it
    assert len(converged.history) < 40
    full = cem_search(llama, switch, experts, TOY, SHOTS, config)
    assert len(full.history) == 40
    assert full.history[: len(converged.history)] == converged.history  # the same search, cut short
    with pytest.raises(DispatchError, match="negative"):
        CEMConfig(tolerance=-1.0)


class Cut(Exception):
    """Stands for the machine going away in the middle of a search."""


@pytest.mark.parametrize("fitness", ["loglik", "accuracy+loglik"])
def test_cem_continues_from_its_checkpoint_as_the_unbroken_search(llama, setup, tmp_path, monkeypatch, fitness):
    import t2cli.dispatch.cem_search as cem

    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    config = CEMConfig(population=5, generations=4, seed=3, stop_at_perfect=False, fitness=fitness)
    unbroken = cem_search(llama, switch, experts, TOY, SHOTS, config)
    state = tmp_path / "search.partial.json"

    def cut_after_two(done, total, best):
        if done == 2:
            raise Cut

    with pytest.raises(Cut):
        cem_search(llama, switch, experts, TOY, SHOTS, config, progress=cut_after_two, checkpoint=state)
    assert switch.active is None  # the cut search left the base weights
    kept = json.loads(state.read_text())
    assert len(kept["state"]["history"]) == 2 and kept["state"]["seconds"] > 0
    kept["state"]["seconds"] = 1000.0  # as if the first two generations had taken that long
    state.write_text(json.dumps(kept))
    scored: list[int] = []
    real_score = cem._Population.score
    monkeypatch.setattr(cem._Population, "score", lambda self, g, m: scored.append(g) or real_score(self, g, m))
    resumed = cem_search(llama, switch, experts, TOY, SHOTS, config, checkpoint=state)
    assert scored == [2, 3]  # only the generations the cut search had not finished
    assert torch.equal(resumed.alphas, unbroken.alphas)
    assert (resumed.accuracy, resumed.loglik) == (unbroken.accuracy, unbroken.loglik)
    assert resumed.history == unbroken.history and resumed.evaluations == unbroken.evaluations
    assert resumed.seconds > 1000.0  # the search's time counts every run that continued it
    assert resumed.expert.provenance["cem"] == unbroken.expert.provenance["cem"]
    scored.clear()
    again = cem_search(llama, switch, experts, TOY, SHOTS, config, checkpoint=state)  # finished: no search
    assert scored == [] and torch.equal(again.alphas, unbroken.alphas)


def test_cem_search_goes_on_with_a_larger_generation_budget(llama, setup, tmp_path):
    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    config = CEMConfig(population=4, generations=4, seed=2, stop_at_perfect=False, fitness="loglik")
    unbroken = cem_search(llama, switch, experts, TOY, SHOTS, config)
    state = tmp_path / "search.partial.json"
    short = cem_search(llama, switch, experts, TOY, SHOTS, dataclasses.replace(config, generations=2), checkpoint=state)
    assert len(short.history) == 2
    longer = cem_search(llama, switch, experts, TOY, SHOTS, config, checkpoint=state)
    assert torch.equal(longer.alphas, unbroken.alphas) and longer.history == unbroken.history
    with pytest.raises(DispatchError, match="has run 4 generations, more than the 3 asked for"):
        cem_search(llama, switch, experts, TOY, SHOTS, dataclasses.replace(config, generations=3), checkpoint=state)


def test_cem_checkpoint_of_another_search_is_refused(llama, setup, tmp_path):
    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    state = tmp_path / "search.partial.json"
    config = CEMConfig(population=3, generations=1, fitness="loglik")
    cem_search(llama, switch, experts, TOY, SHOTS, config, checkpoint=state)
    before = state.read_text()
    with pytest.raises(DispatchError, match=r"another CEM search \(its config differ\)"):
        cem_search(llama, switch, experts, TOY, SHOTS, dataclasses.replace(config, seed=1), checkpoint=state)
    with pytest.raises(DispatchError, match="its shots differ"):
        cem_search(llama, switch, experts, TOY, SHOTS[:3], config, checkpoint=state)
    assert state.read_text() == before  # never overwritten
    recorded = json.loads(before)
    del recorded["state"]["generator"]  # written by another version, or damaged
    for text in ("{not json", "[]", json.dumps(recorded)):
        state.write_text(text)
        with pytest.raises(DispatchError, match="not a CEM search state t2 wrote .*: delete it to search again"):
            cem_search(llama, switch, experts, TOY, SHOTS, config, checkpoint=state)


def test_loglik_fitness_never_generates_and_accuracy_fitness_never_scores_references(llama, setup, monkeypatch):
    import t2cli.dispatch.cem_search as cem

    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    real_generate, real_loglik = cem.generate, cem.reference_loglik
    calls = {"generate": 0, "loglik": 0}

    def counting_generate(*args, **kwargs):
        calls["generate"] += 1
        return real_generate(*args, **kwargs)

    def counting_loglik(*args, **kwargs):
        calls["loglik"] += 1
        return real_loglik(*args, **kwargs)

    monkeypatch.setattr(cem, "generate", counting_generate)
    monkeypatch.setattr(cem, "reference_loglik", counting_loglik)
    config = CEMConfig(population=3, generations=2, stop_at_perfect=False, fitness="loglik")
    result = cem_search(llama, switch, experts, TOY, SHOTS, config)
    assert calls == {"generate": 0, "loglik": 6}
    logliks = [h["best_loglik"] for h in result.history]
    assert logliks == sorted(logliks) and result.loglik is not None and result.accuracy is None
    calls.update(generate=0, loglik=0)
    cem_search(llama, switch, experts, TOY, SHOTS, CEMConfig(population=3, generations=2, fitness="accuracy"))
    assert calls["loglik"] == 0 and calls["generate"] >= 3
    calls.update(generate=0, loglik=0)
    cem_search(llama, switch, experts, TOY, SHOTS, CEMConfig(population=3, generations=1, fitness="accuracy+loglik"))
    assert calls == {"generate": 3, "loglik": 3}  # the paper's scores both
    assert CEMConfig().fitness == "loglik"  # the default: chosen on ARC-Challenge dev (bench/cem.py)


def test_fitnesses_can_choose_different_alphas(llama, setup):
    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    found = {
        fitness: cem_search(
            llama, switch, experts, TOY, SHOTS, CEMConfig(population=6, generations=2, seed=3, fitness=fitness)
        )
        for fitness in FITNESSES
    }
    # the same seed samples the same first generation; with accuracy ties everywhere on a random model,
    # only the log-likelihood can move the search away from the first member
    assert not torch.equal(found["loglik"].alphas, found["accuracy"].alphas)


def test_batched_reference_loglik_matches_one_at_a_time(llama):
    prompts = [chat_prompt(llama.tokenizer, TOY.messages(example)) for example in SHOTS]
    answers = ["1", "22 and more", "3", "a longer reference answer"]
    one = reference_loglik(llama, prompts, answers, batch_size=1)
    batched = reference_loglik(llama, prompts, answers, batch_size=3)
    assert batched == pytest.approx(one, abs=1e-4)
    # by hand, the first prompt alone: mean log-probability of its answer's tokens
    ids = llama.tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    target = llama.tokenizer(answers[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(llama.model(input_ids=torch.tensor([ids + target])).logits[0].float(), dim=-1)
    expected = float(torch.stack([logp[len(ids) - 1 + j, t] for j, t in enumerate(target)]).mean())
    assert reference_loglik(llama, prompts[:1], answers[:1]) == pytest.approx(expected, abs=1e-4)


def test_unknown_fitness_is_a_clear_error():
    with pytest.raises(DispatchError, match="accuracy\\+loglik"):
        CEMConfig(fitness="reward")


def test_memoised_scores_give_the_same_search_and_skip_known_candidates(llama, setup, monkeypatch):
    import t2cli.dispatch.cem_search as cem

    _, registry, switch = setup
    experts = list(load_domain_experts(registry, llama.name).values())
    config = CEMConfig(population=4, generations=3, seed=5, stop_at_perfect=False, fitness="accuracy+loglik")
    plain = cem_search(llama, switch, experts, TOY, SHOTS, config)
    memo: dict = {}
    memoised = cem_search(llama, switch, experts, TOY, SHOTS, config, scores=memo)
    assert torch.equal(plain.alphas, memoised.alphas) and plain.history == memoised.history
    # at least the best so far, re-sampled in generations 2 and 3 (clamping to [0, 1] makes more repeats)
    assert plain.reused == 0 and memoised.reused >= 2
    assert len(memo) == 12 - memoised.reused and all(set(v) == {"accuracy", "loglik"} for v in memo.values())
    calls = {"generate": 0}
    real_generate = cem.generate

    def counting_generate(*args, **kwargs):
        calls["generate"] += 1
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(cem, "generate", counting_generate)
    other = CEMConfig(population=4, generations=1, seed=5, stop_at_perfect=False, fitness="accuracy")
    again = cem_search(llama, switch, experts, TOY, SHOTS, other, scores=memo)
    assert calls["generate"] == 0 and again.reused == 4  # the same seed samples the same first generation
