"""The serving engine: continuous batching of requests that each carry their own expert.

One thread owns the model and loops:

    admit   take queued requests while the batch has free slots (at most `max_batch`); run pass 1
            for the `:auto` ones (one dispatcher call for all of them), then prefill the new
            requests together as one left-padded batch, each row through its own expert, and join
            them to the running batch: the two KV caches are left-padded to the longer one and
            concatenated on the batch axis, with the attention mask and position ids to match;
    decode  one token for every running row, each row through its own expert (t2cli.serve.layer);
    retire  a finished or cancelled request leaves at once and frees its slot; cache columns that
            are padding on every remaining row are dropped.

Requests come in through `submit` (any thread), which raises QueueFull when `max_queue` requests
wait already; what happens to a request comes back as events to its listener, called from the
engine thread: Chosen (what serves it), Text (new text), Finished (reason, usage) or Failed.
A cancelled request (`Handle.cancel`, a client that left) ends with Finished("cancelled") at the
next step, whether it was queued or running.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from t2cli.errors import T2Error
from t2cli.expert import ExpertVector
from t2cli.generation import cut_at_stop
from t2cli.models import LoadedModel
from t2cli.serve.batch import Batch, Row, left_padded, prompt_positions
from t2cli.serve.deltas import DeltaCache
from t2cli.serve.layer import FORMS, PerRowModel, stack_deltas
from t2cli.serve.metrics import Metrics
from t2cli.serve.pass1 import Pass1
from t2cli.serve.requests import (
    Adaptation,
    Chosen,
    Event,
    Failed,
    Finished,
    Handle,
    Listener,
    QueueFull,
    Sampling,
    ServeError,
    Text,
    check_request,
    usage,
)
from t2cli.serve.sampling import held_back, sample
from t2cli.svd_store import SVDStore

__all__ = [
    "Adaptation",
    "Chosen",
    "Engine",
    "Event",
    "Failed",
    "Finished",
    "Handle",
    "Listener",
    "QueueFull",
    "Sampling",
    "ServeError",
    "Text",
    "context_length",
    "open_engine",
    "sample",
]


class Engine:
    """A model, its SVD store and served experts, answering submitted requests in one batch.

    `experts`: the served experts by name (registry names). `strategy`: the pass-1 strategy of
    `:auto` requests (None: no `:auto`), with its own options object `strategy_options` (None: its
    defaults); `registry` is where it finds its experts. `max_prefill`:
    the most new prompts prefilled as one batch (default `max_batch`; 1: one at a time).
    `per_row`: the form of the per-row layers, "exact" (the outputs of `t2 eval --expert` up to
    rounding) or "factorised" (cheaper, within a few 1e-4 on the logits: `t2cli.serve.layer`)."""

    def __init__(
        self,
        loaded: LoadedModel,
        store: SVDStore,
        experts: Mapping[str, ExpertVector],
        *,
        strategy: str | None = None,
        strategy_options: Any = None,
        registry=None,
        max_batch: int = 16,
        max_queue: int = 64,
        max_prefill: int | None = None,
        per_row: str = "exact",
        metrics: Metrics | None = None,
    ):
        if max_batch < 1 or max_queue < 1 or (max_prefill is not None and max_prefill < 1):
            raise ServeError("max_batch, max_queue and max_prefill must be ≥ 1")
        check_form(per_row)
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.max_batch, self.max_queue = max_batch, max_queue
        self.max_prefill = max_prefill or max_batch
        self.metrics = metrics or Metrics()
        self.experts = dict(experts)
        self.strategy = strategy
        # pass 1 first: its dense weight switch must see the model's own modules
        self.pass1 = None
        if strategy:
            from t2cli.registry import Registry

            self.pass1 = Pass1(
                loaded, store, registry or Registry(), strategy, list(self.experts) or None, strategy_options
            )
        self.setup_s = self.pass1.prepare() if self.pass1 else 0.0
        self.rows_model = PerRowModel(loaded, store, per_row)
        self._deltas = DeltaCache(self.rows_model, self.experts)
        self.context = context_length(loaded.model.config)
        eos = loaded.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos.add(self.tokenizer.eos_token_id)
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos, default=0)
        self._tokenizer_lock = threading.Lock()  # fast tokenizers are not safe across threads
        self._cond = threading.Condition()
        self._queue: deque[Handle] = deque()
        self._batch = Batch()
        self._admitting = 0  # taken from the queue, not yet in the batch
        self._scales_stale = True
        self._accepting = True
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> Engine:
        self._thread = threading.Thread(target=self._loop, name="t2-serve-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self, deadline_s: float = 30.0) -> bool:
        """Stop accepting, let queued and running requests finish within `deadline_s` (then cancel
        what is left), stop the loop and put the model's modules back. True: all finished."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
        ends = time.monotonic() + deadline_s
        while self.pending and time.monotonic() < ends:
            time.sleep(0.01)
        drained = not self.pending
        with self._cond:
            for handle in [*self._queue, *(row.handle for row in self._batch.rows)]:
                handle.cancel()
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, deadline_s))
        self.rows_model.remove()
        return drained

    @property
    def pending(self) -> int:
        """Queued, being admitted and running requests."""
        return len(self._queue) + self._admitting + len(self._batch)

    @property
    def running(self) -> int:
        return len(self._batch)

    @property
    def queued(self) -> int:
        return len(self._queue)

    # ------------------------------------------------------------------ requests

    def encode(self, text: str) -> list[int]:
        with self._tokenizer_lock:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        from t2cli.generation import chat_prompt

        with self._tokenizer_lock:
            text = chat_prompt(self.tokenizer, messages)
        return self.encode(text)

    def check(self, prompt_ids: Sequence[int], sampling: Sampling, adaptation: Adaptation) -> None:
        """Raise ServeError for a request the engine would refuse (nothing is queued)."""
        check_request(
            prompt_ids,
            sampling,
            adaptation,
            context=self.context,
            experts=self.experts,
            has_pass1=self.pass1 is not None,
        )

    def submit(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        adaptation: Adaptation,
        listener: Listener,
        user_text: str = "",
    ) -> Handle:
        """Queue a request (checked first); raise QueueFull when `max_queue` requests wait."""
        self.check(prompt_ids, sampling, adaptation)
        handle = Handle(list(prompt_ids), sampling, adaptation, user_text, listener)
        with self._cond:
            if not self._accepting:
                raise QueueFull("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                self.metrics.rejected()
                raise QueueFull(f"the queue is full ({self.max_queue} requests waiting); retry later")
            self._queue.append(handle)
            self.metrics.accepted()
            self.metrics.queue_length(len(self._queue))
            self._cond.notify_all()
        return handle

    def generate(
        self, prompt_ids: list[int], sampling: Sampling, adaptation: Adaptation = Adaptation(), user_text: str = ""
    ) -> tuple[str, Finished, dict]:
        """Submit and wait (for scripts and tests): the text, how it finished, what served it."""
        done = threading.Event()
        parts: list[str] = []
        outcome: dict = {}

        def listen(event: Event) -> None:
            if isinstance(event, Text):
                parts.append(event.text)
            elif isinstance(event, Chosen):
                outcome["chosen"] = event.info
            else:
                outcome["end"] = event
                done.set()

        self.submit(prompt_ids, sampling, adaptation, listen, user_text)
        done.wait()
        end = outcome["end"]
        if isinstance(end, Failed):
            raise ServeError(end.message)
        return "".join(parts), end, outcome.get("chosen", {})

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._batch and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    for handle in self._queue:
                        self._emit(handle, Failed("the server stopped before this request was answered"))
                        self.metrics.finished("cancelled", handle.adaptation.label)
                    self._queue.clear()
                    break
                for handle in [h for h in self._queue if h.cancelled]:  # they leave the queue at once
                    self._queue.remove(handle)
                    self._cancelled(handle, handle.adaptation.label)
                admitted: list[Handle] = []
                while self._queue and len(self._batch) + len(admitted) < self.max_batch:
                    admitted.append(self._queue.popleft())
                self._admitting = len(admitted)
                self.metrics.queue_length(len(self._queue))
            try:
                with torch.no_grad():
                    if admitted:
                        self._admit(admitted)
                    self._admitting = 0
                    self._retire()
                    if self._batch:
                        self._decode()
                        self._retire()
            except Exception as error:  # a failing step fails its requests, never the server
                for handle in dict.fromkeys([*admitted, *(row.handle for row in self._batch.rows)]):
                    if not handle.ended:
                        self._emit(handle, Failed(f"internal error: {type(error).__name__}: {error}"))
                        self.metrics.finished("error", handle.adaptation.label)
                self._batch.clear()
                self._admitting = 0
                self._scales_stale = True
        for row in self._batch.rows:
            if not row.handle.ended:
                self._emit(row.handle, Failed("the server stopped before this request was answered"))
                self.metrics.finished("cancelled", row.label, len(row.generated))
        self._batch.clear()

    def _cancelled(self, handle: Handle, label: str, generated: int = 0, pass1_tokens: int = 0) -> None:
        self._emit(handle, Finished("cancelled", usage(handle, generated, pass1_tokens)))
        self.metrics.finished("cancelled", label, generated)

    def _emit(self, handle: Handle, event: Event) -> None:
        if handle.ended:
            return
        handle.ended = isinstance(event, Finished | Failed)
        try:
            handle.listener(event)
        except Exception:  # a listener that fails (a client gone) only cancels its own request
            handle.cancel()

    # ------------------------------------------------------------------ admission

    def _admit(self, handles: list[Handle]) -> None:
        choices = self._pass1([h for h in handles if h.adaptation.auto])
        rows: list[Row] = []
        for handle in handles:
            try:
                row, info = self._new_row(handle, choices.get(id(handle)))
            except T2Error as error:
                self._emit(handle, Failed(str(error)))
                self.metrics.finished("error", handle.adaptation.label)
                continue
            self._emit(handle, Chosen(info))
            if handle.cancelled:  # its client left while it waited (or its listener failed)
                self._cancelled(handle, row.label)
            else:
                rows.append(row)
        for start in range(0, len(rows), self.max_prefill):
            self._prefill(rows[start : start + self.max_prefill])

    def _pass1(self, handles: list[Handle]) -> dict[int, tuple]:
        if not handles:
            return {}
        assert self.pass1 is not None
        started = time.perf_counter()
        self.rows_model.scales.clear()  # pass 1 reads with whole-batch weights, not the last step's rows
        with self._tokenizer_lock:
            choices = self.pass1.decide([h.user_text for h in handles])
        self._scales_stale = True
        self.metrics.pass1(time.perf_counter() - started, len(handles))
        read = [self.pass1.tokens_read(len(self.encode(h.user_text))) for h in handles]
        return {id(h): (c, n) for h, c, n in zip(handles, choices, read)}

    def _new_row(self, handle: Handle, choice: tuple | None) -> tuple[Row, dict]:
        adaptation = handle.adaptation
        info: dict = {"label": adaptation.label}
        pass1_tokens = 0
        if choice is not None:
            decision, pass1_tokens = choice
            expert = decision.expert
            deltas = self._deltas.of_expert(expert) if expert is not None else None
            label = expert.name if expert is not None else "base"
            info = {
                "expert": expert.name if expert is not None else None,
                "label": decision.label,
                "weights": decision.weights,
                "strategy": self.strategy,
                "pass1_ms": round(decision.seconds * 1e3, 2),
            }
        elif adaptation.mix:
            deltas = self._deltas.of_mix(adaptation.mix)
            label = adaptation.label
            info["weights"] = dict(adaptation.mix)
        elif adaptation.expert:
            deltas, label = self._deltas.served(adaptation.expert), adaptation.expert
        else:
            deltas, label = None, "base"
        sampling = handle.sampling
        budget = sampling.max_tokens or self.context - len(handle.prompt_ids)
        budget = min(budget, self.context - len(handle.prompt_ids))
        generator = torch.Generator(device="cpu")
        generator.manual_seed(sampling.seed if sampling.seed is not None else int(torch.randint(0, 2**62, (1,))))
        return Row(handle, deltas, label, budget, generator, pass1_tokens=pass1_tokens), info

    def _prefill(self, rows: list[Row]) -> None:
        """Run the new prompts as one left-padded batch, each row through its own expert, join
        them to the running batch and take each one's first token."""
        from transformers import DynamicCache

        ids, mask = left_padded([row.handle.prompt_ids for row in rows], self.pad, self.loaded.device)
        cache = DynamicCache(config=self.loaded.model.config)
        self._set_scales([row.deltas for row in rows])
        started = time.perf_counter()
        logits = self.loaded.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=prompt_positions(mask),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits: (B, 1, vocab), not (B, L, vocab)
        ).logits[:, -1]
        self.metrics.prefill(len(rows), time.perf_counter() - started)
        self._scales_stale = True
        self._batch.join(rows, cache, mask)
        for row, row_logits in zip(rows, logits):
            self._take(row, row_logits)

    # ------------------------------------------------------------------ decoding

    def _set_scales(self, per_row: list[dict[str, torch.Tensor] | None]) -> None:
        deltas, rows = stack_deltas(per_row)
        index = others = None
        if deltas is not None and len(rows) < len(per_row):
            device = self.loaded.device
            index = torch.tensor(rows, device=device)
            others = torch.tensor(sorted(set(range(len(per_row))) - set(rows)), device=device)
        self.rows_model.scales.set(deltas, index, others)

    def _decode(self) -> None:
        if self._scales_stale:
            self._set_scales([row.deltas for row in self._batch.rows])
            self._scales_stale = False
        batch = self._batch
        last = torch.tensor([[row.generated[-1]] for row in batch.rows], device=self.loaded.device)
        positions = batch.next_positions()
        started = time.perf_counter()
        logits = self.loaded.model(
            input_ids=last, attention_mask=batch.mask, position_ids=positions, cache=batch.cache, use_cache=True
        ).logits[:, -1]
        self.metrics.step(len(batch), time.perf_counter() - started)
        for row, row_logits in zip(batch.rows, logits):
            self._take(row, row_logits)

    def _take(self, row: Row, logits: torch.Tensor) -> None:
        """Choose the row's next token, send the new text, and finish the row when it is done."""
        if row.handle.cancelled or row.done:
            return
        token = sample(logits, row.handle.sampling, row.generator)
        row.generated.append(token)
        now = time.perf_counter()
        if row.first_token_at is None:
            row.first_token_at = now
            self.metrics.first_token(now - row.handle.submitted, row.label)
        stop = row.handle.sampling.stop
        with self._tokenizer_lock:
            full = self.tokenizer.decode(row.generated, skip_special_tokens=True)
        text = cut_at_stop(full, stop)
        reason = None
        if token in self.eos or text != full:
            reason = "stop"
        elif len(row.generated) >= row.budget:
            reason = "length"
        if reason is None:
            ready = len(text) - held_back(text, stop)
            if text.endswith("\ufffd"):  # half of a multi-byte character
                ready = min(ready, len(text) - 1)
        else:
            ready = len(text)
        if ready > row.sent:
            self._emit(row.handle, Text(text[row.sent : ready]))
            row.sent = ready
        if reason is not None:
            self._emit(row.handle, Finished(reason, usage(row.handle, len(row.generated), row.pass1_tokens)))
            self.metrics.finished(reason, row.label, len(row.generated), now - row.first_token_at)
            row.done = True  # the slot is freed by _retire

    def _retire(self) -> None:
        """Drop finished and cancelled rows from the batch and the padding no row needs."""
        rows = self._batch.rows
        keep = [i for i, row in enumerate(rows) if not (row.done or row.handle.cancelled)]
        if len(keep) == len(rows):
            return
        for row in rows:
            if row.handle.cancelled and not row.done:
                self._cancelled(row.handle, row.label, len(row.generated), row.pass1_tokens)
        self._scales_stale = True
        self._batch.keep(keep)

    # ------------------------------------------------------------------ in-process callers (t2 chat)

    def add_expert(self, expert: ExpertVector) -> None:
        """Serve `expert` too, under its name (replacing a served expert of that name): one chosen
        at run time, such as a mixture or an expert a user names. Checked against the model first."""
        deltas = self.rows_model.deltas(expert)
        with self._cond:
            self.experts[expert.name] = expert
            self._deltas.put(expert.name, deltas)

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Wait until no request is queued or running, then leave the model as the base model (no
        row's expert correction): for a caller that runs the model itself between requests, such as
        `t2 chat`'s pass 1. The next request's step sets the rows' experts again."""
        ends = time.monotonic() + timeout_s
        while self.pending:
            if time.monotonic() > ends:
                raise ServeError(f"the engine is still busy after {timeout_s:g} s")
            time.sleep(0.001)
        self.rows_model.scales.clear()
        self._scales_stale = True

    def stream(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        adaptation: Adaptation = Adaptation(),
        on_text: Callable[[str], None] | None = None,
        user_text: str = "",
    ) -> tuple[str, Finished, dict]:
        """`generate`, passing each new piece of text to `on_text` in the caller's thread as it comes.

        An exception in `on_text`, or a KeyboardInterrupt while waiting (Ctrl-C), cancels the request
        and is raised again once the engine has let the request go (at its next step)."""
        events: queue.SimpleQueue[Event] = queue.SimpleQueue()

        def next_event(timeout_s: float | None = None) -> Event | None:
            ends = None if timeout_s is None else time.monotonic() + timeout_s
            while ends is None or time.monotonic() < ends:
                try:
                    return events.get(timeout=0.1)  # short waits: Ctrl-C is seen on every platform
                except queue.Empty:
                    continue
            return None

        handle = self.submit(prompt_ids, sampling, adaptation, events.put, user_text)
        parts: list[str] = []
        chosen: dict = {}
        ended = False
        try:
            while True:
                event = next_event()
                if isinstance(event, Text):
                    parts.append(event.text)
                    if on_text is not None:
                        on_text(event.text)
                elif isinstance(event, Chosen):
                    chosen = event.info
                else:
                    ended = True
                    if isinstance(event, Failed):
                        raise ServeError(event.message)
                    return "".join(parts), event, chosen
        except BaseException:
            if not ended:
                handle.cancel()
                while (event := next_event(timeout_s=30.0)) is not None and not isinstance(event, Finished | Failed):
                    pass
            raise


def context_length(config) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def check_form(per_row: str) -> None:
    """Refuse an unknown per-row form with the ones there are."""
    if per_row not in FORMS:
        raise ServeError(f"unknown per-row form {per_row!r}: choose {' or '.join(FORMS)}")


def open_engine(
    model: str,
    experts: Sequence[str] | None = None,
    strategy: str | None = None,
    *,
    strategy_options: Any = None,
    dtype: str = "auto",
    device: str = "auto",
    max_batch: int = 16,
    max_queue: int = 64,
    per_row: str = "exact",
    registry=None,
    progress=None,
) -> tuple[Engine, list[str]]:
    """Load the model, its SVD store (decomposed on first use, `progress(done, total, name)`) and
    the experts to serve (default: every registered expert of the model but the classifier), and
    start the engine. Returns it with one line per expert that was refused (a bad file, another
    base model): those are left out and the rest served."""
    from t2cli.defaults import CLASSIFICATION
    from t2cli.models import load_model
    from t2cli.registry import Registry
    from t2cli.svd_store import open_or_decompose

    check_form(per_row)
    registry = registry or Registry()
    loaded = load_model(model, dtype=dtype, device=device)
    names = (
        list(experts)
        if experts is not None
        else [entry.name for entry in registry.list(loaded.name) if entry.error or entry.domain != CLASSIFICATION]
    )
    chosen: dict[str, ExpertVector] = {}
    skipped: list[str] = []
    for name in names:
        try:
            expert = registry.load(name, loaded.name)
            expert.validate_for({k: v.numel() for k, v in expert.z.items()}, loaded.name, loaded.fingerprint)
        except T2Error as error:
            skipped.append(f"{name}: {error}")
            continue
        chosen[name] = expert
    targets = next(iter(chosen.values())).targets if chosen else ["mlp"]
    store = open_or_decompose(loaded, targets, progress=progress)
    for name, expert in list(chosen.items()):
        try:
            expert.validate_for(store.ranks, loaded.name, loaded.fingerprint)
        except T2Error as error:
            skipped.append(f"{name}: {error}")
            del chosen[name]
    engine = Engine(
        loaded,
        store,
        chosen,
        strategy=strategy,
        strategy_options=strategy_options,
        registry=registry,
        max_batch=max_batch,
        max_queue=max_queue,
        per_row=per_row,
    )
    return engine.start(), skipped
