"""Rotary position embeddings, in place. GGML's "normal" mode rotates adjacent pairs
(2i, 2i + 1); NEOX mode rotates (i, i + n_rot / 2). Dimensions past n_rot are left alone."""

import numpy as np
from numba import njit, prange


def inv_frequencies(n_rot: int, base: float, freq_factors=None) -> np.ndarray:
    """(n_rot // 2,) float64: base**(-2i / n_rot), divided by the per-dimension factors."""
    inv = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    if freq_factors is not None:
        inv = inv / np.asarray(freq_factors, dtype=np.float64)
    return inv


@njit(parallel=True, cache=True)
def rope(x, positions, inv_freq, neox):
    """x (n_tokens, n_heads, head_dim) rotated in place; positions (n_tokens,) int;
    inv_freq (n_rot // 2,) float64 from `inv_frequencies`."""
    n_tokens, n_heads, _ = x.shape
    half = inv_freq.shape[0]
    for t in prange(n_tokens):
        for i in range(half):
            ang = positions[t] * inv_freq[i]
            c = np.float32(np.cos(ang))
            s = np.float32(np.sin(ang))
            if neox:
                i0, i1 = i, i + half
            else:
                i0, i1 = 2 * i, 2 * i + 1
            for h in range(n_heads):
                a = x[t, h, i0]
                b = x[t, h, i1]
                x[t, h, i0] = a * c - b * s
                x[t, h, i1] = a * s + b * c
