"""`gguf-engine serve`: an OpenAI-compatible HTTP server (FastAPI, uvicorn, sse-starlette: the
'server' extra, which importing this module needs).

One engine thread owns the model and runs its Scheduler: a request joins the running batch at
the next step and leaves when it finishes; a client that disconnects is cancelled and frees its
slot at the next step. Requests beyond the free slots wait in a bounded queue (past it: 503).
The event loop never touches the model: pieces cross from the engine thread through
`loop.call_soon_threadsafe` into a per-request asyncio queue.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .chat import ChatTemplateError
from .defaults import SAMPLING
from .scheduler import Scheduler, Sequence
from .text_split import ReasoningSplitter, ReasoningText
from .transformer import ContextOverflowError

DEFAULT_PORT = 8080
DEFAULT_QUEUE = 64  # requests that may wait for a slot before the server answers 503
# An idle keep-alive connection is closed after this long: longer than the clients' own idle
# expiry (httpx's and so the openai client's: 5 s). With uvicorn's default, also 5 s, a client
# could send on a connection the server was closing ("Server disconnected without sending a
# response"; measured: 9 of 480 requests when both times are equal, none when the server's is
# longer).
KEEP_ALIVE_S = 30


class APIError(Exception):
    """An OpenAI-style error response."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


@dataclass
class _Request:
    seq: Sequence
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def push(self, item) -> None:  # from the engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


_DONE = object()


class Engine:
    """The thread that runs the model's scheduler for the server."""

    def __init__(self, model, max_queue: int = DEFAULT_QUEUE):
        self.model = model
        self.sched = Scheduler(model.net)
        self.max_queue = max_queue
        self._requests: dict[int, _Request] = {}  # id(sequence) -> its request
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="gguf-engine-scheduler",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def submit(self, seq: Sequence) -> _Request:
        with self._wake:
            if len(self.sched.waiting) >= self.max_queue:
                raise APIError(503, f"the server is busy: {self.max_queue} requests are already "
                               "waiting for a slot; retry later", "server_busy")
            req = _Request(seq, asyncio.get_running_loop())
            seq.on_pieces = req.push
            self._requests[id(seq)] = req
            self.sched.add(seq)
            self._wake.notify()
        return req

    def _run(self) -> None:
        hold = None
        while True:
            with self._wake:
                while not self.sched.busy and not self._stop:
                    if hold is not None:  # idle: other callers of the model may have it
                        self.model._release(hold)
                        hold = None
                    self._wake.wait()
                if self._stop:
                    break
            if hold is None:
                hold = self.model._acquire()
            try:
                ended = self.sched.step()
            except Exception as e:  # a bug, not a request's fault: end every request with it
                ended = [req.seq for req in self._requests.values()]
                for seq in ended:
                    seq.error, seq.done = e, True
            with self._wake:
                # after a failed step the scheduler may still hold sequences already ended
                finished = [r for r in (self._requests.pop(id(s), None) for s in ended) if r]
            for req in finished:
                req.push(_DONE)
        for req in self._requests.values():
            req.seq.cancelled = True
            req.push(_DONE)
        if hold is not None:
            self.model._release(hold)


# -- requests --------------------------------------------------------------------------------

_FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop",
           "grammar": "stop", "tool_calls": "tool_calls"}


def _field(body: dict, name: str, kind, default=None, check=None, what: str = ""):
    """body[name] checked: of `kind` (a type or tuple), and `check(value)` true."""
    value = body.get(name)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (
        kind if isinstance(kind, tuple) else (kind,)))
    if not ok or (check is not None and not check(value)):
        raise APIError(400, f"invalid '{name}': {value!r} is not {what}", param=name)
    return value


def _sampling(body: dict, chat: bool) -> dict:
    """The generate keywords of a request; unset fields take generate's defaults."""
    number = (int, float)
    max_tokens = _field(body, "max_completion_tokens" if chat else "max_tokens", int,
                        check=lambda v: v >= 1, what="an integer >= 1")
    if max_tokens is None:
        max_tokens = _field(body, "max_tokens", int, SAMPLING["max_tokens"], lambda v: v >= 1,
                            "an integer >= 1")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and len(stop) <= 16 and all(
            isinstance(s, str) and s for s in stop)):
        raise APIError(400, "invalid 'stop': a string or a list of up to 16 non-empty strings",
                       param="stop")
    kw = {
        "max_tokens": max_tokens,
        "temperature": _field(body, "temperature", number, SAMPLING["temperature"],
                              lambda v: 0 <= v <= 2, "a number from 0 to 2"),
        "top_p": _field(body, "top_p", number, SAMPLING["top_p"], lambda v: 0 < v <= 1,
                        "a number in (0, 1]"),
        "top_k": _field(body, "top_k", int, SAMPLING["top_k"], lambda v: v >= 0,
                        "an integer >= 0"),
        "min_p": _field(body, "min_p", number, SAMPLING["min_p"], lambda v: 0 <= v <= 1,
                        "a number from 0 to 1"),
        "presence_penalty": _field(body, "presence_penalty", number,
                                   SAMPLING["presence_penalty"], lambda v: -2 <= v <= 2,
                                   "a number from -2 to 2"),
        "frequency_penalty": _field(body, "frequency_penalty", number,
                                    SAMPLING["frequency_penalty"], lambda v: -2 <= v <= 2,
                                    "a number from -2 to 2"),
        "seed": _field(body, "seed", int, None, None, "an integer"),
        "stop": stop or (),
    }
    n = _field(body, "n", int, 1, lambda v: v == 1, "1 (one choice per request)")
    del n
    # constraints: OpenAI's response_format; llama-server's grammar (GBNF) and json_schema
    fmt = _field(body, "response_format", dict, None, None, "an object")
    if fmt is None and (schema := _field(body, "json_schema", dict, None, None, "an object")):
        fmt = {"type": "json_schema", "json_schema": {"schema": schema}}
    kw["response_format"] = fmt
    kw["grammar"] = _field(body, "grammar", str, None, None, "a string (a GBNF grammar)")
    if chat:
        if _field(body, "logprobs", bool, False, None, "a boolean"):
            kw["logprobs"] = _field(body, "top_logprobs", int, 0, lambda v: 0 <= v <= 20,
                                    "an integer from 0 to 20")
    else:
        lp = _field(body, "logprobs", int, None, lambda v: 0 <= v <= 5, "an integer from 0 to 5")
        if lp is not None:
            kw["logprobs"] = lp
    return kw


