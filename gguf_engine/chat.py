"""Chat templates: the file's Jinja2 template, rendered in a sandbox."""

from __future__ import annotations

from . import template_sandbox

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


def validate_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise ValueError(f"messages[{i}] must be a dict with string 'role' and 'content'")
    return [dict(m) for m in messages]


def render(template: str, messages, *, bos_token: str, eos_token: str,
           add_generation_prompt: bool = True, max_chars: int = template_sandbox.MAX_BUILT
           ) -> str:
    """The prompt text of `messages`, rendered by the sandboxed template worker; at most
    `max_chars` characters (longer is an error before anything is tokenized)."""
    if not isinstance(template, str):
        raise ChatTemplateError(f"the chat template must be a string, got "
                                f"{type(template).__name__}")
    context = {"messages": validate_messages(messages), "bos_token": bos_token,
               "eos_token": eos_token, "add_generation_prompt": bool(add_generation_prompt)}
    try:
        return template_sandbox.render(template, context, max_chars=max_chars)
    except template_sandbox.RenderedTooLong as e:
        raise RenderedPromptTooLong(str(e)) from None
    except template_sandbox.TemplateRenderError as e:
        raise ChatTemplateError(str(e)) from None
