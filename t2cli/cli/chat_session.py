"""One `t2 chat` session: its conversation, its slash commands, and answers streamed as generated.

A line starting with "/" is a command, never a prompt: /help, /experts, /expert NAME|auto,
/clear (or /reset), /quit (or /exit); anything else starting with "/" gets a hint. For a prompt,
pass 1's decision and time are shown first (pass 1 runs here, on the base weights, between the
engine's requests), then pass 2's tokens as the serving engine generates them, with the chosen
expert applied to that request alone. Ctrl-C during an answer stops that answer (it is not kept in
the conversation), not the session. User text and answers are printed literally: "[bold]" or "[/]"
in them is text, not rich markup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text

from t2cli.cli.common import console, err_console

if TYPE_CHECKING:
    from t2cli.adaptive import AdaptiveModel
    from t2cli.expert import ExpertVector
    from t2cli.serve.engine import Engine, Sampling

COMMANDS = {
    "/help": "this list",
    "/experts": "the registered experts pass 1 can choose",
    "/expert NAME|auto": "answer with expert NAME from now on, or let pass 1 choose again (auto)",
    "/clear": "forget the conversation (also /reset)",
    "/quit": "leave (also /exit, or end of input)",
}


class ChatSession:
    def __init__(self, adaptive: AdaptiveModel, engine: Engine, sampling: Sampling, history: bool = True):
        self.adaptive = adaptive  # pass 1: its dispatcher, registry and experts
        self.engine = engine  # pass 2
        self.sampling = sampling
        self.history = history
        self.messages: list[dict[str, str]] = []
        self.forced: ExpertVector | None = None  # set by /expert NAME; None: pass 1 decides

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the session should end."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line)
        self.answer(line)
        return True

    # ------------------------------------------------------------------ commands

    def command(self, line: str) -> bool:
        word, _, argument = line.partition(" ")
        argument = argument.strip()
        if word in ("/quit", "/exit"):
            return False
        if word == "/help":
            for usage, meaning in COMMANDS.items():
                console.print(f"  {escape(usage):<20} {meaning}", highlight=False)
        elif word in ("/clear", "/reset"):
            self.messages = []
            console.print("[dim]conversation cleared[/]")
        elif word == "/experts":
            self.list_experts()
        elif word == "/expert":
            self.choose_expert(argument)
        else:
            near = [usage.split()[0] for usage in COMMANDS if usage.startswith(word[:3])]
            hint = f" (did you mean {' or '.join(near)}?)" if near and len(word) > 1 else ""
            console.print(f"unknown command {word}{hint}: /help lists the commands", markup=False, highlight=False)
        return True

    def list_experts(self) -> None:
        entries = self.adaptive.registry.list(self.adaptive.loaded.name)
        if not entries:
            console.print("no experts are registered for this model", highlight=False)
        for entry in entries:
            mark = (
                " (answering every prompt: /expert auto to undo)"
                if self.forced and self.forced.name == entry.name
                else ""
            )
            domain = entry.meta.get("domain", "?") if isinstance(entry.meta, dict) else "?"
            console.print(Text(f"  {entry.name}  [{domain}]{mark}"))
        if self.forced is None:
            console.print("[dim]pass 1 chooses the expert per prompt (/expert NAME to fix one)[/]")

    def choose_expert(self, name: str) -> None:
        if not name:
            console.print("usage: /expert NAME or /expert auto", markup=False)
        elif name == "auto":
            self.forced = None
            console.print("[dim]pass 1 chooses the expert again[/]")
        elif self.adaptive.switch is None:
            console.print("this chat runs the base model only (--adapt none): no expert can be applied", markup=False)
        else:
            with session_errors():
                self.forced = self.adaptive.registry.load(name, self.adaptive.loaded.name)
                console.print(Text(f"answering with {self.forced.name} until /expert auto"))

    # ------------------------------------------------------------------ a turn

    def answer(self, line: str) -> None:
        try:
            with session_errors():
                self._answer(line)
        except KeyboardInterrupt:  # Ctrl-C: this answer stops, the session goes on
            console.print()
            console.print("[dim](answer stopped; not kept in the conversation)[/]")

    def _answer(self, line: str) -> None:
        from t2cli.adaptive import user_text
        from t2cli.serve.engine import Adaptation

        messages = (self.messages if self.history else []) + [{"role": "user", "content": line}]
        adaptive, engine = self.adaptive, self.engine
        engine.wait_idle()  # the model is this thread's (pass 1's) until the next request
        if self.forced is not None:
            chosen, pass1_s, expert = f"{self.forced.name} (/expert)", 0.0, self.forced
        else:  # pass 1, shown before pass 2 starts
            decision = adaptive.dispatcher.decide([user_text(messages)])[0]
            expert, pass1_s = decision.expert, decision.seconds
            chosen = f"{decision.expert_name} ({decision.label})" if expert else "base model (other)"
        err_console.print(f"[dim]expert: {escape(chosen)} · pass 1 {pass1_s:.2f} s[/]", highlight=False)
        started = time.perf_counter()
        adaptive.base()  # pass 1 may have left an expert composed into the weights: the engine needs the base
        if expert is not None and engine.experts.get(expert.name) is not expert:
            engine.add_expert(expert)
        switch_s = time.perf_counter() - started
        console.print("[bold cyan]t2>[/] ", end="")
        pieces: list[str] = []

        def show(text: str) -> None:
            if not "".join(pieces).strip():
                text = text.lstrip()
            pieces.append(text)
            console.print(text, end="", markup=False, highlight=False, soft_wrap=True)

        adaptation = Adaptation(expert=expert.name) if expert is not None else Adaptation()
        prompt_ids = engine.chat_ids(messages)
        text, finished, _ = engine.stream(prompt_ids, self.sampling, adaptation, show)
        console.print()
        pass2_s = time.perf_counter() - started
        self.messages = messages + [{"role": "assistant", "content": text}]
        tokens = finished.usage["completion_tokens"]
        err_console.print(
            f"[dim]pass 2 {pass2_s:.2f} s (switching weights {switch_s:.2f} s) · {tokens} tokens[/]",
            highlight=False,
        )


@contextmanager
def session_errors() -> Iterator[None]:
    """A library error (T2Error) in one turn or command: one red line, and the session goes on."""
    from t2cli.errors import T2Error

    try:
        yield
    except T2Error as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
