"""Chat templates render as Hugging Face's apply_chat_template renders them: each feature
against a reference built here, a plain ImmutableSandboxedEnvironment set up the way
transformers sets it up (loopcontrols, its tojson, raise_exception, strftime_now)."""

from __future__ import annotations

import json
from datetime import datetime

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from gguf_engine.chat import ChatTemplateError
from gguf_engine.model import Model


def reference(template: str, **context) -> str:
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(**context)


@pytest.fixture(scope="module")
def qwen2(fixtures):
    return Model(fixtures / "synthetic" / "qwen2-Q8_0.gguf", n_ctx=256)


MESSAGES = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Héllo <b>wörld</b> & “quotes”"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Again"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]

TEMPLATES = {
    "break and continue": (
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "[{{ m.role }}] {{ m.content }}\n{% if loop.index >= 3 %}{% break %}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"),
    "tojson keeps order and text": "{{ messages[1] | tojson }}|{{ {'b': 1, 'a': 'é'} | tojson }}",
    "tojson indent": "{{ messages[0] | tojson(indent=2) }}",
    "strftime_now": "{{ strftime_now('%Y') }}",
    "tools": (
        "{% if tools %}<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
        "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}<tool_call>\n"
        "{{ c.function | tojson }}\n</tool_call>{% endfor %}{% else %}{{ m.content }}{% endif %}"
        "<|im_end|>\n{% endfor %}"),
    "bos and eos": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}"
                   "{% endfor %}",
}


@pytest.mark.parametrize("name", TEMPLATES)
def test_features_render_as_hugging_face(qwen2, name):
    template = TEMPLATES[name]
    tools = TOOLS if name == "tools" else None
    got = qwen2.apply_chat_template(MESSAGES, tools=tools, chat_template=template)
    tk = qwen2.tokenizer
    bos = tk.tokens[tk.bos_id] if tk.bos_id is not None else ""
    eos = tk.tokens[tk.eos_id] if tk.eos_id is not None else ""
    want = reference(template, messages=MESSAGES, tools=tools, add_generation_prompt=True,
                     bos_token=bos, eos_token=eos)
    assert got == want and got


def test_list_content_tool_calls_and_tool_replies(qwen2):
    template = TEMPLATES["tools"].replace(
        "{{ m.content }}", "{% if m.content is string %}{{ m.content }}{% else %}"
        "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}"
        "{% endif %}")
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Weather in "},
                                     {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    got = qwen2.apply_chat_template(messages, tools=TOOLS, chat_template=template)
    assert got == reference(template, messages=messages, tools=TOOLS, add_generation_prompt=True,
                            bos_token="", eos_token=qwen2.tokenizer.tokens[
                                qwen2.tokenizer.eos_id])
    assert "Weather in Paris?" in got and '"arguments": {"city": "Paris"}' in got
    # and a chat continues from the tool's reply
    res = qwen2.chat(messages, tools=TOOLS, chat_template=template, max_tokens=3, temperature=0)
    assert res.prompt_tokens == qwen2.tokenize(got, add_bos=False, special=True)


def test_template_kwargs_reach_the_template(qwen2):
    template = ("{% for m in messages %}{{ m.content }}{% endfor %}"
                "{% if enable_thinking is defined and not enable_thinking %}/no_think"
                "{% endif %}")
    plain = qwen2.apply_chat_template(MESSAGES[:2], chat_template=template)
    off = qwen2.apply_chat_template(MESSAGES[:2], chat_template=template, enable_thinking=False)
    assert off == plain + "/no_think"
    res = qwen2.chat(MESSAGES[:2], chat_template=template, max_tokens=1, temperature=0,
                     template_kwargs={"enable_thinking": False})
    assert res.prompt_tokens == qwen2.tokenize(off, add_bos=False, special=True)


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": [{"type": "text"}]}], "list of parts"),
    ([{"role": "user", "content": 3}], "list of parts"),
    ([{"role": "assistant", "tool_calls": "x"}], "tool_calls"),
    ([{"content": "hi"}], "string 'role'"),
])
def test_bad_messages_are_named(qwen2, messages, message):
    with pytest.raises(ValueError, match=message):
        qwen2.apply_chat_template(messages, chat_template="{{ messages }}")


def test_raise_exception_is_a_chat_template_error(qwen2):
    with pytest.raises(ChatTemplateError, match="roles must alternate"):
        qwen2.apply_chat_template(MESSAGES, chat_template="{{ raise_exception('roles must "
                                                          "alternate') }}")
