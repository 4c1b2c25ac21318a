"""Hostile files, kernels called wrongly, hostile chat templates, a model shared by threads:
each case once crashed, hung or answered wrongly. Cases that crashed the process run in a
subprocess and assert a clean exit status and message."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from gguf_bytes import (
    ARRAY,
    FLOAT32,
    INT32,
    STRING,
    UINT32,
    _str,
    array,
    edit_metadata,
    string,
    u32,
)

from gguf_engine.chat import ChatTemplateError
from gguf_engine.gguf_file import GGUFError
from gguf_engine.model import Model, StreamInvalidatedError
from gguf_engine.transformer import ContextMemoryError, NonFiniteLogitsError


def run_python(code: str, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def cli(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_engine", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, **kw)


def assert_clean_error(res, *fragments):
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    for frag in fragments:
        assert frag in res.stderr, res.stderr


@pytest.fixture(scope="module")
def llama_bytes(fixtures) -> bytes:
    return (fixtures / "synthetic" / "llama-Q8_0.gguf").read_bytes()


@pytest.fixture(scope="module")
def llama3_bytes(fixtures) -> bytes:
    return (fixtures / "synthetic" / "llama3-Q8_0.gguf").read_bytes()


def write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


# -- 1. RoPE wider than a head, or odd ----------------------------------------------------
@pytest.mark.parametrize("n_rot", [66, 128, 63])
def test_rope_dimension_past_the_head_is_refused(tmp_path, llama_bytes, n_rot):
    path = write(tmp_path, "rope.gguf",
                 edit_metadata(llama_bytes, {"llama.rope.dimension_count": u32(n_rot)}))
    res = cli("generate", "-m", path, "-n", 2, "--temp", 0, "Hello")
    assert_clean_error(res, "llama.rope.dimension_count", f"= {n_rot}", "head size 64")


# -- 2. public kernels called with wrong shapes -------------------------------------------
def test_public_kernels_check_shapes_in_a_subprocess():
    res = run_python("""
        import numpy as np
        from gguf_engine import kernels
        f = np.float32
        q = np.zeros((1, 4, 64), f); k = np.zeros((2, 8, 64), f); out = np.zeros_like(q)
        cases = {
            "position past the cache": lambda: kernels.attention.attention(
                q, k, k, 8, 0, 0.125, np.zeros((4, 8), f), out),
            "small scores": lambda: kernels.attention.attention(
                q, k, k, 5, 0, 0.125, np.zeros((4, 3), f), out),
            "matmul past the cache": lambda: kernels.attention.attention_matmul(
                np.zeros((4, 4, 64), f), k, k, 6, 0, 0.125, np.zeros((4, 4, 64), f)),
            "long frequency table": lambda: kernels.rope.rope(
                np.zeros((2, 4, 64), f), np.arange(2), np.ones(40), False),
            "short rmsnorm out": lambda: kernels.norms.rmsnorm(
                np.ones((4, 64), f), np.ones(64, f), 1e-6, np.zeros((2, 64), f)),
            "rmsnorm weight": lambda: kernels.norms.rmsnorm(
                np.ones((4, 64), f), np.ones(32, f), 1e-6, np.zeros((4, 64), f)),
            "gated out": lambda: kernels.activations.gated(
                np.ones((2, 64), f), np.zeros((2, 64), f), True),
            "float64 x": lambda: kernels.norms.rmsnorm(
                np.ones((4, 64)), np.ones(64, f), 1e-6, np.zeros((4, 64), f)),
        }
        for name, call in cases.items():
            try:
                call()
                print(name, "-> no error")
            except (ValueError, TypeError) as e:
                print(name, "->", type(e).__name__, e)
    """)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 8 and not any("no error" in line for line in lines), res.stdout
    assert "do not fit the cache of 8 positions" in lines[0]
    assert "scores must have at least 2 rows of 6 values" in lines[1]
    assert "rotate 80 dimensions but heads have 64" in lines[3]
    assert "out must have shape (4, 64)" in lines[4]


# -- 3. templates that build huge values or never end -------------------------------------
@pytest.mark.parametrize("template, message", [
    ("{{ 'a' * 10**9 }}", "repetition would build 1000000000"),
    ("{{ 'a' * 10**8 }}", "repetition would build 100000000"),
    ("{{ lipsum(10**6) }}", "lipsum() takes at most"),
    ("{{ 10 ** (10 ** 10) }}", "too large to compute"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "took longer than 5 s"),
    ('{{ "%1000000000s" % 1 }}', "format width"),
    ("{{ 'x'.ljust(10**10) }}", "memory"),
])
def test_hostile_templates_are_stopped(fixtures, template, message):
    model = _llama(fixtures)
    with pytest.raises(ChatTemplateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.chat([{"role": "user", "content": "hi"}], chat_template=template, max_tokens=1)
    # the process and the renderer are fine afterwards
    ok = model.chat([{"role": "user", "content": "hi"}], max_tokens=1, temperature=0,
                    chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    assert ok.prompt_tokens[-1] == model.tokenize("hi", add_bos=False)[-1]


def test_hostile_template_from_the_cli_exits_2(fixtures):
    res = cli("chat", "-m", fixtures / "synthetic" / "llama-Q8_0.gguf", "-n", 2,
              "--chat-template", "{{ 'a' * 10**9 }}", input="hi\n")
    assert_clean_error(res, "repetition would build")


def test_rendered_prompt_longer_than_the_context_is_refused_before_tokenizing(fixtures):
    from gguf_engine.transformer import ContextOverflowError

    model = Model(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=32)
    with pytest.raises(ContextOverflowError, match="longer than the context of 32"):
        model.chat([{"role": "user", "content": "hi"}], max_tokens=1,
                   chat_template="{% for i in range(100000) %}word {% endfor %}")


_MODELS: dict = {}


def _llama(fixtures) -> Model:
    if "llama" not in _MODELS:
        _MODELS["llama"] = Model(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=256)
    return _MODELS["llama"]


# -- 4. counts that would size huge allocations -------------------------------------------
def test_huge_block_count_is_refused_at_once(tmp_path, llama_bytes):
    path = write(tmp_path, "blocks.gguf",
                 edit_metadata(llama_bytes, {"llama.block_count": (10, struct.pack("<Q", 2**40))}))
    res = cli("generate", "-m", path, "-n", 2, "Hello")  # cli's timeout catches a hang
    assert_clean_error(res, "block_count is 1099511627776 but the file has tensors for 2 layers")


def test_n_ctx_is_capped_at_the_trained_length(fixtures):
    path = fixtures / "synthetic" / "llama-Q8_0.gguf"
    trained = Model(path).config.context_length
    with pytest.warns(UserWarning, match="more than the"):
        model = Model(path, n_ctx=10**6)
    assert model.n_ctx == trained


def test_kv_cache_larger_than_memory_is_refused(fixtures, monkeypatch):
    from gguf_engine.backend_cpu import CPUBackend

    monkeypatch.setattr(CPUBackend, "free_memory", lambda self: 1 << 30)
    with pytest.raises(ContextMemoryError, match="needs 2.0 GiB of KV cache, but only 1.0 GiB"):
        Model(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=2**20, extend_context=True)


def test_huge_n_ctx_on_gemma_from_the_cli_is_capped(gemma_path):
    res = cli("generate", "-m", gemma_path, "-c", 10**6, "-n", 1, "--temp", 0, "Hello")
    assert res.returncode == 0, res.stderr
    assert "warning: n_ctx=1000000 is more than the 32768 tokens" in res.stderr


# -- 5. one model, several callers --------------------------------------------------------
PROMPTS = ["Hello world", "The quick brown fox", "Once upon a time", "1, 2, 3, 4",
           "In the beginning", "Dear friend,", "A B C", "import numpy as np"]


def _call(model, i):
    return model.generate(PROMPTS[i % len(PROMPTS)], max_tokens=6 + i % 5, temperature=0.7,
                          seed=i).tokens


def test_two_threads_sharing_a_model_get_what_they_get_alone(fixtures):
    path = fixtures / "synthetic" / "llama3-Q8_0.gguf"
    model = Model(path, n_ctx=128)
    alone = {i: _call(Model(path, n_ctx=128), i) for i in range(40)}
    got: dict = {}
    errors = []

    def worker(ids):
        try:
            for i in ids:
                got[i] = _call(model, i)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(range(k, 40, 2),)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors and got == alone


def test_streams_in_two_threads_wait_their_turn(fixtures):
    path = fixtures / "synthetic" / "llama3-Q8_0.gguf"
    model = Model(path, n_ctx=128)
    alone = [model.generate(p, max_tokens=8, temperature=0).text for p in PROMPTS[:2]]
    texts = ["", ""]

    def reader(k):
        for piece in model.generate(PROMPTS[k], max_tokens=8, temperature=0, stream=True):
            texts[k] += piece
            time.sleep(0.005)  # give the other thread every chance to interleave

    threads = [threading.Thread(target=reader, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert texts == alone


def test_a_stream_left_open_in_the_same_thread_is_invalidated(fixtures):
    model = Model(fixtures / "synthetic" / "llama3-Q8_0.gguf", n_ctx=128)
    alone = model.generate(PROMPTS[1], max_tokens=8, temperature=0).text
    first = model.generate(PROMPTS[0], max_tokens=8, temperature=0, stream=True)
    next(first)
    second = model.generate(PROMPTS[1], max_tokens=8, temperature=0, stream=True)
    assert "".join(second) == alone  # no deadlock, and the new call is right
    with pytest.raises(StreamInvalidatedError, match="same thread started another call"):
        next(first)


# -- 6. values of the wrong kind or size --------------------------------------------------
def _load_error(tmp_path, data) -> str:
    path = write(tmp_path, "bad.gguf", data)
    with pytest.raises(GGUFError) as e:
        Model(path, n_ctx=64)
    return str(e.value)


@pytest.mark.parametrize("key, value, message", [
    ("llama.attention.head_count", u32(0), "head_count' = 0 is out of range"),
    ("llama.attention.head_count_kv", u32(0), "head_count_kv' = 0 is out of range"),
    ("llama.attention.key_length", u32(0), "key_length' = 0 is out of range"),
    ("llama.block_count", array(UINT32, [struct.pack("<I", 2)] * 2),
     "per-layer values of 'llama.block_count'"),
    ("llama.block_count", string("2"), "should be an integer"),
    ("tokenizer.ggml.token_type", array(INT32, [struct.pack("<i", 1)] * 10),
     "token_type' has 10 entries, expected 512"),
    ("tokenizer.ggml.tokens", array(UINT32, [struct.pack("<I", 1)] * 512),
     "should be an array of strings"),
    ("tokenizer.ggml.eos_token_id", string("2"), "eos_token_id' should be an integer"),
    ("tokenizer.ggml.bos_token_id", u32(512), "bos_token_id' = 512 is out of range [0, 511]"),
    ("llama.rope.freq_base", (FLOAT32, struct.pack("<f", float("nan"))), "a finite number"),
    ("llama.attention.layer_norm_rms_epsilon", (FLOAT32, struct.pack("<f", -1.0)), "must be > 0"),
])
def test_bad_metadata_values_are_named(tmp_path, llama_bytes, key, value, message):
    assert message in _load_error(tmp_path, edit_metadata(llama_bytes, {key: value}))


def test_malformed_merges_are_named(tmp_path, llama3_bytes):
    bad = array(STRING, [_str("nospace")] * 3)
    assert "merges[0] = 'nospace' is not two pieces" in _load_error(
        tmp_path, edit_metadata(llama3_bytes, {"tokenizer.ggml.merges": bad}))


def test_deeply_nested_arrays_are_refused(tmp_path, llama_bytes):
    value = struct.pack("<IQ", INT32, 0)  # innermost: an empty int32 array
    for _ in range(200):
        value = struct.pack("<IQ", ARRAY, 1) + value
    assert "nested deeper than 8 levels" in _load_error(
        tmp_path, edit_metadata(llama_bytes, {"x.deep": (ARRAY, value)}))


@pytest.mark.parametrize("template, message", [
    ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}", "recursed too deeply"),
    ('{% include "other.jinja" %}', "no loader"),
    ('{% import "m.jinja" as m %}', "no loader"),
    ('{% extends "base.jinja" %}', "no loader"),
    ("{{ range(10**20) | list }}", "OverflowError"),
])
def test_template_failures_are_chat_template_errors(fixtures, template, message):
    with pytest.raises(ChatTemplateError, match=message):
        _llama(fixtures).chat([{"role": "user", "content": "hi"}], chat_template=template,
                              max_tokens=1)


# -- 7. accepted but wrong ----------------------------------------------------------------
def test_dimension_product_overflowing_int64_is_refused(tmp_path):
    from gguf_bytes import gguf_bytes

    data = gguf_bytes([("w", (2**32, 2**32, 2**10), 0, 0, 1024)], data=b"\0" * 1024)
    with pytest.raises(GGUFError, match="truncated tensor data"):
        from gguf_engine.gguf_file import GGUFFile

        GGUFFile(write(tmp_path, "big.gguf", data))


def test_duplicate_metadata_keys_are_refused(tmp_path, llama_bytes):
    data = edit_metadata(llama_bytes, {}, duplicate="llama.block_count")
    assert "duplicate metadata key 'llama.block_count'" in _load_error(tmp_path, data)


def test_nan_weights_raise_instead_of_emitting_a_token(tmp_path, fixtures):
    from gguf_engine.gguf_file import GGUFFile

    src = fixtures / "synthetic" / "llama-F32.gguf"
    t = GGUFFile(src).tensor("output_norm.weight")
    data = bytearray(src.read_bytes())
    data[t.offset:t.offset + 4] = struct.pack("<f", float("nan"))
    model = Model(write(tmp_path, "nan.gguf", bytes(data)), n_ctx=64)
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        model.generate("Hello", max_tokens=2, temperature=0)


def test_large_finite_logits_are_not_called_non_finite(fixtures):
    # the check sums each row in float32 first: a sum past float32's range (finite logits
    # near its maximum) must fall back to the element test, not raise
    net = Model(fixtures / "synthetic" / "llama-F32.gguf", n_ctx=64).net
    logits = np.full((2, net.config.n_vocab), 3e38, np.float32)
    net._check_finite(logits, 0, 0, 0)
    logits[1, 5] = np.inf
    with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
        net._check_finite(logits, 0, 0, 0)


def test_matvec_out_aliasing_its_input_and_bad_scratch_are_errors():
    from gguf import GGMLQuantizationType as T

    from gguf_engine import kernels

    w = np.ones((64, 64), np.float32).view(np.uint8)
    x = np.ones(64, np.float32)
    with pytest.raises(ValueError, match="overlaps an input"):
        kernels.matvec(w, T.F32, (64, 64), x, out=x)
    wq = np.zeros((64, 2 * 34), np.uint8)  # Q8_0: 2 blocks of 34 bytes per row
    with pytest.raises(TypeError, match="scratch must be float32"):
        kernels.matmul(wq, T.Q8_0, (64, 64), np.ones((20, 64), np.float32),
                       scratch=np.zeros(1 << 16, np.int32))


# -- 8. the hub without a network ---------------------------------------------------------
def test_unresolvable_hub_is_one_line_without_retries(tmp_path, monkeypatch):
    import socket

    import huggingface_hub

    from gguf_engine import hub

    calls = []

    def no_dns(host, *a, **k):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def never(*a, **k):
        raise AssertionError("hf_hub_download must not be tried (it retries)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", never)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(hub.HubError) as e:
        hub.resolve_model("hf://someone/repo/model.gguf")
    assert len(calls) == 1
    msg = str(e.value)
    assert "cannot be resolved" in msg and "gguf-engine download" not in msg
    assert "HF_HUB_OFFLINE" not in msg


def test_download_without_network_does_not_tell_you_to_download(tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "empty"),
               HF_ENDPOINT="https://hub.invalid")
    env.pop("HF_HUB_OFFLINE", None)
    res = cli("download", "hf://someone/repo/model.gguf", env=env)
    assert_clean_error(res, "cannot be downloaded", "hub.invalid cannot be resolved")
    assert "gguf-engine download" not in res.stderr and "etry" not in res.stderr
    assert len([ln for ln in res.stderr.splitlines() if "error" in ln]) == 1


# -- 9. a new user ------------------------------------------------------------------------
def test_escapes_in_stop_strings_and_prompts(fixtures):
    path = fixtures / "synthetic" / "llama3-Q8_0.gguf"
    model = Model(path, n_ctx=128)
    full = model.generate("Hello\nworld", max_tokens=12, temperature=0).text
    stop = full[4:6]
    assert stop.isascii() and len(stop) == 2
    expected = full[:full.find(stop)]
    escaped = "".join(f"\\x{ord(c):02x}" for c in stop)
    res = cli("generate", "-m", path, "-n", 12, "--temp", 0, "--stop", escaped, "Hello\\nworld")
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected + "\n"
    literal = model.generate("Hello\\nworld", max_tokens=12, temperature=0).text
    res = cli("generate", "-m", path, "-n", 12, "--temp", 0, "--stop", escaped, "--no-escape",
              "Hello\\nworld")
    assert res.returncode == 0 and res.stdout == literal + "\n"


def test_process_escapes_as_llama_cpp():
    from gguf_engine.cli import process_escapes

    assert process_escapes(r"a\nb\tc\\d\'e\"f") == "a\nb\tc\\d'e\"f"
    assert process_escapes(r"\x41\xc3\xa9\q\x4") == "Aé\\q\\x4"
    assert process_escapes("trailing\\") == "trailing\\"


def test_compile_notice_only_when_something_compiles(capsys):
    from numba import njit

    from gguf_engine.progress import COMPILE_NOTICE, CompileNotice

    @njit(cache=False)
    def fresh(a):
        return a + 1

    with CompileNotice():
        pass
    assert COMPILE_NOTICE not in capsys.readouterr().err
    with CompileNotice():
        assert fresh(41) == 42
    err = capsys.readouterr().err
    assert COMPILE_NOTICE in err and "compiled 1 kernels" in err


def test_help_shows_defaults():
    out = cli("generate", "--help").stdout
    for fragment in ("(default: 0.8)", "(default: 40)", "(default: 256)", "(default: cpu)"):
        assert fragment in out


def test_chat_on_a_base_model_without_template_says_so(gemma_path):
    res = cli("chat", "-m", gemma_path, "-n", 2, "--temp", 0, input="hello\n")
    assert res.returncode == 0, res.stderr
    assert "looks like a base model" in res.stderr and "--chat-template" in res.stderr


def test_chat_without_template_on_other_files_exits_2(fixtures):
    res = cli("chat", "-m", fixtures / "synthetic" / "llama-Q8_0.gguf", input="hello\n")
    assert_clean_error(res, "has no chat template", "--chat-template")


def test_piped_chat_is_a_transcript(fixtures):
    path = fixtures / "synthetic" / "llama3-Q8_0.gguf"
    res = cli("chat", "-m", path, "-n", 4, "--temp", 0, input="hello\nhow are you\n\n")
    assert res.returncode == 0, res.stderr
    model = Model(path)
    first = model.chat([{"role": "user", "content": "hello"}], max_tokens=4, temperature=0).text
    second = model.chat([{"role": "user", "content": "hello"},
                         {"role": "assistant", "content": first},
                         {"role": "user", "content": "how are you"}], max_tokens=4,
                        temperature=0).text
    assert res.stdout == f"> hello\n{first}\n\n> how are you\n{second}\n\n"


def test_bench_csv_has_one_header_for_all_rows(fixtures):
    res = cli("bench", "-m", fixtures / "synthetic" / "llama3-Q8_0.gguf", "-p", 8, "-n", 4,
              "-r", 1, "-o", "csv")
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["test"] for r in rows] == ["pp8", "tg4"]
    assert rows[0]["read_gbs"] == "" and float(rows[1]["read_gbs"]) > 0


def test_kernel_modules_import_by_their_short_names():
    res = run_python("""
        import gguf_engine.kernels.norms as norms
        from gguf_engine.kernels.rope import rope
        from gguf_engine.kernels import attention, activations
        import gguf_engine.kernels as k
        assert norms is k.norms and rope is k.rope.rope and attention is k.attention
        print("ok")
    """)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_models_shows_where_the_default_model_is(gemma_path):
    res = cli("models")
    assert res.returncode == 0 and f"default model: {gemma_path}" in res.stdout
