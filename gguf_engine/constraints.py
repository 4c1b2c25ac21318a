"""Constrained decoding through llguidance: JSON schemas, GBNF and Lark grammars and regular
expressions become a per-sequence matcher whose token mask is applied before sampling.

llguidance sees the GGUF vocabulary as token bytes (control tokens as 0xFF + their text, its
convention for special tokens, so a grammar may name them as <[id]>), the model's
end-of-generation tokens as its EOS, and our own tokenizer for the text it needs tokenized.
Building that vocabulary takes about a second for a 262k vocabulary: it is built once per
tokenizer.
"""

from __future__ import annotations

import json
import threading
import weakref

import numpy as np

from .tokenizer import CONTROL

# JSON as models usually write it ({"a": 1, "b": [2, 3]}): one space after ':' and ',' and no
# other whitespace, so a small model cannot wander into endless newlines. A schema's own
# "x-guidance" options override these.
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


class ConstraintError(ValueError):
    """A response format, grammar or regular expression that is malformed or unsupported."""


def _brief(message: str) -> str:
    """One line of an llguidance error: its first line and its "error: ..." lines (not the
    source excerpts with carets, nor the parser's state dump)."""
    lines = [line.strip() for line in message.split("<state>")[0].splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    return " ".join([lines[0], *(line for line in lines[1:] if line.startswith("error"))])


def _llguidance():
    import llguidance

    return llguidance


def _json_grammar(schema, where: str) -> str:
    if isinstance(schema, bool) or not isinstance(schema, dict):
        raise ConstraintError(f"{where} must be a JSON schema object, got "
                              f"{type(schema).__name__}")
    try:
        return _llguidance().LLMatcher.grammar_from_json_schema(json.dumps(schema),
                                                                defaults=JSON_OPTIONS)
    except (TypeError, ValueError) as e:
        raise ConstraintError(f"{where}: {_brief(str(e))}") from None


def _response_format_grammar(fmt) -> str | None:
    """OpenAI's response_format: {"type": "text"}, {"type": "json_object"} (any object; a
    "schema" there, as llama-cpp-python takes it, narrows it) or {"type": "json_schema",
    "json_schema": {"name": ..., "schema": {...}}}."""
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise ConstraintError("response_format must be an object with a string 'type' "
                              "('text', 'json_object' or 'json_schema')")
    kind = fmt["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return _json_grammar(fmt.get("schema") or {"type": "object"},
                             "response_format.schema")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise ConstraintError("response_format.json_schema must be an object with a "
                                  "'schema'")
        schema = spec.get("schema", {"type": "object"})
        return _json_grammar(schema, "response_format.json_schema.schema")
    raise ConstraintError(f"response_format type {kind!r} is not one of 'text', "
                          "'json_object', 'json_schema'")


def grammar_text(response_format=None, grammar: str | None = None, lark: str | None = None,
                 regex: str | None = None) -> str | None:
    """The llguidance grammar of at most one constraint (None: unconstrained): a
    response_format, a GBNF grammar (llama.cpp's format), a Lark grammar (llguidance's
    dialect) or a regular expression (Rust regex syntax) the whole output must match."""
    given = {name: v for name, v in (("response_format", response_format), ("grammar", grammar),
                                     ("lark", lark), ("regex", regex)) if v is not None}
    if len(given) > 1:
        raise ConstraintError(f"give one constraint, not {' and '.join(given)}")
    if not given:
        return None
    (name, value), = given.items()
    if name == "response_format":
        return _response_format_grammar(value)
    if not isinstance(value, str) or not value.strip():
        raise ConstraintError(f"{name} must be a non-empty string")
    ll = _llguidance()
    try:
        return ll.grammar_from({"grammar": "gbnf"}.get(name, name), value)
    except (TypeError, ValueError) as e:
        raise ConstraintError(f"{name}: {_brief(str(e))}") from None


_vocabularies: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_vocab_lock = threading.Lock()


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads from a tokenizer."""

    def __init__(self, tk):
        self._tk = tk
        self.tokens = [b"\xff" + tk.tokens[i].encode() if tk.types[i] == CONTROL
                       else tk.piece(i) for i in range(tk.n_vocab)]
        self.eos_token_id = tk.eos_id if tk.eos_id is not None else min(tk.eog_ids, default=0)
        self.bos_token_id = tk.bos_id
        self.special_token_ids = [int(i) for i in np.flatnonzero(tk.types == CONTROL)]

    def __call__(self, text) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tk.encode(text, False, False, False, continues=True)


def ll_tokenizer(tokenizer):
    """llguidance's view of `tokenizer` (a GGUFTokenizer), built once."""
    with _vocab_lock:
        llt = _vocabularies.get(tokenizer)
        if llt is None:
            ll = _llguidance()
            vocab = _Vocabulary(tokenizer)  # every token's bytes: built once
            eos = sorted(tokenizer.eog_ids) or [vocab.eos_token_id]
            llt = ll.LLTokenizer(ll.TokenizerWrapper(vocab), n_vocab=tokenizer.n_vocab,
                                 eos_token=eos)
            _vocabularies[tokenizer] = llt
        return llt


class Constraint:
    """One sequence's matcher: `allowed` gives the mask for the next token, `consume` takes
    the token chosen."""

    def __init__(self, tokenizer, grammar: str, n_logits: int):
        ll = _llguidance()
        self._matcher = ll.LLMatcher(ll_tokenizer(tokenizer), grammar, log_level=0)
        if self._matcher.is_error():
            raise ConstraintError(f"the constraint does not compile: "
                                  f"{_brief(self._matcher.get_error())}")
        self._bits = np.zeros((1, (tokenizer.n_vocab + 31) // 32), np.int32)  # (1, words)
        self._n_vocab = tokenizer.n_vocab
        self._n_logits = n_logits  # rows of the output layer (>= the vocabulary)

    @property
    def stopped(self) -> bool:
        """The output is complete: the grammar allows nothing more."""
        return self._matcher.is_stopped()

    def allowed(self) -> np.ndarray | None:
        """bool (n_logits,): the tokens the grammar allows next; None when it allows none."""
        if self._matcher.is_error():
            return None
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self._matcher.is_error():  # nothing continues the output (llguidance: EOS only)
            return None
        mask = np.zeros(self._n_logits, bool)
        bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")
        mask[:self._n_vocab] = bits[:self._n_vocab]
        return mask if mask.any() else None

    def consume(self, token: int) -> bool:
        """Advance past `token`; False if the grammar refuses it."""
        return self._matcher.consume_token(token)
