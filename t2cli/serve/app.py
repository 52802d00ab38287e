"""The OpenAI-compatible HTTP surface of the engine (FastAPI), and running it with uvicorn.

Routes: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (streamed as server-sent
events ending in `data: [DONE]`, or not), GET /health, GET /metrics (Prometheus text).

The `model` field names the weights: `MODEL` (the base), `MODEL:EXPERT` (a served expert) or
`MODEL:auto` (pass 1 picks the expert; the choice comes back in a `t2` object and the
`x-t2-expert` header). A request may carry a mixture of served experts instead:
`{"t2": {"mix": {"math": 0.6, "code": 0.4}}}` (the openai client's `extra_body`).

Every error is OpenAI's envelope `{"error": {"message", "type", "param", "code"}}` with the
status a client expects (400 bad input, 401 key, 404 unknown model, 429 queue full); nothing a
client sends produces a 500 or a traceback. A client that disconnects, streamed or not, cancels
its request: its slot in the batch is free at the next step.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from t2cli.serve.engine import Engine
from t2cli.serve.requests import (
    Adaptation,
    Event,
    Failed,
    Finished,
    Handle,
    PromptTooLong,
    QueueFull,
    Sampling,
    ServeError,
    Text,
    UnknownExpert,
)

AUTO = "auto"
EXPERT_HEADER = "x-t2-expert"
PASS1_HEADER = "x-t2-pass1-ms"


class ClientGone(Exception):
    """The client disconnected before its answer was ready (its request, if queued, is cancelled)."""


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param=None, code=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# --------------------------------------------------------------------------- request bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields of other servers are accepted and ignored

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # None: 1, as OpenAI
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: dict | None = None
    t2: dict | None = None


class _Message(BaseModel):
    role: str
    content: str | list[dict] | None = None


class ChatBody(_Body):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_Body):
    prompt: str | list[str] | list[int]


def _text_of(content: str | list[dict] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, "only text content parts are supported", param="messages")
        parts.append(part["text"])
    return "".join(parts)


async def _parse(request: Request, body_type: type[_Body]) -> _Body:
    try:
        data = json.loads(await request.body())
    except ClientDisconnect:
        raise ClientGone() from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise APIError(400, f"the request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return body_type.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param) from None


# --------------------------------------------------------------------------- the state


@dataclass(frozen=True)
class ServeState:
    """What the routes share, kept in `app.state.t2`: the engine and the names it answers to."""

    engine: Engine
    api_key: str | None
    base: str  # the model name of the base weights; experts are `base:EXPERT`
    created: int  # the `created` stamp of every listed model

    def model_ids(self) -> list[tuple[str, str | None]]:
        """(id, parent) of every served model: the base, `base:auto` with --adapt, each expert."""
        ids = [(self.base, None)]
        if self.engine.pass1 is not None:
            ids.append((f"{self.base}:{AUTO}", self.base))
        ids += [(f"{self.base}:{name}", self.base) for name in self.engine.experts]
        return ids


def serve_state(request: Request) -> ServeState:
    return request.app.state.t2


StateDep = Annotated[ServeState, Depends(serve_state)]


# --------------------------------------------------------------------------- running a request


def _adaptation_of(state: ServeState, body: _Body) -> Adaptation:
    """The weights the `model` field (and `t2.mix`) names; 404 for a model not served."""
    name, _, suffix = body.model.partition(":")
    if name != state.base or (suffix and suffix != AUTO and suffix not in state.engine.experts):
        raise APIError(404, f"The model `{body.model}` does not exist.", param="model", code="model_not_found")
    if suffix == AUTO and state.engine.pass1 is None:
        raise APIError(
            404, f"The model `{body.model}` does not exist (no --adapt).", param="model", code="model_not_found"
        )
    mixture = (body.t2 or {}).get("mix")
    if mixture is not None:
        if suffix:
            raise APIError(400, "t2.mix applies to the base model name only", param="t2.mix")
        if not isinstance(mixture, dict) or not mixture:
            raise APIError(400, "t2.mix must be an object {expert: weight}", param="t2.mix")
        return Adaptation(mix=mixture)
    if suffix == AUTO:
        return Adaptation(auto=True)
    return Adaptation(expert=suffix or None)


def _sampling_of(body: _Body, max_tokens: int | None) -> Sampling:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    return Sampling(max_tokens, temperature, top_p, body.seed, tuple(s for s in stop if s))


def _submit(
    engine: Engine,
    prompt_ids: list[int],
    sampling: Sampling,
    adaptation: Adaptation,
    user_text: str,
    chat: bool,
) -> tuple[Handle, asyncio.Queue]:
    """Queue the request on the engine; its events arrive on the returned queue, in this loop."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def listen(event: Event) -> None:
        loop.call_soon_threadsafe(events.put_nowait, event)

    try:
        handle = engine.submit(prompt_ids, sampling, adaptation, listen, user_text)
    except QueueFull as error:
        raise APIError(429, str(error), kind="rate_limit_error", code="rate_limit_exceeded") from None
    except PromptTooLong as error:
        raise APIError(
            400, str(error), param="messages" if chat else "prompt", code="context_length_exceeded"
        ) from None
    except UnknownExpert as error:
        raise APIError(404, str(error), param="model", code="model_not_found") from None
    except ServeError as error:
        raise APIError(400, str(error), param="t2.mix" if adaptation.mix else None) from None
    return handle, events


