"""The expert registry: directories of experts indexed by base model and name, plus Hub push/pull.

Layout of every registry root: `<root>/<base-model>/<name>/{expert.safetensors, expert.json}`.
Roots are searched in order — the user registry (`$T2_REGISTRY`, else `T2_HOME/registry`) first,
then the `registry/` the project ships — and new experts are written to the user registry.
Shipped experts are read-only here; to replace one, register a new name.

Writes are exclusive and atomic per expert. A writer holds `<base>/.<name>.lock` (an OS file lock,
released if the process dies), writes the complete new expert into a hidden staging directory
beside the target, then renames it into place; an overwrite first renames the old directory aside
(`.<name>.old`) and deletes it only once the new one is in place. Whoever next takes the lock
finishes or rolls back what a killed writer left, so a reader sees the old expert or the new one,
never a mix, and a losing writer gets one RegistryError.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from t2cli.errors import ExpertError, RegistryError
from t2cli.expert import META_FILE, TENSORS_FILE, ExpertVector, read_metadata
from t2cli.files import current_umask
from t2cli.models import t2_home
from t2cli.resources import shipped_registry

SHIPPED_REGISTRY = shipped_registry()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
LOCK_TIMEOUT_S = 30.0  # how long a writer waits for another writer of the same expert


def user_registry() -> Path:
    return Path(os.environ["T2_REGISTRY"]).expanduser() if os.environ.get("T2_REGISTRY") else t2_home() / "registry"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise RegistryError(
            f"invalid expert name {name!r}: use letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    base_model: str
    path: Path
    shipped: bool
    meta: dict = field(repr=False)
    error: str | None = None  # why the entry cannot be used (then `meta` is empty)

    @property
    def domain(self) -> str:
        return self.meta.get("domain", "other")


class Registry:
    def __init__(
        self, roots: list[Path] | None = None, write_root: Path | None = None, lock_timeout: float | None = None
    ):
        self.lock_timeout = LOCK_TIMEOUT_S if lock_timeout is None else lock_timeout
        self.write_root = Path(write_root) if write_root else user_registry()
        default_roots = [self.write_root, SHIPPED_REGISTRY]
        self.roots = [Path(root) for root in (roots if roots is not None else default_roots)]
        if self.write_root not in self.roots:
            self.roots.insert(0, self.write_root)

    # ------------------------------------------------------------------ reading

    def list(self, base_model: str | None = None) -> list[RegistryEntry]:
        """Experts in every root (first root wins on a name clash), sorted by base and name.

        An entry whose expert.json is unreadable or malformed is listed with `error` set and empty
        `meta`, so one broken expert does not hide the others."""
        self._recover_leftovers(base_model)
        seen: dict[tuple[str, str], RegistryEntry] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for meta_path in sorted(root.glob(f"*/*/{META_FILE}")):
                base, name = meta_path.parent.parent.name, meta_path.parent.name
                if name.startswith(".") or base_model is not None and base != base_model or (base, name) in seen:
                    continue
                try:
                    meta, error = read_metadata(meta_path.parent), None
                except ExpertError as problem:
                    meta, error = {}, str(problem)
                shipped = root.resolve() == SHIPPED_REGISTRY.resolve() and root != self.write_root
                seen[(base, name)] = RegistryEntry(name, base, meta_path.parent, shipped, meta, error)
        return sorted(seen.values(), key=lambda entry: (entry.base_model, entry.name))

    def find(self, name: str, base_model: str) -> RegistryEntry:
        for entry in self.list(base_model):
            if entry.name == name:
                return entry
        known = ", ".join(entry.name for entry in self.list(base_model)) or "none"
        raise RegistryError(
            f"no expert named {name!r} for base model {base_model!r} (known: {known}); see `t2 experts list`"
        )

    def load(self, name: str, base_model: str) -> ExpertVector:
        """Find and fully check an expert from its files (no model needed): call it before loading a
        model, so a bad expert is reported in milliseconds. Raises RegistryError or ExpertError."""
        entry = self.find(name, base_model)
        with self._reading(entry):
            return ExpertVector.load(entry.path)

    # ------------------------------------------------------------------ writing

    def add(self, expert: ExpertVector, overwrite: bool = False) -> RegistryEntry:
        """Save an expert into the write root under its base model and name, replacing the whole
        directory at once (see the module docstring)."""
        check_name(expert.name)
        with self._locked(expert.base_model, expert.name):
            target = self.write_root / expert.base_model / expert.name
            if target.exists() and not overwrite:
                raise RegistryError(
                    f"an expert named {expert.name!r} already exists for {expert.base_model} at {target}; "
                    "choose another --name or pass --overwrite"
                )
            staging = Path(tempfile.mkdtemp(prefix=f".{expert.name}.new-", dir=target.parent))
            try:
                expert.save(staging)
                os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes 0700
                if target.exists():
                    aside = _aside(target)
                    os.rename(target, aside)
                    os.rename(staging, target)
                    shutil.rmtree(aside)
                else:
                    os.rename(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return self.find(expert.name, expert.base_model)

    def remove(self, name: str, base_model: str) -> Path:
        entry = self.find(name, base_model)
        if not self._in_write_root(entry):
            raise RegistryError(
                f"{name!r} lives in the read-only registry {entry.path.parent.parent}; "
                "only experts in the user registry can be removed"
            )
        with self._locked(base_model, name):
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.del-", dir=entry.path.parent))
            os.rename(entry.path, trash / name)
            shutil.rmtree(trash)
        return entry.path

    # ------------------------------------------------------------------ locking and recovery

    def _in_write_root(self, entry: RegistryEntry) -> bool:
        return entry.path.parent.parent.resolve() == self.write_root.resolve()

    @contextmanager
    def _reading(self, entry: RegistryEntry) -> Iterator[None]:
        """Hold the writers' lock while an expert of the write root is read, so a reader never sees
        half of an overwrite. Elsewhere, and in a write root this process cannot write (which has
        no writers to wait for), the expert is read as it is."""
        if self._in_write_root(entry) and os.access(entry.path.parent, os.W_OK):
            with self._locked(entry.base_model, entry.name):
                yield
        else:
            yield

    @contextmanager
    def _locked(self, base_model: str, name: str) -> Iterator[None]:
        """Hold the expert's lock, after finishing or undoing whatever a killed writer left."""
        folder = self.write_root / base_model
        lock = FileLock(folder / f".{name}.lock", timeout=self.lock_timeout)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:
            raise RegistryError(
                f"expert {name!r} for {base_model} is being written by another t2 process "
                f"(lock {lock.lock_file} held for {self.lock_timeout:g} s); retry when it has finished"
            ) from None
        except OSError as error:
            raise RegistryError(
                f"cannot lock expert {name!r} in {folder} ({error.strerror or error}): the user registry "
                "must be writable (set $T2_REGISTRY or --registry to a directory you can write)"
            ) from None
        try:
            _recover(folder / name)
            yield
        finally:
            lock.release()

    def _recover_leftovers(self, base_model: str | None) -> None:
        """Finish what a killed writer left in the write root (only when something is left)."""
        folders = [self.write_root / base_model] if base_model else self.write_root.glob("*")
        for folder in folders:
            for leftover in Path(folder).glob(".*.old") if Path(folder).is_dir() else ():
                name = leftover.name[1 : -len(".old")]
                try:
                    with self._locked(folder.name, name):
                        pass
                except (OSError, RegistryError):
                    continue  # a read-only registry, or a writer at work: it recovers itself

    def import_dir(self, source: str | Path, name: str | None = None, overwrite: bool = False) -> RegistryEntry:
        """Validate an expert directory and copy it in (optionally renamed)."""
        expert = ExpertVector.load(source)
        if name:
            expert.name = check_name(name)
        return self.add(expert, overwrite=overwrite)

    def export(self, name: str, base_model: str, destination: str | Path) -> Path:
        expert = self.load(name, base_model)
        destination = Path(destination)
        if destination.exists() and any(destination.iterdir()):
            raise RegistryError(f"{destination} exists and is not empty: choose an empty or new directory")
        expert.save(destination)
        return destination

    # ------------------------------------------------------------------ Hugging Face Hub (needs network)

    def push(
        self,
        repo_id: str,
        base_model: str,
        names: list[str] | None = None,
        token: str | None = None,
        private: bool = False,
        api=None,
    ) -> str:
        """Upload a set of experts (one base model) to a Hub model repo with a generated model card."""
        from huggingface_hub import HfApi

        entries = [e for e in self.list(base_model) if names is None or e.name in names]
        if names:
            missing = sorted(set(names) - {e.name for e in entries})
            if missing:
                raise RegistryError(f"no expert named {missing[0]!r} for base model {base_model!r}")
        if not entries:
            raise RegistryError(f"no experts for base model {base_model!r} to push")
        api = api or HfApi(token=token)
        with tempfile.TemporaryDirectory() as folder:
            for entry in entries:
                target = Path(folder) / base_model / entry.name
                target.mkdir(parents=True)
                for file in (META_FILE, TENSORS_FILE):
                    shutil.copy2(entry.path / file, target / file)
            (Path(folder) / "README.md").write_text(model_card(repo_id, base_model, entries))
            try:
                api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
                api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    repo_type="model",
                    commit_message=f"t2: {len(entries)} expert(s) for {base_model}",
                )
            except Exception as error:
                raise RegistryError(
                    f"pushing to the Hub repo {repo_id} failed ({type(error).__name__}: {error}); "
                    "pushing needs network access and a token with write access (HF_TOKEN or `hf auth login`)"
                ) from error
        return f"https://huggingface.co/{repo_id}"

    def pull(
        self, repo_id: str, token: str | None = None, overwrite: bool = False, download=None
    ) -> list[RegistryEntry]:
        """Download a Hub expert set, validate every expert, and register them in the user registry."""
        from huggingface_hub import snapshot_download

        download = download or snapshot_download
        with tempfile.TemporaryDirectory() as folder:
            try:
                download(repo_id=repo_id, local_dir=folder, token=token, allow_patterns=["*/*/expert.*", "README.md"])
            except Exception as error:
                raise RegistryError(
                    f"pulling the Hub repo {repo_id} failed ({type(error).__name__}); "
                    "pulling needs network access (and a token for private repos)"
                ) from error
            found = sorted(Path(folder).glob(f"*/*/{META_FILE}"))
            if not found:
                raise RegistryError(f"the Hub repo {repo_id} holds no t2 experts (<base>/<name>/{META_FILE})")
            experts = []
            for meta_path in found:
                try:
                    experts.append(ExpertVector.load(meta_path.parent))
                except ExpertError as error:
                    raise RegistryError(f"{repo_id}: {error}") from error
            return [self.add(expert, overwrite=overwrite) for expert in experts]