def _usage(res) -> dict:
    p, c = len(res.prompt_tokens), len(res.tokens)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _chat_logprobs(entries) -> dict | None:
    if entries is None:
        return None
    return {"content": [{"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"],
                         "top_logprobs": [{"token": t["token"], "logprob": t["logprob"],
                                           "bytes": t["bytes"]} for t in e["top_logprobs"]]}
                        for e in entries]}


def _completion_logprobs(entries, text_offset: int = 0) -> dict | None:
    if entries is None:
        return None
    offsets, pos = [], text_offset
    for e in entries:
        offsets.append(pos)
        pos += len(e["token"])
    return {"tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]}
                             for e in entries],
            "text_offset": offsets}


# -- the application -------------------------------------------------------------------------

def create_app(model, alias: str, api_key: str | None = None, max_queue: int = DEFAULT_QUEUE):
    """The FastAPI application serving `model` under the name `alias`."""
    engine = Engine(model, max_queue)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="gguf-engine", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        first = exc.errors()[0] if exc.errors() else {}
        err = APIError(400, f"invalid request: {first.get('msg', 'malformed body')}")
        return JSONResponse(err.body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        err = APIError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}",
                       kind)
        return JSONResponse(err.body(), status_code=exc.status_code)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                err = APIError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                               "authentication_error", code="invalid_api_key")
                return JSONResponse(err.body(), status_code=401)
        return await call_next(request)

    async def read_body(request: Request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        name = body.get("model")
        if name is not None and name != alias:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                           f"{alias!r}", "invalid_request_error", "model", "model_not_found")
        return body

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": alias, "object": "model", "created": created,
                                            "owned_by": "gguf-engine"}]}

    async def make_sequence(make):
        """make() off the event loop (templates render, prompts tokenize and constraints
        compile there), its errors as 400s."""
        try:
            return await run_in_threadpool(make)
        except ContextOverflowError as e:
            raise APIError(400, str(e), code="context_length_exceeded") from None
        except ChatTemplateError as e:
            raise APIError(400, f"chat template: {e}") from None
        except (ValueError, TypeError) as e:
            raise APIError(400, str(e)) from None

    def include_usage(body) -> bool:
        opts = body.get("stream_options")
        return isinstance(opts, dict) and opts.get("include_usage") is True

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not (isinstance(prompt, str) and prompt) and not (
                isinstance(prompt, list) and prompt and all(
                    isinstance(t, int) and not isinstance(t, bool) for t in prompt)):
            raise APIError(400, "'prompt' must be a non-empty string or a list of token ids",
                           param="prompt")
        kw = _sampling(body, chat=False)
        seq = await make_sequence(lambda: model.sequence(prompt, **kw))
        rid = f"cmpl-{secrets.token_hex(12)}"

        def envelope(choice, usage=None):
            out = {"id": rid, "object": "text_completion", "created": int(time.time()),
                   "model": alias, "choices": [choice] if choice else []}
            if usage is not None:
                out["usage"] = usage
            return out

        req = engine.submit(seq)
        if body.get("stream"):
            async def events():
                async for pieces in _pieces(req, request):
                    for p in pieces:
                        yield json.dumps(envelope({"index": 0, "text": p, "logprobs": None,
                                                   "finish_reason": None}))
                if (error := _failed(req)) is not None:
                    yield error
                    yield "[DONE]"
                    return
                res = _result(req)
                yield json.dumps(envelope({"index": 0, "text": "", "logprobs": None,
                                           "finish_reason": _FINISH[res.finish_reason]}))
                if include_usage(body):
                    yield json.dumps(envelope(None, _usage(res)))
                yield "[DONE]"
            return EventSourceResponse(events(), ping=15)
        async for _ in _pieces(req, request):
            pass
        res = _result(req)
        return envelope({"index": 0, "text": res.text,
                         "logprobs": _completion_logprobs(res.logprobs),
                         "finish_reason": _FINISH[res.finish_reason]}, _usage(res))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        tools = _field(body, "tools", list, None, None, "a list")
        tool_choice = _field(body, "tool_choice", (str, dict), None, None,
                             "'auto', 'none', 'required' or an object")
        kwargs = body.get("chat_template_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise APIError(400, "'chat_template_kwargs' must be an object")
        kw = _sampling(body, chat=True)
        seq, turn = await make_sequence(lambda: model.chat_sequence(
            messages, tools=tools, tool_choice=tool_choice, template_kwargs=kwargs, **kw))
        rid = f"chatcmpl-{secrets.token_hex(12)}"

        def envelope(choice, usage=None, chunk=False):
            out = {"id": rid, "object": "chat.completion.chunk" if chunk else "chat.completion",
                   "created": int(time.time()), "model": alias,
                   "choices": [choice] if choice else []}
            if usage is not None:
                out["usage"] = usage
            return out

        def deltas(pieces):
            for part in pieces:
                key = "reasoning_content" if isinstance(part, ReasoningText) else "content"
                yield {key: str(part)}

        def delta_chunk(d):
            return json.dumps(envelope({"index": 0, "delta": d, "logprobs": None,
                                        "finish_reason": None}, chunk=True))

        req = engine.submit(seq)
        if body.get("stream"):
            splitter = ReasoningSplitter(turn.opens_reasoning)
            # with tools the reply is held until it is whole: only then is it known to be a
            # tool call or text
            held = turn.tool_form is not None

            async def events():
                yield delta_chunk({"role": "assistant", "content": ""})
                async for pieces in _pieces(req, request):
                    if not held:
                        for d in deltas(p for piece in pieces for p in splitter.push(piece)):
                            yield delta_chunk(d)
                if (error := _failed(req)) is not None:
                    yield error
                    yield "[DONE]"
                    return
                res = _result(req)
                if held:
                    res = turn.reply(res)
                    for d in _message_deltas(res):
                        yield delta_chunk(d)
                else:
                    for d in deltas(splitter.flush()):
                        yield delta_chunk(d)
                yield json.dumps(envelope({"index": 0, "delta": {}, "logprobs": None,
                                           "finish_reason": _FINISH[res.finish_reason]},
                                          chunk=True))
                if include_usage(body):
                    yield json.dumps(envelope(None, _usage(res), chunk=True))
                yield "[DONE]"
            return EventSourceResponse(events(), ping=15)
        async for _ in _pieces(req, request):
            pass
        res = turn.reply(_result(req))
        message = {"role": "assistant", "content": (res.text or None) if res.tool_calls
                   else res.text}
        if res.reasoning is not None:
            message["reasoning_content"] = res.reasoning
        if res.tool_calls:
            message["tool_calls"] = res.tool_calls
        return envelope({"index": 0, "message": message,
                         "logprobs": _chat_logprobs(res.logprobs),
                         "finish_reason": _FINISH[res.finish_reason]}, _usage(res))

    return app


def _message_deltas(res):
    """The stream deltas of a whole reply: reasoning, content, then each tool call."""
    if res.reasoning is not None:
        yield {"reasoning_content": res.reasoning}
    if res.text:
        yield {"content": res.text}
    for i, call in enumerate(res.tool_calls or ()):
        yield {"tool_calls": [{"index": i, **call}]}


async def _pieces(req: _Request, request):
    """The request's text pieces as the engine makes them; a client that goes away cancels
    its sequence (the engine frees the slot at its next step)."""
    checked = time.monotonic()
    try:
        while True:
            try:
                item = await asyncio.wait_for(req.queue.get(), timeout=0.5)
            except TimeoutError:
                item = None
            if item is _DONE:
                return
            if time.monotonic() - checked > 0.5:
                checked = time.monotonic()
                if await request.is_disconnected():
                    return
            if item is not None:
                yield item
    finally:
        if not req.seq.done:
            req.seq.cancelled = True


def _failed(req: _Request) -> str | None:
    """The JSON error event of a stream whose generation failed."""
    if req.seq.error is None:
        return None
    return json.dumps(APIError(500, f"generation failed: {req.seq.error}", "server_error").body())


def _result(req: _Request):
    seq = req.seq
    if seq.error is not None:
        raise APIError(500, f"generation failed: {seq.error}", "server_error")
    return seq.result()


def serve(model, host: str = "127.0.0.1", port: int = DEFAULT_PORT, alias: str = "model",
          api_key: str | None = None, max_queue: int = DEFAULT_QUEUE) -> None:
    """Run the server until interrupted."""
    import uvicorn

    uvicorn.Server(uvicorn_config(create_app(model, alias, api_key, max_queue), host,
                                  port)).run()


def uvicorn_config(app, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                   log_level: str = "info"):
    """The uvicorn configuration the server runs with (tests and benchmarks start it too)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          timeout_keep_alive=KEEP_ALIVE_S)
