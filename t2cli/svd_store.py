"""Choose the matrices to adapt and store their thin SVD, W = U diag(σ) Vᵀ, once per base model.

The store lives under `T2_HOME/svd/<model>-<fingerprint>-<targets>-<dtype>/`: one safetensors file
per matrix (so decomposition needs one matrix in memory at a time and an interrupted run resumes
where it stopped) and a `manifest.json`, written last, that marks the store complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from t2cli.defaults import SVD_DTYPES
from t2cli.errors import SVDStoreError, TargetError
from t2cli.files import atomic_path, atomic_write_text
from t2cli.models import LoadedModel, t2_home

STORE_FORMAT = 1
TARGET_PRESETS = ("mlp", "attn", "all")
_MLP_PARTS = {"mlp", "feed_forward", "ffn", "fc", "dense_ffn", "block_sparse_moe"}
_ATTN_PARTS = {"attn", "self_attn", "attention", "self_attention", "cross_attn"}
_NEVER = re.compile(r"(embed|wte|wpe|lm_head|norm|ln_)", re.IGNORECASE)
DTYPES = {name: getattr(torch, name) for name in SVD_DTYPES}

ProgressCallback = Callable[[int, int, str], None]  # (done, total, module name)


# --------------------------------------------------------------------------- targets


def _is_matrix_module(module: nn.Module) -> bool:
    # nn.Linear, and GPT-2 style Conv1D (a Linear with a transposed weight).
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def candidate_modules(model: nn.Module) -> list[str]:
    """Every 2-D projection that may be adapted: not embeddings, not the LM head, not norms."""
    excluded = {id(model.get_input_embeddings())}
    if model.get_output_embeddings() is not None:
        excluded.add(id(model.get_output_embeddings()))
    return [
        name
        for name, module in model.named_modules()
        if _is_matrix_module(module) and id(module) not in excluded and not _NEVER.search(name)
    ]


def _group(name: str) -> str | None:
    parts = set(name.split(".")[:-1])
    if parts & _ATTN_PARTS:
        return "attn"
    if parts & _MLP_PARTS:
        return "mlp"
    return None


def select_targets(model: nn.Module, targets: Sequence[str] = ("mlp",)) -> list[str]:
    """Module names selected by presets (`mlp`, `attn`, `all`) and/or regex patterns, in model order."""
    if not targets:
        raise TargetError("no targets given: use mlp, attn, all or a regex over module names")
    candidates = candidate_modules(model)
    all_names = [name for name, _ in model.named_modules()]
    chosen: set[str] = set()
    for spec in targets:
        if spec in TARGET_PRESETS:
            groups = {"mlp", "attn"} if spec == "all" else {spec}
            matched = {name for name in candidates if _group(name) in groups}
        else:
            try:
                pattern = re.compile(spec)
            except re.error as error:
                raise TargetError(f"target pattern {spec!r} is not a valid regex: {error}") from error
            forbidden = [n for n in all_names if pattern.search(n) and _NEVER.search(n)]
            matched = {name for name in candidates if pattern.search(name)}
            if forbidden and not matched:
                raise TargetError(
                    f"target pattern {spec!r} only matches embeddings, norms or the LM head "
                    f"(e.g. {forbidden[0]}), which t2 never adapts"
                )
        if not matched:
            raise TargetError(
                f"target {spec!r} matches no adaptable matrix; examples of valid names: {', '.join(candidates[:3])}"
            )
        chosen |= matched
    return [name for name in candidates if name in chosen]


def targets_key(targets: Sequence[str]) -> str:
    """A short, filesystem-safe key for a target specification."""
    if all(spec in TARGET_PRESETS for spec in targets):
        return "+".join(sorted(set(targets)))
    return "p" + hashlib.sha256("\n".join(sorted(targets)).encode()).hexdigest()[:10]


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The module's weight as (out, in): Conv1D stores it transposed."""
    weight = module.weight
    return weight.T if type(module).__name__ == "Conv1D" else weight


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class SVDFactors:
    """Thin SVD of one (out × in) matrix: U (m×r), S (r), Vh (r×n)."""

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor

    @property
    def rank(self) -> int:
        return self.S.shape[0]


