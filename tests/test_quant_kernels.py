"""Tier 1: every dequantizer bit-exact against gguf-py, every matvec/matmul against float64."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T

from gguf_engine import kernels

# Byte offsets of the fp16 fields in each block (llama.cpp ggml-common.h); tests fill them with
# finite halves so that every product is finite.
F16_FIELDS = {
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q8_0: (0,),
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
    T.IQ4_NL: (0,),
    T.IQ4_XS: (0,),
}
FLOAT_TYPES = {T.F32: np.float32, T.F16: np.float16}
ALL_TYPES = sorted(kernels.SUPPORTED_TYPES, key=int)


def random_weights(t, rows, cols, rng, scale_exp=(-12, -2)):
    """Random block bytes for (rows, cols) of type t with finite fp16 scales."""
    bs, ts = GGML_QUANT_SIZES[t]
    if t in FLOAT_TYPES:
        return rng.standard_normal((rows, cols)).astype(FLOAT_TYPES[t]).view(np.uint8)
    if t == T.BF16:
        return gguf.quantize(rng.standard_normal((rows, cols)).astype(np.float32), T.BF16)
    data = rng.integers(0, 256, size=(rows, cols // bs, ts), dtype=np.uint8)
    for off in F16_FIELDS[t]:
        h = rng.uniform(0.5, 1.0, data.shape[:2]) * 2.0 ** rng.integers(*scale_exp, data.shape[:2])
        h *= rng.choice([-1.0, 1.0], data.shape[:2])
        data[:, :, off : off + 2] = h.astype(np.float16)[..., None].view(np.uint8)
    return data.reshape(rows, -1)


def assert_bit_exact(data, t, shape):
    ref = gguf.dequantize(data, t).reshape(shape)
    got = kernels.dequantize(data, t, shape)
    assert got.dtype == np.float32 and got.shape == tuple(shape)
    np.testing.assert_array_equal(got.view(np.uint32), ref.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_random_blocks(t):
    rng = np.random.default_rng(int(t))
    data = random_weights(t, 7, 512, rng)
    assert_bit_exact(data, t, (7, 512))


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_dequantize_zero_and_extreme_blocks(t):
    bs, ts = GGML_QUANT_SIZES[t]
    cols = 256 if bs > 1 else 64
    zero = np.zeros((1, cols // bs * ts), dtype=np.uint8)
    assert_bit_exact(zero, t, (1, cols))
    # every byte at its maximum, with the largest finite and the smallest subnormal fp16 scales
    rows = []
    for half in (0x7BFF, 0xFBFF, 0x0001, 0x8001, 0x3C00):
        block = np.full((cols // bs, ts), 0xFF, dtype=np.uint8)
        for off in F16_FIELDS.get(t, ()):
            block[:, off : off + 2] = np.array([half], dtype=np.uint16).view(np.uint8)
        rows.append(block.reshape(-1))
    # floats: max finite, min subnormal, negative zero, +-inf, smallest normal, one
    extremes = {
        T.F16: np.array([0x7BFF, 0x0001, 0x8000, 0x7C00, 0xFC00, 0x0400, 0x3C00], np.uint16),
        T.BF16: np.array([0x7F7F, 0x0001, 0x8000, 0x7F80, 0xFF80, 0x0080, 0x3F80], np.uint16),
        T.F32: np.array([0x7F7FFFFF, 1, 0x80000000, 0x7F800000, 0xFF800000], np.uint32),
    }
    if t in extremes:
        vals = extremes[t]
        rows = [np.resize(vals, cols // bs * ts // vals.itemsize).view(np.uint8)] * 2
    data = np.stack(rows)
    assert_bit_exact(data, t, data.shape[:1] + (cols,))


@pytest.mark.parametrize("t", [T.F16, T.BF16], ids=lambda t: t.name)
def test_dequantize_nan_stays_nan(t):
    nan = {T.F16: 0x7E00, T.BF16: 0x7FC0}[t]
    data = np.array([nan, 0x3C00], dtype=np.uint16).view(np.uint8)
    got = kernels.dequantize(data, t, (2,))
    assert np.isnan(got[0]) and not np.isnan(got[1])


def float64_reference(data, t, shape):
    return gguf.dequantize(data, t).reshape(shape).astype(np.float64)


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("rows", [1, 6, 33])
def test_matvec_matches_float64(t, rows):
    rng = np.random.default_rng(rows * 100 + int(t))
    cols = 768 if GGML_QUANT_SIZES[t][0] == 256 else 160
    data = random_weights(t, rows, cols, rng)
    x = rng.standard_normal(cols).astype(np.float32)
    ref = float64_reference(data, t, (rows, cols)) @ x.astype(np.float64)
    out = np.full(rows, np.nan, dtype=np.float32)
    got = kernels.matvec(data, t, (rows, cols), x, out=out)
    assert got is out
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4


@pytest.mark.parametrize("t", ALL_TYPES, ids=lambda t: t.name)
def test_matmul_matches_float64(t):
    rng = np.random.default_rng(7 + int(t))
    rows, cols, n = 70, 512, 5
    data = random_weights(t, rows, cols, rng)
    X = rng.standard_normal((n, cols)).astype(np.float32)
    ref = X.astype(np.float64) @ float64_reference(data, t, (rows, cols)).T
    got = kernels.matmul(data, t, (rows, cols), X)
    assert got.shape == (n, rows)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4


def test_matmul_tiles_rows(monkeypatch):
    """Rows split over several dequantized tiles give the same product."""
    from gguf_engine.kernels import quantized

    monkeypatch.setattr(quantized, "TILE_VALUES", 256 * 3)
    rng = np.random.default_rng(3)
    data = random_weights(T.Q4_K, 10, 256, rng)
    X = rng.standard_normal((4, 256)).astype(np.float32)
    ref = X.astype(np.float64) @ float64_reference(data, T.Q4_K, (10, 256)).T
    got = kernels.matmul(data, T.Q4_K, (10, 256), X)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4


def test_unsupported_type_is_named():
    with pytest.raises(ValueError, match="IQ2_XXS"):
        kernels.dequantize(np.zeros(66, np.uint8), T.IQ2_XXS, (1, 256))
    with pytest.raises(ValueError, match="unknown GGML type 99"):
        kernels.matvec(np.zeros(66, np.uint8), 99, (1, 256), np.zeros(256, np.float32))


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="needs 34 bytes"):
        kernels.dequantize(np.zeros(33, np.uint8), T.Q8_0, (1, 32))
    with pytest.raises(ValueError, match="multiple of the block size"):
        kernels.dequantize(np.zeros(34, np.uint8), T.Q8_0, (1, 31))
    with pytest.raises(ValueError, match="x must have shape"):
        kernels.matvec(np.zeros(34, np.uint8), T.Q8_0, (1, 32), np.zeros(31, np.float32))


def test_accepts_int_and_enum_types():
    data = random_weights(T.Q8_0, 2, 64, np.random.default_rng(0))
    a = kernels.dequantize(data, 8, (2, 64))
    b = kernels.dequantize(data, T.Q8_0, (2, 64))
    np.testing.assert_array_equal(a, b)
    assert kernels.dequantize(data.reshape(-1)[:34], T.Q8_0, (32,)).shape == (32,)


# the types of the models the batching and server tests run (compiled for them anyway); the
# rest take about half a minute each to compile: slow
BATCHED_IN_CI = {T.Q8_0, T.Q5_0, T.Q4_K, T.Q6_K}


@pytest.mark.parametrize("t", [pytest.param(t, marks=() if t in BATCHED_IN_CI else
                                            pytest.mark.slow) for t in ALL_TYPES],
                         ids=lambda t: t.name)
def test_matvec_tokens_sums_each_token_as_if_alone(t):
    """The batched decode kernel: 1 to 16 tokens at once (two side by side, an odd last one
    paired with itself) against float64, and each token's row bit for bit what the one-token
    kernel gives."""
    from gguf_engine.kernels.quantized import block_rows, matvec_scratch

    rng = np.random.default_rng(7 + int(t))
    rows, cols = 37, (512 if GGML_QUANT_SIZES[t][0] == 256 else 160)
    data = random_weights(t, rows, cols, rng)
    tk, w = block_rows(data, t, (rows, cols))
    scratch = matvec_scratch(tk, rows)
    X = rng.standard_normal((16, cols)).astype(np.float32)
    alone = np.empty((16, rows), np.float32)
    for i in range(16):
        tk.kernels.matvec_one(w, X[i:i + 1], alone[i:i + 1], scratch)
    ref = X.astype(np.float64) @ float64_reference(data, t, (rows, cols)).T
    assert np.abs(alone - ref).max() / np.abs(ref).max() <= 1e-4
    for n in (2, 4, 5, 9, 16):
        out = np.full((n, rows), np.nan, np.float32)
        tk.kernels.matvec_tokens(w, X[:n], out, scratch)
        np.testing.assert_array_equal(out.view(np.uint32), alone[:n].view(np.uint32))
