"""Every BPE pre-tokenizer name llama.cpp accepts: its tokenizations of 30 discriminating strings
(fixtures/pretokenizers, made by llama.cpp after replacing only tokenizer.ggml.pre), reproduced;
the flags beside the rules (BOS default, detokenizer clean-up) as llama.cpp sets them."""

from __future__ import annotations

import json

import pytest
from conftest import fixtures_dir
from gguf_bytes import edit_metadata, string

from gguf_engine import pretokenizer
from gguf_engine.gguf_file import GGUFError, GGUFFile
from gguf_engine.tokenizer import GGUFTokenizer

_DIR = fixtures_dir()
_GOLDEN_FILE = _DIR / "pretokenizers" / "llama-cpp-tokens.json" if _DIR else None
GOLDEN = json.loads(_GOLDEN_FILE.read_text()) if _GOLDEN_FILE else None
NAMES = sorted(GOLDEN["ids"]) if GOLDEN else []


@pytest.fixture(scope="module")
def vocab_bytes(fixtures) -> bytes:
    return (fixtures / "pretokenizers" / "bpe4k-vocab.gguf").read_bytes()


def tokenizer(tmp_path, data: bytes, name: str | None, **changes) -> GGUFTokenizer:
    edits = {"tokenizer.ggml.pre": None if name is None else string(name), **changes}
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(edit_metadata(data, edits))
    return GGUFTokenizer(GGUFFile(path))


def test_the_table_is_llama_cpps(fixtures):
    assert len(NAMES) == 90
    assert set(NAMES) == set(pretokenizer.PRE_TOKENIZERS)
    assert set(GOLDEN["refused"]) <= set(pretokenizer.NOT_BPE)


@pytest.mark.parametrize("name", NAMES)
def test_reproduces_llama_cpp(tmp_path, vocab_bytes, name):
    tk = tokenizer(tmp_path, vocab_bytes, name)
    for text, want in zip(GOLDEN["strings"], GOLDEN["ids"][name], strict=True):
        assert tk.encode(text, add_bos=False, add_eos=False, special=False) == want, (name, text)


@pytest.mark.parametrize("name", ["no-such-rule", "whitespace"])
def test_an_unknown_name_is_named(tmp_path, vocab_bytes, name):
    with pytest.raises(GGUFError, match=f"tokenizer.ggml.pre: unsupported pre-tokenizer '{name}'"):
        tokenizer(tmp_path, vocab_bytes, name)


def test_a_file_without_a_name_gets_the_default_rule(tmp_path, vocab_bytes, fixtures):
    tk = tokenizer(tmp_path, vocab_bytes, None)
    for text, want in zip(GOLDEN["strings"], GOLDEN["ids"]["default"], strict=True):
        assert tk.encode(text, add_bos=False, add_eos=False, special=False) == want


@pytest.mark.parametrize("name, default_bos", [("llama-bpe", True), ("tekken", True),
                                               ("qwen2", False), ("gpt-2", False),
                                               ("gemma4", True)])
def test_bos_default_follows_the_name_and_the_file_decides(tmp_path, vocab_bytes, name,
                                                           default_bos):
    tk = tokenizer(tmp_path, vocab_bytes, name, **{"tokenizer.ggml.add_bos_token": None})
    assert tk.add_bos is default_bos
    says_no = tokenizer(tmp_path, vocab_bytes, name,
                        **{"tokenizer.ggml.add_bos_token": (7, b"\0")})  # bool False
    # llama.cpp makes a Gemma 4 rule add BOS whatever the file says
    assert says_no.add_bos is (name == "gemma4")


@pytest.mark.parametrize("name, cleans", [("gpt-2", True), ("llama-bpe", True), ("megrez", True),
                                          ("qwen2", False), ("gpt-4o", False)])
def test_detokenizing_cleans_spaces_where_llama_cpp_does(tmp_path, vocab_bytes, name, cleans):
    tk = tokenizer(tmp_path, vocab_bytes, name)
    text = "Hi , there . It 's fine ' ok ' and I 'll go !"
    cleaned = "Hi, there. It's fine'ok'and I 'll go!"
    assert tk.decode(tk.encode(text, False, False, False)) == (cleaned if cleans else text)
    # a stream is never cleaned (llama.cpp's token_to_piece)
    stream = tk.stream_decoder()
    assert "".join(stream.push(i) for i in tk.encode(text, False, False, False)) == text