async def _cancel_on_disconnect(request: Request, handle: Handle) -> None:
    """Wait for the client to disconnect and cancel its request (the engine then ends it)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    handle.cancel()


async def _chosen(events: asyncio.Queue, handle: Handle) -> dict:
    """The first event: the weights chosen for the request (or why it failed before any text)."""
    try:
        first = await events.get()
    except asyncio.CancelledError:
        handle.cancel()
        raise
    if isinstance(first, Failed):
        raise APIError(500 if first.message.startswith("internal") else 400, first.message, kind="server_error")
    if isinstance(first, Finished):  # cancelled while it waited in the queue
        raise ClientGone()
    return first.info


def _t2_headers(chosen: dict) -> dict[str, str]:
    headers = {EXPERT_HEADER: str(chosen.get("expert") or chosen.get("label") or "base")}
    if "pass1_ms" in chosen:
        headers[PASS1_HEADER] = str(chosen["pass1_ms"])
    return headers


async def _collect(events: asyncio.Queue, handle: Handle) -> tuple[str, Finished]:
    """The whole text of a request that is not streamed, and how it finished."""
    parts: list[str] = []
    try:
        while True:
            event = await events.get()
            if isinstance(event, Text):
                parts.append(event.text)
            elif isinstance(event, Finished | Failed):
                break
    finally:
        handle.cancel()
    if isinstance(event, Failed):
        raise APIError(500, event.message, kind="server_error")
    if event.reason == "cancelled":
        raise ClientGone()
    return "".join(parts), event


async def _stream(
    events: asyncio.Queue,
    handle: Handle,
    ident: str,
    stamp: int,
    model: str,
    chat: bool,
    chosen: dict,
    usage_wanted: bool,
) -> AsyncIterator[str]:
    """Server-sent events: a chunk per piece of text, the finish reason, the usage, [DONE]."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(piece: str | None, reason: str | None = None, first: bool = False) -> str:
        if chat:
            delta = {"role": "assistant", "content": piece or ""} if first else ({"content": piece} if piece else {})
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": piece or "", "finish_reason": reason, "logprobs": None}
        payload = {"id": ident, "object": kind, "created": stamp, "model": model, "choices": [choice]}
        if first:
            payload["t2"] = chosen
        if usage_wanted:
            payload["usage"] = None
        return f"data: {json.dumps(payload)}\n\n"

    try:
        if chat:
            yield chunk(None, first=True)
        while True:
            event = await events.get()
            if isinstance(event, Text):
                yield chunk(event.text)
            elif isinstance(event, Finished):
                yield chunk(None, event.reason)
                if usage_wanted:
                    payload = {
                        "id": ident,
                        "object": kind,
                        "created": stamp,
                        "model": model,
                        "choices": [],
                        "usage": event.usage,
                    }
                    yield f"data: {json.dumps(payload)}\n\n"
                break
            elif isinstance(event, Failed):
                error = {"error": {"message": event.message, "type": "server_error", "param": None, "code": None}}
                yield f"data: {json.dumps(error)}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        handle.cancel()  # the client left (or the answer is complete): the slot is free at once


