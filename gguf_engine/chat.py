"""Chat templates: the file's Jinja2 template, rendered in a sandbox."""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import template_sandbox, tool_calls
from .text_split import split_reasoning

# Gemma's turn format, for gemma files that carry no template (a system message is folded into
# the first user turn, as Gemma's own template does).
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + m['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


class ChatTemplateError(ValueError):
    """A chat template that is missing, does not parse, fails, or reaches for what it may not."""


class RenderedPromptTooLong(ChatTemplateError):
    """The rendered prompt has more characters than the caller's max_chars."""


def _content_ok(content) -> bool:
    """A string, None, or a list of parts such as {"type": "text", "text": ...}."""
    if content is None or isinstance(content, str):
        return True
    return isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str)
        and (p["type"] != "text" or isinstance(p.get("text"), str)) for p in content)


def validate_messages(messages) -> list[dict]:
    """OpenAI-style messages: a string role; content a string, a list of parts or (with
    tool_calls) None; optional tool_calls (a list of objects), name, tool_call_id; every value
    JSON-serializable (the template renders in another process)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"messages[{i}] must be a dict with a string 'role'")
        if not _content_ok(m.get("content")) or ("content" not in m and "tool_calls" not in m):
            raise ValueError(f"messages[{i}]['content'] must be a string or a list of parts "
                             "({'type': 'text', 'text': ...})")
        calls = m.get("tool_calls")
        if calls is not None and not (isinstance(calls, list) and all(
                isinstance(c, dict) for c in calls)):
            raise ValueError(f"messages[{i}]['tool_calls'] must be a list of objects")
    return [dict(m) for m in messages]


def validate_tools(tools) -> list[dict] | None:
    """OpenAI-style function specs: [{"type": "function", "function": {"name": ...}}]."""
    if tools is None:
        return None
    if not isinstance(tools, (list, tuple)) or not all(isinstance(t, dict) for t in tools):
        raise ValueError("tools must be a list of objects (OpenAI-style function specs)")
    return list(tools)


def render(template: str, messages, *, bos_token: str, eos_token: str,
           add_generation_prompt: bool = True, tools=None,
           max_chars: int = template_sandbox.MAX_BUILT, **template_kwargs) -> str:
    """The prompt text of `messages`, rendered by the sandboxed template worker as Hugging
    Face's apply_chat_template renders it (template_kwargs are extra variables, e.g.
    enable_thinking); at most `max_chars` characters (longer is an error before anything is
    tokenized)."""
    if not isinstance(template, str):
        raise ChatTemplateError(f"the chat template must be a string, got "
                                f"{type(template).__name__}")
    context = {"bos_token": bos_token, "eos_token": eos_token, **template_kwargs,
               "messages": tool_calls.template_messages(validate_messages(messages)),
               "tools": validate_tools(tools),
               "add_generation_prompt": bool(add_generation_prompt)}
    try:
        return template_sandbox.render(template, context, max_chars=max_chars)
    except template_sandbox.RenderedTooLong as e:
        raise RenderedPromptTooLong(str(e)) from None
    except template_sandbox.TemplateRenderError as e:
        raise ChatTemplateError(str(e)) from None
    except (TypeError, ValueError) as e:  # json.dumps of the context
        raise ValueError(f"messages, tools and template variables must be JSON values: "
                         f"{e}") from None


@dataclass(frozen=True)
class ChatTurn:
    """How to read the reply to a rendered chat prompt."""

    opens_reasoning: bool  # the prompt leaves the reply inside a <think> block
    tool_form: str | None  # the tool-call form to parse (tool_calls.form); None: no tools

    def reply(self, result, reasoning_format: str = "auto"):
        """`result` (a GenerationResult) with the reasoning apart ("auto") and the tool calls
        parsed out of the answer (finish_reason "tool_calls" when there are any)."""
        if reasoning_format == "auto":
            reasoning, answer = split_reasoning(result.text, self.opens_reasoning)
            if reasoning is not None:
                result = replace(result, text=answer, reasoning=reasoning)
        if self.tool_form is not None:
            content, calls = tool_calls.parse(self.tool_form, result.text)
            if calls:
                result = replace(result, text=content, tool_calls=calls,
                                 finish_reason="tool_calls")
        return result
