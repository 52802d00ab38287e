"""Pass 1 of two-pass inference (SPEC §3): decide which expert (or mixture) answers a prompt.

Strategies, all returning one `Decision` per prompt:

    none         always the base model
    fixed:NAME   always the registered expert NAME
    prompt       the base model names the prompt's domain (greedy, a few tokens)
    cls          the same prompt, answered with the registered classification expert applied
    loglik       no decoding: one prefill of the dispatch prompt, then every label (and "other")
                 scored by the log-likelihood of its first token (of all its tokens when two
                 labels start alike); the argmax wins
    loglik-cls   loglik with the classification expert applied
    cem          few-shot: α over the K domain experts searched by the cross-entropy method on
                 labelled shots (`t2cli.cem.cem_search`); the mixture then answers every prompt

Experts are found through registry metadata (their `domain`), never by hard-coded names. The
model's weights are switched by one `ExpertSwitch`, shared with pass 2, which keeps composed
weights in a small LRU so that switching back to a recent expert costs a copy, not a composition.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from t2cli.adapt import DenseAdapter
from t2cli.defaults import PASS1_DTYPE_NAMES, STRATEGIES
from t2cli.errors import DispatchError as DispatchError  # re-exported
from t2cli.errors import ExpertError, RegistryError
from t2cli.expert import ExpertVector
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.models import LoadedModel
from t2cli.registry import Registry
from t2cli.tasks.cls import DISPATCH_LABELS, OTHER, dispatch_messages, parse_dispatch_label

CLASSIFICATION = "classification"
if TYPE_CHECKING:
    from t2cli.cem import CEMResult


@dataclass
class Decision:
    """What pass 1 chose for one prompt.

    `label` is a domain ("math", …), "other" (the base model), an expert name (fixed) or
    "mixture" (cem); `expert` is the vector pass 2 applies (None: the base model); `weights` are
    the α per expert name for a mixture; `seconds` is this prompt's share of pass 1.
    """

    label: str
    expert: ExpertVector | None = field(default=None, repr=False)
    weights: dict[str, float] | None = None
    seconds: float = 0.0
    details: dict = field(default_factory=dict)

    @property
    def expert_name(self) -> str | None:
        return self.expert.name if self.expert is not None else None


# --------------------------------------------------------------------------- weights


class ExpertSwitch:
    """The model's current weights: the base model or one expert, composed weights in an LRU.

    Each cached entry is a full copy of the targeted matrices (SmolLM2-135M MLP: ≈320 MB in
    float32), hence the small default capacity. Entries are keyed by expert name.
    """

    def __init__(self, adapter: DenseAdapter, capacity: int = 4):
        if capacity < 1:
            raise ValueError("the composed-weights cache needs a capacity ≥ 1")
        self.adapter = adapter
        self.capacity = capacity
        self.cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.compositions = 0  # how many times an expert was composed (cache misses)

    @property
    def active(self) -> str | None:
        return self.adapter.active

    def use(self, expert: ExpertVector | None) -> None:
        """Make `expert` (None: the exact base weights) the model's weights."""
        if expert is None:
            if self.adapter.active is not None:
                self.adapter.revert()
            return
        if self.adapter.active == expert.name:
            return
        weights = self.cache.get(expert.name)
        if weights is None:
            weights = self.adapter.compose(expert)
            self.compositions += 1
            self.cache[expert.name] = weights
            while len(self.cache) > self.capacity:
                self.cache.popitem(last=False)
        self.cache.move_to_end(expert.name)
        self.adapter.load_weights(weights, expert.name)


# --------------------------------------------------------------------------- experts by domain


def domain_experts(registry: Registry, base_model: str, domains: Sequence[str] | None = None) -> dict[str, str]:
    """{domain: expert name} for the registered experts of `base_model`, from their metadata.

    Without `domains`, every domain except "classification" and "other"; when a domain has
    several experts, the first by name wins (register one per domain to be explicit).
    """
    found: dict[str, str] = {}
    for entry in registry.list(base_model):
        domain = entry.domain
        if domain in (CLASSIFICATION, OTHER) or (domains is not None and domain not in domains):
            continue
        found.setdefault(domain, entry.name)
    known = [d for d in DISPATCH_LABELS if d in found]
    return {d: found[d] for d in known + sorted(set(found) - set(known))}


def classification_expert(registry: Registry, base_model: str) -> ExpertVector:
    for entry in registry.list(base_model):
        if entry.domain == CLASSIFICATION:
            return registry.load(entry.name, base_model)
    raise DispatchError(
        f"no classification expert is registered for {base_model}: train one with "
        f"`t2 train --task cls --model {base_model}` (it is registered with domain 'classification')"
    )


# --------------------------------------------------------------------------- strategies


class Dispatcher:
    """Base: `decide(prompts)` returns one Decision per user prompt (plain text)."""

    name = "none"

    def prepare(self) -> float:
        """One-time set-up (a pass-1 model copy, cached prefixes), so that `decide` times only
        per-prompt work; returns its seconds. `decide` calls it when it has not run yet."""
        return 0.0

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        return [Decision(OTHER, details={"strategy": self.name}) for _ in prompts]


