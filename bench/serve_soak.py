"""A bounded soak of `t2 serve`: many clients, mixed requests and faults, then a verdict.

    python bench/serve_soak.py [-m smollm2-135m] [--clients 32] [--requests 8] [--max-tokens 12]
                               [--time-limit 480] [--full]      # --full: 32 clients × 500 requests

Starts `t2 serve` on 127.0.0.1 (a free port, `--adapt loglik`) as a subprocess and drives it over
loopback with `--clients` threads, each sending `--requests` requests one after another (none after
`--time-limit` seconds), in a fixed rotation of kinds (KINDS): chat and text completions, streamed
and not, on the base model, each served expert, mixtures through `t2.mix` (weights varied per
request), `MODEL:auto`; streams the client drops after the first pieces of text; requests the
client abandons before their answer; and bad requests (unknown model, malformed JSON, a prompt
longer than the context, a bad mixture) that must be refused with a 4xx.

The server's resident memory (RSS) is sampled every second. At the end the verdict checks
  no_server_errors    no 5xx, no broken connection, no request failed in the server's /metrics,
                      no error in the server's log;
  all_accounted       every request the server accepted (its /metrics counts) was answered or
                      cancelled, each answered one on the client's side too, no more cancelled
                      than the client dropped, and nothing is left running or queued;
  memory_flat         RSS after warm-up (the first 20% of the requests) grows by at most
                      --rss-bound-mib over its peak during warm-up;
  clean_shutdown      SIGTERM: the process exits 0 within its shutdown deadline.
and writes bench/results/serve-soak.json. tests/serve/test_soak.py runs the same driver and
checks on the tiny test model in process.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

PROMPTS = (
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "Write a Python function is_even(n) that returns True when n is even.",
    "Which of these is a mammal? (A) shark (B) dolphin (C) trout (D) octopus",
    "Write a two-line poem about the sea.",
    "What is 17 times 3?",
)
WARM_UP = 0.2  # the share of accepted requests after which memory must stay flat
ACCEPTED = ("answered", "dropped", "server_error", "broken")  # what the server took (not 429, not 4xx)
BACKOFF_S = 1.0  # a client told 429 waits this long before its next request
LONG_TOKENS = 64  # max_tokens of the requests the client drops or abandons (still running when it leaves)


@dataclass
class Outcome:
    kind: str
    result: str  # answered | dropped | rejected (429) | refused (expected 4xx) | unexpected_4xx | server_error | broken
    status: int | None
    seconds: float
    finished: float  # when, on the driver's clock
    detail: str = ""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    model: str  # the base model's name
    experts: tuple[str, ...]
    auto: bool  # the server has `MODEL:auto`
    api_key: str | None = None
    max_tokens: int = 12
    timeout_s: float = 300.0


# --------------------------------------------------------------------------- the kinds of request


def _chat(model: str, index: int, max_tokens: int, **extra) -> dict:
    messages = [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}]
    return {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, **extra}


def _completion(model: str, index: int, max_tokens: int, **extra) -> dict:
    return {"model": model, "prompt": PROMPTS[index % len(PROMPTS)], "max_tokens": max_tokens, **extra}


def _expert(target: Target, index: int) -> str:
    return f"{target.model}:{target.experts[index % len(target.experts)]}" if target.experts else target.model


def _mixture(target: Target, index: int) -> dict:
    if len(target.experts) < 2:
        return {}
    a, b = target.experts[index % len(target.experts)], target.experts[(index + 1) % len(target.experts)]
    weight = round(0.05 + 0.05 * (index % 19), 2)  # 19 different mixtures per pair of experts
    return {"t2": {"mix": {a: weight, b: round(1 - weight, 2)}}}


def _bad(target: Target, index: int) -> tuple[str, bytes]:
    choice = index % 4
    if choice == 0:
        return "/v1/chat/completions", json.dumps(_chat(target.model + ":nobody", index, 4)).encode()
    if choice == 1:
        return "/v1/chat/completions", b'{"model": "' + target.model.encode() + b'", "messages": ['
    if choice == 2:
        return "/v1/completions", json.dumps(_completion(target.model, 0, 4) | {"prompt": "1 + 2 = " * 3000}).encode()
    mixture = {"t2": {"mix": {(target.experts or ("none",))[0]: -1}}}
    return "/v1/chat/completions", json.dumps(_chat(target.model, index, 4, **mixture)).encode()


def request_of(kind: str, target: Target, index: int) -> tuple[str, bytes, str]:
    """(path, body, how the client reads it: whole | stream | drop-stream | abandon | bad)."""
    n, m = target.max_tokens, target.model
    usage = {"stream_options": {"include_usage": True}}
    bodies = {
        "chat-base": ("/v1/chat/completions", _chat(m, index, n), "whole"),
        "chat-expert-stream": (
            "/v1/chat/completions",
            _chat(_expert(target, index), index, n, stream=True, **usage),
            "stream",
        ),
        "completion-expert": ("/v1/completions", _completion(_expert(target, index), index, n, temperature=0), "whole"),
        "chat-mix": ("/v1/chat/completions", _chat(m, index, n, **_mixture(target, index)), "whole"),
        "chat-auto-stream": (
            "/v1/chat/completions",
            _chat(f"{m}:auto" if target.auto else m, index, n, stream=True),
            "stream",
        ),
        "completion-base-stream": ("/v1/completions", _completion(m, index, n, stream=True, seed=index), "stream"),
        "chat-mix-sampled": (
            "/v1/chat/completions",
            _chat(m, index, n, temperature=0.8, top_p=0.9, seed=index, **_mixture(target, index + 1)),
            "whole",
        ),
        "drop-stream": (
            "/v1/chat/completions",
            _chat(_expert(target, index), index, LONG_TOKENS, stream=True),
            "drop-stream",
        ),
        "abandon": ("/v1/chat/completions", _chat(m, index, LONG_TOKENS, **_mixture(target, index)), "abandon"),
    }
    if kind == "bad":
        path, data = _bad(target, index)
        return path, data, "bad"
    path, body, mode = bodies[kind]
    return path, json.dumps(body).encode(), mode


KINDS = (
    "chat-base",
    "chat-expert-stream",
    "completion-expert",
    "chat-mix",
    "drop-stream",
    "chat-auto-stream",
    "completion-base-stream",
    "bad",
    "chat-mix-sampled",
    "abandon",
)


# --------------------------------------------------------------------------- one request


def send(target: Target, kind: str, index: int, clock: float) -> Outcome:
    path, data, mode = request_of(kind, target, index)
    started = time.perf_counter()

    def outcome(result: str, status: int | None, detail: str = "") -> Outcome:
        now = time.perf_counter()
        return Outcome(kind, result, status, round(now - started, 4), round(now - clock, 3), detail[:200])

    connection = http.client.HTTPConnection(target.host, target.port, timeout=target.timeout_s)
    headers = {"Content-Type": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    try:
        connection.request("POST", path, body=data, headers=headers)
        if mode == "abandon":
            connection.sock.settimeout(0.3)  # leave before the answer is ready
            try:
                response = connection.getresponse()
            except TimeoutError:
                return outcome("dropped", None)
            connection.sock.settimeout(target.timeout_s)
        else:
            response = connection.getresponse()
        status = response.status
        if status == 429:
            response.read()
            return outcome("rejected", status)
        if status >= 500:
            return outcome("server_error", status, response.read().decode(errors="replace"))
        if status >= 400:
            body = response.read().decode(errors="replace")
            enveloped = set(json.loads(body).get("error", {})) == {"message", "type", "param", "code"}
            if mode == "bad" and enveloped and "Traceback" not in body:
                return outcome("refused", status)
            return outcome("unexpected_4xx", status, body)
        if mode == "bad":
            return outcome("unexpected_4xx", status, "a bad request was answered")
        if mode == "whole" or mode == "abandon":
            answer = json.loads(response.read())
            if answer["choices"][0]["finish_reason"] not in ("stop", "length"):
                return outcome("broken", status, f"finish_reason {answer['choices'][0]['finish_reason']}")
            return outcome("answered", status)
        pieces = 0
        while True:
            line = response.fp.readline()
            if not line:
                return outcome("broken", status, "the stream ended without [DONE]")
            line = line.decode().strip()
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                return outcome("answered", status)
            event = json.loads(line[6:])
            if "error" in event:
                return outcome("server_error", status, line)
            pieces += 1
            if mode == "drop-stream" and pieces >= 3:  # the client leaves halfway
                return outcome("dropped", status)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
        return outcome("broken", None, f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def drive(
    target: Target, clients: int, requests: int, time_limit: float, outcomes: list[Outcome] | None = None, kinds=KINDS
) -> list[Outcome]:
    """`clients` threads, each sending `requests` requests one after another (until `time_limit`);
    each outcome is appended to `outcomes` as it comes."""
    counter = itertools.count()
    outcomes = [] if outcomes is None else outcomes
    lock = threading.Lock()
    clock = time.perf_counter()

    def client() -> None:
        for _ in range(requests):
            if time.perf_counter() - clock > time_limit:
                return
            index = next(counter)
            result = send(target, kinds[index % len(kinds)], index, clock)
            with lock:
                outcomes.append(result)
            if result.result == "rejected":
                time.sleep(BACKOFF_S)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


# --------------------------------------------------------------------------- the server's side


def get(target: Target, path: str) -> str:
    connection = http.client.HTTPConnection(target.host, target.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
        connection.request("GET", path, headers=headers)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def server_outcomes(metrics_text: str) -> Counter:
    """t2_requests_total summed over experts, by outcome (stop, length, cancelled, error, rejected),
    and the accepted requests (t2_accepted_requests_total)."""
    counts: Counter = Counter()
    accepted = re.search(r"^t2_accepted_requests_total (\d+)$", metrics_text, re.M)
    counts["accepted"] = int(accepted.group(1)) if accepted else 0
    for match in re.finditer(
        r'^t2_requests_total\{expert="(?:[^"\\]|\\.)*",outcome="(\w+)"\} (\d+)$', metrics_text, re.M
    ):
        counts[match.group(1)] += int(match.group(2))
    return counts


def engine_seconds(metrics_text: str) -> dict:
    """Total seconds and count of the engine's decode steps, prefills and pass-1 calls."""
    found = {}
    for name in ("t2_decode_step_seconds", "t2_prefill_seconds", "t2_pass1_seconds", "t2_prefill_size"):
        total = re.search(rf"^{name}_sum (\S+)$", metrics_text, re.M)
        count = re.search(rf"^{name}_count (\S+)$", metrics_text, re.M)
        if total and count:
            found[name.removeprefix("t2_")] = {"sum": round(float(total.group(1)), 2), "count": int(count.group(1))}
    return found


