"""Batched generation: chat prompts, left padding, stop strings, progress callbacks; streaming.

Used by evaluation, RL rollouts and chat. Prompts are sorted by length before batching (less
padding, fewer wasted FLOPs) and results are returned in the caller's order; `on_batch` hands over
each batch's completions as soon as it is done (so a caller can keep them if interrupted).
`stream` answers one prompt and passes its text on piece by piece while it is generated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from transformers import TextStreamer

from t2cli.models import LoadedModel

# (prompts done, prompts total, new tokens so far)
GenerationProgress = Callable[[int, int, int], None]
# (indices into the caller's prompts, their completions), once per finished batch
BatchDone = Callable[[list[int], list["Completion"]], None]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 256
    batch_size: int = 16
    do_sample: bool = False  # greedy by default, as in the paper
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be ≥ 1")
        if self.do_sample and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling")


@dataclass(frozen=True)
class Completion:
    text: str  # decoded, cut at the first stop string
    completion_ids: list[int]  # generated token ids (up to and including the stop/eos)
    prompt_ids: list[int]
    num_new_tokens: int
    cut_off: bool = False  # the token budget ended it: no eos and no stop string


def chat_prompt(tokenizer, messages: Sequence[dict[str, str]]) -> str:
    """The model's chat template with the assistant turn opened; plain text if it has no template."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(message["content"] for message in messages) + "\n\n"


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text up to the earliest stop string (exclusive)."""
    cut = len(text)
    for marker in stop:
        index = text.find(marker)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def decode_answer(tokenizer, ids: Sequence[int], budget: int, stop: Sequence[str]) -> tuple[str, bool]:
    """The answer's text, cut at the first stop string, and whether the token budget ended it
    (all `budget` tokens used, no end-of-turn token last, no stop string reached)."""
    full = tokenizer.decode(ids, skip_special_tokens=True)
    text = cut_at_stop(full, stop)
    return text, len(ids) >= budget and (not ids or ids[-1] != tokenizer.eos_token_id) and text == full


@torch.no_grad()
def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    config: GenerationConfig | None = None,
    progress: GenerationProgress | None = None,
    on_batch: BatchDone | None = None,
    streamer: TextStreamer | None = None,
) -> list[Completion]:
    """Generate one completion per (already templated) prompt."""
    config = config or GenerationConfig()
    tokenizer, model = loaded.tokenizer, loaded.model
    tokenizer.padding_side = "left"
    if config.seed is not None:
        torch.manual_seed(config.seed)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    results: list[Completion | None] = [None] * len(prompts)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    done, new_tokens = 0, 0
    for start in range(0, len(order), config.batch_size):
        indices = order[start : start + config.batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt").to(loaded.device)
        kwargs = dict(
            max_new_tokens=config.max_new_tokens,
            do_sample=config.do_sample,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        if config.do_sample:
            kwargs |= dict(temperature=config.temperature, top_p=config.top_p)
        else:  # silence the "generation flags are not valid" warnings of models with sampling defaults
            kwargs |= dict(temperature=None, top_p=None, top_k=None)
        if config.stop:
            kwargs |= dict(stop_strings=list(config.stop), tokenizer=tokenizer)
        if streamer is not None:
            kwargs |= dict(streamer=streamer)
        output = model.generate(**batch, **kwargs)
        width = batch["input_ids"].shape[1]
        for row, index in enumerate(indices):
            ids = output[row, width:].tolist()
            ids = _trim(ids, eos, pad)
            text, cut_off = decode_answer(tokenizer, ids, config.max_new_tokens, config.stop)
            results[index] = Completion(text, ids, encoded[index], len(ids), cut_off)
            new_tokens += len(ids)
        done += len(indices)
        if on_batch:
            on_batch(list(indices), [results[i] for i in indices])  # type: ignore[misc]
        if progress:
            progress(done, len(prompts), new_tokens)
    return results  # type: ignore[return-value]


class _TextCallback(TextStreamer):
    """transformers' TextStreamer, handing each finished piece of text to a callback instead of print."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


def stream(
    loaded: LoadedModel, prompt: str, on_text: Callable[[str], None], config: GenerationConfig | None = None
) -> Completion:
    """One completion of one (templated) prompt, its text passed to `on_text` in pieces as they are
    generated (whole words, as the tokenizer completes them). The pieces are the raw text; the
    returned Completion, the same as `generate` gives, is cut at the stop strings. An exception in
    `on_text` or a KeyboardInterrupt stops the generation there."""
    config = replace(config or GenerationConfig(), batch_size=1)
    return generate(loaded, [prompt], config, streamer=_TextCallback(loaded.tokenizer, on_text))[0]


def _trim(ids: list[int], eos: int | None, pad: int | None) -> list[int]:
    """Drop everything after the first eos (kept) and trailing padding."""
    if eos is not None and eos in ids:
        return ids[: ids.index(eos) + 1]
    while ids and ids[-1] == pad:
        ids.pop()
    return ids
