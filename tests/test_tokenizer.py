"""Every tokenizer golden row: llama.cpp's ids with and without BOS and special parsing, and
decoding gives the text back."""

from __future__ import annotations

import json

import pytest
from conftest import fixtures_dir

import gguf_engine

VOCABS = ["llama", "llama3", "qwen2", "phi3", "gemma3"]


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
    model = gguf_engine.load(fixtures / "synthetic" / f"{vocab}-Q8_0.gguf", n_ctx=64)
    rows = _rows(fixtures / "synthetic" / f"{vocab}-tokenizer.json")
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