def wait_idle(target: Target, seconds: float = 30.0) -> dict:
    """/health once nothing runs or waits (or after `seconds`)."""
    ends = time.monotonic() + seconds
    while True:
        health = json.loads(get(target, "/health"))
        if (health["running"] == 0 and health["queued"] == 0) or time.monotonic() > ends:
            return health
        time.sleep(0.1)


def tally(outcomes: list[Outcome]) -> dict:
    """Counts by result, the accepted ones, and latency percentiles of the answered ones."""
    results = Counter(o.result for o in outcomes)
    answered = sorted(o.seconds for o in outcomes if o.result == "answered")

    def percentile(q: float) -> float | None:
        return answered[min(len(answered) - 1, round(q * (len(answered) - 1)))] if answered else None

    return {
        "sent": len(outcomes),
        "by_result": dict(sorted(results.items())),
        "by_kind": {
            k: dict(Counter(o.result for o in outcomes if o.kind == k)) for k in dict.fromkeys(o.kind for o in outcomes)
        },
        "accepted": sum(results[r] for r in ACCEPTED),
        "latency_p50_s": percentile(0.5),
        "latency_p99_s": percentile(0.99),
        "problems": [asdict(o) for o in outcomes if o.result in ("server_error", "broken", "unexpected_4xx")][:20],
    }


