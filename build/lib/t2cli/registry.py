"""The expert registry: directories of experts indexed by base model and name, plus Hub push/pull.

Layout of every registry root: `<root>/<base-model>/<name>/{expert.safetensors, expert.json}`.
Roots are searched in order — the user registry (`$T2_REGISTRY`, else `T2_HOME/registry`) first,
then the `registry/` the project ships — and new experts are written to the user registry.
Shipped experts are read-only here; to replace one, register a new name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from t2cli.errors import ExpertError, RegistryError
from t2cli.expert import META_FILE, TENSORS_FILE, ExpertVector
from t2cli.models import t2_home

SHIPPED_REGISTRY = Path(__file__).resolve().parents[1] / "registry"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    meta: dict

    @property
    def domain(self) -> str:
        return self.meta.get("domain", "other")


class Registry:
    def __init__(self, roots: list[Path] | None = None, write_root: Path | None = None):
        self.write_root = Path(write_root) if write_root else user_registry()
        default_roots = [self.write_root, SHIPPED_REGISTRY]
        self.roots = [Path(root) for root in (roots if roots is not None else default_roots)]
        if self.write_root not in self.roots:
            self.roots.insert(0, self.write_root)

    # ------------------------------------------------------------------ reading

    def list(self, base_model: str | None = None) -> list[RegistryEntry]:
        """Experts in every root (first root wins on a name clash), sorted by base and name."""
        seen: dict[tuple[str, str], RegistryEntry] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for meta_path in sorted(root.glob(f"*/*/{META_FILE}")):
                base, name = meta_path.parent.parent.name, meta_path.parent.name
                if base_model is not None and base != base_model or (base, name) in seen:
                    continue
                try:
                    meta = json.loads(meta_path.read_text())
                except (OSError, json.JSONDecodeError):
                    meta = {"error": "unreadable expert.json"}
                shipped = root.resolve() == SHIPPED_REGISTRY.resolve() and root != self.write_root
                seen[(base, name)] = RegistryEntry(name, base, meta_path.parent, shipped, meta)
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
        return ExpertVector.load(self.find(name, base_model).path)

    # ------------------------------------------------------------------ writing

    def add(self, expert: ExpertVector, overwrite: bool = False) -> RegistryEntry:
        """Save an expert into the write root under its base model and name."""
        check_name(expert.name)
        target = self.write_root / expert.base_model / expert.name
        if (target / META_FILE).exists() and not overwrite:
            raise RegistryError(
                f"an expert named {expert.name!r} already exists for {expert.base_model} at {target}; "
                "choose another --name or pass --overwrite"
            )
        expert.save(target)
        return self.find(expert.name, expert.base_model)

    def remove(self, name: str, base_model: str) -> Path:
        entry = self.find(name, base_model)
        if entry.path.parent.parent.resolve() != self.write_root.resolve():
            raise RegistryError(
                f"{name!r} lives in the read-only registry {entry.path.parent.parent}; "
                "only experts in the user registry can be removed"
            )
        shutil.rmtree(entry.path)
        return entry.path

    def import_dir(self, source: str | Path, name: str | None = None, overwrite: bool = False) -> RegistryEntry:
        """Validate an expert directory and copy it in (optionally renamed)."""
        expert = ExpertVector.load(source)
        if name:
            expert.name = check_name(name)
        return self.add(expert, overwrite=overwrite)

    def export(self, name: str, base_model: str, destination: str | Path) -> Path:
        entry = self.find(name, base_model)
        destination = Path(destination)
        if destination.exists() and any(destination.iterdir()):
            raise RegistryError(f"{destination} exists and is not empty: choose an empty or new directory")
        ExpertVector.load(entry.path).save(destination)
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
