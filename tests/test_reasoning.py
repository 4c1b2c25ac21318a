"""A reasoning model's <think>…</think> block apart from its answer: the splitter against a
regular expression over the whole reply, for every way the reply can arrive in pieces; and a
chat whose template leaves the reply inside <think> (DeepSeek-R1's) on a real model."""

from __future__ import annotations

import itertools
import re

import pytest

from gguf_engine.model import Model
from gguf_engine.text_split import (
    ReasoningSplitter,
    ReasoningText,
    opens_reasoning,
    split_reasoning,
)

REPLIES = [
    "<think>\nLet me see: 2+2.\n</think>\n\nIt is 4.",
    "  <think>a</think>b",
    "<think></think>answer",
    "no thinking here </think> at all",
    "<thin>not a tag",
    "\n\n",
    "<think>cut off before the end",
    "Answer with <think> inside",
]


def reference(reply: str, inside: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of a whole reply, by one regular expression."""
    m = re.fullmatch(r"(?s)(?:\s*<think>)(.*?)(?:</think>\s*(.*)|)" if not inside
                     else r"(?s)()(.*?)(?:</think>\s*(.*)|)", reply)
    if not inside:
        if m is None:
            return None, reply
        return m.group(1), m.group(2) or ""
    return m.group(2), m.group(3) or ""


def route(pieces, inside: bool) -> tuple[str | None, str]:
    sp = ReasoningSplitter(inside)
    parts = [p for piece in pieces for p in sp.push(piece)] + sp.flush()
    reasoning = "".join(p for p in parts if isinstance(p, ReasoningText))
    answer = "".join(p for p in parts if not isinstance(p, ReasoningText))
    return (reasoning if sp.seen else None), answer


@pytest.mark.parametrize("inside", [False, True])
@pytest.mark.parametrize("reply", REPLIES)
def test_every_way_of_cutting_a_reply_routes_it_alike(reply, inside):
    want = reference(reply, inside)
    cuts = range(1, len(reply))
    for k in (0, 1, 2):  # whole, in two pieces, in three pieces
        for at in itertools.combinations(cuts, k):
            bounds = (0, *at, len(reply))
            pieces = [reply[a:b] for a, b in itertools.pairwise(bounds)]
            assert route(pieces, inside) == want, pieces
    # one character at a time
    assert route(list(reply), inside) == want


@pytest.mark.parametrize("inside", [False, True])
def test_a_whole_reply_splits_as_the_regex_says(inside):
    for reply in REPLIES:
        reasoning, answer = reference(reply, inside)
        want = (None if reasoning is None else reasoning.strip(), answer)
        assert split_reasoning(reply, inside) == want, reply


def test_a_prompt_ending_in_an_open_block_opens_the_reply():
    assert opens_reasoning("<|User|>hi<|Assistant|><think>\n")
    assert not opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not opens_reasoning("plain")


@pytest.fixture(scope="module")
def qwen3(fixtures):
    return Model(fixtures / "more-archs" / "qwen3-Q8_0.gguf", n_ctx=128)


R1_TEMPLATE = ("{% for m in messages %}<|User|>{{ m.content }}{% endfor %}"
               "{% if add_generation_prompt %}<|Assistant|><think>\n{% endif %}")


def test_a_reply_left_inside_think_is_all_reasoning(qwen3):
    messages = [{"role": "user", "content": "Why is the sky blue?"}]
    raw = qwen3.chat(messages, chat_template=R1_TEMPLATE, reasoning_format="none",
                     max_tokens=12, temperature=0)
    assert raw.reasoning is None and "</think>" not in raw.text
    res = qwen3.chat(messages, chat_template=R1_TEMPLATE, max_tokens=12, temperature=0)
    assert res.tokens == raw.tokens and res.finish_reason == raw.finish_reason == "length"
    assert res.reasoning == raw.text.strip() and res.text == ""
    stream = qwen3.chat(messages, chat_template=R1_TEMPLATE, max_tokens=12, temperature=0,
                        stream=True)
    pieces = list(stream)
    assert all(isinstance(p, ReasoningText) for p in pieces) and "".join(pieces) == raw.text
    assert stream.result.reasoning == res.reasoning


def test_a_reply_without_think_is_untouched(qwen3):
    messages = [{"role": "user", "content": "Hello"}]
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    raw = qwen3.chat(messages, chat_template=template, reasoning_format="none", max_tokens=8,
                     temperature=0)
    res = qwen3.chat(messages, chat_template=template, max_tokens=8, temperature=0)
    reasoning, answer = reference(raw.text, False)
    assert res.reasoning == (None if reasoning is None else reasoning.strip())
    assert res.text == answer and res.tokens == raw.tokens
    with pytest.raises(ValueError, match="reasoning_format"):
        qwen3.chat(messages, chat_template=template, reasoning_format="deepseek")
