"""Continuous batching: sequences in the KV cache's slots, decoded together one token per step.

Each step first admits waiting sequences into free slots and prefills them, one after another,
then runs one decode step for every active sequence: the weights are read once for all of them
(`Transformer.decode`). Prefill runs between decode steps, never inside one: a prompt is then
prefilled in the same chunks as when it runs alone, and each decode row is computed exactly as
it would be alone, so a sequence's tokens do not depend on what else is being generated.
`Model.generate` is the one-sequence case of the same loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .sampling import Sampler, log_softmax
from .text_split import held_prefix_len


@dataclass
class Timings:
    prompt_tokens: int = 0  # tokens evaluated for the prompt (cached ones excluded)
    prompt_s: float = 0.0
    generated_tokens: int = 0
    generation_s: float = 0.0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s else 0.0

    @property
    def generation_tps(self) -> float:
        return self.generated_tokens / self.generation_s if self.generation_s else 0.0


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]  # generated ids (an end-of-generation token is not included)
    # "stop" (a stop string), "length" (max_tokens or context full), "eos" (an
    # end-of-generation token, or the end of a constraint's output), "cancelled", "grammar"
    # (the constraint allows no token: the output cannot go on), or "tool_calls" (chat)
    finish_reason: str
    prompt_tokens: list[int]
    logprobs: list[dict] | None = None  # with logprobs=k: per token, OpenAI style
    timings: Timings = field(default_factory=Timings)
    # chat: a reasoning model's <think> block, apart from `text` (the answer); None without one
    reasoning: str | None = None
    # chat with tools: the calls parsed from the reply, OpenAI style ({"id", "type":
    # "function", "function": {"name", "arguments": JSON text}}); None without any
    tool_calls: list[dict] | None = None


class Sequence:
    """One prompt's generation: its slot, sampler, stop strings and the text it has emitted.
    `on_pieces` (if set) receives each list of new text pieces as they come; `constraint` (a
    constraints.Constraint, if set) masks every token the sampler chooses from."""

    def __init__(self, prompt: list[int], max_tokens: int, sampler: Sampler, stops: list[str],
                 n_logprobs: int | None, eog_ids, tokenizer, n_ctx: int, constraint=None):
        self.prompt = prompt  # token ids
        self.max_tokens = max_tokens
        self.sampler, self.stops, self.eog_ids = sampler, stops, eog_ids
        self.constraint = constraint
        self.n_logprobs = n_logprobs
        self.tokenizer, self.n_ctx = tokenizer, n_ctx
        self.slot = -1  # the KV-cache slot while active
        self.history = list(prompt)
        self.out_tokens: list[int] = []
        self.logprobs: list[dict] | None = [] if n_logprobs is not None else None
        self.decoder = tokenizer.stream_decoder()
        self.text = ""  # everything emitted so far
        self.held = ""  # decoded text held back: it may be the start of a stop string
        self.finish = "length"
        self.done = False
        self.cancelled = False  # set from any thread: the sequence ends at the next step
        self.error: BaseException | None = None
        self.timings = Timings()
        self.on_pieces: Callable[[list[str]], None] | None = None
        self._t_decode = 0.0

    @property
    def token(self) -> int:
        """The token the next decode step feeds."""
        return self.history[-1]

    def prefill(self, net) -> np.ndarray:
        """Run the prompt (less what the slot already holds exactly) and return the logits of
        its last token."""
        t0 = time.perf_counter()
        start = net.cache.reuse(self.slot, self.prompt, net.chunk)
        logits = net.forward(self.prompt[start:], start, seq=self.slot)[0]
        self.timings.prompt_tokens = len(self.prompt) - start
        self._t_decode = time.perf_counter()
        self.timings.prompt_s = self._t_decode - t0
        return logits

    def accept(self, logits: np.ndarray) -> None:
        """Sample the next token from `logits` (n_vocab,), emit the text it completes, and end
        the sequence on an end-of-generation token, a stop string or a limit."""
        pieces = []
        allowed = None
        if self.constraint is not None:
            allowed = self.constraint.allowed()
            if allowed is None:  # a dead end: nothing the model can emit continues the output
                self.finish, self.done = "grammar", True
                self._flush(pieces)
                return
        token = self.sampler.sample(logits, self.history, allowed)
        if self.constraint is not None and not self.constraint.consume(token):
            self.finish, self.done = "grammar", True
        elif token in self.eog_ids:
            self.finish, self.done = "eos", True
        else:
            if self.logprobs is not None:
                self.logprobs.append(self._logprob_entry(logits, token))
            self.out_tokens.append(token)
            self.history.append(token)
            self.held += self.decoder.push(token)
            if self.stops:
                hit = min((i for i in (self.held.find(s) for s in self.stops) if i >= 0),
                          default=-1)
                if hit >= 0:
                    piece, self.held = self.held[:hit], ""
                    pieces.append(piece)
                    self.finish, self.done = "stop", True
                else:
                    keep = held_prefix_len(self.held, self.stops)
                    cut = len(self.held) - keep
                    pieces.append(self.held[:cut])
                    self.held = self.held[cut:]
            else:
                pieces.append(self.held)
                self.held = ""
            if not self.done:
                if self.constraint is not None and self.constraint.stopped:
                    self.finish, self.done = "eos", True  # only end-of-generation may follow
                elif len(self.out_tokens) >= self.max_tokens or len(self.history) >= self.n_ctx:
                    self.done = True  # finish stays "length"
        self._flush(pieces)

    def _flush(self, pieces) -> None:
        """Emit `pieces`, and on the end the text held back (unless a stop string cut it)."""
        if self.done and self.finish != "stop":
            pieces.append(self.held + self.decoder.flush())
            self.held = ""
        self._emit(pieces)

    def cancel_now(self) -> None:
        self.finish, self.done = "cancelled", True

    def _emit(self, pieces) -> None:
        pieces = [p for p in pieces if p]
        if self.done:
            self.timings.generated_tokens = len(self.out_tokens)
            self.timings.generation_s = time.perf_counter() - self._t_decode
        if pieces:
            self.text += "".join(pieces)
            if self.on_pieces is not None:
                self.on_pieces(pieces)

    def _logprob_entry(self, logits, token) -> dict:
        lp = log_softmax(logits)
        k = self.n_logprobs
        entry = {**self._piece(token), "logprob": float(lp[token]), "top_logprobs": []}
        if k:
            top = np.argpartition(-lp, min(k, len(lp) - 1))[:k]
            top = top[np.argsort(-lp[top], kind="stable")]
            entry["top_logprobs"] = [{**self._piece(int(i)), "logprob": float(lp[i])}
                                     for i in top]
        return entry

    def _piece(self, token: int) -> dict:
        """id, text (a partial UTF-8 character as U+FFFD) and bytes of a token."""
        b = self.tokenizer.piece(token)
        return {"id": token, "token": b.decode("utf-8", errors="replace"), "bytes": list(b)}

    def result(self) -> GenerationResult:
        return GenerationResult(text=self.text, tokens=self.out_tokens,
                                finish_reason=self.finish, prompt_tokens=list(self.prompt),
                                logprobs=self.logprobs, timings=self.timings)


class Scheduler:
    """Sequences waiting, and active in slots of `net`'s KV cache; `step` advances them all.
    `add` may be called from any thread; `step` from one thread at a time."""

    def __init__(self, net, admit_per_step: int = 1):
        self.net = net
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []
        self.free = list(range(net.cache.n_seq))
        # while others decode, prompts admitted per step (each prefill stalls the others)
        self.admit_per_step = admit_per_step
        self._lock = threading.Lock()

    def add(self, seq: Sequence) -> None:
        with self._lock:
            self.waiting.append(seq)

    @property
    def busy(self) -> bool:
        return bool(self.active or self.waiting)

    def step(self) -> list[Sequence]:
        """Admit and prefill waiting sequences while slots are free, then one decode step for
        every active sequence. A sequence that fails gets its error and ends; the others go
        on. Returns the sequences that ended in this step."""
        ended: list[Sequence] = []
        admitted = 0
        while self.free and (not self.active or admitted < self.admit_per_step):
            with self._lock:
                if not self.waiting:
                    break
                seq = self.waiting.popleft()
            if seq.cancelled:
                seq.cancel_now()
                ended.append(seq)
                continue
            seq.slot = self._best_slot(seq.prompt)
            admitted += 1
            self._run(seq, lambda s: s.accept(s.prefill(self.net)))
            if seq.done:
                self._release(seq)
                ended.append(seq)
            else:
                self.active.append(seq)
        for seq in [s for s in self.active if s.cancelled]:
            seq.cancel_now()
            self._end(seq)
            ended.append(seq)
        rows = self.net.decode_rows
        for g in range(0, len(self.active), rows):
            group = self.active[g:g + rows]
            try:
                logits = self.net.decode([s.token for s in group], [s.slot for s in group])
            except Exception as e:  # the whole step failed: every sequence in it ends
                for seq in group:
                    seq.error, seq.done = e, True
                continue
            for seq, row in zip(group, logits, strict=True):
                self._run(seq, lambda s, row=row: s.accept(row))
        for seq in [s for s in self.active if s.done]:
            self._end(seq)
            ended.append(seq)
        return ended

    def _run(self, seq: Sequence, action) -> None:
        try:
            action(seq)
        except Exception as e:
            seq.error, seq.done = e, True

    def _best_slot(self, prompt) -> int:
        """The free slot that already holds most of the prompt."""
        cache, chunk = self.net.cache, self.net.chunk
        best = max(self.free, key=lambda s: (cache.reuse(s, prompt, chunk), -s))
        self.free.remove(best)
        return best

    def _end(self, seq: Sequence) -> None:
        self.active.remove(seq)
        self._release(seq)

    def _release(self, seq: Sequence) -> None:
        self.free.append(seq.slot)
        self.free.sort()
