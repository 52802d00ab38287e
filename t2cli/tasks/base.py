"""The `Task` object, data loading and split logic shared by every task.

A task is data, not a subclass: where each split's rows come from (`SplitSource`), how a raw row
becomes an `Example` (an explicit id plus the task's fields), how the prompt is written, how an
answer is extracted and checked. Adding a task is adding one `Task(...)` and passing it to
`t2cli.tasks.register_task` (the built-in ones are registered by `t2cli.tasks` itself).

Rows are looked up, in order, in: the ``data_dir`` argument, ``$T2_DATA_DIR``, the data bundled
in ``t2cli/data/`` (same layout: ``gsm8k/train.jsonl`` ...), then the Hugging Face Hub through
``datasets`` when the task names a Hub copy and the Hub is reachable. Local files are read with
the standard json module (one object per line): Arrow cannot hold MBPP+'s mixed-type test inputs,
and a bad line must be skipped, not fail the whole file.
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from t2cli.checkers.code import CheckProgram, run_check_programs
from t2cli.errors import T2Error
from t2cli.tasks.example import Example

DATA_ENV = "T2_DATA_DIR"
BUNDLED_DATA = Path(__file__).resolve().parent.parent / "data"

Rows = list[tuple[int, Any]]  # (index in the source file, parsed row or None when malformed)


class UnknownTaskError(T2Error, ValueError):
    """No task has that name."""


class UnknownSplitError(T2Error, ValueError):
    """The task has no split of that name."""


class TaskSpecError(T2Error, ValueError):
    """A task from a data file or a task file is set up wrongly (the message names the setting)."""


class MissingSplitError(T2Error, FileNotFoundError):
    """The split's data file was found nowhere (data dir, $T2_DATA_DIR, bundled data, Hub)."""


# ------------------------------------------------------------------------------------------
# Where rows come from
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    """A Hub dataset holding the same rows as a local file (``datasets.load_dataset`` args)."""

    path: str
    name: str | None = None
    split: str = "test"

    def describe(self) -> str:
        return f"{self.path}" + (f" ({self.name})" if self.name else "") + f" split {self.split!r}"


def all_rows(rows: Rows) -> Rows:
    return rows


def even_rows(rows: Rows) -> Rows:
    """Rows 0, 2, 4, ... of a file (the paper's training half)."""
    return rows[0::2]


def odd_rows(rows: Rows) -> Rows:
    """Rows 1, 3, 5, ... of a file (the paper's validation half)."""
    return rows[1::2]


def shuffled_slice(seed: int, start: int, stop: int | None) -> Callable[[Rows], Rows]:
    """Rows shuffled with ``random.Random(seed)`` (Python's Mersenne Twister), then sliced."""

    def select(rows: Rows) -> Rows:
        shuffled = list(rows)
        random.Random(seed).shuffle(shuffled)
        return shuffled[start:stop]

    return select


@dataclass(frozen=True)
class SplitSource:
    """One split: a JSONL file relative to a data dir, a row selection, an optional Hub copy."""

    file: str
    select: Callable[[Rows], Rows] = all_rows
    hub: HubSource | None = None
    fields: str = ""  # the fields a row needs, named in the "missing split" message


def paper_splits(folder: str, hub_path: str, hub_name: str | None, fields: str) -> dict[str, SplitSource]:
    """The paper's splits of a benchmark with a train file and a test file: train = even rows of
    ``FOLDER/train.jsonl``, validation = its odd rows, test = ``FOLDER/test.jsonl``; each with the
    matching split of the Hub dataset ``hub_path`` (config ``hub_name``)."""

    def source(file: str, hub_split: str, select: Callable[[Rows], Rows]) -> SplitSource:
        return SplitSource(f"{folder}/{file}", select, HubSource(hub_path, hub_name, hub_split), fields)

    return {
        "train": source("train.jsonl", "train", even_rows),
        "validation": source("train.jsonl", "train", odd_rows),
        "test": source("test.jsonl", "test", all_rows),
    }


@dataclass(frozen=True)
class TaskData:
    """Examples of one split; ``skipped`` counts malformed rows; ``source`` says where from.

    Examples given as plain mappings (a task's own ``loader``) become `Example`s here, so every
    example of every task has an id."""

    examples: list[Example]
    skipped: int
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "examples", [Example.of(example) for example in self.examples])

    def __len__(self) -> int:
        return len(self.examples)