@dataclass(frozen=True)
class SVDStore:
    path: Path
    manifest: dict

    @property
    def modules(self) -> list[str]:
        return list(self.manifest["modules"])

    @property
    def ranks(self) -> dict[str, int]:
        return {name: info["rank"] for name, info in self.manifest["modules"].items()}

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def targets(self) -> list[str]:
        return self.manifest["targets"]

    @property
    def num_parameters(self) -> int:
        """SVF trainable parameters: one scale per singular value."""
        return sum(self.ranks.values())

    def factors(self, name: str, device: torch.device | str = "cpu") -> SVDFactors:
        info = self.manifest["modules"].get(name)
        if info is None:
            raise SVDStoreError(f"{name} is not in the SVD store at {self.path}")
        try:
            tensors = load_file(str(self.path / info["file"]), device=str(device))
        except (OSError, SafetensorError) as error:
            raise SVDStoreError(
                f"SVD file {info['file']} in {self.path} is unreadable ({error}); rebuild with `t2 decompose --force`"
            ) from error
        return SVDFactors(tensors["U"], tensors["S"], tensors["Vh"])

    def load_all(self, device: torch.device | str = "cpu") -> dict[str, SVDFactors]:
        return {name: self.factors(name, device) for name in self.modules}


def store_path(loaded: LoadedModel, targets: Sequence[str], dtype: str = "float32") -> Path:
    return t2_home() / "svd" / f"{loaded.name}-{loaded.fingerprint[:12]}-{targets_key(targets)}-{dtype}"


def open_store(loaded: LoadedModel, targets: Sequence[str] = ("mlp",), dtype: str = "float32") -> SVDStore:
    """The complete store for this model and targets, or a clear error saying how to build it."""
    path = store_path(loaded, targets, dtype)
    manifest_file = path / "manifest.json"
    if not manifest_file.is_file():
        raise SVDStoreError(
            f"no SVD store for {loaded.name} with targets {' '.join(targets)} ({dtype}); "
            f"run `t2 decompose {loaded.name} --targets {' '.join(targets)}`"
        )
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("format") != STORE_FORMAT or manifest.get("fingerprint") != loaded.fingerprint:
        raise SVDStoreError(f"SVD store at {path} does not match this model; rebuild with `t2 decompose --force`")
    return SVDStore(path, manifest)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


def decompose(
    loaded: LoadedModel,
    targets: Sequence[str] = ("mlp",),
    dtype: str = "float32",
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> SVDStore:
    """Thin SVD of every targeted matrix, one at a time; reuses a complete store unless `force`."""
    if dtype not in DTYPES:
        raise SVDStoreError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    path = store_path(loaded, targets, dtype)
    if not force and (path / "manifest.json").is_file():
        return open_store(loaded, targets, dtype)
    names = select_targets(loaded.model, targets)
    (path / "matrices").mkdir(parents=True, exist_ok=True)
    if force and (path / "manifest.json").exists():
        (path / "manifest.json").unlink()
    modules = dict(loaded.model.named_modules())
    entries: dict[str, dict] = {}
    started = time.time()
    for index, name in enumerate(names):
        file = Path("matrices") / f"{name}.safetensors"
        weight = weight_matrix(modules[name]).detach()
        m, n = weight.shape
        if force or not (path / file).is_file():  # a partial earlier run left finished matrices behind
            U, S, Vh = torch.linalg.svd(weight.to(DTYPES[dtype]), full_matrices=False)
            _atomic_save({"U": U.cpu(), "S": S.cpu(), "Vh": Vh.cpu()}, path / file)
        entries[name] = {"file": str(file), "shape": [m, n], "rank": min(m, n)}
        if progress:
            progress(index + 1, len(names), name)
    manifest = {
        "format": STORE_FORMAT,
        "model": loaded.name,
        "fingerprint": loaded.fingerprint,
        "targets": list(targets),
        "dtype": dtype,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 2),
        "modules": entries,
    }
    # Not sort_keys: the modules stay in model order for every reader.
    atomic_write_text(path / "manifest.json", json.dumps(manifest, indent=2))
    return SVDStore(path, manifest)
