"""generate / stream / chat behaviour and the errors users meet, on the tiny synthetic models."""

from __future__ import annotations

import math

import gguf
import numpy as np
import pytest

import gguf_engine
from gguf_engine.chat import ChatTemplateError
from gguf_engine.gguf_file import GGUFError
from gguf_engine.transformer import ContextOverflowError


@pytest.fixture(scope="module")
def llama3(fixtures):
    return gguf_engine.load(fixtures / "synthetic" / "llama3-Q8_0.gguf", n_ctx=256)


@pytest.fixture(scope="module")
def llama(fixtures):
    return gguf_engine.load(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=64)


PROMPT = "The quick brown fox jumps over"


def test_stop_string_split_across_tokens_is_never_emitted(llama3):
    free = llama3.generate(PROMPT, max_tokens=24, temperature=0)
    pieces = [llama3.detokenize([t]) for t in free.tokens]
    # a stop string made of the end of one token and the start of the next
    k = next(i for i in range(1, len(pieces)) if len(pieces[i - 1]) >= 2 and len(pieces[i]) >= 2)
    stop = pieces[k - 1][-2:] + pieces[k][:2]
    before = free.text[: free.text.index(stop)]
    stream = llama3.generate(PROMPT, max_tokens=24, temperature=0, stop=[stop], stream=True)
    streamed = "".join(stream)
    res = stream.result
    assert res.finish_reason == "stop"
    assert res.text == streamed == before
    assert stop not in res.text


def test_seed_makes_sampling_reproducible(llama3):
    a = llama3.generate(PROMPT, max_tokens=12, temperature=1.0, seed=42)
    b = llama3.generate(PROMPT, max_tokens=12, temperature=1.0, seed=42)
    assert a.tokens == b.tokens and a.text == b.text


def test_greedy_ignores_seed_and_is_argmax(llama3):
    res = llama3.generate(PROMPT, max_tokens=4, temperature=0, seed=1)
    prompt = llama3.tokenize(PROMPT)
    logits = llama3.logits(prompt + res.tokens)
    n = len(prompt)
    assert res.tokens == [int(np.argmax(logits[n - 1 + j])) for j in range(len(res.tokens))]


def test_logprobs_match_log_softmax(llama3):
    res = llama3.generate(PROMPT, max_tokens=3, temperature=0, logprobs=3)
    prompt = llama3.tokenize(PROMPT)
    logits = llama3.logits(prompt + res.tokens).astype(np.float64)
    assert len(res.logprobs) == len(res.tokens)
    for j, entry in enumerate(res.logprobs):
        row = logits[len(prompt) - 1 + j]
        ref = row - row.max() - math.log(np.exp(row - row.max()).sum())
        assert entry["id"] == res.tokens[j]
        assert abs(entry["logprob"] - ref[entry["id"]]) < 1e-4
        assert [t["id"] for t in entry["top_logprobs"]] == list(np.argsort(-ref)[:3])


def test_prefix_cache_reuses_whole_chunks_only(fixtures):
    """A cached prefix is reused only in whole prefill chunks from position 0 (48 tokens
    here): then a prompt's numbers, and tokens, are those of an empty cache."""
    path = fixtures / "synthetic" / "llama3-Q8_0.gguf"

    def load():
        model = gguf_engine.load(path, n_ctx=200)
        model.net.chunk = 48  # the chunk size decides the reuse; 48 keeps the prompts short
        return model

    model, alone = load(), load()
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(5, 400, 60)]
    first = model.generate(prompt, max_tokens=5, temperature=0)
    assert first.timings.prompt_tokens == 60
    again = model.generate(prompt, max_tokens=5, temperature=0)
    assert again.tokens == first.tokens and again.timings.prompt_tokens == 60 - 48
    # past the generated tokens: only the whole chunk is reused
    longer = prompt + first.tokens[:3]
    cont = model.generate(longer, max_tokens=2, temperature=0)
    assert cont.timings.prompt_tokens == len(longer) - 48
    assert cont.tokens == alone.generate(longer, max_tokens=2, temperature=0).tokens
    # sharing fewer than 48 tokens: prefilled whole
    other = prompt[:30] + [7] * 30
    res = model.generate(other, max_tokens=5, temperature=0)
    assert res.timings.prompt_tokens == 60
    assert res.tokens == alone.generate(other, max_tokens=5, temperature=0).tokens


def test_context_fills_with_finish_reason_length(fixtures):
    model = gguf_engine.load(fixtures / "synthetic" / "llama3-Q8_0.gguf", n_ctx=12)
    res = model.generate([5, 6, 7, 8, 9, 10, 11, 12], max_tokens=100, temperature=1.0, seed=0,
                         ignore_eos=True)
    assert res.finish_reason == "length"
    assert len(res.prompt_tokens) + len(res.tokens) == 12


def test_prompt_past_the_context_raises(fixtures):
    model = gguf_engine.load(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=8)
    with pytest.raises(ContextOverflowError, match="context holds 8"):
        model.generate("one two three four five six seven eight nine ten", max_tokens=1)


@pytest.mark.parametrize("bad", [
    {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"min_p": -0.1}, {"min_p": 2.0},
    {"top_k": -1}, {"top_k": 1.5}, {"repeat_penalty": 0.0}, {"temperature": float("nan")},
    {"seed": "x"}, {"logprobs": -1}, {"stop": [""]},
])
def test_invalid_sampling_values_raise(llama, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        llama.generate("hello", max_tokens=1, **bad)


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt_raises(llama, prompt):
    with pytest.raises(ValueError, match="empty"):
        llama.generate(prompt, max_tokens=1)


def test_out_of_vocabulary_token_raises(llama):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llama.generate([1, 10**6], max_tokens=1)


@pytest.mark.parametrize("template, message", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "unsafe"),
    ("{{ messages.__class__.__init__.__globals__ }}", "unsafe"),
    ("{% for m in messages %}", "does not parse"),
    ("{{ raise_exception('no system role') }}", "no system role"),
])
def test_malicious_or_broken_templates_raise(llama, template, message):
    with pytest.raises(ChatTemplateError, match=message):
        llama.chat([{"role": "user", "content": "hi"}], chat_template=template, max_tokens=1)


