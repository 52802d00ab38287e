"""The engine: per-row experts equal dense composition, a request's output in a mixed, continuously
batched run equals its output alone, slots are freed, limits hold."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from t2cli.adapt import DenseAdapter
from t2cli.expert import mix
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.serve.engine import Adaptation, Engine, Finished, QueueFull, Sampling, Text
from t2cli.serve.layer import PerRowModel, stack_deltas
from t2cli.serve.requests import PromptTooLong
from t2cli.svd_store import decompose
from tests.serve.conftest import random_expert

LOGIT_TOLERANCE = {  # per-row logits vs dense composed weights
    "exact": 1e-4,  # float rounding only
    "factorised": 1e-3,  # the float32 factors' own error: 3–4e-4 on smollm2-135m's 30 layers
}

PROMPTS = ("What is 1 + 2?", "def add(a, b): return a + b", "What is the capital of France?", "The answer is (A).")


@pytest.mark.parametrize("form", ["exact", "factorised"])
def test_per_row_layer_equals_dense_composition(tiny_model, form):
    store = decompose(tiny_model, ["mlp"])
    experts = [random_expert(tiny_model, store, seed, f"e{seed}") for seed in (1, 2)]
    mixture = mix(experts, [0.3, 0.7], name="m")
    batch = tiny_model.tokenizer(
        ["The answer is (A).", "1 + 2 = 3", "def add", "France?"], return_tensors="pt", padding=True
    )
    per_row = [None, experts[0], experts[1], mixture]  # the base, two experts and a mixture in one batch
    adapter = DenseAdapter(tiny_model, store)
    expected = []
    with torch.no_grad():
        for row, expert in enumerate(per_row):
            adapter.revert() if expert is None else adapter.apply(expert)
            single = {k: v[row : row + 1] for k, v in batch.items()}
            expected.append(tiny_model.model(**single).logits[0])
        adapter.revert()
        base_batch = tiny_model.model(**batch).logits  # the same shapes as below: the same kernels
        rows = PerRowModel(tiny_model, store, form)
        try:
            deltas, index = stack_deltas([None if e is None else rows.deltas(e) for e in per_row])
            others = [row for row in range(len(per_row)) if row not in index]
            rows.scales.set(deltas, torch.tensor(index), torch.tensor(others))
            got = tiny_model.model(**batch).logits
            rows.scales.clear()
            base_again = tiny_model.model(**batch).logits
        finally:
            rows.remove()
    for row in range(len(per_row)):
        mask = batch["attention_mask"][row].bool()
        assert (got[row][mask] - expected[row][mask]).abs().max() < LOGIT_TOLERANCE[form]
    if form == "exact":
        assert torch.equal(got[0], base_batch[0])  # a base row in a mixed batch is untouched
    # with the scales cleared, every row is the base model's to the bit
    assert torch.equal(base_again, base_batch)


def chat_ids(engine, text):
    return engine.chat_ids([{"role": "user", "content": text}])


REQUESTS = [  # (prompt, adaptation, sampling)
    (PROMPTS[0], Adaptation(), Sampling(max_tokens=10, temperature=0)),
    (PROMPTS[1], Adaptation(expert="math"), Sampling(max_tokens=14, temperature=0)),
    (PROMPTS[2], Adaptation(expert="code"), Sampling(max_tokens=6, temperature=0)),
    (PROMPTS[3], Adaptation(mix={"math": 0.6, "code": 0.4}), Sampling(max_tokens=12, temperature=0)),
    (PROMPTS[0], Adaptation(expert="reasoning"), Sampling(max_tokens=9, temperature=0.9, top_p=0.9, seed=3)),
    (PROMPTS[1], Adaptation(), Sampling(max_tokens=11, temperature=1.0, seed=7)),
]


@pytest.fixture(params=["exact", "factorised"])
def engine_of_each_form(served, request):
    loaded, store, experts = served
    running = Engine(loaded, store, experts, max_batch=8, max_queue=8, per_row=request.param).start()
    yield running
    running.stop(deadline_s=5)


def test_mixed_batch_equals_each_request_alone(engine_of_each_form):
    engine = engine_of_each_form
    alone = [engine.generate(chat_ids(engine, p), s, a)[0] for p, a, s in REQUESTS]
    assert len(set(alone)) > 1  # the experts make a difference on this model
    results: dict[int, list[str]] = {i: [] for i in range(len(REQUESTS))}
    done = threading.Semaphore(0)
    steps_seen = []

    def listener(i):
        def listen(event):
            if isinstance(event, Text):
                results[i].append(event.text)
            elif not hasattr(event, "info"):
                steps_seen.append(engine.running)
                done.release()

        return listen

    for i, (prompt, adaptation, sampling) in enumerate(REQUESTS):
        engine.submit(chat_ids(engine, prompt), sampling, adaptation, listener(i))
        if i == 3:
            time.sleep(0.05)  # the last two join a batch that is already decoding
    for _ in REQUESTS:
        assert done.acquire(timeout=30)
    assert ["".join(results[i]) for i in range(len(REQUESTS))] == alone
    assert max(engine.metrics.batch.counts) > 0 and engine.metrics.batch.count > 0
    assert max(steps_seen) > 1  # they really shared the batch


def test_greedy_output_equals_dense_generation(served):
    loaded, store, experts = served
    prompt = chat_prompt(loaded.tokenizer, [{"role": "user", "content": PROMPTS[1]}])
    adapter = DenseAdapter(loaded, store)
    expected = {}
    for name in (None, "math", "code"):
        adapter.revert() if name is None else adapter.apply(experts[name])
        expected[name] = generate(loaded, [prompt], GenerationConfig(max_new_tokens=12))[0].text
    adapter.revert()
    engine = Engine(loaded, store, experts).start()
    try:
        ids = engine.encode(prompt)
        for name, text in expected.items():
            got, end, _ = engine.generate(ids, Sampling(max_tokens=12, temperature=0), Adaptation(expert=name))
            assert got == text
    finally:
        engine.stop()


def test_stop_strings_cut_the_text_and_end_the_request(engine):
    ids = chat_ids(engine, PROMPTS[1])
    full, _, _ = engine.generate(ids, Sampling(max_tokens=12, temperature=0, seed=1), Adaptation(expert="math"))
    assert len(full) > 3
    stop = full[2:4]
    text, end, _ = engine.generate(ids, Sampling(max_tokens=12, temperature=0, stop=(stop,)), Adaptation(expert="math"))
    assert text == full[: full.index(stop)] and end.reason == "stop"


def test_cancelled_request_frees_its_slot_at_once(served):
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, max_batch=1, max_queue=4).start()
    try:
        first = []
        handle = engine.submit(
            chat_ids(engine, PROMPTS[0]), Sampling(max_tokens=200, temperature=0), Adaptation(), first.append
        )
        while not any(isinstance(e, Text) for e in first):
            time.sleep(0.005)
        handle.cancel()  # the client left: the one slot goes to the next request
        text, end, _ = engine.generate(chat_ids(engine, PROMPTS[1]), Sampling(max_tokens=3, temperature=0))
        assert end.usage["completion_tokens"] == 3  # it got the slot of the cancelled one
        ends = time.monotonic() + 5
        while engine.running and time.monotonic() < ends:  # the finished row leaves after its last step
            time.sleep(0.005)
        assert engine.running == 0 and engine.metrics.requests[("base", "cancelled")] == 1
    finally:
        engine.stop()


def test_limits_queue_full_and_prompt_too_long(served):
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, max_batch=1, max_queue=1)  # not started: nothing leaves the queue
    ids = chat_ids(engine, PROMPTS[0])
    engine.submit(ids, Sampling(max_tokens=4), Adaptation(), lambda event: None)
    with pytest.raises(QueueFull):
        engine.submit(ids, Sampling(max_tokens=4), Adaptation(), lambda event: None)
    with pytest.raises(PromptTooLong, match="maximum context length is 256"):
        engine.check(ids * 20, Sampling(max_tokens=4), Adaptation())
    engine.start()
    assert engine.stop(deadline_s=10)


@pytest.mark.parametrize("form", ["exact", "factorised"])
def test_shipped_experts_per_row_match_dense_on_the_default_model(real_model, form):
    """The tolerance on a real 30-layer model: per-row logits vs `t2 eval --expert`'s dense weights."""
    from t2cli.registry import Registry

    loaded, store = real_model
    registry = Registry()
    experts = [registry.load(name, loaded.name) for name in ("math", "code")]
    batch = loaded.tokenizer(["What is 17 times 3?", "def is_even(n):"], return_tensors="pt", padding=True)
    adapter = DenseAdapter(loaded, store)
    expected = []
    with torch.no_grad():
        for row, expert in enumerate(experts):
            adapter.apply(expert)
            expected.append(loaded.model(**{k: v[row : row + 1] for k, v in batch.items()}).logits[0])
        adapter.revert()
        rows = PerRowModel(loaded, store, form)
        try:
            deltas, _ = stack_deltas([rows.deltas(e) for e in experts])
            rows.scales.set(deltas)
            got = loaded.model(**batch).logits
        finally:
            rows.remove()
    for row in range(len(experts)):
        mask = batch["attention_mask"][row].bool()
        assert (got[row][mask] - expected[row][mask]).abs().max() < LOGIT_TOLERANCE[form]


