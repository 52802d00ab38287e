"""The metrics' labels: a mixture counts under the experts it mixes, whatever its weights."""

from __future__ import annotations

from t2cli.serve.metrics import Metrics


def test_mixtures_with_different_weights_share_one_series():
    metrics = Metrics()
    for weight in (0.1, 0.25, 0.4, 0.55, 0.7):
        label = f"mix(code:{weight:g},math:{1 - weight:g})"
        metrics.first_token(0.2, label)
        metrics.finished("stop", label, tokens=5, decode_seconds=0.4)
    metrics.finished("stop", "math", tokens=3)
    text = metrics.render()
    assert 't2_requests_total{expert="mix(code,math)",outcome="stop"} 5' in text
    assert 't2_requests_total{expert="math",outcome="stop"} 1' in text
    assert "code:0." not in text and "math:0." not in text
