"""Tasks from data files: a file of rows plus a few settings, no Python.

A `DataTaskSpec` names the data (a JSONL, JSON, CSV/TSV or Parquet file, or a Hub dataset id), the
field holding each prompt (or a ``{field}`` template), the field holding each answer, the answer
check (`t2cli.tasks.answer_checks`: exact, number, choice, contains, regex:PATTERN, python-tests),
and optionally a domain, a system prompt, a field of full solutions for SFT and a split field.
`build_task` turns it into an ordinary `Task`, scored and rewarded like the built-in ones.

The same settings come from command-line options (``t2 eval/train --data FILE …``) or from a TOML
task file whose keys are the options' names (``prompt_field = "problem"``). ``t2 tasks add FILE``
copies a task file into ``T2_HOME/tasks/`` (its data path made absolute), after which
``--task NAME`` finds it (`find_task_file`).

Splits. With a split field (values train / validation (or valid, val, dev) / test), rows go where
it says; without validation rows, a seeded ``val_fraction`` of the train rows is held out. Without
a split field the file is one pool: ``validation`` is a seeded ``val_fraction`` of the rows,
``train`` the rest, and ``test`` every row (scoring a file scores all of it; after training on it,
``--split validation`` scores only rows the expert was not trained on). A Hub dataset's own split
names play the split field's part.

Local files are read with the standard library (JSON, CSV) and pyarrow (Parquet, installed with
``datasets``): a malformed line is skipped and counted instead of failing the whole file, and
nothing is cached or printed; Hub datasets are loaded through ``datasets``.
"""

from __future__ import annotations

import csv
import difflib
import json
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from t2cli.checkers.choices import option_lines
from t2cli.files import atomic_write_text
from t2cli.tasks.answer_checks import AnswerCheck, answer_check
from t2cli.tasks.base import (
    MALFORMED,
    HubSource,
    MissingSplitError,
    Task,
    TaskData,
    TaskSpecError,
    UnknownSplitError,
    _hub_rows,
    read_jsonl,
)
from t2cli.tasks.example import Example

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SPLITS = ("train", "validation", "test")
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "eval": "test",
}
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+(?::[\w.-]+)?")
TASK_FILE_SUFFIX = ".toml"


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


