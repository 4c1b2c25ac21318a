"""Rotary position embeddings, in place. GGML's "normal" mode rotates adjacent pairs
(2i, 2i + 1); NEOX mode rotates (i, i + n_rot / 2). Dimensions past n_rot are left alone.
The angles' cosines and sines depend only on the positions, so a forward pass computes them
once (`rope_tables`) for every head and layer that shares the frequencies (`rope_rotate`)."""

import numpy as np
from numba import njit, prange

from .. import checks


def inv_frequencies(n_rot: int, base: float, freq_factors=None) -> np.ndarray:
    """(n_rot // 2,) float64: base**(-2i / n_rot), divided by the per-dimension factors."""
    inv = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv = inv / np.asarray(freq_factors, dtype=np.float64)
    return inv


def rope_tables(positions, inv_freq, cos, sin):
    """cos, sin (n_tokens, n_rot // 2) float32 of the angles positions[t] * inv_freq[i], taken
    in float64; positions (n_tokens,) int, inv_freq (n_rot // 2,) from `inv_frequencies`."""
    half = checks.array("inv_freq", inv_freq, (None,), np.float64).shape[0]
    n = checks.array("cos", cos, (None, half)).shape[0]
    checks.array("sin", sin, (n, half))
    checks.integers("positions", positions, n)
    checks.writable("cos", cos, sin, inv_freq)
    rope_tables_kernel(positions, inv_freq, cos, sin)


@njit(parallel=True, cache=True)
def rope_tables_kernel(positions, inv_freq, cos, sin):
    """`rope_tables` without the checks."""
    for t in prange(positions.shape[0]):
        for i in range(inv_freq.shape[0]):
            ang = positions[t] * inv_freq[i]
            cos[t, i] = np.float32(np.cos(ang))
            sin[t, i] = np.float32(np.sin(ang))


def rope_rotate(x, cos, sin, neox):
    """x (n_tokens, n_heads, head_dim) float32 rotated in place by the tables of `rope_tables`
    (n_tokens, half) for the first 2 * half <= head_dim dimensions."""
    n, _, head_dim = checks.array("x", x, (None, None, None)).shape
    half = checks.array("cos", cos, (n, None)).shape[1]
    checks.array("sin", sin, (n, half))
    if 2 * half > head_dim:
        raise ValueError(f"the tables rotate {2 * half} dimensions but heads have {head_dim}")
    checks.writable("x", x, cos, sin)
    rope_rotate_kernel(x, cos, sin, bool(neox))


@njit(inline="always")
def _rotate_row(x, cos, sin, neox, t):
    half = cos.shape[1]
    for h in range(x.shape[1]):
        for i in range(half):
            if neox:
                i0, i1 = i, i + half
            else:
                i0, i1 = 2 * i, 2 * i + 1
            c = cos[t, i]
            s = sin[t, i]
            a = x[t, h, i0]
            b = x[t, h, i1]
            x[t, h, i0] = a * c - b * s
            x[t, h, i1] = a * s + b * c


@njit(parallel=True, cache=True)
def rope_rotate_kernel(x, cos, sin, neox):
    """`rope_rotate` without the checks."""
    for t in prange(x.shape[0]):
        _rotate_row(x, cos, sin, neox, t)


@njit(cache=True)
def rope_rotate_serial(x, cos, sin, neox):
    """`rope_rotate_kernel` on the calling thread, for a decode step's one row (`backend_cpu`)."""
    for t in range(x.shape[0]):
        _rotate_row(x, cos, sin, neox, t)


def rope(x, positions, inv_freq, neox):
    """x (n_tokens, n_heads, head_dim) rotated in place; positions (n_tokens,) int;
    inv_freq (n_rot // 2,) float64 from `inv_frequencies`."""
    checks.array("x", x, (None, None, None))
    checks.array("inv_freq", inv_freq, (None,), np.float64)
    cos = np.empty((x.shape[0], inv_freq.shape[0]), np.float32)
    sin = np.empty_like(cos)
    rope_tables(positions, inv_freq, cos, sin)
    rope_rotate(x, cos, sin, neox)