def test_requests_admitted_together_are_prefilled_as_one_batch(served):
    """Prompts of different lengths admitted in one step: one left-padded prefill, each output
    equal to the request alone (greedy and seeded sampling, texts compared exactly)."""
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, max_batch=8, max_queue=8)
    try:
        outcomes: list[list] = [[] for _ in REQUESTS]
        for i, (prompt, adaptation, sampling) in enumerate(REQUESTS):
            engine.submit(chat_ids(engine, prompt), sampling, adaptation, outcomes[i].append)
        engine.start()  # everything is queued: one admission step takes all six
        ends = time.monotonic() + 30
        while engine.pending and time.monotonic() < ends:
            time.sleep(0.01)
        assert engine.metrics.prefill_size.count == 1 and engine.metrics.prefill_size.total == len(REQUESTS)
        batched = ["".join(e.text for e in events if isinstance(e, Text)) for events in outcomes]
        alone = [engine.generate(chat_ids(engine, p), s, a)[0] for p, a, s in REQUESTS]
        assert engine.metrics.prefill_size.count == 1 + len(REQUESTS)
        assert batched == alone and len(set(alone)) > 1
    finally:
        engine.stop(deadline_s=5)


def test_stop_waits_for_requests_being_admitted(served):
    """Requests taken from the queue but not yet in the batch count as pending: a stop right
    after they were taken lets them finish instead of failing them."""
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, max_batch=8, max_queue=8)
    ends: list = []
    for prompt in PROMPTS:
        engine.submit(chat_ids(engine, prompt), Sampling(max_tokens=6, temperature=0), Adaptation(), ends.append)
    engine.start()
    while engine.queued:
        time.sleep(0.0005)
    assert engine.stop(deadline_s=30)
    reasons = [e.reason for e in ends if isinstance(e, Finished)]
    assert len(reasons) == len(PROMPTS) and set(reasons) <= {"stop", "length"}


