"""The user-facing model: tokenize, logits, generate (whole or streamed) and chat."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np

from .backend_cpu import CPUBackend
from .chat import GEMMA_TEMPLATE, ChatTemplateError, RenderedPromptTooLong, render
from .defaults import SAMPLING
from .gguf_file import GGUFFile
from .sampling import Sampler, SamplingParams
from .scheduler import GenerationResult, Scheduler, Sequence
from .text_split import ReasoningSplitter, ReasoningText, opens_reasoning
from .tokenizer import GGUFTokenizer
from .transformer import ContextOverflowError, Transformer


class StreamInvalidatedError(RuntimeError):
    """A stream was left open while the same thread made another call on its model."""


class _Hold:
    """One call's exclusive use of a model: its thread, and whether a later call of the same
    thread took the model over while this one (a suspended stream) was still open."""

    def __init__(self):
        self.thread = threading.get_ident()
        self.invalidated = False


class Stream:
    """An iterator of text pieces; `.result` holds the GenerationResult once exhausted."""

    def __init__(self, gen):
        self._gen = gen
        self.result: GenerationResult | None = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            return next(self._gen)
        except StopIteration as stop:
            self.result = stop.value
            raise


class Model:
    """A GGUF model loaded for inference (see `gguf_engine.load`)."""

    def __init__(self, path, *, n_ctx: int | None = None, device: str = "cpu",
                 extend_context: bool = False, n_threads: int | None = None, n_seq: int = 1):
        self.file = GGUFFile(path)
        self.device = device
        if device == "cuda":
            from .backend_cuda import CudaBackend

            backend = CudaBackend()
        else:
            backend = CPUBackend(n_threads)
        self.net = Transformer(self.file, n_ctx=n_ctx, extend_context=extend_context,
                               backend=backend, n_seq=n_seq)
        self.tokenizer = GGUFTokenizer(self.file)
        self.config = self.net.config
        # One call at a time owns the network's cache and buffers: callers from other threads
        # wait their turn; a stream holds the model from its first read to its end.
        self._turn = threading.Condition()
        self._holder: _Hold | None = None

    # -- exclusive use -----------------------------------------------------------------
    def _acquire(self) -> _Hold:
        me = threading.get_ident()
        with self._turn:
            while self._holder is not None:
                if self._holder.thread == me:
                    # this thread is running, so its holder is a stream it left suspended:
                    # waiting would deadlock; the stream loses the model instead
                    self._holder.invalidated = True
                    break
                self._turn.wait()
            self._holder = hold = _Hold()
            return hold

    def _release(self, hold: _Hold) -> None:
        with self._turn:
            if self._holder is hold:
                self._holder = None
                self._turn.notify_all()

    def _exclusive(self, gen):
        """`gen` run while holding the model; its pieces passed on, its return value returned."""
        hold = self._acquire()
        try:
            while True:
                if hold.invalidated:
                    raise StreamInvalidatedError(
                        "this stream was invalidated: the same thread started another call on "
                        "the model while the stream was open (finish or close a stream first)")
                try:
                    piece = next(gen)
                except StopIteration as stop:
                    return stop.value
                yield piece
        finally:
            gen.close()
            self._release(hold)

    @property
    def n_ctx(self) -> int:
        return self.net.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        tk = self.tokenizer
        return tk.encode(text, tk.add_bos if add_bos is None else add_bos,
                         tk.add_eos and add_bos is None, special)

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def logits(self, tokens) -> np.ndarray:
        """float32 (len(tokens), n_vocab): logits at every position, from an empty context."""
        tokens = self._check_tokens(tokens)
        hold = self._acquire()
        try:
            return self.net.forward(tokens, 0, all_logits=True)
        finally:
            self._release(hold)

    def _check_tokens(self, tokens) -> list[int]:
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("the prompt is empty")
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})")
        if len(tokens) > self.n_ctx:
            raise ContextOverflowError(f"the prompt has {len(tokens)} tokens but the context "
                                       f"holds {self.n_ctx} (n_ctx)")
        return tokens

    # -- generation --------------------------------------------------------------------
    def generate(self, prompt, max_tokens: int | None = SAMPLING["max_tokens"],
                 temperature: float = SAMPLING["temperature"], top_k: int = SAMPLING["top_k"],
                 top_p: float = SAMPLING["top_p"], min_p: float = SAMPLING["min_p"],
                 repeat_penalty: float = SAMPLING["repeat_penalty"],
                 presence_penalty: float = SAMPLING["presence_penalty"],
                 frequency_penalty: float = SAMPLING["frequency_penalty"],
                 seed: int | None = None, stop=(),
                 logprobs: int | None = None, stream: bool = False, ignore_eos: bool = False):
        """Continue `prompt` (a string, tokenized with add_bos=None, or token ids as given).
        ignore_eos keeps generating past end-of-generation tokens (as llama.cpp's --ignore-eos)."""
        seq = self.sequence(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                            presence_penalty=presence_penalty,
                            frequency_penalty=frequency_penalty, seed=seed, stop=stop,
                            logprobs=logprobs, ignore_eos=ignore_eos)
        gen = self._exclusive(self._generate(seq))
        return Stream(gen) if stream else _drain(gen)

    def generate_batch(self, prompts, *, seed=None, **sampling) -> list[GenerationResult]:
        """`generate` for several prompts at once, decoded together in the model's n_seq slots
        (more prompts wait for a free slot). The sampling keywords are shared; `seed` may be a
        list with one seed per prompt. Results come in the prompts' order, each exactly what
        `generate` gives that prompt alone (same route and CPU)."""
        if "stream" in sampling:
            raise TypeError("generate_batch does not stream; use generate(stream=True)")
        prompts = list(prompts)
        seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed] * len(prompts)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        seqs = [self.sequence(p, seed=s, **sampling) for p, s in zip(prompts, seeds, strict=True)]
        return _drain(self._exclusive(self._batch(seqs)))

    def sequence(self, prompt, max_tokens: int | None = SAMPLING["max_tokens"],
                 temperature: float = SAMPLING["temperature"], top_k: int = SAMPLING["top_k"],
                 top_p: float = SAMPLING["top_p"], min_p: float = SAMPLING["min_p"],
                 repeat_penalty: float = SAMPLING["repeat_penalty"],
                 presence_penalty: float = SAMPLING["presence_penalty"],
                 frequency_penalty: float = SAMPLING["frequency_penalty"],
                 seed: int | None = None, stop=(), logprobs: int | None = None,
                 ignore_eos: bool = False) -> Sequence:
        """A checked request to generate (see `generate`), for a Scheduler to run."""
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("the prompt is empty")
            tokens = self.tokenize(prompt)
        else:
            tokens = prompt
        tokens = self._check_tokens(tokens)
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
                                frequency_penalty=frequency_penalty, seed=seed)
        stops = [stop] if isinstance(stop, str) else list(stop or ())
        if any(not isinstance(s, str) or not s for s in stops):
            raise ValueError("stop must be a string or a list of non-empty strings")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or logprobs < 0):
            raise ValueError(f"invalid logprobs={logprobs!r}: must be an integer >= 0 or None")
        if max_tokens is None or max_tokens <= 0:
            max_tokens = self.n_ctx
        return Sequence(tokens, int(max_tokens), Sampler(params), stops, logprobs,
                        frozenset() if ignore_eos else self.tokenizer.eog_ids, self.tokenizer,
                        self.n_ctx)

    def _generate(self, seq: Sequence):
        """One sequence through the scheduler: its pieces as they come, then its result."""
        pieces: list[str] = []
        seq.on_pieces = pieces.extend
        sched = Scheduler(self.net)
        sched.add(seq)
        while sched.busy:
            sched.step()
            if seq.error is not None:
                raise seq.error
            yield from pieces
            pieces.clear()
        return seq.result()

    def _batch(self, seqs: list[Sequence]):
        """Several sequences through the scheduler; their results in order."""
        sched = Scheduler(self.net, admit_per_step=self.net.cache.n_seq)
        for seq in seqs:
            sched.add(seq)
        while sched.busy:
            sched.step()
            failed = next((s for s in seqs if s.error is not None), None)
            if failed is not None:
                raise failed.error
            yield from ()
        return [s.result() for s in seqs]

    # -- chat --------------------------------------------------------------------------
    def apply_chat_template(self, messages, *, tools=None, add_generation_prompt: bool = True,
                            chat_template: str | None = None, **template_kwargs) -> str:
        """The prompt text of `messages` (and `tools`, OpenAI-style function specs) rendered
        with the file's chat template, or `chat_template`, as Hugging Face renders it;
        template_kwargs are extra template variables (enable_thinking=False for Qwen 3)."""
        tk = self.tokenizer
        template = chat_template or self.file.get_str("tokenizer.chat_template")
        if template is None:
            if not self.config.spec.name.startswith("gemma"):
                raise ChatTemplateError(f"{self.file.path} has no chat template; pass "
                                        "chat_template= (a Jinja2 string)")
            template = GEMMA_TEMPLATE
        bos = tk.tokens[tk.bos_id] if tk.bos_id is not None else ""
        eos = tk.tokens[tk.eos_id] if tk.eos_id is not None else ""
        # no token covers more than max_piece_chars characters, so a longer text cannot fit
        # the context whatever it holds: refused before it is tokenized
        limit = self.n_ctx * tk.max_piece_chars
        try:
            return render(template, messages, bos_token=bos, eos_token=eos, tools=tools,
                          add_generation_prompt=add_generation_prompt, max_chars=limit,
                          **template_kwargs)
        except RenderedPromptTooLong:
            raise ContextOverflowError(f"the rendered chat prompt is longer than the context "
                                       f"of {self.n_ctx} tokens (n_ctx) can hold") from None

    def chat_prompt(self, messages, chat_template: str | None = None, tools=None,
                    template_kwargs: dict | None = None) -> list[int]:
        """The token ids of `messages` rendered with the chat template, ready to generate:
        `apply_chat_template`'s text tokenized with special tokens parsed."""
        return self._chat_ids(self.apply_chat_template(
            messages, tools=tools, chat_template=chat_template, **(template_kwargs or {})))

    def _chat_ids(self, text: str) -> list[int]:
        tk = self.tokenizer
        ids = self.tokenize(text, add_bos=False, special=True)
        if tk.add_bos and tk.bos_id is not None and (not ids or ids[0] != tk.bos_id):
            ids.insert(0, tk.bos_id)
        return ids

    def chat(self, messages, chat_template: str | None = None, tools=None,
             template_kwargs: dict | None = None, reasoning_format: str = "auto",
             stream: bool = False, **sampling):
        """Reply to `messages` ([{"role": ..., "content": ...}], optionally with `tools`);
        same result and streaming forms as `generate`. With reasoning_format="auto" a reply
        that thinks in <think>…</think> first (Qwen 3, DeepSeek-R1) has that text in
        `result.reasoning` and the answer alone in `result.text`; a stream yields the
        reasoning as ReasoningText pieces (a str subclass), the tags left out. "none" leaves
        the reply as generated. Qwen 3 stops thinking with
        template_kwargs={"enable_thinking": False}."""
        if reasoning_format not in ("auto", "none"):
            raise ValueError(f"reasoning_format must be 'auto' or 'none', not "
                             f"{reasoning_format!r}")
        text = self.apply_chat_template(messages, tools=tools, chat_template=chat_template,
                                        **(template_kwargs or {}))
        inner = self.generate(self._chat_ids(text), stream=True, **sampling)
        if reasoning_format == "auto":
            gen = _split_reasoning(inner, ReasoningSplitter(opens_reasoning(text)))
        else:
            gen = _finish(inner)
        return Stream(gen) if stream else _drain(gen)


def _finish(stream: Stream):
    """A stream as a generator that returns its result."""
    yield from stream
    return stream.result


def _split_reasoning(stream: Stream, splitter: ReasoningSplitter):
    """`stream`'s pieces routed into reasoning and answer; its result with them apart."""
    reasoning, answer = [], []
    for piece in stream:
        for part in splitter.push(piece):
            (reasoning if isinstance(part, ReasoningText) else answer).append(part)
            yield part
    for part in splitter.flush():
        (reasoning if isinstance(part, ReasoningText) else answer).append(part)
        yield part
    result = stream.result
    if splitter.seen:
        result = replace(result, text="".join(answer), reasoning="".join(reasoning).strip())
    return result


def _drain(gen) -> GenerationResult:
    """Run a generator to its end and return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