@dataclass(frozen=True)
class DataTaskSpec:
    """Everything that defines a task from a data file (the keys of a task file)."""

    data: str  # a file path, or a Hub dataset id "owner/name" or "owner/name:config"
    answer_field: str
    prompt_field: str | None = None
    template: str | None = None  # the prompt, with {field} placeholders (instead of prompt_field)
    checker: str = "exact"
    name: str | None = None  # default: the data file's name
    domain: str = "other"
    system: str | None = None
    target_field: str | None = None  # full solutions, the SFT target (default: built from the answer)
    split_field: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    choices_field: str | None = None  # choice: the options (a list of texts, or ARC's label/text lists)
    instruction: str | None = None  # appended to a prompt_field prompt (default: the checker's; "" = none)
    max_new_tokens: int | None = None  # default: the checker's
    description: str | None = None

    # -- reading and validating ----------------------------------------------------------------
    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, origin: str, base_dir: Path | None = None, label: Callable = str
    ) -> DataTaskSpec:
        """A validated spec from ``values``; errors name ``origin`` and the bad setting as ``label``
        shows it (``--prompt-field`` on the command line, ``prompt_field`` in a task file). A relative
        data path is taken relative to ``base_dir``."""
        known = {f.name: f for f in fields(cls)}
        values = {key: value for key, value in values.items() if value is not None}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {label(close[0])!r}?" if close else ""
                raise TaskSpecError(
                    f"{origin}: unknown key {label(key)!r}{hint} (valid keys: {', '.join(map(label, known))})"
                )
        for key in ("data", "answer_field"):
            if key not in values:
                raise TaskSpecError(f"{origin}: {label(key)} is missing ({_MEANING[key]})")
        for key, value in list(values.items()):
            kind = _KINDS.get(key, str)
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = values[key] = float(value)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise TaskSpecError(f"{origin}: {label(key)} must be {_KIND_NAMES[kind]}, not {value!r}")
        if ("prompt_field" in values) == ("template" in values):
            raise TaskSpecError(
                f"{origin}: give exactly one of {label('prompt_field')} (the field holding each prompt) and "
                f"{label('template')} (a prompt with {{field}} placeholders)"
            )
        if not 0 < values.get("val_fraction", 0.2) < 1:
            raise TaskSpecError(f"{origin}: {label('val_fraction')} must be between 0 and 1 (e.g. 0.2)")
        if values.get("max_new_tokens", 1) < 1:
            raise TaskSpecError(f"{origin}: {label('max_new_tokens')} must be at least 1")
        try:
            answer_check(values.get("checker", "exact"), values.get("choices_field"))
        except ValueError as exc:
            raise TaskSpecError(f"{origin}: {label('checker')}: {exc}") from exc
        if "template" in values:
            try:
                template_fields(values["template"])
            except ValueError as exc:
                raise TaskSpecError(
                    f"{origin}: {label('template')}: {exc} (write a literal brace as {{{{ or }}}})"
                ) from exc
        data = values["data"]
        if not _is_hub_id(data, base_dir):
            path = Path(data).expanduser()
            values["data"] = str((base_dir / path if base_dir and not path.is_absolute() else path).resolve())
        spec = cls(**values)
        name = spec.task_name
        from t2cli.tasks import TASK_NAME, TASKS

        if not TASK_NAME.fullmatch(name):
            raise TaskSpecError(
                f"{origin}: the task name {name!r} is not usable: {label('name')} takes lower case letters, digits, "
                "'.', '+' and '-'"
            )
        if name in TASKS and TASKS[name].spec != spec.to_dict():
            fix = (
                f"choose another {label('name')}"
                if spec.name
                else 'rename the file, or write a task file with name = "..."'
            )
            raise TaskSpecError(f"{origin}: the task name {name!r} is taken by a registered task: {fix}")
        return spec

    @property
    def task_name(self) -> str:
        if self.name:
            return self.name
        stem = self.data.split(":")[0].replace("/", "-") if self.is_hub else Path(self.data).stem
        return re.sub(r"[^a-z0-9.+-]+", "-", stem.lower()).strip("-.+") or "data"

    @property
    def is_hub(self) -> bool:
        return not Path(self.data).is_absolute() and HUB_ID.fullmatch(self.data) is not None

    def to_dict(self) -> dict[str, Any]:
        """The settings that were given (defaults left out), as a task file holds them."""
        defaults = DataTaskSpec(data="", answer_field="")
        return {k: v for k, v in asdict(self).items() if k in ("data", "answer_field") or v != getattr(defaults, k)}

    @property
    def check(self) -> AnswerCheck:
        return answer_check(self.checker, self.choices_field)


_MEANING = {"data": "the data file, or a Hub dataset id", "answer_field": "the field holding each row's answer"}
_KINDS: dict[str, type] = {"val_fraction": float, "seed": int, "max_new_tokens": int}
_KIND_NAMES = {str: "a string", float: "a number", int: "an integer", bool: "true or false"}


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names a template uses (ValueError on a malformed template).

    >>> template_fields("Q: {question}\\nOptions: {options}")
    ['question', 'options']
    """
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if not names:
        raise ValueError("the template uses no {field}")
    if any(not name.isidentifier() and not name.replace(" ", "_").isidentifier() for name in names):
        raise ValueError(f"only plain {{field}} placeholders are supported, not {names}")
    return names


def _is_hub_id(data: str, base_dir: Path | None) -> bool:
    path = Path(data).expanduser()
    local = (base_dir / path) if base_dir and not path.is_absolute() else path
    return not local.exists() and path.suffix.lower() not in FORMATS and HUB_ID.fullmatch(data) is not None


# ------------------------------------------------------------------------------------------
# Rows
# ------------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[Any]:
    """The rows of a data file (a row that is not an object is None, counted as malformed)."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise TaskSpecError(f"{path}: unknown data format {path.suffix!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise MissingSplitError(f"data file {path} not found")
    if kind == "jsonl":
        return read_jsonl(path)
    if kind == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TaskSpecError(f"{path} is not valid JSON ({exc}); for one object per line use .jsonl") from exc
        if isinstance(data, dict):  # {"data": [...]}: the one list of rows it holds
            lists = [value for value in data.values() if isinstance(value, list)]
            data = lists[0] if len(lists) == 1 else None
        if not isinstance(data, list):
            raise TaskSpecError(f"{path}: a JSON data file holds a list of objects (or one key with such a list)")
        return [row if isinstance(row, dict) else None for row in data]
    if kind in ("csv", "tsv"):
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="," if kind == "csv" else "\t"))
    import pyarrow.parquet  # installed with `datasets`

    return pyarrow.parquet.read_table(path).to_pylist()


