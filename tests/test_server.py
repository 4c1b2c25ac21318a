"""`gguf-engine serve` on Gemma 3 270M, live on 127.0.0.1, talked to with the official `openai`
client: chat and completion, streamed and not; 16 concurrent clients each get exactly what they
get alone; a client that disconnects frees its slot; bad requests get OpenAI-style 4xx errors and
the server goes on serving."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

import gguf_engine  # noqa: E402
from gguf_engine.server import create_app, uvicorn_config  # noqa: E402

N_SEQ = 8
ALIAS = "gemma-test"


@pytest.fixture(scope="module")
def server(gemma_path):
    """(base URL, model, app) of a server started here and stopped after the module."""
    model = gguf_engine.load(gemma_path, n_ctx=256, n_seq=N_SEQ)
    app = create_app(model, ALIAS, max_queue=32)
    srv = uvicorn.Server(uvicorn_config(app, port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (srv.started and srv.servers):
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", model, app
    srv.should_exit = True
    thread.join(timeout=30)
    assert not thread.is_alive()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="none", max_retries=0)


def ask(client, content, **kw):
    return client.chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": content}], max_tokens=16,
        temperature=0, **kw)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list()] == [ALIAS]
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}


def test_chat_streamed_equals_whole_and_usage_counts(server, client):
    model = server[1]
    messages = [{"role": "user", "content": "Name a color."}]
    whole = ask(client, "Name a color.")
    text = whole.choices[0].message.content
    chunks = list(ask(client, "Name a color.", stream=True,
                      stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text and text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert whole.usage.prompt_tokens == len(model.chat_prompt(messages))
    ref = model.chat(messages, max_tokens=16, temperature=0)
    assert text == ref.text and whole.usage.completion_tokens == len(ref.tokens)
    assert whole.choices[0].finish_reason == ("length" if ref.finish_reason == "length"
                                              else "stop")


def test_completion_streamed_equals_whole(server, client):
    model = server[1]
    prompt = "The capital of France is"
    whole = client.completions.create(model=ALIAS, prompt=prompt, max_tokens=16, temperature=0)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=ALIAS, prompt=prompt, max_tokens=16, temperature=0, stream=True) if c.choices)
    ref = model.generate(prompt, max_tokens=16, temperature=0)
    assert whole.choices[0].text == streamed == ref.text
    assert whole.usage.prompt_tokens == len(model.tokenize(prompt))
    assert whole.usage.completion_tokens == len(ref.tokens)


def test_sixteen_clients_get_what_they_get_alone(server, client):
    prompts = [f"Write a line about the number {i}." for i in range(16)]
    alone = [ask(client, p).choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda p: ask(client, p).choices[0].message.content, prompts))
    assert together == alone
    assert len(set(alone)) > 1


def test_a_client_that_disconnects_frees_its_slot(server, client):
    base, _, app = server
    engine = app.state.engine
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "Count to a hundred."}],
            "max_tokens": 200, "temperature": 0, "stream": True}
    others = ThreadPoolExecutor(2).map(lambda p: ask(client, p).choices[0].message.content,
                                       ["Say hi.", "Say bye."])
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # a few events, then hang up
    assert any(line.startswith("data: ") for line in got)
    assert list(others) == [ask(client, "Say hi.").choices[0].message.content,
                            ask(client, "Say bye.").choices[0].message.content]
    deadline = time.monotonic() + 10
    while len(engine.sched.free) != N_SEQ or engine.sched.active:
        assert time.monotonic() < deadline, "the slot was not freed"
        time.sleep(0.05)
    # every slot works afterwards
    with ThreadPoolExecutor(N_SEQ) as pool:
        assert all(pool.map(lambda i: ask(client, f"Say {i}.").choices[0].message.content,
                            range(N_SEQ)))


PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0,
                                                          "maximum": 120}},
    "required": ["name", "age"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 16}},
    "required": ["city"], "additionalProperties": False}}}


def test_response_format_through_the_openai_client(server, client):
    jsonschema = pytest.importorskip("jsonschema")
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    kw = dict(model=ALIAS, messages=[{"role": "user", "content": "A person, as JSON."}],
              max_tokens=60, temperature=0, response_format=fmt)
    whole = client.chat.completions.create(**kw)
    text = whole.choices[0].message.content
    jsonschema.validate(json.loads(text), PERSON)
    assert whole.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(stream=True, **kw) if c.choices)
    assert streamed == text
    # llama-server's fields on the completion route: json_schema and grammar
    done = client.completions.create(model=ALIAS, prompt="Yes or no?", max_tokens=8,
                                      temperature=0,
                                      extra_body={"grammar": 'root ::= "yes" | "no"'})
    assert done.choices[0].text in ("yes", "no")
    done = client.completions.create(model=ALIAS, prompt="A person:", max_tokens=60,
                                      temperature=0, extra_body={"json_schema": PERSON})
    jsonschema.validate(json.loads(done.choices[0].text), PERSON)


def test_tool_calls_through_the_openai_client(server, client):
    kw = dict(model=ALIAS, messages=[{"role": "user", "content": "Weather in Oslo?"}],
              max_tokens=60, temperature=0, tools=[WEATHER], tool_choice="required")
    whole = client.chat.completions.create(**kw)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.type == "function"
    args = json.loads(call.function.arguments)
    assert set(args) == {"city"} and isinstance(args["city"], str) and len(args["city"]) <= 16
    # streamed: the same call as tool_calls deltas
    chunks = [c for c in client.chat.completions.create(stream=True, **kw) if c.choices]
    deltas = [t for c in chunks for t in (c.choices[0].delta.tool_calls or ())]
    assert [(t.function.name, t.function.arguments) for t in deltas] == [
        (call.function.name, call.function.arguments)]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the tool's reply continues the chat
    history = kw["messages"] + [choice.message.model_dump(exclude_none=True),
                                {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    after = client.chat.completions.create(model=ALIAS, messages=history, tools=[WEATHER],
                                           max_tokens=8, temperature=0)
    assert after.choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                      "response_format": {"type": "xml"}}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                      "tool_choice": "required"}, 400),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                      "grammar": "root ::= nowhere"}, 400),
    ("POST", "/v1/chat/completions", b"{not json", 400),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": "ten"}, 400),
    ("POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "hi"}], "temperature": -0.5}, 400),
    ("GET", "/v1/no-such-route", None, 404),
    ("POST", "/v1/completions", {"prompt": "word " * 400}, 400),
    ("POST", "/v1/completions", {"prompt": "hi", "model": "gpt-4"}, 404),
    ("POST", "/v1/chat/completions", {"messages": "hi"}, 400),
])
def test_bad_requests_get_json_errors(server, method, path, body, status):
    base = server[0]
    content = body if isinstance(body, bytes) else None
    r = httpx.request(method, base + path, content=content,
                      json=None if content is not None or body is None else body, timeout=30)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["message"] and err["type"]
    assert httpx.get(base + "/health").json() == {"status": "ok"}
    # the official client sees the same as an exception of its own
    if path == "/v1/completions" and status == 400 and isinstance(body, dict):
        with pytest.raises(openai.BadRequestError):
            openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0).completions.create(
                model=ALIAS, **body)


def test_api_key(gemma_path):
    model = gguf_engine.load(gemma_path, n_ctx=64)
    from starlette.testclient import TestClient

    with TestClient(create_app(model, ALIAS, api_key="sesame")) as tc:
        assert tc.get("/v1/models").status_code == 401
        assert tc.get("/v1/models", headers={"Authorization": "Bearer sesame"}).json()[
            "data"][0]["id"] == ALIAS
        assert tc.get("/health").status_code == 200
        r = tc.post("/v1/completions", headers={"Authorization": "Bearer sesame"},
                    content=json.dumps({"prompt": "Hi", "max_tokens": 2, "temperature": 0}))
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