def read_jsonl(path: Path) -> list[Any]:
    """Parsed JSON objects, one per non-blank line; a line that is not a JSON object is None."""
    rows: list[Any] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            rows.append(row if isinstance(row, dict) else None)
    return rows


_TRUE = ("1", "true", "yes", "on")


@lru_cache(maxsize=4)
def _hub_unreachable_reason() -> str | None:
    """None when the Hub endpoint accepts a TCP connection within 3 s, else why not. Offline mode
    counts as unreachable: `datasets` would otherwise spend ~20 s on retries."""
    from huggingface_hub import constants

    # The environment, read now: huggingface_hub's own flag is frozen when it is first imported.
    if any(os.environ.get(name, "").lower() in _TRUE for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")):
        return "Hub offline mode is on (HF_HUB_OFFLINE)"
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"the Hub ({host}) is unreachable: {exc}"
    return None


def _hub_rows(hub: HubSource) -> list[Any]:
    reason = _hub_unreachable_reason()
    if reason:
        raise OSError(reason)
    import datasets

    try:
        dataset = datasets.load_dataset(hub.path, hub.name, split=hub.split)
    except Exception as exc:  # any Hub failure means "not available"
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    return [dict(row) for row in dataset]


def _data_roots(data_dir: str | Path | None) -> list[tuple[str, Path]]:
    roots = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir).expanduser()))
    if os.environ.get(DATA_ENV):
        roots.append((f"${DATA_ENV}", Path(os.environ[DATA_ENV]).expanduser()))
    roots.append(("bundled data", BUNDLED_DATA))
    return roots


def _describe(label: str, file: str) -> str:
    """Where a split was read from, with no machine-specific path: `t2cli/data/FILE` for the bundled
    copy, `--data-dir:FILE` or `$T2_DATA:FILE` relative to the data directory given."""
    return f"t2cli/data/{file}" if label == "bundled data" else f"{label}:{file}"


def read_split(task: str, split: str, source: SplitSource, data_dir: str | Path | None) -> tuple[Rows, str]:
    """All rows of the split's file, indexed, and a description of where they were found."""
    looked = []
    for label, root in _data_roots(data_dir):
        path = root / source.file
        if path.is_file():
            return list(enumerate(read_jsonl(path))), _describe(label, source.file)
        looked.append(f"{label} ({root})")
    hub_note = ""
    if source.hub is not None:
        try:
            return list(enumerate(_hub_rows(source.hub))), f"hub:{source.hub.describe()}"
        except OSError as exc:
            hub_note = f"; the Hub copy {source.hub.describe()} could not be loaded: {exc}"
    fields = f" (one JSON object per line with {source.fields})" if source.fields else " (JSON lines)"
    raise MissingSplitError(
        f"Task {task!r} has no data for split {split!r}: {source.file} is not in "
        f"{', '.join(looked)}{hub_note}. Provide it with --data-dir DIR, where DIR/{source.file} "
        f"holds the rows{fields}, or set ${DATA_ENV}=DIR."
    )


def require_str(row: Mapping[str, Any], key: str) -> str:
    """``row[key]`` when it is a non-empty string, else ValueError (the row is skipped)."""
    value = row[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} must be a non-empty string")
    return value


# ------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------

MALFORMED = (KeyError, ValueError, TypeError, IndexError, AttributeError)


