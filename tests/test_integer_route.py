"""Tier 1: the integer route's kernels. Activations quantized as llama.cpp's quantize_row_q8_0 /
quantize_row_q8_K (a NumPy transcription), every type's integer matvec against float64 on the
same quantized activations (gguf-py's dequantized weights), each token of a batch bit for bit
as if alone, and the AVX2 instructions giving the VNNI ones' bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf_engine.kernels.cpu import q8_activations, simd_int
from gguf_engine.kernels.quantized import block_rows, matvec_scratch
from test_quant_kernels import float64_reference, random_weights

from gguf_engine import kernels

INT_TYPES = [t for t in sorted(kernels.SUPPORTED_TYPES, key=int)
             if t not in (T.F32, T.F16, T.BF16)]
needs_int = pytest.mark.skipif(simd_int.ISA == "none", reason="no integer route on this CPU")
# compiled for the fixtures' models anyway; the rest take ~10 s each to compile: slow
IN_CI = {T.Q4_0, T.Q5_0, T.Q8_0, T.Q4_K, T.Q6_K}


def _act_block(t) -> int:
    return 256 if GGML_QUANT_SIZES[t][0] == 256 else 32


def _q8_reference(x: np.ndarray, act_block: int):
    """llama.cpp's activation quantization in NumPy: (q, d per value)."""
    blocks = x.reshape(-1, act_block).astype(np.float32)
    if act_block == 256:  # quantize_row_q8_K: the signed largest magnitude maps to -127
        vmax = blocks[np.arange(len(blocks)), np.abs(blocks).argmax(axis=1)]
        iscale = np.float32(-127.0) / vmax
        q = np.minimum(127, np.rint(iscale[:, None] * blocks)).astype(np.int8)
        d = np.float32(1.0) / iscale
    else:  # quantize_row_q8_0 (x86): d = amax / 127 kept as f16, q = round(x * 127 / amax)
        amax = np.abs(blocks).max(axis=1)
        q = np.rint(blocks * (np.float32(127.0) / amax)[:, None]).astype(np.int8)
        d = (amax / np.float32(127.0)).astype(np.float16).astype(np.float32)
    return q.reshape(-1), np.repeat(d, act_block)


@needs_int
@pytest.mark.parametrize("act_block", [32, 256])
def test_activation_quantization_is_llama_cpps(act_block):
    rng = np.random.default_rng(act_block)
    x = (rng.standard_normal(1024) * rng.uniform(0.01, 30, 1024)).astype(np.float32)
    x[:act_block] = 0  # an all-zero block: zeros, d = 0
    q, qs, xd, xs = q8_activations.quantize(x, act_block)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref_q, ref_d = _q8_reference(x, act_block)
    ref_q[:act_block] = 0
    ref_d[:act_block] = 0
    np.testing.assert_array_equal(q, ref_q)
    np.testing.assert_array_equal(xd, ref_d[::4])
    sums = ref_q.astype(np.int32).reshape(-1, 4).sum(axis=1)
    np.testing.assert_array_equal(qs, sums)
    np.testing.assert_array_equal(xs, ref_d[::4] * sums.astype(np.float32))
    # a row that is not a multiple of 64 long is padded with zeros
    q, qs, xd, xs = q8_activations.quantize(x[:96], 32)
    assert q.shape == (128,) and not q[96:].any() and not xd[24:].any() and not qs[24:].any()


@needs_int
@pytest.mark.parametrize("t", [pytest.param(t, marks=() if t in IN_CI else pytest.mark.slow)
                               for t in INT_TYPES], ids=lambda t: t.name)
