"""The user-facing model: tokenize, logits, generate (whole or streamed) and chat."""

from __future__ import annotations

import threading

import numpy as np

from . import tool_calls
from .backend_cpu import CPUBackend
from .chat import GEMMA_TEMPLATE, ChatTemplateError, ChatTurn, RenderedPromptTooLong, render
from .constraints import Constraint, grammar_text
from .defaults import SAMPLING
from .gguf_file import GGUFFile
from .sampling import Sampler, SamplingParams
from .scheduler import GenerationResult, Scheduler, Sequence
from .text_split import ReasoningSplitter, opens_reasoning
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
                 extend_context: bool = False, n_threads: int | None = None, n_seq: int = 1,
                 exact: bool | None = None):
        self.file = GGUFFile(path)
        self.device = device
        if device == "cuda":
            from .backend_cuda import CudaBackend

            backend = CudaBackend()
        else:
            backend = CPUBackend(n_threads, exact=exact)
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
    def route(self) -> str:
        """"integer" (int8 activations, llama.cpp's math) or "exact" (float math on the
        dequantized weights): see `load`'s exact."""
        return self.net.backend.route

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
                 logprobs: int | None = None, stream: bool = False, ignore_eos: bool = False,
                 response_format: dict | None = None, grammar: str | None = None,
                 lark: str | None = None, regex: str | None = None):
        """Continue `prompt` (a string, tokenized with add_bos=None, or token ids as given).
        ignore_eos keeps generating past end-of-generation tokens (as llama.cpp's --ignore-eos).
        At most one constraint shapes the output: response_format (OpenAI's: {"type":
        "json_object"} or {"type": "json_schema", "json_schema": {"schema": {...}}}), grammar
        (GBNF, llama.cpp's format), lark (llguidance's Lark) or regex; a constrained output
        that completes ends with finish_reason "eos", one that cannot go on with "grammar"."""
        seq = self.sequence(prompt, max_tokens=max_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                            presence_penalty=presence_penalty,
                            frequency_penalty=frequency_penalty, seed=seed, stop=stop,
                            logprobs=logprobs, ignore_eos=ignore_eos,
                            response_format=response_format, grammar=grammar, lark=lark,
                            regex=regex)
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
                 ignore_eos: bool = False, response_format: dict | None = None,
                 grammar: str | None = None, lark: str | None = None,
                 regex: str | None = None) -> Sequence:
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
        rules = grammar_text(response_format, grammar, lark, regex)
        constraint = None if rules is None else Constraint(self.tokenizer, rules, self.n_vocab)
        return Sequence(tokens, int(max_tokens), Sampler(params), stops, logprobs,
                        frozenset() if ignore_eos else self.tokenizer.eog_ids, self.tokenizer,
                        self.n_ctx, constraint)

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
        template = self._chat_template(chat_template)
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

    def chat_sequence(self, messages, chat_template: str | None = None, tools=None,
                      tool_choice=None, template_kwargs: dict | None = None,
                      **sampling) -> tuple[Sequence, ChatTurn]:
        """A checked chat request (see `chat`) for a Scheduler to run, and how to read its
        reply (ChatTurn.reply)."""
        forced = shape = None
        if tools is None or tool_choice == "none":
            if tool_choice not in (None, "auto", "none"):
                raise ValueError("tool_choice forces a tool call, but no tools were given")
            tools = None  # "none": the model is not shown the tools
        else:
            tools, forced = tool_calls.check_tools(tools, tool_choice)
        template = self._chat_template(chat_template)
        text = self.apply_chat_template(messages, tools=tools, chat_template=template,
                                        **(template_kwargs or {}))
        if tools is not None:
            shape = tool_calls.form(template)
        if forced is not None:
            given = [k for k in ("response_format", "grammar", "lark", "regex")
                     if sampling.get(k) is not None]
            if given:
                raise ValueError(f"a forced tool call (tool_choice={tool_choice!r}) cannot "
                                 f"take another constraint ({', '.join(given)})")
            sampling["lark"] = tool_calls.forced_grammar(
                shape, tools, forced, self.tokenizer.id_of(tool_calls.MISTRAL_MARK))
        return (self.sequence(self._chat_ids(text), **sampling),
                ChatTurn(opens_reasoning(text), shape))

    def chat(self, messages, chat_template: str | None = None, tools=None, tool_choice=None,
             template_kwargs: dict | None = None, reasoning_format: str = "auto",
             stream: bool = False, **sampling):
        """Reply to `messages` ([{"role": ..., "content": ...}]); same result and streaming
        forms as `generate`, and its keywords (constraints included).

        With reasoning_format="auto" a reply that thinks in <think>…</think> first (Qwen 3,
        DeepSeek-R1) has that text in `result.reasoning` and the answer alone in
        `result.text`; a stream yields the reasoning as ReasoningText pieces (a str subclass),
        the tags left out. "none" leaves the reply as generated. Qwen 3 stops thinking with
        template_kwargs={"enable_thinking": False}.

        `tools` (OpenAI function specs) are rendered by the template; calls in the reply are
        parsed into `result.tool_calls` (finish_reason "tool_calls"; a stream yields the raw
        text). tool_choice: "auto" (default), "none" (tools not shown), "required" (one call
        of some tool) or {"type": "function", "function": {"name": ...}} (one call of that
        tool); a forced call's arguments follow the tool's JSON schema. Tool results go back
        as {"role": "tool", "tool_call_id": ..., "content": ...} messages."""
        if reasoning_format not in ("auto", "none"):
            raise ValueError(f"reasoning_format must be 'auto' or 'none', not "
                             f"{reasoning_format!r}")
        seq, turn = self.chat_sequence(messages, chat_template, tools, tool_choice,
                                       template_kwargs, **sampling)
        inner = Stream(self._exclusive(self._generate(seq)))
        gen = _chat_reply(inner, turn, reasoning_format)
        return Stream(gen) if stream else _drain(gen)

    def _chat_template(self, chat_template: str | None) -> str:
        template = chat_template or self.file.get_str("tokenizer.chat_template")
        if template is None:
            if not self.config.spec.name.startswith("gemma"):
                raise ChatTemplateError(f"{self.file.path} has no chat template; pass "
                                        "chat_template= (a Jinja2 string)")
            template = GEMMA_TEMPLATE
        return template


def _chat_reply(stream: Stream, turn: ChatTurn, reasoning_format: str):
    """`stream`'s pieces (with reasoning_format "auto", routed into reasoning and answer),
    then its result read as the turn's reply."""
    if reasoning_format == "auto":
        splitter = ReasoningSplitter(turn.opens_reasoning)
        for piece in stream:
            yield from splitter.push(piece)
        yield from splitter.flush()
    else:
        yield from stream
    return turn.reply(stream.result, reasoning_format)


def _drain(gen) -> GenerationResult:
    """Run a generator to its end and return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