async def _run(
    request: Request,
    state: ServeState,
    body: _Body,
    prompt_ids: list[int],
    user_text: str,
    max_tokens: int | None,
    chat: bool,
) -> Response:
    """Answer a chat or text completion: a stream of server-sent events, or one JSON body.

    Until the answer starts, a watcher cancels the request when its client disconnects (a
    stream's response watches for that itself once it runs)."""
    adaptation = _adaptation_of(state, body)
    sampling = _sampling_of(body, max_tokens)
    handle, events = _submit(state.engine, prompt_ids, sampling, adaptation, user_text, chat)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, handle))
    try:
        chosen = await _chosen(events, handle)
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        stamp = int(time.time())
        if body.stream:
            watcher.cancel()
            usage_wanted = bool((body.stream_options or {}).get("include_usage"))
            stream = _stream(events, handle, ident, stamp, body.model, chat, chosen, usage_wanted)
            return StreamingResponse(stream, media_type="text/event-stream", headers=_t2_headers(chosen))
        text, end = await _collect(events, handle)
    finally:
        watcher.cancel()
    headers = _t2_headers(chosen)
    choice: dict[str, Any] = {"index": 0, "finish_reason": end.reason, "logprobs": None}
    choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
    payload = {
        "id": ident,
        "object": "chat.completion" if chat else "text_completion",
        "created": stamp,
        "model": body.model,
        "choices": [choice],
        "usage": end.usage,
        "t2": chosen,
    }
    return JSONResponse(payload, headers=headers)


# --------------------------------------------------------------------------- the routes

router = APIRouter()


@router.get("/health")
async def health(state: StateDep) -> dict:
    return {"status": "ok", "running": state.engine.running, "queued": state.engine.queued}


@router.get("/metrics")
async def metrics(state: StateDep) -> PlainTextResponse:
    engine = state.engine
    text = engine.metrics.render(running=engine.running, queued=engine.queued)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models")
async def models(state: StateDep) -> dict:
    data = [
        {
            "id": name,
            "object": "model",
            "created": state.created,
            "owned_by": "t2",
            "root": state.base,
            "parent": parent,
        }
        for name, parent in state.model_ids()
    ]
    return {"object": "list", "data": data}


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, state: StateDep) -> Response:
    body = await _parse(request, ChatBody)
    messages = [{"role": m.role, "content": _text_of(m.content)} for m in body.messages]
    users = [m["content"] for m in messages if m["role"] == "user"]
    try:
        ids = state.engine.chat_ids(messages)
    except Exception as error:  # a chat template that refuses these messages (roles, order)
        raise APIError(400, f"the model's chat template refused these messages: {error}", param="messages") from None
    user_text = users[-1] if users else messages[-1]["content"]
    return await _run(request, state, body, ids, user_text, body.max_completion_tokens or body.max_tokens, True)


@router.post("/v1/completions")
async def completions(request: Request, state: StateDep) -> Response:
    body = await _parse(request, CompletionBody)
    engine = state.engine
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) != 1:
            raise APIError(400, "one prompt per request (n=1)", param="prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids, text = engine.encode(prompt), prompt
    else:
        vocabulary = len(engine.tokenizer)
        if not prompt or any(not 0 <= token < vocabulary for token in prompt):
            raise APIError(400, f"token ids must lie in [0, {vocabulary})", param="prompt")
        ids, text = list(prompt), engine.tokenizer.decode(prompt)
    return await _run(request, state, body, ids, text, body.max_tokens or 16, False)


# --------------------------------------------------------------------------- errors and auth


async def api_error(request: Request, error: APIError) -> JSONResponse:
    return error.response()


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (an unknown route, a wrong method) in OpenAI's envelope."""
    return APIError(error.status_code, str(error.detail), code=error.status_code).response()


async def client_gone(request: Request, error: ClientGone) -> Response:
    return Response(status_code=499)  # nobody reads it: the client closed the connection


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    return APIError(500, "internal server error", kind="server_error").response()


async def authorise(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """With an API key set, every /v1 route requires `Authorization: Bearer KEY`."""
    api_key = serve_state(request).api_key
    if api_key and request.url.path.startswith("/v1"):
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            return APIError(401, "invalid or missing API key", param=None, code="invalid_api_key").response()
    return await call_next(request)


# --------------------------------------------------------------------------- the app


def create_app(engine: Engine, api_key: str | None = None, model_name: str | None = None) -> FastAPI:
    """The routes over a started engine. `api_key`: required as `Authorization: Bearer KEY` on /v1."""
    app = FastAPI(title="t2 serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.t2 = ServeState(engine, api_key, model_name or engine.loaded.name, int(time.time()))
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
    app.middleware("http")(authorise)
    app.include_router(router)
    return app


# --------------------------------------------------------------------------- running


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise ServeError(f"refusing to listen on {host} without --api-key (only loopback addresses may go without one)")


def make_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, shutdown_deadline_s: float = 30.0):
    """A uvicorn Server for the app: on SIGTERM/SIGINT it stops accepting, lets in-flight requests
    finish within `shutdown_deadline_s`, then returns from `run()` (a second Ctrl-C forces it)."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            # uvicorn's own handler re-raises the signal after the shutdown, which would end the
            # process with it: a requested stop is a normal exit here
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=shutdown_deadline_s, access_log=False
    )
    return Server(config)
