"""Load a base model: the embedded defaults (GGUF → cached safetensors), a local directory or a Hub id.

Embedded models (`t2cli.embedded`) are converted from their GGUF once and reloaded from the
converted directory under `T2_HOME/models/<name>/`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from t2cli.defaults import DEFAULT_MODEL as DEFAULT_MODEL  # re-exported
from t2cli.embedded import EMBEDDED_MODELS as EMBEDDED_MODELS  # re-exported
from t2cli.embedded import convert_gguf
from t2cli.embedded import t2_home as t2_home  # re-exported
from t2cli.errors import ModelNotFoundError
from t2cli.placement import resolve_device, resolve_dtype

# --------------------------------------------------------------------------- resolution


def model_key(name_or_path: str) -> str:
    """The registry key of a model: embedded name, directory name, or Hub id with '/' → '--'."""
    if name_or_path in EMBEDDED_MODELS:
        return name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve().name
    return name_or_path.replace("/", "--")


def _check_hub_id(name_or_path: str) -> None:
    """Raise unless the name can be a Hub id (owner/name)."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name_or_path) or name_or_path.startswith("."):
        raise ModelNotFoundError(
            f"model {name_or_path!r} not found: not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            "not a local directory, not a Hub id (owner/name)"
        )


def resolve_model_dir(name_or_path: str) -> Path:
    """A local HF directory for an embedded name, a local path or a Hub id (converting/downloading once)."""
    if name_or_path in EMBEDDED_MODELS:
        target = t2_home() / "models" / name_or_path
        if not (target / "config.json").is_file():
            convert_gguf(EMBEDDED_MODELS[name_or_path], target)
        return target
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but has no config.json: not a Hugging Face model")
        return path
    _check_hub_id(name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as error:  # offline, unknown repo, gated, ...
        raise ModelNotFoundError(
            f"could not get {name_or_path!r} from the Hugging Face Hub ({type(error).__name__}); "
            f"use an embedded model ({', '.join(EMBEDDED_MODELS)}) or a local directory, or check the network"
        ) from error


# --------------------------------------------------------------------------- weight files


class WeightFiles:
    """The safetensors shards of a model directory, read one tensor at a time.

    Each read opens the shard, copies the one tensor out and closes it, so the process never keeps
    more of the file mapped than that tensor (a long-lived mapping would count every page read so
    far in the resident set).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        if index.is_file():
            self.where = dict(json.loads(index.read_text())["weight_map"])
        elif (self.directory / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(self.directory / "model.safetensors"), framework="pt") as handle:
                self.where = {key: "model.safetensors" for key in handle.keys()}  # noqa: SIM118
        else:
            raise ModelNotFoundError(f"{self.directory} has no model.safetensors (or index): no weights to read")

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def tensor(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """One stored tensor, as stored (dtype and layout), on `device`."""
        from safetensors import safe_open

        if name not in self.where:
            raise ModelNotFoundError(f"{self.directory} stores no tensor named {name}")
        with safe_open(str(self.directory / self.where[name]), framework="pt", device=str(device)) as handle:
            return handle.get_tensor(name)

    def stamp(self) -> str:
        """Identifies these files' contents cheaply (paths, sizes, modification times)."""
        parts = []
        for shard in sorted(set(self.where.values())):
            stat = (self.directory / shard).stat()
            parts.append(f"{(self.directory / shard).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _hash_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().to("cpu", torch.float32).contiguous()
    digest.update(f"{name}:{tuple(tensor.shape)};".encode())
    digest.update(memoryview(tensor.numpy()).cast("B"))  # the bytes, without a copy


def file_fingerprint(directory: Path, skeleton: torch.nn.Module) -> str | None:
    """The same fingerprint as `weight_fingerprint` of the model loaded in float32, computed from the
    safetensors files one tensor at a time (so it does not depend on the dtype a model is loaded in,
    and needs one tensor's memory). Cached per file stamp under T2_HOME. None when the files do not
    name every parameter (a checkpoint that needs key conversion): then the loaded weights are hashed."""
    try:
        files = WeightFiles(directory)
    except ModelNotFoundError:
        return None
    names = [name for name, _ in skeleton.named_parameters()]
    if not all(name in files for name in names):
        return None
    cache = t2_home() / "fingerprints" / f"{files.stamp()}.json"
    if cache.is_file():
        return json.loads(cache.read_text())["fingerprint"]
    digest = hashlib.sha256()
    for name in names:
        _hash_tensor(digest, name, files.tensor(name))
    fingerprint = digest.hexdigest()[:32]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"directory": str(Path(directory).resolve()), "fingerprint": fingerprint}))
    return fingerprint


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A causal LM ready for t2: the model, its tokenizer, its registry key and weight fingerprint."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    fingerprint: str
    path: Path | None = None

    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the first parameter (the embeddings, also under a device map)."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of the first floating-point parameter."""
        return next(p.dtype for p in self.model.parameters() if p.is_floating_point())

    @property
    def device_map(self) -> dict | None:
        """accelerate's placement when the model was loaded with a device map, else None."""
        return getattr(self.model, "hf_device_map", None)