def test_file_without_template_needs_one(llama):
    with pytest.raises(ChatTemplateError, match="no chat template"):
        llama.chat([{"role": "user", "content": "hi"}], max_tokens=1)
    res = llama.chat([{"role": "user", "content": "hi"}], max_tokens=2, temperature=0,
                     chat_template="{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
                                   "{% endfor %}")
    assert res.prompt_tokens == llama.tokenize("hi")


def test_file_template_and_generation_prompt(llama3):
    ids = llama3.chat_prompt([{"role": "user", "content": "hello"}])
    text = llama3.detokenize(ids)
    assert ids[0] == llama3.tokenizer.bos_id
    assert ids.count(1) == 2  # <|im_start|> parsed as the special token, twice
    assert text.endswith("assistant\n")


def test_gemma_files_without_template_use_the_gemma_turns(fixtures):
    model = gguf_engine.load(fixtures / "synthetic" / "gemma3-Q8_0.gguf", n_ctx=64)
    ids = model.chat_prompt([{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "hi"}])
    start, end = model.tokenize("<start_of_turn>", add_bos=False, special=True)[0], 4
    assert ids[0] == model.tokenizer.bos_id and ids.count(start) == 2 and ids.count(end) == 1
    res = model.chat([{"role": "user", "content": "hi"}], max_tokens=3, temperature=0)
    assert res.finish_reason in ("length", "eos")


def test_bad_messages_raise(llama3):
    with pytest.raises(ValueError, match="messages"):
        llama3.chat([{"role": "user"}], max_tokens=1)


def _tiny_llama(path, arch="llama", skip=()):
    """A 1-layer model written with gguf-py, with tensors left out on request."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(2)
    w.add_context_length(64)
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (16, 32), "output_norm.weight": (32,),
              "blk.0.attn_norm.weight": (32,), "blk.0.attn_q.weight": (32, 32),
              "blk.0.attn_k.weight": (32, 32), "blk.0.attn_v.weight": (32, 32),
              "blk.0.attn_output.weight": (32, 32), "blk.0.ffn_norm.weight": (32,),
              "blk.0.ffn_gate.weight": (64, 32), "blk.0.ffn_up.weight": (64, 32),
              "blk.0.ffn_down.weight": (32, 64)}
    for name, shape in shapes.items():
        if name not in skip:
            w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_unknown_architecture_is_named(tmp_path):
    with pytest.raises(GGUFError, match="unsupported architecture 'mamba'"):
        gguf_engine.load(_tiny_llama(tmp_path / "m.gguf", arch="mamba"))


def test_missing_tensor_is_named(tmp_path):
    path = _tiny_llama(tmp_path / "m.gguf", skip={"blk.0.ffn_up.weight"})
    with pytest.raises(GGUFError, match="missing tensor 'blk.0.ffn_up.weight'"):
        gguf_engine.load(path)


@pytest.mark.parametrize("kw, message", [
    ({"device": "tpu"}, "invalid device"), ({"n_ctx": 0}, "n_ctx"), ({"n_threads": 0}, "n_threads"),
])
def test_bad_load_arguments(fixtures, kw, message):
    with pytest.raises(ValueError, match=message):
        gguf_engine.load(fixtures / "synthetic" / "llama-Q8_0.gguf", **kw)


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "integer"])
def test_each_model_runs_with_its_own_thread_count(fixtures, exact):
    """Two models with different n_threads in one process: each call runs with its model's
    count (Numba's for the kernels, BLAS's for a batch), and the caller's settings are back
    afterwards. Observed from inside the forward pass of each call. On the exact route a
    batch runs Numba's share on one thread (BLAS does the work); on the integer route the
    batch is Numba's and keeps the model's count."""
    import numba
    import threadpoolctl

    path = fixtures / "synthetic" / "llama-Q8_0.gguf"
    one = gguf_engine.load(path, n_threads=1, exact=exact)
    two = gguf_engine.load(path, n_threads=2, exact=exact)
    seen = []
    for m in (one, two):
        inner = m.net._run

        def spy(tokens, *a, inner=inner):
            blas = {p["num_threads"] for p in threadpoolctl.threadpool_info()
                    if p["user_api"] == "blas"}
            seen.append((len(tokens), numba.get_num_threads(), blas))
            return inner(tokens, *a)

        m.net._run = spy
    before = numba.get_num_threads()
    blas_before = {p["num_threads"] for p in threadpoolctl.threadpool_info()
                   if p["user_api"] == "blas"}
    one.generate([1, 2, 3], max_tokens=1, temperature=0)
    two.generate([1, 2, 3], max_tokens=1, temperature=0)
    one.logits(list(range(1, 40)))  # a batch: Numba's share on one thread, BLAS on the model's
    two.logits(list(range(1, 40)))
    batch = 1 if exact else min(2, before)
    assert [(n, t) for n, t, _ in seen] == [(3, 1), (3, min(2, before)), (39, 1), (39, batch)]
    if exact:
        assert seen[2][2] == {1} and seen[3][2] == {min(2, max(blas_before))}
    assert numba.get_num_threads() == before
    assert {p["num_threads"] for p in threadpoolctl.threadpool_info()
            if p["user_api"] == "blas"} == blas_before
