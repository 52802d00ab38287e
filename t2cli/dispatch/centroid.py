"""The training-free pass 1: the nearest domain centroid in the base model's hidden-state space.

Once (`prepare`), each domain's training prompts — the training prompts of its expert's task, as
the classification set takes them (`t2cli.tasks.cls.build_cls_splits`, its train split only) — go
through the base model; a prompt's embedding is the mean of its tokens' last hidden states,
L2-normalised, and a domain's centroid is the normalised mean of its prompts' embeddings. Per
request, pass 1 is one prefill of the request alone (no instruction, no decoding) and the domain
whose centroid has the largest cosine similarity wins. It never answers "other": every request
goes to its nearest domain. Adding a domain needs no training: its expert's task supplies the prompts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from t2cli.dispatch.base import Decision, DispatchContext, ModelDispatcher, PrefillOptions, check_request_tokens
from t2cli.dispatch.experts import training_sources
from t2cli.dispatch.loglik import last_tokens, right_padded
from t2cli.errors import DispatchError
from t2cli.models import LoadedModel
from t2cli.tasks.cls import build_cls_splits

PER_LABEL = 64  # training prompts per domain that make its centroid


@dataclass(frozen=True)
class CentroidOptions(PrefillOptions):
    """The options of the centroid strategy."""

    per_label: int = field(default=PER_LABEL, metadata={"help": "training prompts per domain that make its centroid"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.per_label < 1:
            raise DispatchError(f"a centroid needs at least one prompt per domain (got {self.per_label})")


class CentroidDispatcher(ModelDispatcher):
    """Nearest centroid of base-model hidden states. `prompts` gives each label's prompts
    directly (default: `per_label` training prompts of each expert's task); `request_tokens` keeps
    only each prompt's last tokens, for the centroids and the requests alike."""

    name = "centroid"

    def __init__(
        self,
        *args,
        prompts: dict[str, Sequence[str]] | None = None,
        per_label: int = PER_LABEL,
        request_tokens: int | None = None,
        data_dir: str | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        check_request_tokens(request_tokens)
        self.prompts, self.per_label, self.request_tokens, self.data_dir = prompts, per_label, request_tokens, data_dir
        self.centroids: torch.Tensor | None = None  # (labels, hidden), unit rows

    @classmethod
    def from_context(cls, context: DispatchContext, argument: str | None = None) -> CentroidDispatcher:
        """The centroid strategy's factory."""
        options: CentroidOptions = context.options
        return cls(
            context.loaded,
            context.switch,
            context.domain_experts(),
            per_label=options.per_label,
            request_tokens=options.request_tokens,
            batch_size=options.batch_size,
            dtype=options.dtype,
        )

    def training_prompts(self) -> dict[str, list[str]]:
        """{label: prompts} the centroids are made of."""
        if self.prompts is not None:
            return {label: list(self.prompts[label]) for label in self.labels}
        splits, _, _ = build_cls_splits(self.data_dir, sources=training_sources(self.experts))
        found: dict[str, list[str]] = {label: [] for label in self.labels}
        for example in splits["train"]:
            if len(found[example["answer"]]) < self.per_label:
                found[example["answer"]].append(example["question"])
        return found

    @torch.no_grad()
    def embed(self, model: LoadedModel, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), hidden): each text's mean last hidden state over its tokens, unit length."""
        tokenizer = model.tokenizer
        if self.request_tokens is not None:
            texts = [last_tokens(tokenizer, text, self.request_tokens) for text in texts]
        encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] or [tokenizer.eos_token_id] for text in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch
        rows: list[torch.Tensor | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            ids, mask = right_padded([encoded[i] for i in batch], model.device)
            out = model.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
            hidden = out.hidden_states[-1].float()  # (B, T, H)
            mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            for row, i in enumerate(batch):
                rows[i] = mean[row]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)  # type: ignore[arg-type]

    def prepare(self) -> float:
        if self.centroids is not None:
            return 0.0
        started = time.perf_counter()
        model = self.pass1_model()
        prompts = self.training_prompts()
        empty = [label for label, texts in prompts.items() if not texts]
        if empty:
            raise DispatchError(
                f"no training prompts for the domain(s) {', '.join(empty)}: no centroid to compare with"
            )
        means = [self.embed(model, prompts[label]).mean(0) for label in self.labels]
        self.centroids = torch.nn.functional.normalize(torch.stack(means), dim=-1)
        return time.perf_counter() - started

    def decide(self, prompts: Sequence[str]) -> list[Decision]:
        self.prepare()
        assert self.centroids is not None
        started = time.perf_counter()
        similarity = self.embed(self.pass1_model(), prompts) @ self.centroids.T  # (prompts, labels)
        share = (time.perf_counter() - started) / max(len(prompts), 1)
        decisions = []
        for row in similarity.tolist():
            label = self.labels[max(range(len(row)), key=row.__getitem__)]
            details = {"strategy": self.name, "scores": dict(zip(self.labels, row))}
            decisions.append(Decision(label, self.experts[label], seconds=share, details=details))
        return decisions
