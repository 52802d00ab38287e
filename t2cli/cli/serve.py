"""`t2 serve`: an OpenAI-compatible server where every request names its expert (or `:auto`).

    t2 serve --experts math,code --adapt loglik
    openai client: base_url="http://127.0.0.1:8000/v1", model="smollm2-135m:math" (or ":auto")

Loopback by default; another address needs --api-key. SIGTERM or Ctrl-C: stop accepting, let
in-flight requests finish within --shutdown-deadline seconds, exit 0.
"""

from __future__ import annotations

import typer

from t2cli.cli import common
from t2cli.cli.common import (
    PASS1_DTYPE_HELP,
    PASS1_TOKENS_HELP,
    console,
    expert_names,
    fail,
    progress_bar,
    user_errors,
)
from t2cli.defaults import DEFAULT_MODEL
from t2cli.dispatch.table import strategy_names


def serve_command(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Embedded model name, local directory or Hub id."),
    experts: str = typer.Option(
        None, "--experts", help="Experts to serve, comma-separated (default: all but the classifier)."
    ),
    adapt: str = typer.Option(
        None, "--adapt", "-a", help=f"Pass-1 strategy of MODEL:auto ({', '.join(strategy_names())}); none: no :auto."
    ),
    pass1_tokens: int = typer.Option(None, "--pass1-tokens", min=1, help=PASS1_TOKENS_HELP),
    pass1_dtype: str = typer.Option(None, "--pass1-dtype", help=PASS1_DTYPE_HELP),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (not loopback: needs --api-key)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port to listen on."),
    api_key: str = typer.Option(
        None, "--api-key", envvar="T2_API_KEY", help="Require `Authorization: Bearer KEY` (env T2_API_KEY)."
    ),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Requests decoded together at most."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Requests waiting at most (more: HTTP 429)."),
    per_row: str = typer.Option(
        "exact",
        "--per-row",
        help="How a batch applies each row's expert: exact (the outputs of `t2 eval --expert`, up to rounding) "
        "or factorised (reads the SVD factors instead of the weights: faster decoding, logits within a few "
        "1e-4, so greedy text can differ where two tokens are that close).",
    ),
    shutdown_deadline: float = typer.Option(
        30.0, "--shutdown-deadline", min=0, help="Seconds in-flight requests get to finish on SIGTERM."
    ),
    dtype: str = common.dtype_option(),
    device: str = common.device_option(),
) -> None:
    """Serve the model and its experts over an OpenAI-compatible HTTP API, mixed experts in one batch."""
    from t2cli.dispatch.table import strategy_options
    from t2cli.serve.app import check_bind, create_app, make_server
    from t2cli.serve.engine import open_engine

    with user_errors():
        check_bind(host, api_key)
        pass1_values = {"request_tokens": pass1_tokens, "pass1_dtype": pass1_dtype}
        if not adapt and any(v is not None for v in pass1_values.values()):
            fail("--pass1-tokens and --pass1-dtype configure MODEL:auto's pass 1: give --adapt STRATEGY too")
        options = strategy_options(adapt, pass1_values) if adapt else None
        with progress_bar("SVD of the targeted matrices (first use only)") as update:
            engine, skipped = open_engine(
                model,
                expert_names(experts),
                adapt,
                strategy_options=options,
                dtype=dtype,
                device=device,
                max_batch=max_batch,
                max_queue=max_queue,
                per_row=per_row,
                progress=update,
            )
    for line in skipped:
        console.print(f"[yellow]not served[/] {line}")
    name = engine.loaded.name
    served = [name, *([f"{name}:auto"] if engine.pass1 else []), *(f"{name}:{e}" for e in engine.experts)]
    console.print(f"serving {', '.join(served)} on http://{host}:{port}/v1 (max batch {max_batch}, queue {max_queue})")
    server = make_server(create_app(engine, api_key=api_key), host, port, shutdown_deadline_s=shutdown_deadline)
    try:
        server.run()
    finally:
        drained = engine.stop(deadline_s=shutdown_deadline)
    if not server.started:
        fail(f"could not listen on {host}:{port} (address in use?)")
    console.print("stopped" + ("" if drained else " (requests still running at the deadline were cancelled)"))
