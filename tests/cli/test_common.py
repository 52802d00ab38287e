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
