"""The tokenizer stored in a GGUF file, as a `tokenizers.Tokenizer`, plus detokenization from a
table of token bytes.

- SentencePiece style (`tokenizer.ggml.model = llama`): llama.cpp merges the adjacent pair whose
  merged piece scores highest. That is a BPE whose merges are every split of a vocabulary piece
  into two pieces, ranked by the merged piece's score, with byte fallback.
- Byte-level BPE (`gpt2`): the file's merges, with the pre-tokenizer regex that
  `tokenizer.ggml.pre` names (llama.cpp's `llama-vocab.cpp`).
Control tokens are special (parsed only with `special=True`); user-defined tokens are always
parsed, as in llama.cpp. Finding the SentencePiece merges takes a second or two on a 262k
vocabulary, so they are cached on disk as token-id pairs, keyed by a digest of the vocabulary
(loading a saved tokenizer.json would take longer than building the tokenizer from them).
"""

from __future__ import annotations

import codecs
import hashlib
import os

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

from .default_model import cache_dir
from .gguf_file import GGUFError, GGUFFile

# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_TOKENIZER_REGEX = {
    "default": _GPT2_SPLIT,
    "gpt-2": _GPT2_SPLIT,
    "llama-bpe": (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
    "qwen2": (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|"
              r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}
# llama.cpp treats the end of generation as any of these token texts, besides EOS/EOT/EOM ids.
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
             "<EOT>", "_<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>")
TOKENIZER_CACHE_VERSION = "2"


