"""Every tokenizer golden row: llama.cpp's ids with and without BOS and special parsing, and
decoding gives the text back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import fixtures_dir

import gguf_engine

VOCABS = ["synthetic/llama", "synthetic/llama3", "synthetic/qwen2", "synthetic/phi3",
          "synthetic/gemma3", "more-archs/qwen3", "more-archs/gemma2"]


def _rows(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def gemma(gemma_path):
    return gguf_engine.load(gemma_path, n_ctx=256)


def check_rows(model, rows):
    for r in rows:
        text = r["text"]
        assert model.tokenize(text) == r["ids_bos"], text
        assert model.tokenize(text, add_bos=False) == r["ids"], text
        assert model.tokenize(text, add_bos=False, special=True) == r["ids_special"], text
        assert model.detokenize(model.tokenize(text, add_bos=False)) == text


@pytest.mark.parametrize("vocab", VOCABS)
def test_synthetic_tokenizers(fixtures, vocab):
    model = gguf_engine.load(fixtures / f"{vocab}-Q8_0.gguf", n_ctx=64)
    rows = _rows(fixtures / f"{vocab}-tokenizer.json")
    assert len(rows) >= 10
    check_rows(model, rows)


def test_gemma_tokenizer(gemma, fixtures):
    rows = _rows(fixtures / "gemma3-270m" / "tokenizer-a.json")
    assert len(rows) >= 10
    check_rows(gemma, rows)


def test_add_bos_always_and_never(gemma):
    assert gemma.tokenize("hi", add_bos=True)[0] == gemma.tokenizer.bos_id
    assert gemma.tokenize("hi", add_bos=False)[0] != gemma.tokenizer.bos_id


def test_qwen2_asks_for_no_bos(fixtures):
    model = gguf_engine.load(fixtures / "synthetic" / "qwen2-Q8_0.gguf", n_ctx=64)
    assert model.tokenize("hello") == model.tokenize("hello", add_bos=False)


def test_stream_never_splits_utf8(gemma):
    """Byte-fallback tokens of one emoji come out as one whole character."""
    ids = gemma.tokenize("snow ☃ and 🦀 crab", add_bos=False)
    dec = gemma.tokenizer.stream_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == gemma.detokenize(ids)
    assert all("\ufffd" not in p for p in pieces)


FIXTURES = fixtures_dir()


@pytest.mark.skipif(FIXTURES is None, reason="shared fixtures not found")
def test_streamed_pieces_concatenate_to_text(fixtures):
    model = gguf_engine.load(fixtures / "synthetic" / "llama3-Q8_0.gguf", n_ctx=128)
    stream = model.generate("Hello world, this is", max_tokens=24, temperature=1.0, seed=3,
                            stream=True)
    pieces = list(stream)
    assert stream.result is not None and "".join(pieces) == stream.result.text
    assert stream.result.text == model.detokenize(stream.result.tokens)
    assert len(stream.result.tokens) == 24 or stream.result.finish_reason == "eos"


def _spm_reference(tk, text: str) -> list[int]:
    """llama.cpp's SentencePiece rule, the slow obvious way: while some adjacent pair of symbols
    joins into a vocabulary piece, merge the best-scoring such pair (ties: leftmost); then spell
    symbols that are not pieces as byte tokens."""
    ids, scores = tk._ids, tk._scores
    syms = list(text)
    while True:
        best = None
        for k in range(len(syms) - 1):
            t = ids.get(syms[k] + syms[k + 1])
            if t is not None and (best is None or scores[t] > best[0]):
                best = (scores[t], k)
        if best is None:
            break
        k = best[1]
        syms[k:k + 2] = [syms[k] + syms[k + 1]]
    out = []
    for s in syms:
        out += [ids[s]] if s in ids else [tk._byte_ids[b] for b in s.encode()]
    return out


@pytest.mark.parametrize("vocab", ["llama", "phi3", "gemma3", "gemma-270m"])
def test_spm_merge_loop_matches_the_obvious_one(fixtures, gemma, vocab):
    """Random texts stitched from vocabulary pieces, ASCII and characters outside the
    vocabulary: the queue-based merge loop gives what re-scanning every pair gives."""
    if vocab == "gemma-270m":
        tk = gemma.tokenizer
    else:
        tk = gguf_engine.load(fixtures / "synthetic" / f"{vocab}-Q8_0.gguf", n_ctx=64).tokenizer
    rng = np.random.default_rng(7)
    normal = np.flatnonzero(tk.types == 1)
    extra = list("abc ▁xyz.,\n") + ["☃", "🦀", "é"]
    for _ in range(60):
        parts = [tk.tokens[i] if rng.random() < 0.6 else extra[rng.integers(len(extra))]
                 for i in rng.choice(normal, size=rng.integers(1, 40))]
        text = "".join(parts).replace(" ", "▁")
        assert tk._spm(text) == _spm_reference(tk, text), text


def test_phi3_special_tokens_swallow_the_whitespace_after_them(fixtures):
    """llama.cpp right-strips after every special token of a model named phi3 (its
    general.name), except <unk>, <s> and <|endoftext|>; other models keep the whitespace."""
    phi3 = gguf_engine.load(fixtures / "synthetic" / "phi3-Q8_0.gguf", n_ctx=64)
    llama = gguf_engine.load(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=64)
    user = phi3.tokenizer.tokens.index("<|user|>")

    def enc(m, text):
        return m.tokenize(text, add_bos=False, special=True)

    assert enc(phi3, "<|user|>\n  hi there") == [user] + enc(phi3, "hi there")
    assert enc(phi3, "<s>  hi") == [1] + enc(phi3, "  hi")  # <s> keeps its whitespace
    eos = llama.tokenizer.eos_id
    assert enc(llama, "</s>\n hi") != [eos] + enc(llama, "hi")
    assert enc(llama, "</s>\n hi")[0] == eos
