"""Tool calls: which form a chat template asks the model to call tools in, the grammar that
forces a call, and the parsing of a reply into OpenAI-style `tool_calls`.

Forms, told apart by the template's text:
- "hermes" (Qwen 2.5 / 3, Hermes and most others): <tool_call>{"name": ..., "arguments": {...}}
  </tool_call>, one block per call, text around them is the message's content;
- "llama3" (Llama 3.1+): the whole reply is {"name": ..., "parameters": {...}}, possibly after
  <|python_tag|>;
- "mistral": [TOOL_CALLS] then a JSON list of {"name": ..., "arguments": {...}}.
"""

from __future__ import annotations

import json
import re
import secrets

from .constraints import JSON_OPTIONS

HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
MISTRAL_MARK = "[TOOL_CALLS]"


def form(template: str) -> str:
    """The tool-call form a chat template teaches: 'mistral', 'llama3' or 'hermes'."""
    if MISTRAL_MARK in template:
        return "mistral"
    if "<|python_tag|>" in template or '"parameters": dictionary of argument' in template:
        return "llama3"
    return "hermes"


def check_tools(tools, tool_choice) -> tuple[list[dict], str | None]:
    """`tools` (OpenAI function specs) and `tool_choice` checked: the tools, and the name of
    the one tool a call is forced to ('*' for any; None when no call is forced)."""
    if not isinstance(tools, list) or not tools:
        raise ValueError("tools must be a non-empty list of {'type': 'function', "
                         "'function': {'name': ..., 'parameters': {...}}}")
    names = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]):
            raise ValueError(f"tools[{i}] must be {{'type': 'function', 'function': "
                             "{'name': ..., 'parameters': {...}}}")
        if not isinstance(fn.get("parameters", {}), dict):
            raise ValueError(f"tools[{i}].function.parameters must be a JSON schema object")
        names.append(fn["name"])
    if tool_choice in (None, "auto", "none"):
        return tools, None
    if tool_choice == "required":
        return tools, "*"
    name = None
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str):
        raise ValueError("tool_choice must be 'auto', 'none', 'required' or {'type': "
                         "'function', 'function': {'name': ...}}")
    if name not in names:
        raise ValueError(f"tool_choice names {name!r}, which is not among the tools "
                         f"({', '.join(names)})")
    return tools, name


def _call_schema(tools: list[dict], forced: str, args_key: str) -> dict:
    """The JSON schema of one call of the forced tool (of any tool with '*')."""
    options = []
    for t in tools:
        fn = t["function"]
        if forced in ("*", fn["name"]):
            options.append({"type": "object", "properties": {
                "name": {"const": fn["name"]},
                args_key: fn.get("parameters") or {"type": "object"}},
                "required": ["name", args_key], "additionalProperties": False})
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_grammar(shape: str, tools: list[dict], forced: str, mistral_token: int | None) -> str:
    """A Lark grammar (llguidance's dialect, %json for the call object) for exactly one call
    of the forced tool in the template's form."""
    schema = _call_schema(tools, forced, "parameters" if shape == "llama3" else "arguments")
    call = "%json " + json.dumps({**schema, "x-guidance": JSON_OPTIONS})
    if shape == "hermes":
        start = r'"<tool_call>\n" call "\n</tool_call>"'
    elif shape == "mistral":
        mark = f"<[{mistral_token}]>" if mistral_token is not None else json.dumps(MISTRAL_MARK)
        start = f'{mark} "[" call "]"'
    else:
        start = "call"
    return f"start: {start}\ncall: {call}\n"


def _call(name, arguments) -> dict | None:
    if not isinstance(name, str) or not isinstance(arguments, (dict, str)):
        return None
    if isinstance(arguments, dict):
        arguments = json.dumps(arguments, ensure_ascii=False)
    # nine letters and digits: Mistral's templates refuse any other id
    return {"id": secrets.token_hex(5)[:9], "type": "function",
            "function": {"name": name, "arguments": arguments}}


def _json(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse(shape: str, text: str) -> tuple[str, list[dict] | None]:
    """(content, tool_calls) of a reply: the calls in the template's form, and the text
    left around them; (text, None) when the reply holds no well-formed call."""
    if shape == "hermes":
        calls = []
        for m in HERMES_CALL.finditer(text):
            obj = _json(m.group(1))
            call = _call(obj.get("name"), obj.get("arguments", {})) if isinstance(
                obj, dict) else None
            if call is None:
                return text, None
            calls.append(call)
        if not calls:
            return text, None
        return HERMES_CALL.sub("", text).strip(), calls
    body = text.strip()
    if shape == "mistral":
        body = body.removeprefix(MISTRAL_MARK).strip()
        items = _json(body)
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list) or not items:
            return text, None
        calls = [_call(i.get("name"), i.get("arguments", {})) if isinstance(i, dict) else None
                 for i in items]
        return ("", calls) if all(calls) else (text, None)
    obj = _json(body.removeprefix("<|python_tag|>").strip())
    if not isinstance(obj, dict):
        return text, None
    call = _call(obj.get("name"), obj.get("parameters", obj.get("arguments", {})))
    return ("", [call]) if call is not None else (text, None)


def template_messages(messages: list[dict]) -> list[dict]:
    """Messages as templates read them: an assistant's tool-call arguments as an object (the
    OpenAI API sends them as JSON text; Hugging Face templates expect a mapping)."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            m = {**m, "tool_calls": [_object_arguments(c) for c in calls]}
        out.append(m)
    return out


def _object_arguments(call: dict) -> dict:
    fn = call.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
        args = _json(fn["arguments"])
        if isinstance(args, dict):
            return {**call, "function": {**fn, "arguments": args}}
    return call
