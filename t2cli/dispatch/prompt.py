"""The generative pass 1: the model writes the domain's name after the dispatch prompt."""

from __future__ import annotations

import time
from collections.abc import Sequence

from t2cli.dispatch.base import Decision, DispatchContext, ModelDispatcher
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.tasks.cls import dispatch_messages, parse_dispatch_label


class PromptDispatcher(ModelDispatcher):
    """The model names the domain (greedy); with `pass1_expert` (the classifier), that expert answers."""

    def __init__(self, *args, max_new_tokens: int = 16, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=self.batch_size)
        self.name = "cls" if self.pass1_expert is not None else "prompt"

    @classmethod
    def from_context(cls, context: DispatchContext, classifier: bool = False) -> PromptDispatcher:
        pass1 = context.classifier() if classifier else None
        return cls(context.loaded, context.switch, context.domain_experts(), pass1, context.batch_size)

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
