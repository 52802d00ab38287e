"""Choose the matrices to adapt and store their thin SVD, W = U diag(σ) Vᵀ, once per base model.

The store lives under `T2_HOME/svd/<model>-<fingerprint>-<targets>-<dtype>/`: one safetensors file
per matrix (so decomposition needs one matrix in memory at a time and an interrupted run resumes
where it stopped) and a `manifest.json`, written last, that marks the store complete.

Commands open a store with `open_or_decompose`: a model's first use builds it, with progress.

Decomposition streams: the targets are chosen on the model's skeleton (meta device, no weights),
then each targeted matrix is read alone from the safetensors shards, decomposed (on the GPU when
there is one) in float32 or float64 whatever the model's dtype, written in the store dtype, and
freed. U and Vᵀ take the store dtype; σ stays in float32 (float64 for a float64 store).
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

from t2cli.errors import SVDStoreError, TargetError
from t2cli.files import atomic_path, atomic_write_text
from t2cli.models import LoadedModel, WeightFiles, file_fingerprint, meta_model, model_key, t2_home
from t2cli.placement import (
    STORE_DTYPES,
    SVD_DTYPES,
    dtype_name,
    resolve_device,
    resolve_dtype,
    torch_dtype,
    unknown_dtype,
)
from t2cli.provenance import timestamp

STORE_FORMAT = 1
TARGET_PRESETS = ("mlp", "attn", "all")
_MLP_PARTS = {"mlp", "feed_forward", "ffn", "fc", "dense_ffn", "block_sparse_moe"}
_ATTN_PARTS = {"attn", "self_attn", "attention", "self_attention", "cross_attn"}
_NEVER = re.compile(r"(embed|wte|wpe|lm_head|norm|ln_)", re.IGNORECASE)

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

    @property
    def dtype(self) -> str:
        """The dtype of U and Vᵀ."""
        return self.manifest["dtype"]

    def factors(self, name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> SVDFactors:
        """One matrix's factors on `device`; U and Vᵀ cast to `dtype` when given (σ keeps its dtype)."""
        info = self.manifest["modules"].get(name)
        if info is None:
            raise SVDStoreError(f"{name} is not in the SVD store at {self.path}")
        try:
            tensors = load_file(str(self.path / info["file"]), device=str(device))
        except (OSError, SafetensorError) as error:
            raise SVDStoreError(
                f"SVD file {info['file']} in {self.path} is unreadable ({error}); rebuild with `t2 decompose --force`"
            ) from error
        U, Vh = tensors["U"], tensors["Vh"]
        if dtype is not None:
            U, Vh = U.to(dtype), Vh.to(dtype)
        return SVDFactors(U, tensors["S"], Vh)

    def load_all(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> dict[str, SVDFactors]:
        return {name: self.factors(name, device, dtype) for name in self.modules}


def store_key(store_dtype: str = "float32", svd_dtype: str = "float32") -> str:
    """The dtype part of a store's directory name: the store dtype, and the SVD precision when it is
    neither float32 nor the store dtype (so float32 stores keep their historical names)."""
    return store_dtype if svd_dtype in ("float32", store_dtype) else f"{store_dtype}-svd-{svd_dtype}"


def _store_dir(name: str, fingerprint: str, targets: Sequence[str], key: str) -> Path:
    return t2_home() / "svd" / f"{name}-{fingerprint[:12]}-{targets_key(targets)}-{key}"


def store_path(
    loaded: LoadedModel | MatrixSource, targets: Sequence[str], dtype: str = "float32", svd_dtype: str = "float32"
) -> Path:
    """Where the store of these targets in this store dtype lives (complete or not)."""
    return _store_dir(loaded.name, loaded.fingerprint, targets, store_key(dtype, svd_dtype))


def find_store(loaded: LoadedModel, targets: Sequence[str] = ("mlp",), dtype: str | None = None) -> SVDStore | None:
    """The complete store for this model and targets, or None when there is none yet.

    `dtype` None: the store in the model's compute dtype if there is one, else any complete store
    of the same targets (float32, bfloat16, float16, float64; the adapter casts the factors)."""
    preferred = [dtype] if dtype else [dtype_name(loaded.dtype), *STORE_DTYPES]
    for key in dict.fromkeys(preferred):
        path = store_path(loaded, targets, key)
        if (path / "manifest.json").is_file():
            break
    else:
        return None
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != STORE_FORMAT or manifest.get("fingerprint") != loaded.fingerprint:
        raise SVDStoreError(f"SVD store at {path} does not match this model; rebuild with `t2 decompose --force`")
    return SVDStore(path, manifest)


def open_store(loaded: LoadedModel, targets: Sequence[str] = ("mlp",), dtype: str | None = None) -> SVDStore:
    """The complete store for this model and targets (see `find_store`), or a clear error saying
    how to build it."""
    store = find_store(loaded, targets, dtype)
    if store is None:
        raise SVDStoreError(
            f"no SVD store for {loaded.name} with targets {' '.join(targets)}"
            f"{f' ({dtype})' if dtype else ''}; run `t2 decompose {loaded.name} --targets {' '.join(targets)}`"
        )
    return store


def open_or_decompose(
    loaded: LoadedModel,
    targets: Sequence[str] = ("mlp",),
    *,
    dtype: str | None = None,
    progress: ProgressCallback | None = None,
) -> SVDStore:
    """The store for this model and targets, decomposed first when there is none (the first use
    of a model): `progress(done, total, name)` after each matrix, and only then.

    `dtype` None: any complete store (as `find_store` prefers them), else a new one in the model's
    compute dtype; a named `dtype` opens or builds the store of U and Vᵀ in that dtype."""
    store = find_store(loaded, targets, dtype)
    return store if store is not None else decompose(loaded, targets, store_dtype=dtype, progress=progress)


def empty_store(loaded: LoadedModel) -> SVDStore:
    """A store of no matrices (nothing is read or written): what serving the base model alone needs."""
    manifest = {
        "format": STORE_FORMAT,
        "model": loaded.name,
        "fingerprint": loaded.fingerprint,
        "targets": [],
        "dtype": dtype_name(loaded.dtype),
        "modules": {},
    }
    return SVDStore(Path(), manifest)


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))