def _hub_split_rows(dataset_id: str) -> tuple[list[tuple[str | None, Any]], str]:
    """(split name, row) for every row of every split of a Hub dataset, and its description."""
    path, _, config = dataset_id.partition(":")
    rows: list[tuple[str | None, Any]] = []
    for split in SPLITS:
        try:
            rows += [(split, row) for row in _hub_rows(HubSource(path, config or None, split))]
        except OSError as exc:
            if split == "train" or "unreachable" in str(exc) or "offline" in str(exc):
                raise MissingSplitError(f"Hub dataset {dataset_id} could not be loaded: {exc}") from exc
    return rows, f"hub:{dataset_id}"


def split_rows(spec: DataTaskSpec) -> tuple[dict[str, list[tuple[int, Any]]], str]:
    """Indexed rows of each split, and where they came from."""
    if spec.is_hub:
        tagged, source = _hub_split_rows(spec.data)
    else:
        rows = read_rows(Path(spec.data))
        field = spec.split_field
        tagged = [(row.get(field) if field and isinstance(row, dict) else None, row) for row in rows]
        source = spec.data
    if not tagged:
        raise TaskSpecError(f"{source} holds no rows")
    if spec.split_field and not spec.is_hub:
        _require_fields(spec, [row for _, row in tagged], [spec.split_field])
    by_split: dict[str, list[tuple[int, Any]]] = {split: [] for split in SPLITS}
    pooled = not spec.split_field and not spec.is_hub
    for index, (value, row) in enumerate(tagged):
        split = "test" if pooled else SPLIT_NAMES.get(str(value).strip().lower())
        if split is not None:
            by_split[split].append((index, row))
    if pooled or not by_split["validation"]:  # hold out a seeded fraction of the train rows
        pool = by_split["test"] if pooled else by_split["train"]
        order = list(range(len(pool)))
        random.Random(spec.seed).shuffle(order)
        n_val = max(1, round(spec.val_fraction * len(pool))) if len(pool) > 1 else 0
        held = set(order[:n_val])
        by_split["validation"] = [row for i, row in enumerate(pool) if i in held]
        by_split["train"] = [row for i, row in enumerate(pool) if i not in held]
    return by_split, source


def _require_fields(spec: DataTaskSpec, rows: list[Any], names: list[str]) -> None:
    """One clear error when a named field is in no row: which field, for what, which fields exist."""
    available = sorted({key for row in rows if isinstance(row, dict) for key in row})
    for name in names:
        if name not in available:
            setting = next((k for k, v in asdict(spec).items() if v == name and k.endswith("_field")), "template")
            raise TaskSpecError(
                f"{spec.data}: no field {name!r} for the {setting.replace('_', ' ')} ({_option(setting)}); "
                f"available fields: {', '.join(available) or 'none'}"
            )


# ------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------


def build_task(spec: DataTaskSpec) -> Task:
    """The `Task` that ``spec`` describes; rows are read when a split is loaded."""
    check = spec.check
    needed = [spec.answer_field, *(f for f in (spec.prompt_field, spec.target_field, spec.choices_field) if f)]
    if spec.template:
        needed += template_fields(spec.template)
    instruction = check.instruction if spec.instruction is None else spec.instruction

    def to_example(row: dict, fallback_id: str) -> Example:
        fields = check.prepare(row[spec.answer_field], row)
        if spec.template:
            prompt = spec.template.format(**{k: "" if v is None else v for k, v in row.items()})
        else:
            prompt = row[spec.prompt_field]
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"field {spec.prompt_field!r} must be a non-empty string")
            prompt = prompt.strip()
            if "options" in fields:
                prompt += "\n" + option_lines(fields["labels"], fields["options"])
            if instruction:
                prompt += "\n\n" + instruction.format(**fields)
        if spec.target_field:
            target = row[spec.target_field]
            if not isinstance(target, str) or not target.strip():
                raise ValueError(f"field {spec.target_field!r} must be a non-empty string")
            fields["target"] = target.strip()
        own_id = row.get("id")
        return Example(str(own_id) if own_id not in (None, "") else fallback_id, prompt=prompt, **fields)

    def load(split: str, data_dir: str | Path | None = None) -> TaskData:
        if split not in SPLITS:
            raise UnknownSplitError(
                f"Task {spec.task_name!r} has no split {split!r}; valid splits: {', '.join(SPLITS)}."
            )
        by_split, source = split_rows(spec)
        rows = [row for rows in by_split.values() for _, row in rows]
        _require_fields(spec, rows, needed)
        if not by_split[split]:
            where = f"no row has {spec.split_field} = {split!r}" if spec.split_field else "no rows"
            raise MissingSplitError(f"Task {spec.task_name!r}: {where} for split {split!r} in {source}")
        stem = spec.task_name
        examples, skipped = [], 0
        for index, row in by_split[split]:
            try:
                if row is None:
                    raise ValueError("not an object")
                examples.append(to_example(row, f"{stem}-{index}"))
            except MALFORMED:
                skipped += 1
        return TaskData(examples, skipped, f"{source} ({split}: {len(by_split[split])} rows)")

    def reference(example: Mapping[str, Any]) -> str:
        return example["target"] if example.get("target") and check.name != "python-tests" else check.reference(example)

    return Task(
        name=spec.task_name,
        domain=spec.domain,
        description=spec.description or f"From {spec.data}: {spec.checker} answers in field {spec.answer_field!r}.",
        to_example=to_example,
        prompt=lambda example: example["prompt"],
        extractor=check.extractor,
        reference=reference,
        is_correct=check.is_correct,
        test_program=check.test_program,
        system=spec.system,
        max_new_tokens=spec.max_new_tokens or check.max_new_tokens,
        splits=SPLITS,
        loader=load,
        spec=spec.to_dict(),
    )