def weight_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and float32 bytes (shared tensors counted once).

    Identifies the base weights an SVD store or expert belongs to, independent of the file format.
    """
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():  # named_parameters() already skips tied duplicates
        _hash_tensor(digest, name, parameter)
    return digest.hexdigest()[:32]


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype = "auto",
    device: str | torch.device | None = "auto",
    device_map: str | dict | None = None,
) -> LoadedModel:
    """Load a base model (embedded name, local directory or Hub id) in eval mode.

    `dtype`: auto (bfloat16 on a GPU that supports it, float32 on a CPU), float32, bfloat16, float16.
    `device`: auto, cpu, cuda, cuda:N. `device_map` (e.g. "auto"): let accelerate place the layers
    over the visible GPUs and the CPU for models larger than one device; `device` is then ignored.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the library does not print; the CLI shows its own status
    torch_dtype = resolve_dtype(dtype, device)
    directory = resolve_model_dir(name_or_path)
    extra = {"device_map": device_map} if device_map is not None else {}
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(
            str(directory), dtype=torch_dtype, output_loading_info=True, **extra
        )
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"could not load a causal LM from {directory}: {error}") from error
    refuse_new_weights(directory, loading["missing_keys"])
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(model.config)
    fingerprint = file_fingerprint(directory, skeleton)
    return from_model(
        model,
        tokenizer,
        model_key(name_or_path),
        device=None if device_map is not None else resolve_device(device),
        path=directory,
        fingerprint=fingerprint,
        place=device_map is None,
    )


def refuse_new_weights(directory: Path, missing: Collection[str]) -> None:
    """A directory whose causal-LM head (or any weight) is not in its files is not a causal LM:
    loading it would answer with randomly initialised weights (e.g. a BERT encoder directory)."""
    if missing:
        names = sorted(missing)
        raise ModelNotFoundError(
            f"{directory} is not a causal language model: {len(names)} weights the causal-LM class needs are not "
            f"in its files ({', '.join(names[:3])}{', …' if len(names) > 3 else ''}); t2 adapts decoder LMs "
            "(Llama, Qwen, Gemma, GPT-2 …), not encoders such as BERT"
        )


def contiguous_head_input(model: torch.nn.Module) -> None:
    """On a CPU in bfloat16/float16, hand the output head a contiguous input.

    `generate` computes the logits of the last position only, a strided slice of the hidden states
    (batch, 1, hidden); PyTorch's half-precision CPU linear turns a strided 3-D input into a batched
    matmul that materialises the head's weight once per sequence: batch × vocab × hidden × 2 bytes
    allocated at every generated token.
    Copying the slice (batch × hidden) avoids it; the logits agree to rounding (another summation
    order). float32 (whose numbers must not move) and GPUs are left as they are.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if weight is None or weight.device.type != "cpu" or weight.dtype not in (torch.bfloat16, torch.float16):
        return
    head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


def from_model(
    model: torch.nn.Module,
    tokenizer: object,
    name: str,
    device: str | torch.device | None = None,
    path: Path | None = None,
    fingerprint: str | None = None,
    place: bool = True,
) -> LoadedModel:
    """Wrap an in-memory model (e.g. a tiny random test model) as a LoadedModel.

    `place=False` leaves the parameters where they are (a model placed by a device map).
    """
    if place:
        model.to(resolve_device(device))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    contiguous_head_input(model)
    if getattr(tokenizer, "pad_token", True) is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        fingerprint=fingerprint or weight_fingerprint(model),
        path=path,
    )


# --------------------------------------------------------------------------- config-only views


def load_config(name_or_path: str = DEFAULT_MODEL):
    """The model's config only, without loading or converting weights: for `t2 info` and planning.

    An embedded model not converted yet is read from its GGUF header; a Hub id fetches config.json only.
    """
    from transformers import AutoConfig

    if name_or_path in EMBEDDED_MODELS:
        converted = t2_home() / "models" / name_or_path
        if (converted / "config.json").is_file():
            return AutoConfig.from_pretrained(str(converted))
        cached = t2_home() / "configs" / name_or_path
        if not (cached / "config.json").is_file():  # read the GGUF header once (no tensors), keep the result
            gguf = EMBEDDED_MODELS[name_or_path].locate_gguf()
            config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            config.save_pretrained(str(cached))
        return AutoConfig.from_pretrained(str(cached))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return AutoConfig.from_pretrained(str(resolve_model_dir(name_or_path)))
    _check_hub_id(name_or_path)
    try:
        from huggingface_hub import hf_hub_download

        return AutoConfig.from_pretrained(str(Path(hf_hub_download(name_or_path, "config.json")).parent))
    except Exception as error:  # offline, unknown repo, gated, ...
        raise ModelNotFoundError(
            f"could not get {name_or_path!r}'s config from the Hugging Face Hub ({type(error).__name__}); "
            "pass a local directory with its config.json, or check the network"
        ) from error


def meta_model(name_or_path: str | object = DEFAULT_MODEL) -> torch.nn.Module:
    """The architecture on the meta device (no memory, no weights): enough to list target shapes.
    Accepts a model name/path or a config."""
    from transformers import AutoModelForCausalLM

    config = load_config(name_or_path) if isinstance(name_or_path, str) else name_or_path
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
