"""Where the files the project ships beside the package are: the expert registry and completions.

In a source checkout they are the top-level `registry/` and `completions/` directories; a wheel
carries the same directories inside the package, as `t2cli/_registry` and `t2cli/_completions`
(pyproject.toml maps them there), found through importlib.resources.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[1]


def _shipped(packaged: str, source: str) -> Path:
    inside = Path(str(files("t2cli") / packaged))
    return inside if inside.is_dir() else _SOURCE_ROOT / source


def shipped_registry() -> Path:
    """The registry of experts that ships with t2 (read-only)."""
    return _shipped("_registry", "registry")


def completions_dir() -> Path:
    """completions/t2.{bash,zsh,fish}."""
    return _shipped("_completions", "completions")
