"""Cutting generated text as it streams: where a stop string may begin, and a reasoning model's
`<think>…</think>` block apart from its answer (Qwen 3, QwQ, DeepSeek-R1 and its distills)."""

from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def held_prefix_len(text: str, strings) -> int:
    """Length of the longest end of `text` that could begin one of `strings` (to hold back
    until the next piece says whether it does)."""
    best = 0
    for s in strings:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def opens_reasoning(prompt_text: str) -> bool:
    """Whether a rendered chat prompt leaves the reply inside a reasoning block (DeepSeek-R1's
    template ends its generation prompt with <think>)."""
    return prompt_text.rfind(THINK_OPEN) > prompt_text.rfind(THINK_CLOSE)


def split_reasoning(text: str, inside: bool) -> tuple[str | None, str]:
    """(reasoning, answer) of a whole reply (see ReasoningSplitter); reasoning is None when the
    reply has no reasoning block."""
    sp = ReasoningSplitter(inside)
    parts = sp.push(text) + sp.flush()
    answer = "".join(p for p in parts if not isinstance(p, ReasoningText))
    if not sp.seen:
        return None, answer
    return "".join(p for p in parts if isinstance(p, ReasoningText)).strip(), answer


class ReasoningText(str):
    """A piece of a reply's reasoning: text between <think> and </think>, tags left out."""


class ReasoningSplitter:
    """Routes streamed text into reasoning (ReasoningText pieces) and answer (str pieces).

    A reply has reasoning when it opens with <think> (leading whitespace allowed) or when the
    prompt left it inside one; the reasoning ends at </think>, after which whitespace before the
    answer is dropped. A tag split across pieces is held until it is whole."""

    def __init__(self, inside: bool):
        self.state = "think" if inside else "start"  # start, think, after, answer
        self.seen = inside  # a reasoning block was opened
        self.held = ""

    def push(self, text: str) -> list[str]:
        self.held += text
        out: list[str] = []
        while True:
            if self.state == "start":
                rest = self.held.lstrip()
                if rest.startswith(THINK_OPEN):
                    self.held, self.state, self.seen = rest[len(THINK_OPEN):], "think", True
                    continue
                if THINK_OPEN.startswith(rest):  # nothing yet, or the tag's first characters
                    return out
                self.state = "answer"
            elif self.state == "think":
                i = self.held.find(THINK_CLOSE)
                if i >= 0:
                    if i:
                        out.append(ReasoningText(self.held[:i]))
                    self.held, self.state = self.held[i + len(THINK_CLOSE):], "after"
                    continue
                keep = held_prefix_len(self.held, [THINK_CLOSE])
                if len(self.held) > keep:
                    out.append(ReasoningText(self.held[:len(self.held) - keep]))
                    self.held = self.held[len(self.held) - keep:]
                return out
            elif self.state == "after":
                rest = self.held.lstrip()
                self.held = rest
                if not rest:
                    return out
                self.state = "answer"
            else:
                if self.held:
                    out.append(self.held)
                    self.held = ""
                return out

    def flush(self) -> list[str]:
        """What is still held once generation has ended."""
        held, self.held = self.held, ""
        if not held or self.state == "after":
            return []
        return [ReasoningText(held)] if self.state == "think" else [held]
