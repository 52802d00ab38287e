"""The HTTP surface, through the official openai client and raw HTTP (urllib), on a live uvicorn
server on 127.0.0.1 with the tiny model: routes, streaming, mixtures, :auto, errors, metrics."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from t2cli.serve.app import check_bind, create_app, make_server
from t2cli.serve.engine import Adaptation, Engine, Sampling, ServeError

KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    def __init__(self, engine, api_key=KEY):
        self.engine = engine
        self.port = free_port()
        self.server = make_server(create_app(engine, api_key=api_key), "127.0.0.1", self.port, shutdown_deadline_s=5)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key=api_key or "none", max_retries=0)

    def raw(self, method, path, body=None, key=KEY, data=None):
        """(status, headers, text) of one raw HTTP request."""
        payload = data if data is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=payload, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live(served):
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, strategy="loglik", max_batch=4, max_queue=4).start()
    server = Live(engine)
    yield server
    server.close()
    engine.stop(deadline_s=5)


MODEL = "tiny-llama-0"
HELLO = [{"role": "user", "content": "What is 1 + 2?"}]


def test_models_lists_base_auto_and_experts_with_parent(live):
    models = {m.id: m for m in live.client.models.list()}
    assert set(models) == {MODEL, f"{MODEL}:auto", f"{MODEL}:math", f"{MODEL}:code", f"{MODEL}:reasoning"}
    assert models[f"{MODEL}:math"].parent == MODEL and models[MODEL].parent is None


def test_chat_and_completion_streamed_and_not_agree(live):
    for model in (MODEL, f"{MODEL}:math"):
        whole = live.client.chat.completions.create(model=model, messages=HELLO, max_tokens=8, temperature=0)
        assert whole.choices[0].finish_reason in ("stop", "length") and whole.usage.completion_tokens <= 8
        assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
        chunks = list(
            live.client.chat.completions.create(
                model=model,
                messages=HELLO,
                max_tokens=8,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    plain = live.client.completions.create(model=f"{MODEL}:code", prompt="1 + 2 =", max_tokens=5, temperature=0)
    streamed = live.client.completions.create(
        model=f"{MODEL}:code", prompt="1 + 2 =", max_tokens=5, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    assert plain.object == "text_completion" and plain.usage.completion_tokens <= 5


def test_raw_stream_ends_with_done(live):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4, "stream": True, "temperature": 0}
    status, headers, text = live.raw("POST", "/v1/chat/completions", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:-1])


def test_expert_and_mixture_answers_equal_the_engine_alone(live):
    engine = live.engine
    ids = engine.chat_ids(HELLO)
    sampling = Sampling(max_tokens=10, temperature=0)
    for model, extra, adaptation in (
        (f"{MODEL}:reasoning", None, Adaptation(expert="reasoning")),
        (MODEL, {"t2": {"mix": {"math": 0.6, "code": 0.4}}}, Adaptation(mix={"math": 0.6, "code": 0.4})),
    ):
        answer = live.client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=10, temperature=0, extra_body=extra
        )
        assert answer.choices[0].message.content == engine.generate(ids, sampling, adaptation)[0]


def test_auto_reports_its_choice_in_body_and_header(live):
    live.client.chat.completions.create(model=f"{MODEL}:code", messages=HELLO, max_tokens=2)  # rows were set
    raw = live.client.chat.completions.with_raw_response.create(
        model=f"{MODEL}:auto", messages=HELLO, max_tokens=4, temperature=0
    )
    answer = raw.parse()
    chosen = answer.model_extra["t2"]
    assert (
        chosen["strategy"] == "loglik" and chosen["pass1_ms"] >= 0 and chosen["label"] in ("math", "code", "reasoning")
    )
    assert raw.headers["x-t2-expert"] == chosen["expert"] and float(raw.headers["x-t2-pass1-ms"]) >= 0
    assert answer.usage.model_extra["pass1_tokens"] > 0


def test_seeded_sampling_is_reproducible(live):
    def draw():
        return (
            live.client.chat.completions.create(
                model=MODEL, messages=HELLO, max_tokens=8, temperature=1.0, top_p=0.9, seed=5
            )
            .choices[0]
            .message.content
        )

    assert draw() == draw()


@pytest.mark.parametrize(
    "path, body, key, status, param",
    [
        ("/v1/chat/completions", {"model": "nope", "messages": HELLO}, KEY, 404, "model"),
        ("/v1/chat/completions", {"model": f"{MODEL}:nope", "messages": HELLO}, KEY, 404, "model"),
        ("/v1/chat/completions", {"model": MODEL, "messages": []}, KEY, 400, "messages"),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "temperature": 7}, KEY, 400, "temperature"),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "n": 2}, KEY, 400, "n"),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "max_tokens": 0}, KEY, 400, "max_tokens"),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "t2": {"mix": {"math": -1}}}, KEY, 400, "t2.mix"),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO, "t2": {"mix": {"zz": 1}}}, KEY, 404, "model"),
        ("/v1/completions", {"model": MODEL, "prompt": "1 + 2 = " * 100}, KEY, 400, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": [10**6]}, KEY, 400, "prompt"),
        ("/v1/completions", {"model": MODEL}, KEY, 400, "prompt"),
        ("/v1/models", None, "wrong", 401, None),
        ("/v1/chat/completions", {"model": MODEL, "messages": HELLO}, None, 401, None),
        ("/v1/nothing", None, KEY, 404, None),
    ],
)
def test_errors_in_openai_envelope_and_the_server_keeps_serving(live, path, body, key, status, param):
    got, _, text = live.raw("POST" if body is not None else "GET", path, body, key=key)
    assert got == status
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert "Traceback" not in text
    assert live.client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices


def test_malformed_json_is_400(live):
    status, _, text = live.raw("POST", "/v1/chat/completions", data=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(text)["error"]["message"]


def test_openai_client_sees_typed_errors(live):
    with pytest.raises(openai.NotFoundError):
        live.client.chat.completions.create(model="gpt-4", messages=HELLO)
    with pytest.raises(openai.BadRequestError):
        live.client.chat.completions.create(model=MODEL, messages=HELLO, top_p=0)
    unauthorised = openai.OpenAI(base_url=live.url + "/v1", api_key="bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        unauthorised.models.list()


def test_queue_full_is_429(served):
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, max_batch=1, max_queue=1)  # not started: the queue fills
    server = Live(engine, api_key=None)
    try:
        engine.submit(engine.chat_ids(HELLO), Sampling(max_tokens=2), Adaptation(), lambda event: None)
        status, _, text = server.raw("POST", "/v1/chat/completions", {"model": MODEL, "messages": HELLO}, key=None)
        assert status == 429 and json.loads(text)["error"]["code"] == "rate_limit_exceeded"
    finally:
        server.close()
        engine.start().stop(deadline_s=5)


def test_dropped_stream_frees_its_slot(live):
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 200, "stream": True, "temperature": 0}
    request = urllib.request.Request(live.url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    response = urllib.request.urlopen(request, timeout=30)
    response.readline()  # the first event: it was admitted
    ends = time.monotonic() + 10
    while live.engine.running == 0 and time.monotonic() < ends:
        time.sleep(0.005)
    assert live.engine.running == 1
    response.close()  # the client leaves halfway
    ends = time.monotonic() + 10
    while live.engine.running and time.monotonic() < ends:
        time.sleep(0.01)
    assert live.engine.running == 0
    assert live.engine.metrics.requests[("base", "cancelled")] == 1


def test_dropped_request_not_streamed_frees_its_slot(live):
    body = json.dumps({"model": MODEL, "messages": HELLO, "max_tokens": 200, "temperature": 0}).encode()
    client = socket.create_connection(("127.0.0.1", live.port))
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    client.sendall(head.encode() + body)
    ends = time.monotonic() + 10
    while live.engine.running == 0 and time.monotonic() < ends:
        time.sleep(0.005)
    assert live.engine.running == 1
    client.close()  # the client leaves before its answer is ready
    ends = time.monotonic() + 10
    while live.engine.running and time.monotonic() < ends:
        time.sleep(0.01)
    assert live.engine.running == 0
    assert live.engine.metrics.requests[("base", "cancelled")] == 1
    assert live.client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices


def test_client_gone_while_sending_its_body_is_no_server_error(live, caplog):
    client = socket.create_connection(("127.0.0.1", live.port))
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    client.sendall((head + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode())
    time.sleep(0.2)
    client.close()  # 999 bytes of the body never come
    time.sleep(0.3)
    assert live.client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2).choices
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    ends = time.monotonic() + 5
    while live.engine.pending and time.monotonic() < ends:  # the answered row leaves after its step
        time.sleep(0.01)
    assert live.engine.metrics.accepted_total == 1 and live.engine.pending == 0


def test_health_and_metrics(live):
    live.client.chat.completions.create(model=f"{MODEL}:math", messages=HELLO, max_tokens=3)
    status, _, text = live.raw("GET", "/health")
    assert status == 200 and json.loads(text)["status"] == "ok"
    status, headers, text = live.raw("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    for name in (
        "t2_requests_total",
        "t2_generated_tokens_total",
        "t2_queue_length",
        "t2_batch_size_bucket",
        "t2_time_to_first_token_seconds_bucket",
        "t2_time_per_output_token_seconds_bucket",
    ):
        assert name in text
    assert 't2_requests_total{expert="math"' in text


def test_non_loopback_needs_a_key():
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", "k")
    with pytest.raises(ServeError, match="--api-key"):
        check_bind("0.0.0.0", None)
