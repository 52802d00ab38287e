"""The generative pass 1: the model writes the domain's name after the dispatch prompt."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from t2cli.dispatch.base import Decision, DispatchContext, ModelDispatcher
from t2cli.errors import DispatchError
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.tasks.cls import dispatch_messages, parse_dispatch_label


@dataclass(frozen=True)
class PromptOptions:
    """The options of the prompt and cls strategies."""

    batch_size: int = field(default=16, metadata={"help": "prompts per pass-1 generation batch"})
    label_tokens: int = field(default=16, metadata={"help": "tokens the model may write to name the domain"})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.label_tokens < 1:
            raise DispatchError("the prompt strategies need a batch size and a token budget ≥ 1")


class PromptDispatcher(ModelDispatcher):
    """The model names the domain (greedy); with `pass1_expert` (the classifier), that expert answers."""

    def __init__(self, *args, max_new_tokens: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=self.batch_size)
        self.name = "cls" if self.pass1_expert is not None else "prompt"

    @classmethod
    def from_context(
        cls, context: DispatchContext, argument: str | None = None, *, classifier: bool = False
    ) -> PromptDispatcher:
        """The prompt strategy's factory: over the context's experts; with `classifier` (cls), the
        classification expert writes the label."""
        options: PromptOptions = context.options
        pass1 = context.classifier() if classifier else None
        return cls(
            context.loaded,
            context.switch,
            context.domain_experts(),
            pass1,
            options.batch_size,
            max_new_tokens=options.label_tokens,
        )

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


build_cls = partial(PromptDispatcher.from_context, classifier=True)  # the cls strategy's factory
