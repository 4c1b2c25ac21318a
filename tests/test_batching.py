"""Batched decoding: generate_batch gives every prompt exactly what generate gives it alone
(token for token, at temperature 0 and with per-prompt seeds), whatever else is in the batch,
how many slots there are, and what a slot held before."""

from __future__ import annotations

import pytest

import gguf_engine
from gguf_engine.transformer import ContextOverflowError

PROMPTS = ["The quick brown fox", "Once upon a time there was a", "1 2 3 4", "Hello",
           "A much longer prompt that goes on and on, about nothing at all, for a while longer",
           "x", "Tell me about the sea and the", "zz top"]
ARCHS = ["llama3", "qwen2", "phi3", "gemma3", "more-archs/gemma2", "more-archs/qwen3"]


def _path(fixtures, arch):
    folder = "" if "/" in arch else "synthetic/"
    return fixtures / f"{folder}{arch}-Q8_0.gguf"


def singles(model, prompts, **kw):
    seeds = kw.pop("seed", [None] * len(prompts))
    return [model.generate(p, seed=s, **kw) for p, s in zip(prompts, seeds, strict=True)]


def same(batch, alone):
    for b, a in zip(batch, alone, strict=True):
        assert (b.tokens, b.text, b.finish_reason) == (a.tokens, a.text, a.finish_reason)


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_equals_single_calls(fixtures, arch):
    path = _path(fixtures, arch)
    batched = gguf_engine.load(path, n_ctx=96, n_seq=8)
    alone = gguf_engine.load(path, n_ctx=96)
    # a stop string that some continuations meet: sequences end at different steps
    free = singles(alone, PROMPTS, max_tokens=16, temperature=0)
    stop = next(r.text[3:5] for r in free if len(r.text) > 6)
    kw = {"max_tokens": 16, "temperature": 0, "stop": [stop]}
    same(batched.generate_batch(PROMPTS, **kw), singles(alone, PROMPTS, **kw))


def test_more_prompts_than_slots_and_per_prompt_seeds(fixtures):
    path = _path(fixtures, "llama3")
    batched = gguf_engine.load(path, n_ctx=96, n_seq=3)
    alone = gguf_engine.load(path, n_ctx=96)
    seeds = list(range(10, 18))
    kw = {"max_tokens": 12, "temperature": 0.9, "top_k": 40}
    res = batched.generate_batch(PROMPTS, seed=seeds, **kw)
    same(res, singles(alone, PROMPTS, seed=seeds, **kw))
    # and again: the slots now hold the last prompts, which must change nothing
    same(batched.generate_batch(PROMPTS[::-1], seed=seeds[::-1], **kw), res[::-1])


def test_gemma_batch_equals_single_calls(gemma_path):
    batched = gguf_engine.load(gemma_path, n_ctx=128, n_seq=8)
    alone = gguf_engine.load(gemma_path, n_ctx=128)
    prompts = [f"Write one sentence about a {w}." for w in
               ("cat", "river", "robot that paints", "king", "mouse", "star", "tree", "storm")]
    kw = {"max_tokens": 16, "temperature": 0}
    same(batched.generate_batch(prompts, **kw), singles(alone, prompts, **kw))


def test_batch_arguments_are_checked(fixtures):
    model = gguf_engine.load(_path(fixtures, "llama3"), n_ctx=16, n_seq=2)
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        model.generate_batch(["a", "b", "c"], seed=[1, 2])
    with pytest.raises(TypeError, match="does not stream"):
        model.generate_batch(["a"], stream=True)
    with pytest.raises(ContextOverflowError):
        model.generate_batch(["a", "b " * 40])
    with pytest.raises(ValueError, match="n_seq"):
        gguf_engine.load(_path(fixtures, "llama3"), n_seq=0)
    assert model.generate_batch([]) == []
