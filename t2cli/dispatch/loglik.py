"""The log-likelihood pass 1: no decoding, one prefill of the dispatch prompt, then every label
(and "other") scored by the log-likelihood of its first token (of all its tokens when two labels
start alike); the argmax wins. Also the batched label scorer it is built on."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import torch

from t2cli.dispatch.base import Decision, DispatchContext, ModelDispatcher, PrefillOptions, check_request_tokens
from t2cli.generation import chat_prompt
from t2cli.models import LoadedModel
from t2cli.tasks.cls import OTHER, dispatch_messages


@dataclass(frozen=True)
class LoglikOptions(PrefillOptions):
    """The options of the loglik and loglik-cls strategies."""

    calibrate: bool = field(default=True, metadata={"help": "subtract the scores of a content-free request"})
    include_other: bool = field(default=True, metadata={"help": "score 'other' (the base model) as a label too"})


class LoglikDispatcher(ModelDispatcher):
    """No decoding: score every label (and "other") as the answer to the dispatch prompt.

    The dispatch prompt is the instruction, then the request, then only the chat template's
    closing tokens (t2cli.tasks.cls). Its instruction is the same for every prompt and is prefilled
    once per dispatcher (`SharedPrefix`); per prompt, only the request and those few closing tokens
    go through the model, in batches. When the labels' first tokens differ (code, math, reason…,
    other), that token decides and a label's score is its log-probability: pass 1 is one prefill
    and nothing else. Otherwise the labels go through one more batched forward on the prompts' KV
    cache and a label's score is the log-probability of all its tokens.
    With `calibrate` (default), the scores the same prompt gets for a content-free request ("N/A")
    are subtracted first ("contextual calibration", Zhao et al. 2021): it removes the small model's
    prior for some labels over others. The calibration costs one extra prefill, once.
    Pass 1 is a prefill, so its cost grows with the request's length; `request_tokens` caps it by
    keeping the request's last tokens: a prompt's domain shows most in its closing instruction.
    With `dtype`, pass 1 reads with its own copy of the model (`ModelDispatcher`).
    """

    CONTENT_FREE = "N/A"

    def __init__(
        self,
        *args,
        include_other: bool = True,
        calibrate: bool = True,
        request_tokens: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        check_request_tokens(request_tokens)
        self.request_tokens = request_tokens
        self.candidates = self.labels + ([OTHER] if include_other else [])
        tokenizer = self.loaded.tokenizer
        first_tokens = {tuple(tokenizer(c, add_special_tokens=False)["input_ids"][:1]) for c in self.candidates}
        self.first_token_only = len(first_tokens) == len(self.candidates)  # one prefill decides
        self.calibrate = calibrate
        self.prior: list[float] | None = None  # scores of the content-free request
        self.shared: SharedPrefix | None = None  # KV cache of the instruction, under pass 1's weights
        self.name = "loglik-cls" if self.pass1_expert is not None else "loglik"

    @classmethod
    def from_context(
        cls, context: DispatchContext, argument: str | None = None, *, classifier: bool = False
    ) -> LoglikDispatcher:
        """The loglik strategy's factory: over the context's experts; with `classifier` (loglik-cls),
        the classification expert reads."""
        options: LoglikOptions = context.options
        return cls(
            context.loaded,
            context.switch,
            context.domain_experts(),
            pass1_expert=context.classifier() if classifier else None,
            include_other=options.include_other,
            calibrate=options.calibrate,
            request_tokens=options.request_tokens,
            batch_size=options.batch_size,
            dtype=options.dtype,
        )

    def prefix(self, prompt: str) -> str:
        if self.request_tokens is not None:
            prompt = last_tokens(self.loaded.tokenizer, prompt, self.request_tokens)
        return chat_prompt(self.loaded.tokenizer, dispatch_messages(prompt, self.labels))

    def scores(self, prompts: Sequence[str]) -> list[list[float]]:
        prefixes = [self.prefix(p) for p in prompts]
        return label_logliks_batch(
            self.scorer or self.loaded,
            prefixes,
            self.candidates,
            self.batch_size,
            self.shared,
            first_token_only=self.first_token_only,
        )

    def prepare(self) -> float:
        started = time.perf_counter()
        scorer = self.pass1_model()
        if self.shared is None:  # the weights of pass 1 never change, so neither does this cache
            self.shared = SharedPrefix.common_to(scorer, [self.prefix(self.CONTENT_FREE), self.prefix("1 2")])
        if self.calibrate and self.prior is None:
            self.prior = self.scores([self.CONTENT_FREE])[0]
        return time.perf_counter() - started

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        self.prepare()
        started = time.perf_counter()
        self.pass1_model()  # the shared model: pass 1's weights back in place (a cached copy)
        all_raw = self.scores(prompts)
        share = (time.perf_counter() - started) / max(len(prompts), 1)
        decisions = []
        for raw in all_raw:
            scores = [s - p for s, p in zip(raw, self.prior)] if self.prior is not None else raw
            label = self.candidates[max(range(len(scores)), key=scores.__getitem__)]
            details = {"strategy": self.name, "scores": dict(zip(self.candidates, scores)), "raw": raw}
            decisions.append(Decision(label, self.experts.get(label), seconds=share, details=details))
        return decisions


build_loglik_cls = partial(LoglikDispatcher.from_context, classifier=True)  # the loglik-cls strategy's factory


def last_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """`text` if it has at most `max_tokens` tokens, else its last `max_tokens` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[len(ids) - max_tokens :])