def check_accounting(counts: dict, server: Counter, health: dict) -> dict:
    """The invariants: no server error on either side, every accepted request answered or cancelled.

    A request the client abandons may never reach the engine (it left while the request was still
    being read): the client's count of taken requests is an upper bound of the server's."""
    by_result = counts["by_result"]
    answered = server["stop"] + server["length"]
    ended = answered + server["cancelled"] + server["error"]
    return {
        "no_server_errors": by_result.get("server_error", 0) == 0
        and by_result.get("broken", 0) == 0
        and by_result.get("unexpected_4xx", 0) == 0
        and server["error"] == 0,
        "all_accounted": server["accepted"] == ended
        and ended <= counts["accepted"]
        and by_result.get("answered", 0) <= answered
        and server["cancelled"] <= by_result.get("dropped", 0)
        and health["running"] == 0
        and health["queued"] == 0,
    }


# --------------------------------------------------------------------------- the soak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def memory_verdict(samples: list[tuple[float, int, int]], warm_after: int, bound_mib: float) -> dict:
    """Samples (seconds, rss, accepted requests done): peak during warm-up vs the peak after it."""
    warm = [rss for _, rss, done in samples if done < warm_after]
    after = [(t, rss) for t, rss, done in samples if done >= warm_after]
    if not warm or len(after) < 2:
        return {"memory_flat": False, "why": "too few samples after warm-up"}
    growth = (max(rss for _, rss in after) - max(warm)) / 2**20
    # least-squares slope of RSS over the time after warm-up (MiB per minute)
    mean_t = sum(t for t, _ in after) / len(after)
    mean_r = sum(r for _, r in after) / len(after)
    spread = sum((t - mean_t) ** 2 for t, _ in after) or 1.0
    slope = sum((t - mean_t) * (r - mean_r) for t, r in after) / spread * 60 / 2**20
    return {
        "memory_flat": growth <= bound_mib,
        "rss_warm_peak_mib": round(max(warm) / 2**20, 1),
        "rss_after_peak_mib": round(max(rss for _, rss in after) / 2**20, 1),
        "rss_final_mib": round(after[-1][1] / 2**20, 1),
        "growth_after_warm_up_mib": round(growth, 1),
        "slope_after_warm_up_mib_per_min": round(slope, 2),
        "bound_mib": bound_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--full", action="store_true", help="32 clients × 500 requests, 4 hours at most")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--time-limit", type=float, default=480.0, help="no request is sent after this many seconds")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=24, help="below the clients, so that 429s happen too")
    parser.add_argument("--shutdown-deadline", type=float, default=30.0)
    parser.add_argument("--rss-bound-mib", type=float, default=64.0)
    parser.add_argument("--out", default="bench/results/serve-soak.json")
    args = parser.parse_args()
    if args.full:
        args.clients, args.requests, args.time_limit = 32, 500, max(args.time_limit, 4 * 3600.0)

    port = free_port()
    command = [sys.executable, "-m", "t2cli.cli.app", "serve", "-m", args.model, "--port", str(port)]
    command += ["--adapt", "loglik", "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)]
    command += ["--shutdown-deadline", str(args.shutdown_deadline)]
    log_path = Path(args.out).with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    target = Target("127.0.0.1", port, args.model, (), auto=True, max_tokens=args.max_tokens)
    try:
        ends = time.monotonic() + 600
        while True:
            try:
                models = json.loads(get(target, "/v1/models"))["data"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > ends:
                    raise SystemExit("the server did not start:\n" + log_path.read_text()) from None
                time.sleep(0.5)
        base = next(m["id"] for m in models if m["parent"] is None)
        experts = tuple(m["id"].split(":", 1)[1] for m in models if m["parent"] and not m["id"].endswith(":auto"))
        target = Target(
            "127.0.0.1",
            port,
            base,
            experts,
            auto=any(m["id"].endswith(":auto") for m in models),
            max_tokens=args.max_tokens,
        )
        print(f"serving {base} with {', '.join(experts)} on port {port}; pid {server.pid}", flush=True)

        samples: list[tuple[float, int, int]] = []
        outcomes: list[Outcome] = []
        stop_sampling = threading.Event()
        clock = time.perf_counter()

        def sample() -> None:  # RSS and how many requests were done, every second
            while not stop_sampling.wait(1.0):
                seconds = time.perf_counter() - clock
                done = sum(1 for o in list(outcomes) if o.result in ACCEPTED)
                samples.append((seconds, rss_bytes(server.pid), done))
                if len(samples) % 30 == 0:
                    print(
                        f"{seconds:.0f} s: {len(outcomes)} requests done, RSS {samples[-1][1] / 2**20:.0f} MiB",
                        flush=True,
                    )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        drive(target, args.clients, args.requests, args.time_limit, outcomes)
        wall = time.perf_counter() - clock
        health = wait_idle(target)
        time.sleep(2.0)
        stop_sampling.set()
        sampler.join()
        metrics_text = get(target, "/metrics")
        server_counts = server_outcomes(metrics_text)

        counts = tally(outcomes)
        verdict = check_accounting(counts, server_counts, health)
        memory = memory_verdict(samples, int(WARM_UP * counts["accepted"]), args.rss_bound_mib)
        verdict["memory_flat"] = memory.pop("memory_flat")

        stopped = time.perf_counter()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=args.shutdown_deadline + 30)
        except subprocess.TimeoutExpired:
            code = None
        verdict["clean_shutdown"] = code == 0
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    logged = log_path.read_text()
    errors_logged = len(re.findall(r"Traceback|^ERROR|Exception in", logged, re.M))
    verdict["no_server_errors"] = verdict["no_server_errors"] and errors_logged == 0
    verdict["pass"] = all(verdict.values())
    payload = {
        "command": "python bench/serve_soak.py " + " ".join(sys.argv[1:]),
        "model": base,
        "experts": list(experts),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "max_batch": args.max_batch,
        "max_queue": args.max_queue,
        "seconds": round(wall, 1),
        "verdict": verdict,
        "client": counts,
        "server": dict(sorted(server_counts.items())),
        "health_at_end": health,
        "errors_in_server_log": errors_logged,
        "server_log": str(log_path),
        "engine_seconds": engine_seconds(metrics_text),
        "memory": memory,
        "shutdown": {"exit_code": code, "seconds": round(time.perf_counter() - stopped, 2)},
        "rss_samples_mib": [
            [round(t, 1), round(r / 2**20, 1), d] for t, r, d in samples[:: max(1, len(samples) // 200)]
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    print(
        json.dumps(
            {k: payload[k] for k in ("seconds", "verdict", "server", "memory")} | {"client": counts["by_result"]},
            indent=2,
        )
    )
    raise SystemExit(0 if verdict["pass"] else 1)


if __name__ == "__main__":
    main()
