"""The soak of bench/serve_soak.py, small and in process: a few clients send every kind of request
(streamed and not, experts, mixtures, :auto, dropped streams, abandoned requests, bad requests) to
a live server on the tiny model; no server error, and every accepted request answered or cancelled."""

from __future__ import annotations

import logging

from bench.serve_soak import KINDS, Target, check_accounting, drive, get, server_outcomes, tally, wait_idle
from t2cli.serve.engine import Engine
from tests.serve.test_app import KEY, MODEL, Live


def test_mixed_load_with_faults_leaves_nothing_broken_or_unaccounted(served, caplog):
    loaded, store, experts = served
    engine = Engine(loaded, store, experts, strategy="loglik", max_batch=4, max_queue=3).start()
    server = Live(engine)
    try:
        target = Target("127.0.0.1", server.port, MODEL, tuple(experts), auto=True, api_key=KEY, max_tokens=6)
        outcomes = drive(target, clients=5, requests=len(KINDS), time_limit=120)
        health = wait_idle(target)
        counts = tally(outcomes)
        verdict = check_accounting(counts, server_outcomes(get(target, "/metrics")), health)
        assert verdict == {"no_server_errors": True, "all_accounted": True}, counts
        assert counts["sent"] == 5 * len(KINDS) and {o.kind for o in outcomes} == set(KINDS)
        assert counts["by_result"]["refused"] == 5 and counts["by_result"]["answered"] > 20
        assert engine.pending == 0
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged either
    finally:
        server.close()
        engine.stop(deadline_s=5)
