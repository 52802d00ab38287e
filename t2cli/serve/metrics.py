"""The server's metrics, rendered as Prometheus text (GET /metrics).

Counters and histograms are labelled by the expert that served a request ("base", an expert
name, the expert pass 1 chose, or a mixture by the experts it mixes — "mix(code,math)", without
its weights, so that clients sending many different weights cannot grow the series without bound).
Updated from the engine thread and the HTTP
threads, so every change takes a lock.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def series(label: str) -> str:
    """The metric label of a request's expert label: a mixture's weights dropped.

    >>> series("mix(code:0.4,math:0.6)"), series("math")
    ('mix(code,math)', 'math')
    """
    return re.sub(r":[^,)]*", "", label) if label.startswith("mix(") else label


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out = [
            f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {count}' for bound, count in zip(self.buckets, self.counts)
        ]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.count}"]
        return out


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)  # (expert, outcome) → count
        self.accepted_total = 0  # requests queued (each ends with one outcome)
        self.tokens: dict[str, int] = defaultdict(int)  # expert → generated tokens
        self.ttft: dict[str, Histogram] = {}
        self.per_token: dict[str, Histogram] = {}
        self.batch = Histogram(BATCH_BUCKETS)
        self.step_seconds = Histogram(LATENCY_BUCKETS)
        self.pass1_seconds = Histogram(LATENCY_BUCKETS)
        self.prefill_size = Histogram(BATCH_BUCKETS)
        self.prefill_seconds = Histogram(LATENCY_BUCKETS)
        self.queue = 0
        self.running = 0

    def accepted(self) -> None:
        with self._lock:
            self.accepted_total += 1

    def rejected(self) -> None:
        with self._lock:
            self.requests[("none", "rejected")] += 1

    def queue_length(self, length: int) -> None:
        with self._lock:
            self.queue = length

    def step(self, batch_size: int, seconds: float) -> None:
        with self._lock:
            self.running = batch_size
            self.batch.observe(batch_size)
            self.step_seconds.observe(seconds)

    def prefill(self, prompts: int, seconds: float) -> None:
        with self._lock:
            self.prefill_size.observe(prompts)
            self.prefill_seconds.observe(seconds)

    def pass1(self, seconds: float, prompts: int) -> None:
        with self._lock:
            for _ in range(prompts):
                self.pass1_seconds.observe(seconds / max(prompts, 1))

    def first_token(self, seconds: float, expert: str) -> None:
        expert = series(expert)
        with self._lock:
            self.ttft.setdefault(expert, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def finished(self, outcome: str, expert: str, tokens: int = 0, decode_seconds: float | None = None) -> None:
        expert = series(expert)
        with self._lock:
            self.requests[(expert, outcome)] += 1
            self.tokens[expert] += tokens
            if decode_seconds is not None and tokens > 1:
                per_token = self.per_token.setdefault(expert, Histogram(LATENCY_BUCKETS))
                per_token.observe(decode_seconds / (tokens - 1))

    def render(self, running: int | None = None, queued: int | None = None) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            lines = ["# HELP t2_requests_total Requests by expert and outcome.", "# TYPE t2_requests_total counter"]
            lines += [
                f't2_requests_total{{expert="{_escape(e)}",outcome="{o}"}} {n}'
                for (e, o), n in sorted(self.requests.items())
            ]
            lines += ["# HELP t2_accepted_requests_total Requests queued.", "# TYPE t2_accepted_requests_total counter"]
            lines.append(f"t2_accepted_requests_total {self.accepted_total}")
            lines += [
                "# HELP t2_generated_tokens_total Generated tokens by expert.",
                "# TYPE t2_generated_tokens_total counter",
            ]
            lines += [f't2_generated_tokens_total{{expert="{_escape(e)}"}} {n}' for e, n in sorted(self.tokens.items())]
            lines += ["# HELP t2_queue_length Requests waiting for a slot.", "# TYPE t2_queue_length gauge"]
            lines.append(f"t2_queue_length {self.queue if queued is None else queued}")
            lines += ["# HELP t2_running_requests Requests in the running batch.", "# TYPE t2_running_requests gauge"]
            lines.append(f"t2_running_requests {self.running if running is None else running}")
            lines += ["# HELP t2_batch_size Rows per decode step.", "# TYPE t2_batch_size histogram"]
            lines += self.batch.lines("t2_batch_size", "")
            lines += [
                "# HELP t2_decode_step_seconds Seconds per decode step.",
                "# TYPE t2_decode_step_seconds histogram",
            ]
            lines += self.step_seconds.lines("t2_decode_step_seconds", "")
            lines += ["# HELP t2_prefill_size Prompts per prefill.", "# TYPE t2_prefill_size histogram"]
            lines += self.prefill_size.lines("t2_prefill_size", "")
            lines += ["# HELP t2_prefill_seconds Seconds per prefill.", "# TYPE t2_prefill_seconds histogram"]
            lines += self.prefill_seconds.lines("t2_prefill_seconds", "")
            lines += ["# HELP t2_pass1_seconds Pass-1 seconds per :auto request.", "# TYPE t2_pass1_seconds histogram"]
            lines += self.pass1_seconds.lines("t2_pass1_seconds", "")
            for name, help_text, table in (
                ("t2_time_to_first_token_seconds", "Seconds from arrival to the first token.", self.ttft),
                ("t2_time_per_output_token_seconds", "Seconds per generated token after the first.", self.per_token),
            ):
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
                for expert, histogram in sorted(table.items()):
                    lines += histogram.lines(name, f'expert="{_escape(expert)}"')
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