def _completion_text(completion: Any) -> str:
    """A completion as text: TRL passes strings, or message lists in conversational mode."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content", ""))
    return "" if completion is None else str(completion)


@dataclass(frozen=True)
class Task:
    """A benchmark as data: sources, prompt, extractor, checker and a reference answer.

    Exactly one of ``is_correct`` (text answers, given the extracted answer) and
    ``test_program`` (code answers, a `CheckProgram` run in the sandbox) is set.
    """

    name: str
    domain: str  # "math", "code", "reasoning", "classification", or a user's own
    description: str
    to_example: Callable[[dict, str], Mapping[str, Any]]  # (raw row, fallback id) -> example; raises if malformed
    prompt: Callable[[Mapping[str, Any]], str]  # the user message
    extractor: Callable[[str, Mapping[str, Any] | None], str | None]
    reference: Callable[[Mapping[str, Any]], str]  # a model-style answer the checker accepts
    sources: Mapping[str, SplitSource] = field(default_factory=dict)
    is_correct: Callable[[str | None, Mapping[str, Any]], bool] | None = None
    test_program: Callable[[str | None, Mapping[str, Any]], CheckProgram | None] | None = None
    system: str | None = None
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()  # defaults to the keys of ``sources``
    loader: Callable[[str, str | Path | None], TaskData] | None = None  # replaces file loading
    sandbox_wall_time_s: float = 10.0  # per code check (also its CPU-time limit)
    sandbox_memory_mb: int = 1024
    aliases: tuple[str, ...] = ()  # other names `get_task` accepts ("mbpp-pro" for "mbpp-plus")
    spec: Mapping[str, Any] | None = None  # a task from a data file: the settings that rebuild it

    def __post_init__(self) -> None:
        if not self.splits:
            object.__setattr__(self, "splits", tuple(self.sources))
        if (self.is_correct is None) == (self.test_program is None):
            raise ValueError(f"task {self.name!r}: set exactly one of is_correct / test_program")

    # -- data --------------------------------------------------------------------------------
    def load(self, split: str, data_dir: str | Path | None = None) -> TaskData:
        """The examples of ``split``; malformed rows are counted in ``skipped``, never raised."""
        if split not in self.splits:
            raise UnknownSplitError(
                f"Task {self.name!r} has no split {split!r}; valid splits: {', '.join(self.splits)}."
            )
        if self.loader is not None:
            return self.loader(split, data_dir)
        source = self.sources[split]
        rows, origin = read_split(self.name, split, source, data_dir)
        stem = Path(source.file).stem
        examples, skipped = [], 0
        for index, row in source.select(rows):
            try:
                if row is None:
                    raise ValueError("not a JSON object")
                examples.append(self.example(row, f"{stem}-{index}"))
            except MALFORMED:
                skipped += 1
        return TaskData(examples, skipped, origin)

    def example(self, row: dict, fallback_id: str) -> Example:
        """One raw row as an `Example` (its id, or ``fallback_id``); raises if the row is malformed."""
        return Example.of(self.to_example(row, fallback_id), fallback_id)

    # -- prompting ---------------------------------------------------------------------------
    def messages(self, example: Mapping[str, Any]) -> list[dict[str, str]]:
        """Chat messages for one example (a system message only when the task has one)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": self.prompt(example)}]

    def reference_output(self, example: Mapping[str, Any]) -> str:
        return self.reference(example)

    # -- scoring -----------------------------------------------------------------------------
    def extract(self, output: str, example: Mapping[str, Any] | None = None) -> str | None:
        """The answer read from a model output (None when there is none). ``example`` helps
        where the valid answers depend on it (ARC labels, the function name of code tasks)."""
        return self.extractor(output or "", example)

    def check(self, output: str, example: Mapping[str, Any]) -> bool:
        return self.check_many([output], [example])[0]

    def check_many(
        self, outputs: Sequence[str], examples: Sequence[Mapping[str, Any]], max_workers: int | None = None
    ) -> list[bool]:
        """Correctness of each output; code answers run in the sandbox in parallel."""
        if len(outputs) != len(examples):
            raise ValueError(f"{len(outputs)} outputs for {len(examples)} examples")
        answers = [self.extract(_completion_text(o), e) for o, e in zip(outputs, examples)]
        if self.is_correct is not None:
            return [bool(self.is_correct(a, e)) for a, e in zip(answers, examples)]
        assert self.test_program is not None
        programs = [self.test_program(a, e) if a is not None else None for a, e in zip(answers, examples)]
        return run_check_programs(
            programs, wall_time_s=self.sandbox_wall_time_s, memory_mb=self.sandbox_memory_mb, max_workers=max_workers
        )

    def reward(self, completions: Sequence[Any], examples: Sequence[Mapping[str, Any]], **_: Any) -> list[float]:
        """+1 for a correct completion, -1 otherwise (a TRL-style reward callable)."""
        return [1.0 if ok else -1.0 for ok in self.check_many(completions, examples)]