def test_auto_takes_its_strategy_options_and_counts_the_tokens_pass_1_read(served):
    """`t2 serve --adapt loglik --pass1-tokens 6`: pass 1 reads at most the prompt's last 6 tokens,
    and the usage says so; without a budget it counts the whole prompt."""
    from t2cli.dispatch.table import strategy_options

    loaded, store, experts = served
    prompt = "Please compute the sum of seventeen and twenty five, then explain the steps you took."
    read, prompt_tokens = {}, 0
    for budget in (None, 6):
        options = strategy_options("loglik", {"request_tokens": budget})
        engine = Engine(loaded, store, experts, strategy="loglik", strategy_options=options).start()
        try:
            sampling = Sampling(max_tokens=3, temperature=0)
            _, end, chosen = engine.generate(chat_ids(engine, prompt), sampling, Adaptation(auto=True), prompt)
            read[budget], prompt_tokens = end.usage["pass1_tokens"], len(engine.encode(prompt))
            assert chosen["strategy"] == "loglik"
        finally:
            engine.stop()
    assert read == {None: prompt_tokens, 6: 6} and prompt_tokens > 6


def test_a_pass_1_that_prepares_with_its_own_expert_leaves_the_base_weights_to_everyone_else(served):
    """loglik-cls prepares with the classification expert's weights: the engine must not start
    serving the base model and the experts on top of them."""
    from t2cli.registry import Registry

    loaded, store, experts = served
    Registry().add(random_expert(loaded, store, 9, "dispatch-cls", domain="classification"))
    weights = {name: loaded.model.get_submodule(name).weight.detach().clone() for name in store.modules}
    ids = chat_ids_of(loaded, PROMPTS[0])
    plain = Engine(loaded, store, experts).start()
    try:
        expected = plain.generate(ids, Sampling(max_tokens=8, temperature=0))[0]
    finally:
        plain.stop()
    engine = Engine(loaded, store, experts, strategy="loglik-cls").start()
    try:
        for name, weight in weights.items():
            assert torch.equal(loaded.model.get_submodule(name).weight, weight), name
        assert engine.generate(ids, Sampling(max_tokens=8, temperature=0))[0] == expected
    finally:
        engine.stop()


def chat_ids_of(loaded, text):
    return loaded.tokenizer(chat_prompt(loaded.tokenizer, [{"role": "user", "content": text}]))["input_ids"]
