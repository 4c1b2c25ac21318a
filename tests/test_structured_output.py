"""Structured output through llguidance: the sampler's mask against a float64 softmax over the
allowed tokens; JSON schemas on Gemma 3 270M validated with the `jsonschema` package; GBNF
grammars and regular expressions checked with Python's `re`; tool calls parsed and their
arguments validated against the tool's schema; bad constraints named in clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

jsonschema = pytest.importorskip("jsonschema")

import gguf_engine  # noqa: E402
from gguf_engine import tool_calls  # noqa: E402
from gguf_engine.constraints import Constraint, ConstraintError, grammar_text  # noqa: E402
from gguf_engine.sampling import Sampler, SamplingParams  # noqa: E402

QWEN_TOOLS_TEMPLATE = (Path(__file__).parent / "data" / "qwen2.5-tools.jinja").read_text()


@pytest.fixture(scope="module")
def gemma(gemma_path):
    # the exact route: the sampled outputs below (seed 0, temperature 0.8) were chosen on it;
    # on the integer route this base model's sampled JSON object about a cat runs past 256
    # tokens (valid so far, never closed), which says nothing about the grammar
    return gguf_engine.load(gemma_path, n_ctx=512, exact=True)


@pytest.fixture(scope="module")
def qwen2(fixtures):
    return gguf_engine.load(fixtures / "synthetic" / "qwen2-Q8_0.gguf", n_ctx=1024)


@pytest.fixture(scope="module")
def llama(fixtures):  # a SentencePiece vocabulary with byte fallback
    return gguf_engine.load(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=512)


# -- the mask in sampling ----------------------------------------------------------------------

def test_mask_applies_before_greedy_and_every_filter():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 64).astype(np.float32)
    allowed = np.zeros(64, bool)
    allowed[rng.choice(64, 9, replace=False)] = True
    best_allowed = int(np.flatnonzero(allowed)[np.argmax(logits[allowed])])
    assert Sampler(SamplingParams(temperature=0)).sample(logits, [], allowed) == best_allowed
    assert Sampler(SamplingParams(temperature=0)).sample(logits, []) == int(np.argmax(logits))
    # a sampled token follows the float64 softmax over the allowed tokens alone (top_k=3
    # counts among them, not among all tokens)
    params = SamplingParams(temperature=0.7, top_k=3, top_p=1.0, min_p=0.0, seed=1)
    sampler = Sampler(params)
    draws = np.bincount([sampler.sample(logits, [], allowed) for _ in range(6000)],
                        minlength=64) / 6000
    ids = np.flatnonzero(allowed)
    top3 = ids[np.argsort(-logits[ids].astype(np.float64), kind="stable")[:3]]
    z = logits[top3].astype(np.float64) / 0.7
    want = np.zeros(64)
    want[top3] = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.abs(draws - want).max() < 0.03
    assert draws[~allowed].sum() == 0


# -- regular expressions and GBNF ---------------------------------------------------------------

PHONE = r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"  # (Rust regex: \\d is any Unicode digit)
GBNF = r'''root ::= "(" num ("," num)? ("," num)? ")"
num ::= [1-9] [0-9]? [0-9]?'''
GBNF_AS_RE = r"\([1-9]\d{0,2}(,[1-9]\d{0,2}){0,2}\)"


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_regex_and_gbnf_on_synthetic_models(name, request):
    model = request.getfixturevalue(name)
    for seed in range(3):
        res = model.generate("The numbers are", max_tokens=40, temperature=1.0, seed=seed,
                             regex=PHONE)
        assert res.finish_reason == "eos" and re.fullmatch(PHONE, res.text), res.text
        res = model.generate("The numbers are", max_tokens=40, temperature=1.0, seed=seed,
                             grammar=GBNF)
        assert res.finish_reason == "eos" and re.fullmatch(GBNF_AS_RE, res.text), res.text


def test_regex_and_gbnf_on_gemma(gemma):
    res = gemma.generate("Call us at", max_tokens=30, temperature=0.8, seed=3, regex=PHONE)
    assert res.finish_reason == "eos" and re.fullmatch(PHONE, res.text), res.text
    res = gemma.generate("Three small numbers in brackets:", max_tokens=30, temperature=0.8,
                         seed=3, grammar=GBNF)
    assert res.finish_reason == "eos" and re.fullmatch(GBNF_AS_RE, res.text), res.text
    # greedy and streamed alike: the stream's pieces make the same text
    stream = gemma.generate("Call us at", max_tokens=30, regex=PHONE, stream=True)
    assert re.fullmatch(PHONE, "".join(stream)) and stream.result.finish_reason == "eos"


# -- JSON schemas on Gemma -----------------------------------------------------------------------

_STR = {"type": "string", "maxLength": 24}
# numbers bounded in digits too (multipleOf): a small model at temperature 0.8 may otherwise
# write digits until max_tokens. Powers of two, so that jsonschema's float check is exact.
SCHEMAS = {
    "person": {"type": "object", "properties": {
        "name": _STR, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "user": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1,
                                                          "maximum": 9999},
                                                   "email": _STR},
                 "required": ["id", "email"], "additionalProperties": False},
        "active": {"type": "boolean"}}, "required": ["user", "active"],
        "additionalProperties": False},
    "tags": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                 "minItems": 1, "maxItems": 4}},
        "required": ["tags"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.125}},
        "required": ["sentiment", "confidence"], "additionalProperties": False},
    "anyof": {"type": "object", "properties": {
        "value": {"anyOf": [{"type": "integer", "minimum": -50, "maximum": 50},
                            {"type": "string", "maxLength": 10}, {"type": "null"}]}},
        "required": ["value"], "additionalProperties": False},
    "pattern": {"type": "object", "properties": {
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "code": {"type": "string", "pattern": r"^[A-Z]{3}-\d{3}$"}},
        "required": ["date", "code"], "additionalProperties": False},
    "optional": {"type": "object", "properties": {
        "title": _STR, "subtitle": _STR, "pages": {"type": "integer", "minimum": 1,
                                                  "maximum": 2000}},
        "required": ["title"], "additionalProperties": False},
    "array_of_objects": {"type": "object", "properties": {
        "items": {"type": "array", "maxItems": 3, "items": {
            "type": "object", "properties": {"sku": _STR, "qty": {"type": "integer",
                                                                  "minimum": 1,
                                                                  "maximum": 99}},
            "required": ["sku", "qty"], "additionalProperties": False}}},
        "required": ["items"], "additionalProperties": False},
    "top_array": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100},
                  "minItems": 2, "maxItems": 5},
    "const": {"type": "object", "properties": {
        "version": {"const": 2}, "kind": {"const": "report"}, "body": _STR},
        "required": ["version", "kind", "body"], "additionalProperties": False},
    "bounded_numbers": {"type": "object", "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90, "multipleOf": 0.0625},
        "lon": {"type": "number", "minimum": -180, "maximum": 180, "multipleOf": 0.0625}},
        "required": ["lat", "lon"], "additionalProperties": False},
    "enum_array": {"type": "object", "properties": {
        "colors": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                   "minItems": 1, "maxItems": 3}},
        "required": ["colors"], "additionalProperties": False},
    "defs": {"type": "object", "$defs": {"point": {
        "type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9},
                                         "y": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["x", "y"], "additionalProperties": False}},
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"], "additionalProperties": False},
    "nullable": {"type": "object", "properties": {
        "middle_name": {"type": ["string", "null"], "maxLength": 12},
        "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 120}},
        "required": ["middle_name", "age"], "additionalProperties": False},
    "oneof_kinds": {"type": "object", "properties": {"shape": {"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "circle"},
                                          "r": {"type": "integer", "minimum": 1,
                                                "maximum": 9}},
         "required": ["kind", "r"], "additionalProperties": False},
        {"type": "object", "properties": {"kind": {"const": "square"},
                                          "side": {"type": "integer", "minimum": 1,
                                                   "maximum": 9}},
         "required": ["kind", "side"], "additionalProperties": False}]}},
        "required": ["shape"], "additionalProperties": False},
    "matrix": {"type": "object", "properties": {"rows": {
        "type": "array", "minItems": 1, "maxItems": 2, "items": {
            "type": "array", "minItems": 1, "maxItems": 3,
            "items": {"type": "integer", "minimum": 0, "maximum": 9}}}},
        "required": ["rows"], "additionalProperties": False},
    "string_lengths": {"type": "object", "properties": {
        "code": {"type": "string", "minLength": 4, "maxLength": 6},
        "note": {"type": "string", "maxLength": 30}},
        "required": ["code", "note"], "additionalProperties": False},
    "integer_steps": {"type": "object", "properties": {
        "count": {"type": "integer", "minimum": 10, "maximum": 20},
        "score": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5}},
        "required": ["count", "score"], "additionalProperties": False},
    "event": {"type": "object", "properties": {
        "name": _STR, "day": {"enum": ["mon", "tue", "wed", "thu", "fri"]},
        "attendees": {"type": "array", "maxItems": 3, "items": _STR},
        "online": {"type": "boolean"}},
        "required": ["name", "day", "attendees", "online"], "additionalProperties": False},
    "any_object": {"type": "object", "maxProperties": 3, "additionalProperties": False,
                   "patternProperties": {"^[a-z]{1,8}$": {"type": "integer", "minimum": 0,
                                                           "maximum": 99}}},
}
IN_CI = ["person", "nested", "tags", "anyof", "pattern"]
PARAMS = ([pytest.param(n, 0, id=f"{n}-0") for n in IN_CI]
          + [pytest.param(n, s, id=f"{n}-{s}", marks=pytest.mark.slow)
             for n in SCHEMAS for s in range(3) if (n, s) not in {(m, 0) for m in IN_CI}])


def test_twenty_schemas():
    assert len(SCHEMAS) == 20
    for schema in SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name,seed", PARAMS)
def test_json_schema_output_validates(gemma, name, seed):
    schema = SCHEMAS[name]
    res = gemma.generate(f"Here is the {name.replace('_', ' ')} as JSON: ", max_tokens=200,
                         temperature=0.8, seed=seed,
                         response_format={"type": "json_schema",
                                          "json_schema": {"name": name, "schema": schema}})
    assert res.finish_reason == "eos", (res.finish_reason, res.text)
    jsonschema.validate(json.loads(res.text), schema)


def test_json_object_and_chat(gemma):
    res = gemma.chat([{"role": "user", "content": "Give me a JSON object about a cat."}],
                     max_tokens=120, temperature=0.8, seed=0,
                     response_format={"type": "json_object"})
    assert res.finish_reason == "eos" and isinstance(json.loads(res.text), dict), res.text


def test_constrained_batch_equals_each_alone(fixtures):
    model = gguf_engine.load(fixtures / "synthetic" / "qwen2-Q8_0.gguf", n_ctx=128, n_seq=4)
    prompts = ["a", "The numbers are", "hello world", "x"]
    kw = dict(max_tokens=30, temperature=0.9, grammar=GBNF)
    batch = model.generate_batch(prompts, seed=[1, 2, 3, 4], **kw)
    for p, s, res in zip(prompts, [1, 2, 3, 4], batch, strict=True):
        alone = model.generate(p, seed=s, **kw)
        assert res.tokens == alone.tokens and re.fullmatch(GBNF_AS_RE, res.text)


# -- errors and ends ------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,fragment", [
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "strin"}}}},
     "strin"),
    ({"response_format": {"type": "xml"}}, "'xml'"),
    ({"response_format": "json"}, "response_format must be an object"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": [1]}}},
     "must be a JSON schema object"),
    ({"regex": "[a-"}, "unclosed character class"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "array", "uniqueItems": True}}}}, 'Unimplemented keys: ["uniqueItems"]'),
    ({"grammar": "root ::= \"a\" undefined_rule"}, "undefined_rule"),
    ({"lark": "start: nothing_here"}, "nothing_here"),
    ({"regex": ""}, "regex must be a non-empty string"),
    ({"regex": "a", "grammar": "root ::= \"a\""}, "give one constraint, not grammar and regex"),
])
def test_bad_constraints_are_named(qwen2, kw, fragment):
    """Including a keyword llguidance does not implement: an error naming it, not output that
    silently ignores it."""
    with pytest.raises(ConstraintError, match=re.escape(fragment)):
        qwen2.generate("hi", max_tokens=4, **kw)


def test_a_dead_end_and_the_context_end_with_their_reasons(qwen2, fixtures):
    # a grammar that allows no character at all: nothing the model emits continues it
    res = qwen2.generate("hi", max_tokens=8, regex=r"[^\s\S]")
    assert (res.finish_reason, res.text) == ("grammar", "")
    # the context fills before the output is complete
    small = gguf_engine.load(fixtures / "synthetic" / "qwen2-Q8_0.gguf", n_ctx=16)
    prompt = small.tokenize("hello there")
    res = small.generate(prompt, max_tokens=0, regex=r"a{100}")
    assert res.finish_reason == "length" and len(prompt) + len(res.tokens) == 16
    assert res.text == "a" * len(res.text)


def test_constraint_mask_matches_what_the_grammar_takes(qwen2):
    """Every token the mask allows after a prefix is one the matcher then accepts, and each
    one it refuses is refused: the mask agrees with the grammar token by token."""
    rules = grammar_text(regex=r"[ab]{1,3}c")
    c = Constraint(qwen2.tokenizer, rules, qwen2.n_vocab)
    allowed = c.allowed()
    for token in range(qwen2.n_vocab):
        text = qwen2.tokenizer.piece(token).decode("utf-8", "replace")
        # a token fits when its text is a non-empty prefix of some string of the language
        fits = bool(text) and re.fullmatch(r"[ab]{1,3}c?", text) is not None
        assert bool(allowed[token]) == fits, (token, text)


# -- tool calls -----------------------------------------------------------------------------------

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 16},
        "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "zone": {"type": "integer", "minimum": -12, "maximum": 14}},
        "required": ["zone"], "additionalProperties": False}}}


@pytest.mark.parametrize("choice", ["required", {"type": "function",
                                                 "function": {"name": "get_time"}}])
def test_forced_tool_call_parses_and_validates_then_the_chat_continues(qwen2, choice):
    from test_chat_templates import reference

    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    for seed in range(3):
        res = qwen2.chat(messages, tools=[WEATHER, TIME], tool_choice=choice,
                         chat_template=QWEN_TOOLS_TEMPLATE, max_tokens=120, temperature=0.8,
                         seed=seed)
        assert res.finish_reason == "tool_calls", (res.finish_reason, res.text)
        (call,) = res.tool_calls
        name = call["function"]["name"]
        assert isinstance(choice, str) or name == "get_time"
        schema = {"get_weather": WEATHER, "get_time": TIME}[name]["function"]["parameters"]
        jsonschema.validate(json.loads(call["function"]["arguments"]), schema)
        assert call["type"] == "function" and re.fullmatch(r"[0-9a-f]{9}", call["id"])
        assert res.text == ""
    # the call and the tool's reply go back; the template renders them as Hugging Face does
    history = messages + [{"role": "assistant", "content": None, "tool_calls": res.tool_calls},
                          {"role": "tool", "tool_call_id": call["id"], "content": '{"ok": 1}'}]
    got = qwen2.apply_chat_template(history, tools=[WEATHER, TIME],
                                    chat_template=QWEN_TOOLS_TEMPLATE)
    as_hf = [*messages, {"role": "assistant", "content": None, "tool_calls": [
        {**call, "function": {"name": name,
                              "arguments": json.loads(call["function"]["arguments"])}}]},
             history[2]]
    assert got == reference(QWEN_TOOLS_TEMPLATE, messages=as_hf, tools=[WEATHER, TIME],
                            add_generation_prompt=True, bos_token="", eos_token="<|im_end|>")
    assert "<tool_response>\n{\"ok\": 1}\n</tool_response>" in got
    after = qwen2.chat(history, tools=[WEATHER, TIME], chat_template=QWEN_TOOLS_TEMPLATE,
                       max_tokens=4, temperature=0)
    assert after.prompt_tokens == qwen2.tokenize(got, add_bos=False, special=True)
    assert len(after.tokens) >= 1


def test_tool_choice_none_hides_the_tools_and_bad_choices_are_named(qwen2):
    msgs = [{"role": "user", "content": "hi"}]
    shown = qwen2.chat_sequence(msgs, tools=[WEATHER], chat_template=QWEN_TOOLS_TEMPLATE)[0]
    hidden = qwen2.chat_sequence(msgs, tools=[WEATHER], tool_choice="none",
                                 chat_template=QWEN_TOOLS_TEMPLATE)[0]
    assert "get_weather" in qwen2.detokenize(shown.prompt)
    assert "get_weather" not in qwen2.detokenize(hidden.prompt)
    with pytest.raises(ValueError, match="'nope', which is not among the tools"):
        qwen2.chat(msgs, tools=[WEATHER], tool_choice={"function": {"name": "nope"}})
    with pytest.raises(ValueError, match="no tools were given"):
        qwen2.chat(msgs, tool_choice="required")
    with pytest.raises(ValueError, match="cannot take another constraint"):
        qwen2.chat(msgs, tools=[WEATHER], tool_choice="required", regex="a",
                   chat_template=QWEN_TOOLS_TEMPLATE)


CALL = {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}


@pytest.mark.parametrize("shape,text,content", [
    ("hermes", f"Let me check.\n<tool_call>\n{json.dumps(CALL)}\n</tool_call>", "Let me check."),
    ("hermes", f"<tool_call>{json.dumps(CALL)}</tool_call>\n<tool_call>{json.dumps(CALL)}",
     ""),
    ("llama3", json.dumps({"name": CALL["name"], "parameters": CALL["arguments"]}), ""),
    ("llama3", "<|python_tag|>" + json.dumps(CALL), ""),
    ("mistral", "[TOOL_CALLS]" + json.dumps([CALL]), ""),
    ("mistral", " " + json.dumps([CALL, CALL]), ""),
])
def test_parse_each_form(shape, text, content):
    got_content, calls = tool_calls.parse(shape, text)
    assert got_content == content
    assert calls and all(json.loads(c["function"]["arguments"]) == CALL["arguments"]
                         and c["function"]["name"] == CALL["name"] for c in calls)
    assert len(calls) == text.count("get_weather")


@pytest.mark.parametrize("shape,text", [
    ("hermes", "no calls here"), ("hermes", "<tool_call>{not json}</tool_call>"),
    ("llama3", "The weather is fine."), ("mistral", "[TOOL_CALLS] nonsense"),
])
def test_parse_leaves_plain_replies_alone(shape, text):
    assert tool_calls.parse(shape, text) == (text, None)


@pytest.mark.parametrize("shape,good,bad", [
    ("hermes", f"<tool_call>\n{json.dumps(CALL)}\n</tool_call>",
     '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'),
    ("llama3", json.dumps({"name": "get_weather", "parameters": CALL["arguments"]}),
     json.dumps(CALL)),
    ("mistral", "[TOOL_CALLS][" + json.dumps(CALL) + "]", json.dumps([CALL])),
])
def test_forced_grammar_of_each_form(qwen2, shape, good, bad):
    """The forced-call grammar takes a well-formed call of the form and refuses another."""
    rules = grammar_text(lark=tool_calls.forced_grammar(shape, [WEATHER], "*", None))

    def takes(text):
        c = Constraint(qwen2.tokenizer, rules, qwen2.n_vocab)
        return all(c.consume(t) for t in qwen2.tokenize(text, add_bos=False)) and c.stopped

    assert tool_calls.parse(shape, good)[1] is not None
    assert takes(good) and not takes(bad)


def test_template_forms():
    assert tool_calls.form(QWEN_TOOLS_TEMPLATE) == "hermes"
    assert tool_calls.form("{{ '[TOOL_CALLS]' }}") == "mistral"
    assert tool_calls.form("{{- '<|python_tag|>' + x }}") == "llama3"
