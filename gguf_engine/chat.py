"""Chat templates: the file's Jinja2 template, rendered in a sandbox."""

from __future__ import annotations

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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


def _raise_exception(message):
    raise TemplateError(message)


def validate_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise ValueError(f"messages[{i}] must be a dict with string 'role' and 'content'")
    return [dict(m) for m in messages]


def render(template: str, messages, *, bos_token: str, eos_token: str,
           add_generation_prompt: bool = True) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    try:
        tmpl = env.from_string(template)
    except TemplateError as e:
        raise ChatTemplateError(f"the chat template does not parse: {e}") from None
    try:
        return tmpl.render(messages=validate_messages(messages), bos_token=bos_token,
                           eos_token=eos_token, add_generation_prompt=add_generation_prompt,
                           raise_exception=_raise_exception)
    except SecurityError as e:
        raise ChatTemplateError(f"the chat template tried an unsafe operation: {e}") from None
    except TemplateError as e:
        raise ChatTemplateError(f"the chat template failed: {e}") from None