@dataclass
class SharedPrefix:
    """Token ids every prefix starts with, and their KV cache (batch 1) under the weights in place
    when it was made; `label_logliks_batch` then prefills only what follows them."""

    ids: list[int]
    cache: object

    @classmethod
    @torch.no_grad()
    def common_to(cls, loaded: LoadedModel, texts: Sequence[str]) -> SharedPrefix | None:
        """The longest token prefix of `texts`, less its last token (a token at the boundary may
        merge with what follows in another text); None when they share under two tokens."""
        encoded = [loaded.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        common = 0
        while all(len(e) > common for e in encoded) and len({e[common] for e in encoded}) == 1:
            common += 1
        ids = encoded[0][: common - 1]
        if len(ids) < 2:
            return None
        out = loaded.model(input_ids=torch.tensor([ids], device=loaded.device), use_cache=True, logits_to_keep=1)
        return cls(ids, out.cache)


def label_logliks(loaded: LoadedModel, prefix: str, continuations: Sequence[str]) -> list[float]:
    """log p(continuation | prefix) summed over its tokens, for each continuation."""
    return label_logliks_batch(loaded, [prefix], continuations)[0]


@torch.no_grad()
def label_logliks_batch(
    loaded: LoadedModel,
    prefixes: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
    shared: SharedPrefix | None = None,
    first_token_only: bool = False,
) -> list[list[float]]:
    """For each prefix, log p(continuation | prefix) of every continuation (summed over its tokens).

    Up to `batch_size` prefixes are prefilled together (left-padded, explicit positions); their KV
    cache is repeated once per continuation and all continuations go through the model in one
    batch (right-padded: padding after a token cannot change that token's logits). Continuations
    are tokenised on their own, so every prefix keeps its own tokens. With `shared`, a batch whose
    prefixes all start with its tokens continues from its cache (made under the current weights).
    With `first_token_only`, a continuation's score is the log-probability of its first token
    among the continuations' first tokens (normalised over them: the full vocabulary's normaliser
    is the same for every continuation of a prefix, so the ranking, calibrated or not, is that of
    the full log-probabilities). The prefill is then the only forward, and the output layer
    computes only those tokens' logits (`first_token_logits`).
    """
    tokenizer, model, device = loaded.tokenizer, loaded.model, loaded.device
    candidates = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    if not all(candidates):
        raise ValueError("every continuation must have at least one token")
    K, L = len(candidates), max(len(c) for c in candidates)
    cont_ids, cont_mask = right_padded(candidates, device)
    all_encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prefixes]
    order = sorted(range(len(prefixes)), key=lambda i: len(all_encoded[i]))  # similar lengths share a batch
    results: list[list[float]] = [[] for _ in prefixes]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        encoded = [all_encoded[i] for i in batch]
        if not all(encoded):
            raise ValueError("every prefix must have at least one token")
        S = len(shared.ids) if shared is not None else 0
        if S and not all(len(e) > S and e[:S] == shared.ids for e in encoded):
            S = 0  # this batch does not start with the shared tokens: prefill it whole
        encoded = [e[S:] for e in encoded]
        B = len(encoded)
        ids, mask = left_padded(encoded, device)  # every prefix ends at the last position, S + P - 1
        positions = (S + mask.cumsum(-1) - 1).clamp_min(0)
        cache = None
        if S:
            cache = copy.deepcopy(shared.cache)
            cache.batch_repeat_interleave(B)
            mask = torch.cat([torch.ones(B, S, dtype=torch.long, device=device), mask], dim=1)
        inputs = dict(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        if first_token_only:
            logits = first_token_logits(model, inputs, [c[0] for c in candidates])
            scores = torch.log_softmax(logits, dim=-1).tolist()
            for b, index in enumerate(batch):
                results[index] = scores[b]
            continue
        out = model(**inputs, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): each candidate's 1st token
        cache = out.cache
        cache.batch_repeat_interleave(K)  # row b*K + k = prefix b, candidate k
        lengths = mask.sum(-1)
        full_mask = torch.cat([mask.repeat_interleave(K, 0), cont_mask.repeat(B, 1)], dim=1)
        cont_positions = (lengths.repeat_interleave(K)[:, None] + torch.arange(L, device=device)).long()
        logits = model(
            input_ids=cont_ids.repeat(B, 1),
            attention_mask=full_mask,
            position_ids=cont_positions,
            cache=cache,
        ).logits
        logp = torch.log_softmax(logits.float(), -1).view(B, K, L, -1)
        for b in range(B):
            scores = []
            for k, c in enumerate(candidates):
                total = first[b, c[0]]
                if len(c) > 1:  # token j (j ≥ 1) is predicted at candidate position j − 1
                    total = total + logp[b, k, torch.arange(len(c) - 1), torch.tensor(c[1:])].sum()
                scores.append(float(total))
            results[batch[b]] = scores
    return results


def right_padded(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (len(sequences), longest): each row its tokens, then padding
    (padding after a token cannot change that token's logits)."""
    ids = torch.zeros(len(sequences), max(len(s) for s in sequences), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, device=device)
        mask[row, : len(sequence)] = 1
    return ids, mask


def left_padded(sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both (len(sequences), longest): each row padding, then its tokens."""
    ids = torch.zeros(len(sequences), max(len(s) for s in sequences), dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for row, sequence in enumerate(sequences):
        ids[row, ids.shape[1] - len(sequence) :] = torch.tensor(sequence, device=device)
        mask[row, ids.shape[1] - len(sequence) :] = 1
    return ids, mask


def first_token_logits(model: torch.nn.Module, inputs: dict, token_ids: Sequence[int]) -> torch.Tensor:
    """(B, len(token_ids)) float32 logits of `token_ids` at the last position of `inputs`.

    The backbone runs as usual; the output layer multiplies by only the rows of `token_ids` (the
    full layer is a (vocabulary × hidden) product per prompt, a large share of a short prefill).
    Models whose backbone or output layer cannot be reached this way get the full forward.
    """
    head = model.get_output_embeddings()
    backbone = model.base_model
    if not isinstance(head, torch.nn.Linear) or backbone is model:
        return model(**inputs, logits_to_keep=1).logits[:, -1, list(token_ids)].float()
    hidden = backbone(**inputs).last_hidden_state[:, -1]
    rows = torch.tensor(list(token_ids), device=hidden.device)
    logits = torch.nn.functional.linear(
        hidden, head.weight[rows], head.bias[rows] if head.bias is not None else None
    ).float()
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits
