"""What a caller hands the engine and what comes back: a request's sampling and adaptation, the
errors that refuse a request, the events its listener receives, and the handle `submit` returns.

A request's listener is called from the engine thread with, in order, one Chosen (what serves
it), any number of Text (new text), then exactly one Finished (reason, usage) or Failed; nothing
is sent after the Finished or Failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from t2cli.errors import T2Error


class ServeError(T2Error):
    """A request the engine cannot take (its message is shown to the client)."""


class QueueFull(ServeError):
    pass


class PromptTooLong(ServeError):
    pass


class UnknownExpert(ServeError):
    pass


@dataclass(frozen=True)
class Sampling:
    max_tokens: int | None = None  # None: up to the context length
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Adaptation:
    """Which weights answer: the base (`expert` and `mix` None), one served expert, a mixture
    {expert: α} of served experts, or `auto` (pass 1 decides)."""

    expert: str | None = None
    mix: Mapping[str, float] | None = None
    auto: bool = False

    @property
    def label(self) -> str:
        if self.auto:
            return "auto"
        if self.mix:
            return "mix(" + ",".join(f"{k}:{v:g}" for k, v in sorted(self.mix.items())) + ")"
        return self.expert or "base"


@dataclass
class Chosen:
    info: dict  # {"expert": …, "label": …, "weights": …, "strategy": …, "pass1_ms": …} for auto


@dataclass
class Text:
    text: str


@dataclass
class Finished:
    reason: str  # "stop", "length" or "cancelled"
    usage: dict


@dataclass
class Failed:
    message: str


Event = Chosen | Text | Finished | Failed
Listener = Callable[[Event], None]


@dataclass(eq=False)  # each submission is its own request, even with equal fields
class Handle:
    """A submitted request: `cancel()` frees its slot at the next step (a client that left)."""

    prompt_ids: list[int]
    sampling: Sampling
    adaptation: Adaptation
    user_text: str
    listener: Listener
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: bool = False
    ended: bool = False  # its Finished or Failed was sent (nothing is sent after it)

    def cancel(self) -> None:
        self.cancelled = True


def check_request(
    prompt_ids: Sequence[int],
    sampling: Sampling,
    adaptation: Adaptation,
    *,
    context: int,
    experts: Collection[str],
    has_pass1: bool,
) -> None:
    """Raise ServeError for a request an engine with this context length, these served experts
    and (or not) a pass-1 strategy would refuse."""
    if not prompt_ids:
        raise PromptTooLong("the prompt is empty")
    asked = sampling.max_tokens or 1
    if len(prompt_ids) + asked > context:
        raise PromptTooLong(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{len(prompt_ids) + asked} tokens ({len(prompt_ids)} in the messages, {asked} in the completion). "
            "Please reduce the length of the messages or completion."
        )
    if adaptation.auto and not has_pass1:
        raise UnknownExpert("this server has no pass-1 strategy (start it with --adapt) for `:auto`")
    names = [adaptation.expert] if adaptation.expert else list(adaptation.mix or {})
    for name in names:
        if name not in experts:
            known = ", ".join(experts) or "none"
            raise UnknownExpert(f"expert {name!r} is not served here (served: {known})")
    if adaptation.mix is not None:
        weights = list(adaptation.mix.values())
        if not weights or any(not isinstance(w, int | float) or w < 0 or w != w for w in weights) or sum(weights) <= 0:
            raise ServeError("a mixture needs weights ≥ 0 with a positive sum, e.g. {'math': 0.6, 'code': 0.4}")


def usage(handle: Handle, generated: int, pass1_tokens: int) -> dict:
    """The OpenAI usage block of a request that generated `generated` tokens."""
    counts = {
        "prompt_tokens": len(handle.prompt_ids),
        "completion_tokens": generated,
        "total_tokens": len(handle.prompt_ids) + generated,
    }
    if handle.adaptation.auto:
        counts["pass1_tokens"] = pass1_tokens
    return counts
