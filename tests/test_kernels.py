"""Tier 1: RMSNorm, RoPE, attention and activations against float64 NumPy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gguf_engine.kernels import activations, attention, norms, rope

rng = np.random.default_rng(0)


def rel_err(got, ref):
    return np.abs(np.asarray(got, np.float64) - ref).max() / np.abs(ref).max()


def test_rmsnorm():
    x = rng.standard_normal((5, 96)).astype(np.float32) * 3
    w = rng.standard_normal(96).astype(np.float32)
    out = np.empty_like(x)
    norms.rmsnorm(x, w, 1e-6, out)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(axis=1, keepdims=True) + 1e-6) * w
    assert rel_err(out, ref) < 1e-6


def test_serial_twins_equal_the_parallel_kernels():
    """The one-row kernels a decode step takes (backend_cpu.SERIAL_VALUES) give the same bits."""
    x = rng.standard_normal((3, 96)).astype(np.float32) * 3
    w = rng.standard_normal(96).astype(np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    norms.rmsnorm_kernel(x, w, 1e-6, a)
    norms.rmsnorm_serial(x, w, 1e-6, b)
    np.testing.assert_array_equal(a, b)
    gu = rng.standard_normal((3, 2 * 96)).astype(np.float32)
    for gelu in (False, True):
        activations.gated_kernel(gu, a, gelu)
        activations.gated_serial(gu, b, gelu)
        np.testing.assert_array_equal(a, b)
    q = rng.standard_normal((3, 2, 64)).astype(np.float32)
    cos, sin = np.empty((3, 32), np.float32), np.empty((3, 32), np.float32)
    rope.rope_tables(np.array([0, 7, 300]), rope.inv_frequencies(64, 10000.0, None), cos, sin)
    for neox in (False, True):
        qa, qb = q.copy(), q.copy()
        rope.rope_rotate_kernel(qa, cos, sin, neox)
        rope.rope_rotate_serial(qb, cos, sin, neox)
        np.testing.assert_array_equal(qa, qb)
        assert not np.array_equal(qa, q)


def rope_reference(x, positions, n_rot, base, neox, factors=None):
    x = x.astype(np.float64).copy()
    half = n_rot // 2
    inv = base ** (-np.arange(half) * 2.0 / n_rot)
    if factors is not None:
        inv = inv / factors
    for t, p in enumerate(positions):
        ang = p * inv
        c, s = np.cos(ang), np.sin(ang)
        if neox:
            a, b = x[t, :, :half].copy(), x[t, :, half:n_rot].copy()
            x[t, :, :half], x[t, :, half:n_rot] = a * c - b * s, a * s + b * c
        else:
            a, b = x[t, :, 0:n_rot:2].copy(), x[t, :, 1:n_rot:2].copy()
            x[t, :, 0:n_rot:2], x[t, :, 1:n_rot:2] = a * c - b * s, a * s + b * c
    return x


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("n_rot", [64, 32])
@pytest.mark.parametrize("with_factors", [False, True])
def test_rope(neox, n_rot, with_factors):
    x = rng.standard_normal((7, 3, 64)).astype(np.float32)
    positions = np.array([0, 1, 2, 5, 100, 1000, 4095], dtype=np.int32)
    factors = rng.uniform(1, 8, n_rot // 2) if with_factors else None
    got = x.copy()
    rope.rope(got, positions, rope.inv_frequencies(n_rot, 10000.0, factors), neox)
    ref = rope_reference(x, positions, n_rot, 10000.0, neox, factors)
    assert rel_err(got, ref) < 1e-5
    np.testing.assert_array_equal(got[:, :, n_rot:], x[:, :, n_rot:])


def attention_reference(q, k, v, pos0, window, scale, softcap=0.0):
    n_tokens, n_heads, hd = q.shape
    group = n_heads // k.shape[0]
    out = np.zeros((n_tokens, n_heads, hd))
    for t in range(n_tokens):
        p = pos0 + t
        lo = max(0, p - window + 1) if window else 0
        for h in range(n_heads):
            kk = k[h // group, lo : p + 1].astype(np.float64)
            s = kk @ q[t, h].astype(np.float64) * scale
            if softcap:
                s = softcap * np.tanh(s / softcap)
            e = np.exp(s - s.max())
            out[t, h] = (e / e.sum()) @ v[h // group, lo : p + 1].astype(np.float64)
    return out


@pytest.mark.parametrize("softcap", [0.0, 0.5])
@pytest.mark.parametrize("blas", [False, True], ids=["kernel", "matmul"])
@pytest.mark.parametrize("window", [0, 4])
@pytest.mark.parametrize("pos0,n_tokens", [(0, 9), (6, 1), (3, 5), (2, 11)])
@pytest.mark.parametrize("hd", [16, 72, 144])  # vector widths: one, some and a tail, 4-wide blocks
def test_attention_gqa_window(window, pos0, n_tokens, blas, hd, softcap, monkeypatch):
    monkeypatch.setattr(attention, "QUERY_BLOCK", 4)  # several query blocks, a short last one
    n_heads, n_kv, n_ctx = 4, 2, 32
    q = rng.standard_normal((n_tokens, n_heads, hd)).astype(np.float32)
    k = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32)
    v = rng.standard_normal((n_kv, n_ctx, hd)).astype(np.float32)
    k[:, pos0 + n_tokens :] = np.nan  # never read: past the last query
    scale = 1 / math.sqrt(hd)
    out = np.empty_like(q)
    scores = np.empty((3, n_ctx), np.float32)
    if blas:
        attention.attention_matmul(q, k, v, pos0, window, np.float32(scale), out, softcap)
    else:
        attention.attention(q, k, v, pos0, window, np.float32(scale), scores, out, softcap)
    ref = attention_reference(q, np.nan_to_num(k), v, pos0, window, scale, softcap)
    assert rel_err(out, ref) < 1e-5


def test_activations():
    x = rng.standard_normal((3, 50)).astype(np.float32) * 4
    x64 = x.astype(np.float64)
    out = np.empty_like(x)
    activations.silu(x, out)
    assert rel_err(out, x64 / (1 + np.exp(-x64))) < 1e-6
    x[0, :4] = (-10.5, 12.0, 3e-6, -0.0)  # both clamps, a half subnormal, a signed zero
    x64 = x.astype(np.float64)
    # llama.cpp's GELU: ggml's float32 tanh form at x rounded to half, rounded to half;
    # identity above 10 and 0 below -10. One half ulp of slack for tanhf vs NumPy's tanh.
    h = x.astype(np.float16).astype(np.float32)
    c = np.float32(math.sqrt(2 / math.pi))
    with np.errstate(over="ignore"):
        tanh_form = (np.float32(0.5) * h) * (
            1 + np.tanh((c * h) * (1 + (np.float32(0.044715) * h) * h))
        )
    gelu = np.where(x64 <= -10, 0.0, np.where(x64 >= 10, x64, tanh_form.astype(np.float16)))
    half_ulp = np.abs(gelu.astype(np.float16)).astype(np.float64) * 2.0**-10 + 2.0**-24
    activations.gelu(x, out)
    assert np.all(np.abs(out - gelu) <= half_ulp)
    exact = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    assert rel_err(out, exact) < 2e-3  # what the half rounding costs against the exact form
    up = rng.standard_normal((3, 50)).astype(np.float32)
    gate_up = np.concatenate([x, up], axis=1)
    activations.gated(gate_up, out, True)
    assert np.all(np.abs(out - gelu * up) <= half_ulp * np.abs(up) + 1e-7)
    activations.gated(gate_up, out, False)
    assert rel_err(out, x64 / (1 + np.exp(-x64)) * up) < 1e-6
    logits = rng.standard_normal(100).astype(np.float32) * 10
    p = np.empty(100, np.float64)
    activations.softmax(logits, p)
    e = np.exp(logits.astype(np.float64) - logits.max())
    assert rel_err(p, e / e.sum()) < 1e-12


@pytest.mark.parametrize("shape", [(1, 7), (1, 262144), (8, 70001)])
def test_all_finite_against_numpy(shape):
    from gguf_engine.kernels.cpu.reductions import all_finite

    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0] = 3.4e38  # finite, near float32's maximum
    assert all_finite(x) == np.isfinite(x).all()
    rows, cols = shape
    # the first and last value of the array, and the edges of a thread's part
    places = [(0, 0), (rows - 1, cols - 1)] + [(rows - 1, c) for c in (32767, 32768)
                                                  if c < cols]
    for r, c in places:
        for bad in (np.nan, np.inf, -np.inf):
            y = x.copy()
            y[r, c] = bad
            assert all_finite(y) == np.isfinite(y).all() == False  # noqa: E712