# ------------------------------------------------------------------------------------------
# Task files
# ------------------------------------------------------------------------------------------


def read_task_file(path: str | Path) -> DataTaskSpec:
    """The spec in a TOML task file; relative data paths are relative to the file."""
    path = Path(path).expanduser()
    if path.suffix.lower() != TASK_FILE_SUFFIX:
        raise TaskSpecError(f"{path}: a task file is TOML, named *.toml (keys: data, prompt_field, answer_field, …)")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskSpecError(f"cannot read task file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TaskSpecError(f"{path} is not valid TOML: {exc}") from exc
    return DataTaskSpec.from_mapping(values, origin=str(path), base_dir=path.resolve().parent)


def load_task_file(path: str | Path) -> Task:
    return build_task(read_task_file(path))


def task_from_spec(spec: Mapping[str, Any], origin: str = "the task spec") -> Task:
    """The task a `Task.spec` describes (an expert's ``provenance["task_spec"]``), rebuilt."""
    return build_task(DataTaskSpec.from_mapping(spec, origin=origin))


def data_task(settings: Mapping[str, Any]) -> Task:
    """The task that command-line settings describe (``{"data": …, "prompt_field": …}``); errors name
    the options (``--prompt-field``)."""
    return build_task(DataTaskSpec.from_mapping(settings, origin=f"--data {settings.get('data')}", label=_option))


def task_dir() -> Path:
    """Where `t2 tasks add` keeps task files: ``T2_HOME/tasks``."""
    from t2cli.models import t2_home

    return t2_home() / "tasks"


def find_task_file(name: str) -> Path | None:
    path = task_dir() / f"{name}{TASK_FILE_SUFFIX}"
    return path if path.is_file() else None


def task_file_names() -> list[str]:
    directory = task_dir()
    return sorted(p.stem for p in directory.glob(f"*{TASK_FILE_SUFFIX}")) if directory.is_dir() else []


def toml_text(values: Mapping[str, Any]) -> str:
    """A flat TOML document of strings and numbers (JSON's string escapes are TOML's).

    >>> print(toml_text({"name": "arith", "val_fraction": 0.2}), end="")
    name = "arith"
    val_fraction = 0.2
    """
    return "".join(f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in values.items())


def add_task_file(path: str | Path, *, overwrite: bool = False) -> tuple[DataTaskSpec, Path]:
    """Validate a task file (its data is read once) and keep it as ``T2_HOME/tasks/NAME.toml``."""
    from t2cli.tasks import TASKS

    spec = read_task_file(path)
    name = spec.task_name
    if name in TASKS:
        raise TaskSpecError(f'{path}: the name {name!r} is a built-in task\'s; set name = "..." to another name')
    build_task(spec).load("train")  # the data exists and has the fields
    target = task_dir() / f"{name}{TASK_FILE_SUFFIX}"
    if target.exists() and not overwrite:
        raise TaskSpecError(f"a task {name!r} was already added ({target}); remove it first or overwrite it")
    atomic_write_text(target, f"# added by `t2 tasks add {path}`\n" + toml_text({"name": name, **spec.to_dict()}))
    return spec, target


def remove_task_file(name: str) -> Path:
    from t2cli.tasks import task_key

    path = find_task_file(task_key(name))
    if path is None:
        raise TaskSpecError(f"no added task {name!r}; added tasks: {', '.join(task_file_names()) or 'none'}")
    path.unlink()
    return path
