"""Serving throughput and time to first token, side by side, bounded in requests and time.

    python bench/serve.py [-m smollm2-135m] [--clients 1,8,32] [--max-tokens 32] [--time-limit 120]
                          [--max-prefill 1,all] [--per-row exact,factorised]
                          [--adapt loglik-cls --pass1-tokens 8 --pass1-dtype float32]

Concurrent clients (threads, each one request at a time) send chat requests to the engine of
`t2 serve` (in process: the HTTP layer adds the same small cost to every row, and the loopback
socket is not what is compared) for
  base     the base weights
  expert   every request on one expert
  spread   requests spread over 3 experts and 2 mixtures of them
  auto     `MODEL:auto` (pass 1 with --adapt picks the expert; its milliseconds are reported)
and the same base/expert/spread load through one-expert-at-a-time weight swapping (`swap-*`):
requests grouped by expert, the group's weights composed into the model (cached), the group
generated as one batch, the next group after it — what serving SVF experts costs without per-row
scales. `--max-prefill` repeats each engine run with that many new prompts prefilled as one batch
at most (1: one at a time; all: every request admitted in a step), back to back on the same
engine. `--per-row` repeats the engine runs for each per-row form (exact: the default of
`t2 serve`; factorised: `t2 serve --per-row factorised`), one engine after the other on the same
loaded model. Reports aggregate output tokens/s and p50/p99 time to first token per run, writes
bench/results/serve.json (and serve.png with --plot).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import queue
import statistics
import threading
import time
from pathlib import Path

import torch

from t2cli.adapt import DenseAdapter, ExpertSwitch
from t2cli.expert import mix
from t2cli.generation import GenerationConfig, chat_prompt, generate
from t2cli.serve.engine import Adaptation, Chosen, Failed, Finished, Sampling, Text

PROMPTS = (
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "Write a Python function is_even(n) that returns True when n is even.",
    "Which of these is a mammal? (A) shark (B) dolphin (C) trout (D) octopus",
    "Write a two-line poem about the sea.",
    "What is 17 times 3?",
    "Explain what a hash table is in one sentence.",
)


def kinds(experts: list[str]) -> dict[str, list[Adaptation]]:
    """The adaptation of each request of a run, cycled over the requests."""
    a, b, c = (experts * 3)[:3]
    return {
        "base": [Adaptation()],
        "expert": [Adaptation(expert=a)],
        "spread": [
            Adaptation(expert=a),
            Adaptation(expert=b),
            Adaptation(expert=c),
            Adaptation(mix={a: 0.6, b: 0.4}),
            Adaptation(mix={b: 0.5, c: 0.5}),
        ],
        "auto": [Adaptation(auto=True)],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


class SwapServer:
    """One expert at a time: queued requests grouped by expert, weights composed in, one batch each."""

    def __init__(self, loaded, store, experts: dict, max_batch: int, max_tokens: int):
        self.loaded, self.experts, self.max_batch, self.max_tokens = loaded, experts, max_batch, max_tokens
        self.switch = ExpertSwitch(DenseAdapter(loaded, store), capacity=8)
        self.requests: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def submit(self, prompt: str, adaptation: Adaptation, listener) -> None:
        self.requests.put((prompt, adaptation, listener, time.perf_counter()))

    def _expert(self, adaptation: Adaptation):
        if adaptation.mix:
            names = sorted(adaptation.mix)
            return mix([self.experts[n] for n in names], [adaptation.mix[n] for n in names], name=adaptation.label)
        return self.experts[adaptation.expert] if adaptation.expert else None

    def _loop(self) -> None:
        while True:
            waiting = [self.requests.get()]
            while not self.requests.empty():
                waiting.append(self.requests.get())
            groups: dict[str, list] = {}
            for item in waiting:
                groups.setdefault(item[1].label, []).append(item)
            for items in groups.values():
                self.switch.use(self._expert(items[0][1]))
                for start in range(0, len(items), self.max_batch):
                    batch = items[start : start + self.max_batch]
                    first: list[float] = []

                    def mark(ids, scores, first=first):
                        if not first:
                            first.append(time.perf_counter())
                        return scores

                    from transformers import LogitsProcessorList

                    config = GenerationConfig(max_new_tokens=self.max_tokens, batch_size=self.max_batch)
                    prompts = [p for p, _, _, _ in batch]
                    done = _generate_marked(self.loaded, prompts, config, LogitsProcessorList([mark]))
                    for (_, _, listener, _), completion in zip(batch, done):
                        listener(("first", first[0]))
                        listener(("done", completion.num_new_tokens))


def _generate_marked(loaded, prompts, config, processors):
    """generation.generate with a logits processor that notes the first token's time."""
    original = loaded.model.generate

    def generate_with(*args, **kwargs):
        return original(*args, logits_processor=processors, **kwargs)

    loaded.model.generate = generate_with
    try:
        return generate(loaded, prompts, config)
    finally:
        del loaded.model.generate