# --------------------------------------------------------------------------- where matrices come from


@dataclass(frozen=True)
class MatrixSource:
    """What decomposition needs from a model: its key, fingerprint, skeleton (to choose targets),
    compute dtype (the default store dtype) and a reader of one targeted (out × in) matrix."""

    name: str
    fingerprint: str
    skeleton: nn.Module
    dtype: torch.dtype
    read: Callable[[str], torch.Tensor]


def loaded_source(loaded: LoadedModel) -> MatrixSource:
    """Matrices from a model already in memory (tests, or a model loaded for something else)."""
    modules = dict(loaded.model.named_modules())
    return MatrixSource(
        loaded.name, loaded.fingerprint, loaded.model, loaded.dtype, lambda name: weight_matrix(modules[name]).detach()
    )


def file_source(
    name_or_path: str, dtype: str | torch.dtype = "auto", device: str | torch.device = "auto"
) -> MatrixSource:
    """Matrices read one at a time from the safetensors files of a model directory (an embedded
    model's converted cache, a local directory or a downloaded Hub snapshot); no weights are loaded.

    `dtype`/`device` only decide the compute dtype (default store dtype), as `load_model` would."""
    from t2cli.models import resolve_model_dir

    directory = resolve_model_dir(name_or_path)
    skeleton = meta_model(str(directory))
    files = WeightFiles(directory)
    fingerprint = file_fingerprint(directory, skeleton)
    if fingerprint is None:
        raise SVDStoreError(
            f"the weight files in {directory} do not name every parameter of the model "
            "(a checkpoint that needs key conversion): decompose it from a loaded model instead"
        )
    modules = dict(skeleton.named_modules())

    def read(name: str) -> torch.Tensor:
        tensor = files.tensor(f"{name}.weight")
        return tensor.T if type(modules[name]).__name__ == "Conv1D" else tensor

    return MatrixSource(model_key(name_or_path), fingerprint, skeleton, resolve_dtype(dtype, device), read)


# --------------------------------------------------------------------------- decomposition


def decompose(
    model: LoadedModel | MatrixSource,
    targets: Sequence[str] = ("mlp",),
    *,
    svd_dtype: str = "float32",
    store_dtype: str | None = None,
    device: str | torch.device | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> SVDStore:
    """Thin SVD of every targeted matrix, one at a time; reuses a complete store unless `force`.

    `model`: a LoadedModel, or a MatrixSource (`file_source`) that reads the matrices from disk.
    `svd_dtype`: float32 or float64, whatever the model's dtype. `store_dtype`: of U and Vᵀ, default
    the model's compute dtype. `device`: where the SVDs run (default: the GPU when there is one).
    Peak memory: one matrix, its float copy and its factors (plus the process itself).
    """
    if svd_dtype not in SVD_DTYPES:
        raise SVDStoreError(unknown_dtype("--svd-dtype", svd_dtype, SVD_DTYPES))
    source = model if isinstance(model, MatrixSource) else loaded_source(model)
    store_dtype = store_dtype or dtype_name(source.dtype)
    if store_dtype not in STORE_DTYPES:
        raise SVDStoreError(unknown_dtype("--store-dtype", store_dtype, STORE_DTYPES))
    path = store_path(source, targets, store_dtype, svd_dtype)
    if not force and (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("format") == STORE_FORMAT and manifest.get("fingerprint") == source.fingerprint:
            return SVDStore(path, manifest)
    names = select_targets(source.skeleton, targets)
    (path / "matrices").mkdir(parents=True, exist_ok=True)
    if force and (path / "manifest.json").exists():
        (path / "manifest.json").unlink()
    where = resolve_device(device)
    factor_dtype = torch_dtype(store_dtype)
    singular_dtype = torch.float64 if store_dtype == "float64" else torch.float32
    shapes = {}
    for name in names:  # shapes from the skeleton: nothing is read for matrices already done
        module = source.skeleton.get_submodule(name)
        shapes[name] = tuple(weight_matrix(module).shape)
    entries: dict[str, dict] = {}
    started = time.time()
    for index, name in enumerate(names):
        file = Path("matrices") / f"{name}.safetensors"
        m, n = shapes[name]
        if force or not (path / file).is_file():  # a partial earlier run left finished matrices behind
            weight = source.read(name).to(where, torch_dtype(svd_dtype))
            U, S, Vh = torch.linalg.svd(weight, full_matrices=False)
            del weight
            _atomic_save(
                {"U": U.to("cpu", factor_dtype), "S": S.to("cpu", singular_dtype), "Vh": Vh.to("cpu", factor_dtype)},
                path / file,
            )
            del U, S, Vh
        entries[name] = {"file": str(file), "shape": [m, n], "rank": min(m, n)}
        if progress:
            progress(index + 1, len(names), name)
    manifest = {
        "format": STORE_FORMAT,
        "model": source.name,
        "fingerprint": source.fingerprint,
        "targets": list(targets),
        "dtype": store_dtype,
        "svd_dtype": svd_dtype,
        "created": timestamp(),
        "seconds": round(time.time() - started, 2),
        "modules": entries,
    }
    # Not sort_keys: the modules stay in model order for every reader.
    atomic_write_text(path / "manifest.json", json.dumps(manifest, indent=2))
    return SVDStore(path, manifest)