def _aside(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _recover(target: Path) -> None:
    """Under the expert's lock: roll an interrupted write forward or back.

    `.<name>.old` without `<name>`: killed between the two renames of an overwrite, so the old
    expert goes back. `.<name>.old` beside `<name>`: the new one is in place, so the old goes.
    Staging and removal directories of killed writers are deleted."""
    aside = _aside(target)
    if aside.exists():
        if target.exists():
            shutil.rmtree(aside)
        else:
            os.rename(aside, target)
    for stale in [*target.parent.glob(f".{target.name}.new-*"), *target.parent.glob(f".{target.name}.del-*")]:
        shutil.rmtree(stale, ignore_errors=True)


def model_card(repo_id: str, base_model: str, entries: list[RegistryEntry]) -> str:
    """A Hub README generated from the experts' metadata."""
    rows = []
    for entry in entries:
        provenance = entry.meta.get("provenance", {})
        metrics = provenance.get("metrics", {})
        metric_text = ", ".join(f"{k}={v}" for k, v in sorted(metrics.items())) or "-"
        rows.append(
            f"| {entry.name} | {entry.domain} | {provenance.get('task', '-')} | {provenance.get('objective', '-')} "
            f"| {entry.meta.get('num_parameters', '-')} | {metric_text} |"
        )
    table = "\n".join(rows)
    return f"""---
tags:
- t2
- transformer-squared
- svf
library_name: t2cli
---
# {repo_id}

Transformer² (SVF) expert vectors for the base model `{base_model}`, made with
[t2](https://pypi.org/project/t2cli/). Each expert is one scale per singular value of the targeted
weight matrices: `W' = U diag(σ ⊙ z) Vᵀ · Σσ / Σ(σ ⊙ z)`.

| expert | domain | task | objective | parameters | metrics |
|---|---|---|---|---|---|
{table}

Use: `t2 experts pull {repo_id}`, then `t2 experts list --model {base_model}`.
"""