def run(submit, clients: int, requests: int, adaptations: list[Adaptation], time_limit: float) -> dict:
    """`clients` threads, each sending one request at a time, `requests` in all (or until the limit)."""
    counter = itertools.count()
    ttft: list[float] = []
    tokens: list[int] = []
    pass1_ms: list[float] = []
    lock = threading.Lock()
    started = time.perf_counter()

    def client() -> None:
        while time.perf_counter() - started < time_limit:
            index = next(counter)
            if index >= requests:
                return
            prompt, adaptation = PROMPTS[index % len(PROMPTS)], adaptations[index % len(adaptations)]
            done = threading.Event()
            state: dict = {"sent": time.perf_counter()}

            def listen(event, state=state, done=done) -> None:
                if isinstance(event, tuple):  # the swap server's ("first", t) / ("done", n)
                    state["first" if event[0] == "first" else "tokens"] = event[1]
                    if event[0] == "done":
                        done.set()
                elif isinstance(event, Text):
                    state.setdefault("first", time.perf_counter())
                elif isinstance(event, Chosen):
                    if "pass1_ms" in event.info:
                        state["pass1_ms"] = event.info["pass1_ms"]
                elif isinstance(event, Finished | Failed):
                    state["tokens"] = event.usage["completion_tokens"] if isinstance(event, Finished) else 0
                    state.setdefault("first", time.perf_counter())
                    done.set()

            submit(prompt, adaptation, listen)
            done.wait()
            with lock:
                ttft.append(state["first"] - state["sent"])
                tokens.append(state["tokens"])
                if "pass1_ms" in state:
                    pass1_ms.append(state["pass1_ms"])

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    result = {
        "clients": clients,
        "requests": len(tokens),
        "output_tokens": sum(tokens),
        "seconds": round(wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "ttft_p50_s": round(percentile(ttft, 0.5), 4),
        "ttft_p99_s": round(percentile(ttft, 0.99), 4),
    }
    if pass1_ms:
        result["pass1_ms_p50"] = round(statistics.median(pass1_ms), 2)
        result["pass1_share_of_ttft"] = round(statistics.median(pass1_ms) / 1e3 / result["ttft_p50_s"], 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-m", "--model", default="smollm2-135m")
    parser.add_argument("--experts", default=None, help="three served experts (default: the registered ones)")
    parser.add_argument("--adapt", default="loglik", help="pass-1 strategy of the auto runs")
    parser.add_argument("--pass1-tokens", type=int, default=None, help="pass 1 reads the last N prompt tokens")
    parser.add_argument("--pass1-dtype", default=None, help="pass 1 on its own copy of the model in this dtype")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2, help="requests per client in each run (at least 4)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per run at most")
    parser.add_argument("--runs", default="base,expert,spread,auto,swap-base,swap-expert,swap-spread")
    parser.add_argument("--max-prefill", default="all", help="comma list of prompts per prefill at most (N or all)")
    parser.add_argument("--per-row", default="exact", help="comma list of per-row forms (exact, factorised)")
    parser.add_argument("--out", default="bench/results/serve.json")
    parser.add_argument("--plot", action="store_true")
    args = parser.parse_args()

    from t2cli.dispatch.table import strategy_options
    from t2cli.serve.engine import Engine, open_engine

    names = args.experts.split(",") if args.experts else None
    clients = [int(c) for c in args.clients.split(",")]
    forms = args.per_row.split(",")
    pass1_values = {"request_tokens": args.pass1_tokens, "pass1_dtype": args.pass1_dtype}
    pass1_options = strategy_options(args.adapt, pass1_values)
    engine, skipped = open_engine(
        args.model,
        names,
        args.adapt,
        strategy_options=pass1_options,
        device="cpu" if not torch.cuda.is_available() else "auto",
        max_batch=max(clients),
        per_row=forms[0],
    )
    experts = list(engine.experts)
    if not experts:
        raise SystemExit(f"no experts registered for {engine.loaded.name}")
    loaded, store = engine.loaded, engine.rows_model.store
    served = dict(engine.experts)
    by_kind = kinds(experts)
    sampling = Sampling(max_tokens=args.max_tokens, temperature=0)
    prompt_ids = {p: engine.chat_ids([{"role": "user", "content": p}]) for p in PROMPTS}
    results: list[dict] = []
    wanted = args.runs.split(",")
    for form in forms:
        if form != engine.rows_model.form:  # the next form's engine on the same model and experts
            engine = Engine(
                loaded,
                store,
                served,
                strategy=args.adapt,
                strategy_options=pass1_options,
                max_batch=max(clients),
                per_row=form,
            ).start()

        def submit_engine(prompt, adaptation, listen, engine=engine):
            engine.submit(prompt_ids[prompt], sampling, adaptation, listen, user_text=prompt)

        prefills = [engine.max_batch if p == "all" else int(p) for p in args.max_prefill.split(",")]
        for kind in [k for k in wanted if not k.startswith("swap-")]:
            for n in clients:
                for max_prefill in prefills:
                    engine.max_prefill = max_prefill
                    row = {"run": kind} | run(
                        submit_engine, n, max(4, n * args.requests), by_kind[kind], args.time_limit
                    )
                    if len(prefills) > 1:
                        row["max_prefill"] = max_prefill
                    if len(forms) > 1:
                        row["per_row"] = form
                    print(json.dumps(row), flush=True)
                    results.append(row)
        engine.stop()  # the model's own modules are back: the next engine or the swap server uses them
    swap_kinds = [k.removeprefix("swap-") for k in wanted if k.startswith("swap-")]
    if swap_kinds:
        swap = SwapServer(loaded, store, served, max_batch=max(clients), max_tokens=args.max_tokens)
        texts = {p: chat_prompt(loaded.tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS}

        def submit_swap(prompt, adaptation, listen):
            swap.submit(texts[prompt], adaptation, listen)

        for kind in swap_kinds:
            for n in clients:
                row = {"run": f"swap-{kind}"} | run(
                    submit_swap, n, max(4, n * args.requests), by_kind[kind], args.time_limit
                )
                print(json.dumps(row), flush=True)
                results.append(row)
    payload = {
        "model": loaded.name,
        "device": str(loaded.device),
        "machine": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "max_tokens": args.max_tokens,
        "experts": experts,
        "adapt": args.adapt,
        "pass1_tokens": args.pass1_tokens,
        "pass1_dtype": args.pass1_dtype,
        "per_row": forms,
        "skipped": skipped,
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")
    if args.plot:
        plot(results, Path(args.out).with_suffix(".png"))


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))

    def name(row: dict) -> str:
        label = row["run"] + (f" prefill≤{row['max_prefill']}" if "max_prefill" in row else "")
        return label + (f" ({row['per_row']})" if "per_row" in row else "")

    for run_name in dict.fromkeys(name(r) for r in results):
        rows = [r for r in results if name(r) == run_name]
        style = "--" if run_name.startswith("swap-") else "-"
        left.plot([r["clients"] for r in rows], [r["tokens_per_s"] for r in rows], style, marker="o", label=run_name)
        right.plot([r["clients"] for r in rows], [r["ttft_p50_s"] for r in rows], style, marker="o", label=run_name)
    left.set(xlabel="concurrent clients", ylabel="output tokens/s", xscale="log")
    right.set(xlabel="concurrent clients", ylabel="p50 time to first token (s)", xscale="log", yscale="log")
    left.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
