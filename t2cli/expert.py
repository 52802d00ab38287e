"""Expert vectors: one scale z per singular value of every targeted matrix, plus metadata.

On disk an expert is a directory with two files, like a PEFT adapter:

    expert.safetensors   z vectors only, keyed by module name (float32, 1-D)
    expert.json          sorted-key metadata: format version, base model + fingerprint, targets,
                         parameterisation, domain, provenance (the recipe that made it:
                         `t2cli.provenance`), and the SHA-256 of expert.safetensors

Both files are written atomically, json last; the hash ties the two together so a truncated,
corrupt or swapped tensor file is caught at load time instead of silently applied.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from t2cli.defaults import DOMAINS as DOMAINS  # the domain labels, re-exported
from t2cli.errors import ExpertError, MixError
from t2cli.files import atomic_write_bytes, atomic_write_text
from t2cli.provenance import RECIPE_FIELDS, mixture_recipe

FORMAT_VERSION = 1
TENSORS_FILE = "expert.safetensors"
META_FILE = "expert.json"


@dataclass
class ExpertVector:
    """z per targeted matrix (after the sigmoid: the actual scales) and its metadata."""

    z: dict[str, torch.Tensor]
    name: str
    base_model: str
    base_fingerprint: str
    targets: list[str]
    domain: str = "other"
    parameterisation: dict = field(default_factory=lambda: {"kind": "sigmoid", "max_multiplier": 1.0})
    provenance: dict = field(default_factory=dict)
    tensors_sha256: str | None = field(default=None, compare=False)  # of the file it was loaded from

    # ------------------------------------------------------------------ constructors

    @classmethod
    def uniform(
        cls, ranks: Mapping[str, int], name: str, base_model: str, base_fingerprint: str, targets: Sequence[str]
    ) -> ExpertVector:
        """z = 1 everywhere: W' = W (the base model)."""
        z = {module: torch.ones(rank) for module, rank in ranks.items()}
        return cls(z, name, base_model, base_fingerprint, list(targets), provenance={"objective": "uniform"})

    @property
    def num_parameters(self) -> int:
        return sum(v.numel() for v in self.z.values())

    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "base_model": self.base_model,
            "base_fingerprint": self.base_fingerprint,
            "targets": self.targets,
            "domain": self.domain,
            "parameterisation": self.parameterisation,
            "num_parameters": self.num_parameters,
            "provenance": self.provenance,
        }

    # ------------------------------------------------------------------ validation

    def validate_for(self, ranks: Mapping[str, int], base_model: str, base_fingerprint: str) -> None:
        """Raise ExpertError naming the first mismatch between this expert and a model's SVD store."""
        if self.base_fingerprint != base_fingerprint:
            raise ExpertError(
                f"expert {self.name!r} was made for base model {self.base_model!r} "
                f"(fingerprint {self.base_fingerprint[:12]}), not {base_model!r} ({base_fingerprint[:12]})"
            )
        missing = sorted(set(ranks) - set(self.z))
        extra = sorted(set(self.z) - set(ranks))
        if missing:
            raise ExpertError(f"expert {self.name!r} lacks {len(missing)} targeted matrices, e.g. {missing[0]}")
        if extra:
            raise ExpertError(
                f"expert {self.name!r} has {len(extra)} matrices the SVD store does not target, e.g. {extra[0]}; "
                f"decompose with the expert's targets ({' '.join(self.targets)})"
            )
        for module, rank in ranks.items():
            if tuple(self.z[module].shape) != (rank,):
                raise ExpertError(
                    f"expert {self.name!r}: {module} has shape {tuple(self.z[module].shape)}, expected ({rank},)"
                )
        _check_finite(self.z, self.name)

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> Path:
        """Write expert.safetensors then expert.json (with the tensors' hash), each atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _check_finite(self.z, self.name)
        payload = save_safetensors_bytes(
            {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sorted(self.z.items())}
        )
        atomic_write_bytes(directory / TENSORS_FILE, payload)
        meta = self.metadata() | {"tensors_sha256": hashlib.sha256(payload).hexdigest()}
        atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ExpertVector:
        """Read and check an expert directory from its files alone (no model needed, milliseconds):
        every problem is one ExpertError naming its cause. Call it before loading a model."""
        directory = Path(directory)
        tensors_path = directory / TENSORS_FILE
        meta = read_metadata(directory)
        if not tensors_path.is_file():
            raise ExpertError(f"{tensors_path} is missing: an expert directory holds {META_FILE} and {TENSORS_FILE}")
        payload = tensors_path.read_bytes()
        if hashlib.sha256(payload).hexdigest() != meta["tensors_sha256"]:
            raise ExpertError(f"{tensors_path} does not match the hash in {META_FILE} (truncated, corrupt or replaced)")
        try:
            z = load_safetensors_bytes(payload)
        except (SafetensorError, ValueError, RuntimeError) as error:
            raise ExpertError(f"{tensors_path} is not a readable safetensors file: {error}") from error
        for module, tensor in sorted(z.items()):
            if tensor.ndim != 1:
                raise ExpertError(f"{tensors_path}: {module} must be a 1-D vector, has shape {tuple(tensor.shape)}")
            if not tensor.is_floating_point():
                raise ExpertError(f"{tensors_path}: {module} holds {tensor.dtype} values; z vectors are floats")
        if not z:
            raise ExpertError(f"{tensors_path} holds no z vectors")
        expert = cls(
            z={k: v.to(torch.float32) for k, v in z.items()},
            name=meta["name"],
            base_model=meta["base_model"],
            base_fingerprint=meta["base_fingerprint"],
            targets=list(meta["targets"]),
            domain=meta.get("domain", "other"),
            parameterisation=meta.get("parameterisation", {}),
            provenance=meta.get("provenance", {}),
            tensors_sha256=meta["tensors_sha256"],
        )
        _check_finite(expert.z, expert.name)
        return expert


# --------------------------------------------------------------------------- metadata

_REQUIRED = {"name": str, "base_model": str, "base_fingerprint": str, "targets": list, "tensors_sha256": str}
_OPTIONAL = {"domain": str, "parameterisation": dict, "provenance": dict, "num_parameters": int}


def read_metadata(directory: str | Path) -> dict:
    """expert.json, checked field by field (types included); raises one ExpertError naming the field."""
    meta_path = Path(directory) / META_FILE
    if not meta_path.is_file():
        raise ExpertError(f"{meta_path} is missing: an expert directory holds {META_FILE} and {TENSORS_FILE}")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExpertError(f"{meta_path} is not valid JSON (truncated, corrupt or not UTF-8): {error}") from error
    except OSError as error:
        raise ExpertError(f"{meta_path} cannot be read: {error.strerror or error}") from error
    if not isinstance(meta, dict):
        raise ExpertError(f"{meta_path} must hold a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ExpertError(
            f"{meta_path} has format version {version!r}; this t2 reads version {FORMAT_VERSION} "
            "(upgrade t2 or re-export the expert)"
        )
    absent = [key for key in _REQUIRED if key not in meta]
    if absent:
        raise ExpertError(f"{meta_path} lacks required field(s): {', '.join(absent)}")
    for fields, where in ((_REQUIRED | _OPTIONAL, meta), (RECIPE_FIELDS, meta.get("provenance", {}))):
        for key, kind in fields.items():
            value = where.get(key)
            if key in where and (not isinstance(value, kind) or isinstance(value, bool)):
                label = key if where is meta else f"provenance.{key}"
                raise ExpertError(
                    f"{meta_path}: field {label!r} must be a JSON {_JSON_NAMES[kind]}, not {type(value).__name__}"
                )
    if not meta["targets"] or not all(isinstance(target, str) for target in meta["targets"]):
        raise ExpertError(f"{meta_path}: field 'targets' must be a non-empty list of strings")
    return meta


_JSON_NAMES = {str: "string", list: "list", dict: "object", int: "integer"}


def _check_finite(z: Mapping[str, torch.Tensor], name: str) -> None:
    """Finite values and a positive sum per matrix: the composed weights divide by Σ(σ ⊙ z)."""
    for module, tensor in sorted(z.items()):
        if not tensor.is_floating_point():
            raise ExpertError(f"expert {name!r}: {module} holds {tensor.dtype} values; z vectors are floats")
        if not torch.isfinite(tensor).all():
            raise ExpertError(f"expert {name!r}: {module} contains NaN or inf values")
        if not tensor.sum() > 0:
            raise ExpertError(
                f"expert {name!r}: {module} sums to {float(tensor.sum()):g}; a z vector needs a positive sum "
                "(an all-zero z would make every composed weight NaN)"
            )


# --------------------------------------------------------------------------- mixing


def mix(
    experts: Sequence[ExpertVector],
    weights: Sequence[float],
    name: str,
    per_layer: Mapping[str, Mapping[str, float]] | None = None,
    normalize: bool = False,
    domain: str = "other",
) -> ExpertVector:
    """z' = Σₖ αₖ zₖ over the z values (after the sigmoid), as the paper defines composition.

    `weights` are global αₖ; `per_layer[expert_name][module]` overrides αₖ for one matrix.
    With `normalize`, the α of each matrix are divided by their sum.
    """
    if not experts:
        raise MixError("nothing to mix: give at least one expert, e.g. `t2 mix math:0.6 code:0.4`")
    if len(weights) != len(experts):
        raise MixError(f"{len(experts)} experts but {len(weights)} weights")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
        raise MixError(f"mixing weights must be finite and ≥ 0, got {bad[0]}")
    first = experts[0]
    names = [expert.name for expert in experts]
    if len(set(names)) != len(names):
        raise MixError(f"an expert appears twice in the mix: {names}")
    for expert in experts[1:]:
        if expert.base_fingerprint != first.base_fingerprint:
            raise MixError(
                f"cannot mix {first.name!r} (base {first.base_model}) with {expert.name!r} "
                f"(base {expert.base_model}): experts must share one base model"
            )
        if set(expert.z) != set(first.z) or any(expert.z[k].shape != first.z[k].shape for k in first.z):
            raise MixError(f"cannot mix {first.name!r} with {expert.name!r}: they target different matrices")
    per_layer = per_layer or {}
    unknown = sorted(set(per_layer) - set(names))
    if unknown:
        raise MixError(f"per-layer weights name expert(s) not in the mix: {', '.join(unknown)}")
    alphas: dict[str, list[float]] = {}
    for module in first.z:
        row = []
        for expert, weight in zip(experts, weights):
            value = per_layer.get(expert.name, {}).get(module, weight)
            if not math.isfinite(value) or value < 0:
                raise MixError(f"per-layer weight for {expert.name}/{module} must be finite and ≥ 0, got {value}")
            row.append(float(value))
        total = sum(row)
        if total == 0:
            raise MixError(f"all mixing weights are zero (for {module}): give at least one positive weight")
        alphas[module] = [value / total for value in row] if normalize else row
    for expert_name, modules in per_layer.items():
        stray = sorted(set(modules) - set(first.z))
        if stray:
            raise MixError(f"per-layer weights for {expert_name} name unknown matrix {stray[0]}")
    z = {module: sum(alpha * expert.z[module] for alpha, expert in zip(alphas[module], experts)) for module in first.z}
    return ExpertVector(
        z=z,
        name=name,
        base_model=first.base_model,
        base_fingerprint=first.base_fingerprint,
        targets=first.targets,
        domain=domain,
        parameterisation={"kind": "mixture"},
        provenance=mixture_recipe(names, weights, normalize, per_layer),
    )
