"""Fixtures of the server tests: the tiny Llama with its SVD store and three random experts
registered (math, code, reasoning), an engine over them."""

from __future__ import annotations

import pytest
import torch

from t2cli.expert import ExpertVector
from t2cli.registry import Registry
from t2cli.svd_store import decompose

DOMAINS = ("math", "code", "reasoning")


def random_expert(loaded, store, seed: int, name: str, domain: str = "other") -> ExpertVector:
    generator = torch.Generator().manual_seed(seed)
    z = {n: torch.rand(r, generator=generator) * 1.5 + 0.25 for n, r in store.ranks.items()}
    return ExpertVector(z, name, loaded.name, loaded.fingerprint, store.targets, domain=domain)


@pytest.fixture
def served(llama):
    """(loaded, store, {name: expert}), the experts also in the (isolated) user registry."""
    store = decompose(llama, ["mlp"])
    experts = {}
    for seed, domain in enumerate(DOMAINS):
        expert = random_expert(llama, store, seed + 1, domain, domain)
        Registry().add(expert)
        experts[domain] = Registry().load(domain, llama.name)
    return llama, store, experts


@pytest.fixture
def engine(served):
    from t2cli.serve.engine import Engine

    loaded, store, experts = served
    running = Engine(loaded, store, experts, max_batch=8, max_queue=8).start()
    yield running
    running.stop(deadline_s=5)