class FixedDispatcher(Dispatcher):
    """Always one expert (a registered one, or a mixture found by `cem_search`)."""

    def __init__(self, expert: ExpertVector, label: str | None = None, weights: dict[str, float] | None = None):
        self.expert, self.label, self.weights = expert, label or expert.name, weights
        self.name = f"fixed:{expert.name}"

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        return [Decision(self.label, self.expert, self.weights, details={"strategy": self.name}) for _ in prompts]


class ModelDispatcher(Dispatcher):
    """A pass 1 that runs the model on the dispatch prompt, with `pass1_expert` applied (None: base)."""

    def __init__(
        self,
        loaded: LoadedModel,
        switch: ExpertSwitch,
        experts: dict[str, ExpertVector],
        pass1_expert: ExpertVector | None = None,
        batch_size: int = 16,
    ):
        self.loaded, self.switch, self.experts, self.pass1_expert = loaded, switch, experts, pass1_expert
        self.labels = list(experts)
        self.batch_size = batch_size


class PromptDispatcher(ModelDispatcher):
    """The model names the domain (greedy); with `pass1_expert`, that expert answers."""

    def __init__(self, *args, max_new_tokens: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=self.batch_size)
        self.name = "cls" if self.pass1_expert is not None else "prompt"

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        started = time.perf_counter()
        self.switch.use(self.pass1_expert)
        texts = [chat_prompt(self.loaded.tokenizer, dispatch_messages(p, self.labels)) for p in prompts]
        outputs = [c.text for c in generate(self.loaded, texts, self.config)]
        share = (time.perf_counter() - started) / max(len(prompts), 1)
        decisions = []
        for output in outputs:
            label = parse_dispatch_label(output, self.labels)
            details = {"strategy": self.name, "output": output}
            decisions.append(Decision(label, self.experts.get(label), seconds=share, details=details))
        return decisions


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
    keeping the request's last tokens: a prompt's domain shows most in its closing instruction
    (on the cls validation split, the last 8 tokens kept 200/200 choices; docs/RESULTS.md §6).
    With `dtype` (e.g. torch.bfloat16), pass 1 runs on its own copy of the model, made once with
    `pass1_expert` composed and cast to that dtype: choosing among a few labels tolerates the lower
    precision, a bfloat16 prefill costs less than a float32 one on hardware with bfloat16 units,
    and pass 1 then never switches the shared model's weights (pass 2 keeps its expert in place).
    The copy costs one model's memory in `dtype`.
    """

    CONTENT_FREE = "N/A"

    def __init__(
        self,
        *args,
        include_other: bool = True,
        calibrate: bool = True,
        request_tokens: int | None = None,
        dtype: torch.dtype | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.dtype = dtype
        self.scorer: LoadedModel | None = None  # the model pass 1 reads with (its own copy with `dtype`)
        if request_tokens is not None and request_tokens < 2:
            raise DispatchError(f"the pass-1 request budget must be ≥ 2 tokens (got {request_tokens})")
        self.request_tokens = request_tokens
        self.candidates = self.labels + ([OTHER] if include_other else [])
        tokenizer = self.loaded.tokenizer
        first_tokens = {tuple(tokenizer(c, add_special_tokens=False)["input_ids"][:1]) for c in self.candidates}
        self.first_token_only = len(first_tokens) == len(self.candidates)  # one prefill decides
        self.calibrate = calibrate
        self.prior: list[float] | None = None  # scores of the content-free request
        self.shared: SharedPrefix | None = None  # KV cache of the instruction, under pass 1's weights
        self.name = "loglik-cls" if self.pass1_expert is not None else "loglik"

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

    def pass1_model(self) -> LoadedModel:
        """The model with pass 1's weights in place: the shared one (switched), or the own copy —
        made once from the shared model, its targets overwritten with pass 1's weights (composed
        from the base weights, or the base weights themselves), so the shared model is never switched."""
        if self.dtype is None:
            self.switch.use(self.pass1_expert)
            return self.loaded
        if self.scorer is None:
            adapter = self.switch.adapter
            weights = adapter.compose(self.pass1_expert) if self.pass1_expert is not None else adapter.originals
            model = copy.deepcopy(self.loaded.model)
            modules = dict(model.named_modules())
            with torch.no_grad():
                for name, weight in weights.items():
                    modules[name].weight.copy_(weight)
            self.scorer = dataclasses.replace(self.loaded, model=model.to(self.dtype).eval())
        return self.scorer

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
        return cls(ids, out.past_key_values)


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
    cont_ids = torch.zeros(K, L, dtype=torch.long, device=device)
    cont_mask = torch.zeros(K, L, dtype=torch.long, device=device)
    for row, c in enumerate(candidates):
        cont_ids[row, : len(c)] = torch.tensor(c, device=device)
        cont_mask[row, : len(c)] = 1
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
        B, P = len(encoded), max(len(e) for e in encoded)
        ids = torch.zeros(B, P, dtype=torch.long, device=device)
        mask = torch.zeros(B, P, dtype=torch.long, device=device)
        for row, e in enumerate(encoded):  # left padding: every prefix ends at position S + P - 1
            ids[row, P - len(e) :] = torch.tensor(e, device=device)
            mask[row, P - len(e) :] = 1
        positions = (S + mask.cumsum(-1) - 1).clamp_min(0)
        cache = None
        if S:
            cache = copy.deepcopy(shared.cache)
            cache.batch_repeat_interleave(B)
            mask = torch.cat([torch.ones(B, S, dtype=torch.long, device=device), mask], dim=1)
        inputs = dict(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
        if first_token_only:
            logits = first_token_logits(model, inputs, [c[0] for c in candidates])
            scores = torch.log_softmax(logits, dim=-1).tolist()
            for b, index in enumerate(batch):
                results[index] = scores[b]
            continue
        out = model(**inputs, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): each candidate's 1st token
        cache = out.past_key_values
        cache.batch_repeat_interleave(K)  # row b*K + k = prefix b, candidate k
        lengths = mask.sum(-1)
        full_mask = torch.cat([mask.repeat_interleave(K, 0), cont_mask.repeat(B, 1)], dim=1)
        cont_positions = (lengths.repeat_interleave(K)[:, None] + torch.arange(L, device=device)).long()
        logits = model(
            input_ids=cont_ids.repeat(B, 1),
            attention_mask=full_mask,
            position_ids=cont_positions,
            past_key_values=cache,
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


# --------------------------------------------------------------------------- building a strategy


PASS1_DTYPES = {name: getattr(torch, name) for name in PASS1_DTYPE_NAMES}


def pass1_dtype_of(name: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype for a --pass1-dtype value (None: pass 1 shares the model in its own dtype)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    if name not in PASS1_DTYPES:
        raise DispatchError(f"--pass1-dtype must be one of {', '.join(PASS1_DTYPES)}, not {name!r}")
    return PASS1_DTYPES[name]


def make_dispatcher(
    strategy: str,
    loaded: LoadedModel,
    switch: ExpertSwitch,
    registry: Registry,
    cem: CEMResult | None = None,
    request_tokens: int | None = None,
    batch_size: int = 16,
    pass1_dtype: str | torch.dtype | None = None,
) -> Dispatcher:
    """The dispatcher for a strategy name (see STRATEGIES); "cem" needs a `cem_search` result.
    `request_tokens` caps the request's tokens seen by the log-likelihood pass 1, `pass1_dtype`
    (a torch dtype or a PASS1_DTYPES name) gives it its own copy of the model in that dtype (see
    LoglikDispatcher); `batch_size` is pass 1's prompts per forward."""
    dtype = pass1_dtype_of(pass1_dtype)
    if dtype is not None and not strategy.startswith("loglik"):
        raise DispatchError(
            f"a pass-1 dtype applies to the loglik strategies only (not {strategy!r}): drop --pass1-dtype"
        )
    if strategy == "none":
        return Dispatcher()
    if strategy.startswith("fixed:"):
        name = strategy.removeprefix("fixed:")
        expert = registry.load(name, loaded.name)
        return FixedDispatcher(expert, label=expert.domain if expert.domain != OTHER else name)
    if strategy == "cem":
        if cem is None:
            raise DispatchError("the cem strategy needs labelled shots: run `cem_search` (CLI: --shots FILE --task T)")
        dispatcher = FixedDispatcher(cem.expert, label="mixture", weights=cem.weights)
        dispatcher.name = "cem"
        return dispatcher
    if strategy not in ("prompt", "cls", "loglik", "loglik-cls"):
        raise DispatchError(f"unknown dispatch strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    experts = load_domain_experts(registry, loaded.name)
    pass1 = classification_expert(registry, loaded.name) if strategy.endswith("cls") else None
    if strategy.startswith("loglik"):
        return LoglikDispatcher(
            loaded,
            switch,
            experts,
            pass1_expert=pass1,
            request_tokens=request_tokens,
            batch_size=batch_size,
            dtype=dtype,
        )
    return PromptDispatcher(loaded, switch, experts, pass1_expert=pass1, batch_size=batch_size)


def load_domain_experts(registry: Registry, base_model: str) -> dict[str, ExpertVector]:
    """{domain: expert} for every domain expert registered for `base_model` (at least one)."""
    names = domain_experts(registry, base_model)
    if not names:
        raise DispatchError(
            f"no domain experts (math, code, reasoning) are registered for {base_model}: "
            "train them with `t2 train --task gsm8k|mbpp-plus|arc-easy` or pull a set with `t2 experts pull`"
        )
    try:
        return {domain: registry.load(name, base_model) for domain, name in names.items()}
    except ExpertError as error:
        raise RegistryError(f"a registered domain expert cannot be loaded: {error}") from error
