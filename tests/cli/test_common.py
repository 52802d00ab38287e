"""Shared CLI pieces: progress reporting when the output is a log file, not a terminal."""

import io

from rich.console import Console

from t2cli.cli import common


def test_progress_without_a_terminal_writes_a_line_per_step(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(common, "err_console", Console(file=log, force_terminal=False, width=200))
    with common.progress_bar("train math", total=3) as update:
        update(0, 3, "loading…")
        update(0, 3, "validating…")  # same step, within a minute: not repeated
        update(1, 3, "loss 0.5")
        update(2, 3, "loss 0.4")
    lines = log.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].endswith("train math 0/3 loading…") and lines[2].endswith("train math 2/3 loss 0.4")

    log.truncate(0)
    log.seek(0)
    monkeypatch.setattr(common, "PLAIN_PROGRESS_EVERY_S", 0.0)  # between steps: the phase, at most this often
    with common.progress_bar("eval", total=None) as update:
        update(0, None, "a")
        update(0, None, "b")
    assert log.getvalue().splitlines()[-1].endswith("eval 0/? b")


def test_a_resumed_runs_progress_line_shows_its_best_so_far_not_the_base() -> None:
    from t2cli.cli.train import EventRenderer

    labels = []
    renderer = EventRenderer(lambda done, total, label: labels.append((done, label)), total=120)
    start = {"event": "start", "start_iter": 11, "base_accuracy": 0.22, "best_accuracy": 0.26, "best_iteration": 10}
    renderer(start)
    assert renderer.best == 0.26
    assert labels[-1] == (11, "base val 22.0% · resumed, best 26.0% at iteration 10")
    fresh = EventRenderer(lambda *args: None, total=120)
    fresh({**start, "start_iter": 0, "best_accuracy": 0.22, "best_iteration": 0})
    assert fresh.best == 0.22
