"""A fourth domain from a data file: the classifier's training set and the centroids take its
training prompts, and its validation rows stay held out (tiny random Llama, temporary registry)."""

from __future__ import annotations

import json

from t2cli.dispatch import CentroidOptions, LoglikOptions, classifier_task, make_dispatcher
from t2cli.dispatch.experts import expert_task
from tests.test_dispatch import make_setup, random_expert

COUNTRIES = ["France", "Japan", "Kenya", "Peru", "Norway", "Chile", "Egypt", "India", "Fiji", "Cuba"]


def add_geography(llama, store, registry, tmp_path):
    data = tmp_path / "geography.jsonl"
    rows = [
        {"id": f"geo-{i}", "question": f"What is the capital of {c}?", "answer": c} for i, c in enumerate(COUNTRIES)
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    expert = random_expert(llama, store, 7, "geography", "geography")
    spec = {"data": str(data), "prompt_field": "question", "answer_field": "answer", "domain": "geography"}
    expert.provenance = {"task": "geography", "task_spec": spec}  # as `t2 train --data` records it
    registry.add(expert)
    return expert


def test_a_data_file_expert_adds_its_domain_to_the_classifier_task(llama, tmp_path):
    store, registry, _ = make_setup(llama, tmp_path)
    expert = add_geography(llama, store, registry, tmp_path)
    task = expert_task(expert)
    train_prompts = {task.prompt(e) for e in task.load("train").examples}
    held_out = {task.prompt(e) for e in task.load("validation").examples}
    assert held_out and train_prompts and not held_out & train_prompts

    cls = classifier_task(registry, llama.name)
    assert "(code, geography, math, reasoning, other)" in cls.system
    rows = [e for split in ("train", "validation", "test") for e in cls.load(split).examples]
    geography = [e for e in rows if e["answer"] == "geography"]
    assert {e["source_task"] for e in geography} == {"geography"}
    assert {e["question"] for e in geography} == train_prompts  # its training prompts, every one …
    assert not held_out & {e["question"] for e in rows}  # … and never a validation row
    assert {e["answer"] for e in cls.load("train").examples} == {"code", "geography", "math", "reasoning"}


def test_centroid_and_loglik_route_over_the_new_domain(llama, tmp_path):
    store, registry, switch = make_setup(llama, tmp_path)
    add_geography(llama, store, registry, tmp_path)
    centroid = make_dispatcher("centroid", llama, switch, registry, CentroidOptions(request_tokens=8))
    centroid.per_label = 2
    prompts = centroid.training_prompts()
    assert sorted(prompts) == ["code", "geography", "math", "reasoning"]
    assert all(text.startswith("What is the capital of") for text in prompts["geography"])
    centroid.prompts = {label: texts for label, texts in prompts.items()}
    decision = centroid.decide(prompts["geography"][:1])[0]
    assert decision.label == "geography" and decision.expert.name == "geography"  # its own centroid's prompt
    loglik = make_dispatcher("loglik-cls", llama, switch, registry, LoglikOptions(request_tokens=8))
    assert loglik.labels == ["code", "geography", "math", "reasoning"]
    assert loglik.decide(["What is the capital of Spain?"])[0].label in (*loglik.labels, "other")