def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable-unicode stand-ins for bytes, reversed: char -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class GGUFTokenizer:
    """Encoding through `tokenizers`, decoding through a table of token bytes."""

    def __init__(self, f: GGUFFile):
        self.path = f.path
        self.kind = f.get("tokenizer.ggml.model")
        if self.kind not in ("llama", "gpt2"):
            raise GGUFError(f"{f.path}: unsupported tokenizer model {self.kind!r} "
                            "(supported: llama (SentencePiece), gpt2 (byte-level BPE))")
        tokens = f.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise GGUFError(f"{f.path}: missing metadata key 'tokenizer.ggml.tokens'")
        self.tokens: list[str] = tokens.to_list()
        n = len(self.tokens)
        types = f.get("tokenizer.ggml.token_type")
        self.types = (np.asarray(types, dtype=np.int32) if types is not None
                      else np.full(n, NORMAL, np.int32))  # (n_vocab,)
        self.pre = f.get("tokenizer.ggml.pre", "default")
        is_spm = self.kind == "llama"
        self.add_space_prefix = bool(f.get("tokenizer.ggml.add_space_prefix", is_spm))
        self.bos_id = f.get("tokenizer.ggml.bos_token_id", 1 if is_spm else None)
        self.eos_id = f.get("tokenizer.ggml.eos_token_id", 2 if is_spm else None)
        self.eot_id = f.get("tokenizer.ggml.eot_token_id")
        self.add_bos = bool(f.get("tokenizer.ggml.add_bos_token", is_spm))
        self.add_eos = bool(f.get("tokenizer.ggml.add_eos_token", False))
        eog = {i for i in (self.eos_id, self.eot_id, f.get("tokenizer.ggml.eom_token_id"))
               if i is not None}
        marked = np.flatnonzero((self.types == CONTROL) | (self.types == USER_DEFINED))
        eog |= {int(i) for i in marked if self.tokens[i] in EOG_TEXTS}
        self.eog_ids = frozenset(eog)
        self._pieces: dict[int, bytes] = {}
        self._byte_decoder = None if is_spm else _gpt2_byte_decoder()
        self.tok = self._build_spm(f) if self.kind == "llama" else self._build_bpe(f)

    # -- building ----------------------------------------------------------------------
    def _digest(self, f: GGUFFile) -> str:
        h = hashlib.sha256(TOKENIZER_CACHE_VERSION.encode())
        for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre",
                    "tokenizer.ggml.add_space_prefix"):
            h.update(repr(f.get(key)).encode())
        h.update("\0".join(self.tokens).encode("utf-8", "surrogatepass"))
        h.update(self.types.tobytes())
        for key in ("tokenizer.ggml.scores", "tokenizer.ggml.merges"):
            v = f.get(key)
            if v is not None:
                h.update(np.asarray(v).tobytes() if key.endswith("scores")
                         else "\n".join(v.to_list()).encode())
        return h.hexdigest()[:24]

    def _spm_merges(self, f: GGUFFile, scores: np.ndarray) -> np.ndarray:
        """(n_merges, 2) int32 token ids (left, right), best first: every split of a mergeable
        piece into two vocabulary pieces, ranked by the merged piece's score. Cached on disk."""
        path = cache_dir() / "tokenizers" / f"{self._digest(f)}.merges.npy"
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass  # not cached yet, or a damaged entry: rebuild it
        vocab = {t: i for i, t in enumerate(self.tokens)}
        mergeable = (self.types == NORMAL) | (self.types == USER_DEFINED)
        found = []  # (-score, merged id, left id, right id)
        for i, piece in enumerate(self.tokens):
            if not mergeable[i] or len(piece) < 2:
                continue
            for k in range(1, len(piece)):
                left, right = vocab.get(piece[:k]), vocab.get(piece[k:])
                if left is not None and right is not None:
                    found.append((-scores[i], i, left, right))
        found.sort()
        merges = np.array([(m[2], m[3]) for m in found], dtype=np.int32).reshape(-1, 2)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, merges)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the rebuild next time
        return merges

    def _added_tokens(self) -> list[AddedToken]:
        special = np.flatnonzero((self.types == CONTROL) | (self.types == USER_DEFINED))
        return [AddedToken(self.tokens[i], special=bool(self.types[i] == CONTROL),
                           normalized=False) for i in special]

    def _build_spm(self, f: GGUFFile) -> Tokenizer:
        scores = f.get("tokenizer.ggml.scores")
        if scores is None:
            raise GGUFError(f"{f.path}: a SentencePiece vocabulary needs tokenizer.ggml.scores")
        ids = self._spm_merges(f, np.asarray(scores, dtype=np.float64))
        toks = self.tokens
        pieces = np.array(toks, dtype=object)  # (n_vocab,) for vectorized lookups
        merges = list(zip(pieces[ids[:, 0]].tolist(), pieces[ids[:, 1]].tolist(), strict=True))
        unk = next((toks[i] for i in np.flatnonzero(self.types == UNKNOWN)[:1]), None)
        model = models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges,
                           unk_token=unk, byte_fallback=True, fuse_unk=True)
        tok = Tokenizer(model)
        norm = [normalizers.Replace(" ", "▁")]
        if self.add_space_prefix:
            norm.insert(0, normalizers.Prepend("▁"))
        tok.normalizer = normalizers.Sequence(norm)
        tok.add_tokens(self._added_tokens())
        return tok

    def _build_bpe(self, f: GGUFFile) -> Tokenizer:
        merges = f.get("tokenizer.ggml.merges")
        if merges is None:
            raise GGUFError(f"{f.path}: a byte-level BPE vocabulary needs tokenizer.ggml.merges")
        if self.pre not in PRE_TOKENIZER_REGEX:
            raise GGUFError(f"{f.path}: unsupported pre-tokenizer {self.pre!r} (supported: "
                            f"{', '.join(sorted(PRE_TOKENIZER_REGEX))})")
        vocab = {t: i for i, t in enumerate(self.tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges.to_list()]
        model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=self.pre == "llama-bpe")
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_REGEX[self.pre]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.add_tokens(self._added_tokens())
        return tok

    # -- use ---------------------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool, add_eos: bool, special: bool) -> list[int]:
        self.tok.encode_special_tokens = not special
        ids = self.tok.encode(text, add_special_tokens=False).ids if text else []
        if add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if add_eos and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

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
            elif kind == BYTE and self._byte_decoder is None:
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
