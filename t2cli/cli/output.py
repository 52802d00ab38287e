"""Output for scripts: `--json` documents on stdout, and tables that a pipe does not cut at 80 columns."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

JSON_HELP = "Print one JSON document on stdout and nothing else (progress and messages go to stderr)."
PIPED_WIDTH = 1000  # columns of a console writing to a file or pipe (a terminal's own width otherwise)


def console_width() -> int | None:
    """None (rich asks the terminal) on a terminal or with $COLUMNS set, else PIPED_WIDTH: rich would
    otherwise assume 80 columns and fold or cut every wider table written to a file or a pipe."""
    if os.environ.get("COLUMNS") or sys.stdout.isatty():
        return None
    return PIPED_WIDTH


def print_json(document: Any) -> None:
    """One JSON document on stdout (plain print: no rich markup, highlighting or wrapping)."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