def test_integer_matvec_matches_float64_on_quantized_activations(t):
    """W (gguf-py's dequantization, float64) @ x as quantized: the integer sums are exact, so
    only float32 rounding of the block scales' products remains; and a batch of 1 to 9 tokens
    gives each token the bits it gets alone. An odd block count (32-value types) pads."""
    rng = np.random.default_rng(11 + int(t))
    rows, cols = 37, (512 if GGML_QUANT_SIZES[t][0] == 256 else 224)
    data = random_weights(t, rows, cols, rng)
    tk, w = block_rows(data, t, (rows, cols))
    X = rng.standard_normal((9, cols)).astype(np.float32)
    W = float64_reference(data, t, (rows, cols))
    alone = np.empty((9, rows), np.float32)
    for i in range(9):
        alone[i] = kernels.matvec(data, t, (rows, cols), X[i], integer=True)
        q, _, xd, _ = q8_activations.quantize(X[i], _act_block(t))
        ref = W @ (q[:cols] * np.repeat(xd[:cols // 4], 4).astype(np.float64))
        assert np.abs(alone[i] - ref).max() / np.abs(ref).max() <= 2e-6
        exact = W @ X[i].astype(np.float64)  # and the quantization's own error is small
        assert np.abs(alone[i] - exact).max() / np.abs(exact).max() <= 3e-2
    scratch, ik = matvec_scratch(tk, rows), tk.kernels.integer
    for n in (2, 5, 9):
        out = np.full((n, rows), np.nan, np.float32)
        ik.matvec_tokens(ik.prepare(w), X[:n], out, scratch)
        np.testing.assert_array_equal(out.view(np.uint32), alone[:n].view(np.uint32))


@needs_int
@pytest.mark.parametrize("t", [T.Q4_K, T.Q6_K, T.Q5_K, T.Q5_0, T.Q8_0], ids=lambda t: t.name)
def test_tiles_over_token_and_step_chunks(t):
    """Past TOKEN_CHUNK tokens and TILE_STEPS steps the tile (Q5_K) is unpacked again for the
    next tokens and read a chunk of steps at a time, the sums continuing from memory; the packed
    types (Q4_K, Q6_K, Q5_0, Q8_0) run many quads of tokens over many blocks: each token still
    gets the bits it gets alone, and W @ x on its quantized activations."""
    from gguf_engine.kernels.cpu import quant_drivers

    rng = np.random.default_rng(int(t))
    rows, cols = 9, (quant_drivers.TILE_STEPS + 4) * 64  # two chunks of steps
    n = quant_drivers.TOKEN_CHUNK + 5  # two chunks of tokens, the last one odd
    data = random_weights(t, rows, cols, rng)
    tk, w = block_rows(data, t, (rows, cols))
    X = rng.standard_normal((n, cols)).astype(np.float32)
    out = np.full((n, rows), np.nan, np.float32)
    ik = tk.kernels.integer
    ik.matvec_tokens(ik.prepare(w), X, out, matvec_scratch(tk, rows))
    W = float64_reference(data, t, (rows, cols))
    for i in (0, 31, 32, n - 1):
        alone = kernels.matvec(data, t, (rows, cols), X[i], integer=True)
        np.testing.assert_array_equal(out[i].view(np.uint32), alone.view(np.uint32))
        q, _, xd, _ = q8_activations.quantize(X[i], _act_block(t))
        ref = W @ (q[:cols] * np.repeat(xd[:cols // 4], 4).astype(np.float64))
        assert np.abs(out[i] - ref).max() / np.abs(ref).max() <= 2e-6


_AVX2_TYPES = (T.Q4_0, T.Q8_0, T.Q4_K, T.Q6_K)  # an offset, signed, a min, 16-value scales


def _integer_outputs() -> dict:
    rng = np.random.default_rng(5)
    out = {}
    for t in _AVX2_TYPES:
        cols = 512 if GGML_QUANT_SIZES[t][0] == 256 else 160
        data = random_weights(t, 9, cols, rng)
        x = rng.standard_normal(cols).astype(np.float32)
        out[t.name] = kernels.matvec(data, t, (9, cols), x, integer=True).view(np.uint32).tolist()
    return out


@needs_int
@pytest.mark.skipif(simd_int.ISA != "avx512vnni", reason="the comparison needs VNNI here")
def test_avx2_instructions_give_vnnis_bits():
    """The same matvecs in a process forced onto the AVX2 instructions (vpmaddubsw + vpmaddwd
    on 256-bit halves): integer sums are exact, so the bits are the same."""
    code = ("import json, sys; sys.path.insert(0, 'tests'); import test_integer_route as m; "
            "from gguf_engine.kernels.cpu import simd_int; "
            "print(json.dumps([simd_int.ISA, m._integer_outputs()]))")
    env = dict(os.environ, GGUF_ENGINE_SIMD="avx2")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr[-2000:]
    isa, theirs = json.loads(run.stdout.strip().splitlines()[-1])
    assert isa == "avx2"
    assert theirs == _integer_outputs()


def test_simd_choice_is_checked():
    assert simd_int.choose_isa(None, "avx512vnni") == "avx512vnni"
    assert simd_int.choose_isa("AVX2", "avx512vnni") == "avx2"
    assert simd_int.choose_isa("none", "avx2") == "none"
    with pytest.raises(ValueError, match="GGUF_ENGINE_SIMD='sse9'"):
        simd_int.choose_isa("sse9", "avx2")
    with pytest.raises(ValueError, match="at most 'avx2'"):
        simd_int.choose_isa("avx512vnni", "avx2")


def test_float_types_have_no_integer_route():
    with pytest.raises(ValueError, match="F16: no integer route"):
        kernels.matvec(np.zeros(64, np.uint8), T.F16, (1, 32), np.zeros(32, np.float32),
                       integer=True)
