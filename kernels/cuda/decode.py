"""Per-value decoders of GGML blocks for device code: value(w, r, j) is element j of row r of a
weight whose rows are `w` (uint8 block bytes, or float32 / uint16 for the float types). The
layouts are those of `kernels/cpu/ggml_types` (llama.cpp's ggml-common.h)."""

import numpy as np
from gguf import GGMLQuantizationType as T
from numba import cuda, float32, int32

_HALF_POW2 = np.array([2.0 ** (max(e, 1) - 25) for e in range(32)], dtype=np.float32)


@cuda.jit(device=True, inline=True)
def half(h):
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 31:
        v = float32(np.inf) if m == 0 else float32(np.nan)
    else:
        v = float32(m + (1024 if e else 0)) * _HALF_POW2[e]
    return -v if h & 0x8000 else v


@cuda.jit(device=True, inline=True)
def f16_at(w, r, o):
    return half(int32(w[r, o]) | (int32(w[r, o + 1]) << 8))


@cuda.jit(device=True, inline=True)
def value_f32(w, r, j):
    return w[r, j]


@cuda.jit(device=True, inline=True)
def value_f16(w, r, j):
    return half(int32(w[r, j]))


@cuda.jit(device=True, inline=True)
def value_q8_0(w, r, j):
    p = (j // 32) * 34
    q = int32(w[r, p + 2 + j % 32])
    return float32(q - 256 if q > 127 else q) * f16_at(w, r, p)


@cuda.jit(device=True, inline=True)
def _nibble(w, r, qs, i):
    """Value i (0-31) of a block whose 16 nibble bytes start at qs: the low nibbles are values
    0-15, the high ones 16-31 (Q4_0 and Q5_0)."""
    byte = int32(w[r, qs + i % 16])
    return (byte & 15) if i < 16 else (byte >> 4)


@cuda.jit(device=True, inline=True)
def value_q4_0(w, r, j):
    p = (j // 32) * 18
    return f16_at(w, r, p) * float32(_nibble(w, r, p + 2, j % 32) - 8)


@cuda.jit(device=True, inline=True)
def value_q5_0(w, r, j):
    p = (j // 32) * 22
    i = j % 32
    q = _nibble(w, r, p + 6, i)
    hb = (int32(w[r, p + 2 + i // 8]) >> (i % 8)) & 1
    return f16_at(w, r, p) * float32((q | (hb << 4)) - 16)


@cuda.jit(device=True, inline=True)
def _scale_min(w, r, s, k):
    if k < 4:
        return int32(w[r, s + k]) & 63, int32(w[r, s + k + 4]) & 63
    sc = (int32(w[r, s + k + 4]) & 15) | ((int32(w[r, s + k - 4]) >> 6) << 4)
    m = (int32(w[r, s + k + 4]) >> 4) | ((int32(w[r, s + k]) >> 6) << 4)
    return sc, m


@cuda.jit(device=True, inline=True)
def value_q4_k(w, r, j):
    p = (j // 256) * 144
    e = j % 256
    k = e // 32
    sc, m = _scale_min(w, r, p + 4, k)
    q = (int32(w[r, p + 16 + (e // 64) * 32 + e % 32]) >> (4 * (k % 2))) & 15
    return f16_at(w, r, p) * float32(sc) * float32(q) - f16_at(w, r, p + 2) * float32(m)


@cuda.jit(device=True, inline=True)
def value_q6_k(w, r, j):
    p = (j // 256) * 210
    e = j % 256
    h = e // 128
    t = e % 128
    low = (int32(w[r, p + h * 64 + t % 64]) >> (4 * (t // 64))) & 15
    high = (int32(w[r, p + 128 + h * 32 + t % 32]) >> (2 * (t // 32))) & 3
    sc = int32(w[r, p + 192 + e // 16])
    sc = sc - 256 if sc > 127 else sc
    return f16_at(w, r, p + 208) * float32(sc) * float32((low | (high << 4)) - 32)


VALUE = {T.F32: value_f32, T.F16: value_f16, T.Q8_0: value_q8_0, T.Q4_0: value_q4_0,
         T.Q5_0: value_q5_0, T.Q4_K: value_q4_k, T.Q6_K: value_q6_k}
SUPPORTED_TYPES = frozenset(VALUE)
