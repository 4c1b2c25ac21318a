"""The tokenizer stored in a GGUF file: llama.cpp's tokenization, and detokenization from a
table of token bytes.

- Special tokens first (llama.cpp's `tokenizer_st_partition`): control, user-defined and unknown
  tokens are cut out of the text, longest first; user-defined ones always, control and unknown
  ones only with `special=True`. The pieces of text between them are tokenized on their own.
- SentencePiece style (`tokenizer.ggml.model = llama`): llama.cpp's `llm_tokenizer_spm`, written
  out here: start from single characters and keep merging the adjacent pair whose concatenation
  is the best-scoring vocabulary piece (ties: the leftmost), then spell leftover characters as
  byte tokens. It needs only a piece -> id table, so building it costs no more than reading the
  vocabulary (a `tokenizers` BPE emulating it needed 514k merges and a second to build).
- Byte-level BPE (`gpt2`): text split into pieces by the rule `tokenizer.ggml.pre` names
  (`pretokenizer.py`, llama.cpp's table), each piece spelled in GPT-2's byte code and merged by a
  `tokenizers` BPE with the file's merges. Rules for SentencePiece-style BPE (Gemma 4) merge raw
  UTF-8 with spaces as ▁ instead.
"""

from __future__ import annotations

import codecs
import functools
import heapq
import itertools
import re

import numpy as np
from tokenizers import Tokenizer, models

from . import pretokenizer
from .gguf_file import GGUFError, GGUFFile

# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp treats the end of generation as any of these token texts, besides EOS/EOT/EOM ids.
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
             "<EOT>", "_<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>")
# llama_detokenize's clean-up for the vocabularies that ask for it: no space before . , ! ?,
# none around a lone apostrophe, none before 's 'm 're 've
_SPACE_BEFORE_PUNCT = re.compile(r" ([?!.,])")
_SPACE_BEFORE_CONTRACTION = re.compile(r" '(?=[sm]|re|ve)")
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
# C's isspace(): the whitespace a right-stripping special token swallows after itself
_C_SPACE = " \t\n\v\f\r"


def _gpt2_byte_chars() -> list[str]:
    """(256,) GPT-2's printable stand-in character for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [""] * 256
    for b, c in zip(bs, cs, strict=True):
        chars[b] = chr(c)
    return chars


_GPT2_BYTE_CHARS = _gpt2_byte_chars()
# str.translate table from a Latin-1 view of UTF-8 bytes to GPT-2's byte characters
_GPT2_ENCODE = {b: c for b, c in enumerate(_GPT2_BYTE_CHARS)}


def _gpt2_spell(piece: str) -> str:
    return piece.encode("utf-8", "surrogatepass").decode("latin-1").translate(_GPT2_ENCODE)


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode stand-ins for bytes, reversed: char -> byte."""
    return {c: b for b, c in enumerate(_GPT2_BYTE_CHARS)}


