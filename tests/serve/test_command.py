"""`t2 serve` as a user runs it: a process on loopback that answers, and on SIGTERM finishes the
request in flight and exits 0; a non-loopback address without a key is refused with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from t2cli.registry import Registry
from t2cli.svd_store import decompose
from tests.serve.conftest import random_expert
from tests.serve.test_app import free_port


def saved_model(llama, tmp_path):
    from t2cli.models import load_model

    directory = tmp_path / "tiny"
    llama.model.save_pretrained(directory)
    llama.tokenizer.save_pretrained(directory)
    loaded = load_model(str(directory), device="cpu")
    store = decompose(loaded, ["mlp"])
    for seed, domain in enumerate(("math", "code")):
        Registry().add(random_expert(loaded, store, seed + 1, domain, domain))
    return directory, loaded.name


def test_serve_answers_then_drains_on_sigterm(llama, tmp_path):
    directory, name = saved_model(llama, tmp_path)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "t2cli.cli.app",
            "serve",
            "-m",
            str(directory),
            "--port",
            str(port),
            "--adapt",
            "loglik",
        ],
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        ends = time.monotonic() + 120
        while time.monotonic() < ends:
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.2)
        models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=5).read())
        assert {m["id"] for m in models["data"]} == {name, f"{name}:auto", f"{name}:math", f"{name}:code"}
        body = {
            "model": f"{name}:math",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 150,
            "stream": True,
        }
        request = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        response = urllib.request.urlopen(request, timeout=60)
        response.readline()  # running
        received: list[str] = []
        reader = threading.Thread(target=lambda: received.append(response.read().decode()))
        reader.start()
        process.send_signal(signal.SIGTERM)
        reader.join(timeout=60)
        assert process.wait(timeout=60) == 0
        assert received and received[0].rstrip().endswith("data: [DONE]")  # the in-flight request was finished
        assert "stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--host", "0.0.0.0"], "--api-key"),  # beyond loopback only with a key
        (["--per-row", "lowrank"], "exact or factorised"),  # refused before the model is loaded
        (["--pass1-tokens", "16"], "--adapt"),  # pass-1 options need a pass-1 strategy
    ],
)
def test_bad_options_are_refused_in_one_line(arguments, named):
    result = subprocess.run(
        [sys.executable, "-m", "t2cli.cli.app", "serve", *arguments], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and named in result.stderr


def test_an_expert_gone_bad_on_disk_is_refused_and_the_rest_served(llama, tmp_path):
    from t2cli.serve.engine import open_engine

    directory, name = saved_model(llama, tmp_path)
    damaged = Registry().find("code", name).path / "expert.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:-7])
    engine, skipped = open_engine(str(directory), device="cpu")
    try:
        assert list(engine.experts) == ["math"]
        assert len(skipped) == 1 and skipped[0].startswith("code:") and "hash" in skipped[0]
    finally:
        engine.stop()