class GGUFTokenizer:
    """Encoding as llama.cpp does it, decoding through a table of token bytes."""

    def __init__(self, f: GGUFFile):
        self.path = f.path
        self.kind = f.get_str("tokenizer.ggml.model")
        if self.kind not in ("llama", "gpt2"):
            raise GGUFError(f"{f.path}: unsupported tokenizer model {self.kind!r} "
                            "(supported: llama (SentencePiece), gpt2 (byte-level BPE))")
        tokens = f.get_strings("tokenizer.ggml.tokens")
        if tokens is None:
            raise GGUFError(f"{f.path}: missing metadata key 'tokenizer.ggml.tokens'")
        self.tokens: list[str] = tokens.to_list()
        n = len(self.tokens)
        if n == 0:
            raise GGUFError(f"{f.path}: the vocabulary (tokenizer.ggml.tokens) is empty")
        types = f.get_numbers("tokenizer.ggml.token_type", n)
        if types is not None and types.dtype.kind not in "iu":
            raise GGUFError(f"{f.path}: tokenizer.ggml.token_type should hold integers, "
                            f"holds {types.dtype}")
        self.types = (types.astype(np.int32) if types is not None
                      else np.full(n, NORMAL, np.int32))  # (n_vocab,)
        is_spm = self.kind == "llama"
        self.pre: pretokenizer.PreTokenizer | None = None  # the BPE split rule
        if not is_spm:
            name = f.get_str("tokenizer.ggml.pre", "default")
            try:
                self.pre = pretokenizer.lookup(name)
            except ValueError as e:
                raise GGUFError(f"{f.path}: tokenizer.ggml.pre: {e}") from None

        def token_id(key, default=None):
            return f.get_int(key, default if default is not None and default < n else None,
                             min_value=0, max_value=n - 1)

        self.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", is_spm)
        self.bos_id = token_id("tokenizer.ggml.bos_token_id", 1 if is_spm else None)
        self.eos_id = token_id("tokenizer.ggml.eos_token_id", 2 if is_spm else None)
        self.eot_id = token_id("tokenizer.ggml.eot_token_id")
        self.add_bos = f.get_bool("tokenizer.ggml.add_bos_token",
                                  is_spm or (self.pre is not None and self.pre.add_bos))
        if self.pre is not None and self.pre.rule == "gemma4" and self.pre.add_bos:
            self.add_bos = True  # llama.cpp overrides a Gemma 4 file that says otherwise
        # llama_detokenize's clean-up of spaces before punctuation (not applied to streams)
        self.clean_spaces = self.pre is not None and self.pre.clean_spaces
        self.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", False)
        eog = {i for i in (self.eos_id, self.eot_id, token_id("tokenizer.ggml.eom_token_id"))
               if i is not None}
        marked = np.flatnonzero((self.types == CONTROL) | (self.types == USER_DEFINED))
        eog |= {int(i) for i in marked if self.tokens[i] in EOG_TEXTS}
        self.eog_ids = frozenset(eog)
        self._pieces: dict[int, bytes] = {}
        self._byte_decoder = (_gpt2_byte_decoder() if self.pre is not None
                              and self.pre.byte_encode else None)
        self._specials = self._special_tokens(f.get_str("general.name", "").lower())
        self._ids = {t: i for i, t in enumerate(self.tokens)}  # piece -> id, last one wins
        if is_spm:
            scores = f.get_numbers("tokenizer.ggml.scores", n)
            if scores is None:
                raise GGUFError(f"{f.path}: a SentencePiece vocabulary needs "
                                "tokenizer.ggml.scores")
            self._scores: list[float] = np.asarray(scores, dtype=np.float32).tolist()
            self._byte_ids = self._byte_tokens()
        else:
            self._bpe = self._build_bpe(f)

    # -- building ----------------------------------------------------------------------
    def _special_tokens(self, model_name: str) -> list[tuple[str, int, bool, bool]]:
        """(text, id, parsed only with special=True, swallows whitespace after it), longest
        UTF-8 first: llama.cpp's cache_special_tokens and their attributes. llama.cpp gives
        every special token of a model named phi-3/phi3 the right-strip attribute, except
        <unk>, <s> and <|endoftext|>."""
        kinds = (CONTROL, USER_DEFINED, UNKNOWN)
        ids = np.flatnonzero(np.isin(self.types, kinds))
        phi3 = "phi-3" in model_name or "phi3" in model_name
        keeps_space = ("<unk>", "<s>", "<|endoftext|>")
        out = [(self.tokens[i], int(i), bool(self.types[i] != USER_DEFINED),
                phi3 and self.tokens[i] not in keeps_space) for i in ids if self.tokens[i]]
        out.sort(key=lambda s: -len(s[0].encode("utf-8", "surrogatepass")))
        return out

    def _byte_tokens(self) -> list[int]:
        """(256,) the token of each byte for SentencePiece's byte fallback: <0xAB>, else the
        byte's own one-character piece (llama.cpp's byte_to_token), else the unknown token."""
        unk = next((int(i) for i in np.flatnonzero(self.types == UNKNOWN)[:1]), None)
        table = []
        for b in range(256):
            i = self._ids.get(f"<0x{b:02X}>")
            if i is None and b < 0x80:
                i = self._ids.get(chr(b))
            table.append(unk if i is None else i)
        return table

    def _build_bpe(self, f: GGUFFile) -> Tokenizer:
        merges = f.get_strings("tokenizer.ggml.merges")
        if merges is None:
            raise GGUFError(f"{f.path}: a byte-level BPE vocabulary needs tokenizer.ggml.merges")
        pairs = [tuple(m.split(" ", 1)) for m in merges.to_list()]
        bad = next((i for i, pair in enumerate(pairs) if len(pair) != 2), None)
        if bad is not None:
            raise GGUFError(f"{f.path}: tokenizer.ggml.merges[{bad}] = {merges[bad]!r} is not "
                            "two pieces separated by a space")
        try:
            model = models.BPE(vocab=self._ids, merges=pairs,
                               ignore_merges=self.pre.ignore_merges)
        except Exception as e:  # tokenizers raises a bare Exception (e.g. a merge not in vocab)
            raise GGUFError(f"{f.path}: tokenizer.ggml.merges: {e}") from None
        # The pieces come split (pretokenizer.py) and spelled; no pre-tokenizer here. Every
        # character of a piece must be a token, or merging would join its neighbours across it
        # (tokenizers drops unknown characters, llama.cpp keeps them between): true of a full
        # byte-level vocabulary, checked per piece otherwise.
        self._all_chars_known = self.pre.byte_encode and all(
            c in self._ids for c in _GPT2_BYTE_CHARS)
        return Tokenizer(model)

    def _bpe_encode(self, text: str) -> list[int]:
        """llama.cpp's BPE session over one piece of text between special tokens."""
        pieces = self.pre.split(text)
        if self.pre.byte_encode:
            pieces = list(map(_gpt2_spell, pieces))
        out: list[int] = []
        batch: list[str] = []  # pieces merged together in one call
        for p in pieces:
            whole = self._ids.get(p) if self.pre.newline_tokens and not p.strip("\n") else None
            if whole is None and (self._all_chars_known or all(c in self._ids for c in p)):
                batch.append(p)
                continue
            if batch:
                out += self._merge(batch)
                batch = []
            if whole is not None:  # Gemma 4: a run of newlines that is a token stays whole
                out.append(whole)
                continue
            # characters without a token: merged only between them, each spelled by its byte
            # tokens where the vocabulary has them, else dropped (llama.cpp)
            for known, run in itertools.groupby(p, key=lambda c: c in self._ids):
                run = "".join(run)
                if known:
                    out += self._merge([run])
                else:
                    out += [t for c in run for t in self._byte_fallback(c)]
        if batch:
            out += self._merge(batch)
        return out

    def _merge(self, pieces: list[str]) -> list[int]:
        return self._bpe.encode(pieces, is_pretokenized=True, add_special_tokens=False).ids

    def _byte_fallback(self, c: str) -> list[int]:
        data = c.encode("utf-8", "surrogatepass")
        if self.pre.byte_encode:  # llama.cpp looks each byte up as a one-byte text
            names = [chr(b) for b in data if b < 0x80]
        else:
            names = [f"<0x{b:02X}>" for b in data]
        return [self._ids[n] for n in names if n in self._ids]

    # -- encoding ----------------------------------------------------------------------
    def _partition(self, text: str, special: bool) -> list[str | int]:
        """The text as pieces of text and special token ids, in order."""
        frags: list[str | int] = [text] if text else []
        for piece, tid, control, rstrip in self._specials:
            if (control and not special) or not any(
                    type(f) is str and piece in f for f in frags):
                continue
            out: list[str | int] = []
            for f in frags:
                if type(f) is not str or piece not in f:
                    out.append(f)
                    continue
                pos, end = 0, len(f)
                while pos < end:
                    m = f.find(piece, pos)
                    if m < 0:
                        out.append(f[pos:])
                        break
                    if m > pos:
                        out.append(f[pos:m])
                    out.append(tid)
                    pos = m + len(piece)
                    if rstrip:
                        while pos < end and f[pos] in _C_SPACE:
                            pos += 1
            frags = out
        return frags

    def _spm(self, text: str) -> list[int]:
        """llama.cpp's SentencePiece merge loop over one piece of text (spaces already ▁).
        Symbols are runs of characters named by their first index; length[i] == 0 once
        symbol i has been merged into its left neighbour."""
        ids, scores = self._ids, self._scores
        n = len(text)
        length = [1] * n
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap = []  # (-score, left, right, merged length): best score first, then leftmost
        for i in range(n - 1):
            t = ids.get(text[i:i + 2])
            if t is not None:
                heap.append((-scores[t], i, i + 1, 2))
        heapq.heapify(heap)
        push, pop = heapq.heappush, heapq.heappop
        while heap:
            _, left, right, size = pop(heap)
            if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
                continue  # one side has changed since this pair was queued
            length[left] = size
            length[right] = 0
            after = nxt[left] = nxt[right]
            if after >= 0:
                prev[after] = left
                t = ids.get(text[left:after + length[after]])
                if t is not None:
                    push(heap, (-scores[t], left, after, size + length[after]))
            before = prev[left]
            if before >= 0:
                t = ids.get(text[before:left + size])
                if t is not None:
                    push(heap, (-scores[t], before, left, length[before] + size))
        out = []
        i = 0
        while i >= 0:
            piece = text[i:i + length[i]]
            t = ids.get(piece)
            if t is not None:
                out.append(t)
            else:
                for b in piece.encode("utf-8", "surrogatepass"):
                    t = self._byte_ids[b]
                    if t is None:
                        raise ValueError(f"{self.path}: the vocabulary has no token for the "
                                         f"byte 0x{b:02X} of {piece!r} and no unknown token")
                    out.append(t)
            i = nxt[i]
        return out

    def encode(self, text: str, add_bos: bool, add_eos: bool, special: bool,
               continues: bool = False) -> list[int]:
        """Token ids of `text`; continues=True: the text goes on from earlier text, so
        SentencePiece does not prefix a space to its start."""
        ids = [self.bos_id] if add_bos and self.bos_id is not None else []
        # SentencePiece prefixes a space to text that starts or follows a special token
        after_special = not continues
        for frag in self._partition(text, special):
            if type(frag) is int:
                ids.append(frag)
                after_special = True
            elif self.kind == "llama":
                if self.add_space_prefix and after_special:
                    frag = " " + frag
                ids += self._spm(frag.replace(" ", "▁"))
                after_special = False
            else:
                ids += self._bpe_encode(frag)
        if add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    # -- use ---------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @functools.cached_property
    def max_piece_chars(self) -> int:
        """The most characters of text one token stands for: a text longer than n times this
        cannot tokenize into n tokens or fewer."""
        return max(1, max(map(len, self.tokens)))

    def id_of(self, token: str) -> int | None:
        """The id of the token spelled `token` in the vocabulary (None if there is none)."""
        return self._ids.get(token)

    def piece(self, i: int) -> bytes:
        """The bytes token i stands for in text; control tokens stand for none."""
        b = self._pieces.get(i)
        if b is None:
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} is outside the vocabulary "
                                 f"(0..{len(self.tokens) - 1})")
            t, kind = self.tokens[i], self.types[i]
            if kind == CONTROL or kind == UNUSED:
                b = b""
            elif kind == BYTE and self._byte_decoder is None and _BYTE_TOKEN.fullmatch(t):
                b = bytes([int(t[3:-1], 16)])  # "<0xAB>"
            elif kind == USER_DEFINED:
                b = t.encode()
            elif self._byte_decoder is None:
                b = t.replace("▁", " ").encode()
            else:
                b = bytes(self._byte_decoder.get(c, 32) for c in t)
            self._pieces[i] = b
        return b

    def decode(self, ids) -> str:
        data = b"".join(self.piece(int(i)) for i in ids)
        text = data.decode("utf-8", errors="replace")
        if self.add_space_prefix and self._byte_decoder is None and text.startswith(" "):
            text = text[1:]  # the space SentencePiece prepends (llama.cpp removes it too)
        if self.clean_spaces:  # llama_detokenize's three passes, in order
            text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
            text = text.replace(" ' ", "'")
            text = _SPACE_BEFORE_CONTRACTION.sub("'", text)
        return text

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Turns tokens into text as they come, never splitting a UTF-8 character."""

    def __init__(self, tokenizer: GGUFTokenizer):
        self._tk = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self._tk.piece(int(token_id)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
