import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..nibbles import split_nibbles

GGML_TYPE = GGMLQuantizationType.Q5_0
BLOCK, TYPE_SIZE = 32, 22
VIEW = np.uint8
# block: d (f16) | qh (u32: bit j is the fifth bit of value j) | qs[16] (low nibbles as Q4_0)
# value = d * (q - 16)


@njit(inline="always")
def _qh(w, p):
    return (
        np.int64(w[p])
        | (np.int64(w[p + 1]) << 8)
        | (np.int64(w[p + 2]) << 16)
        | (np.int64(w[p + 3]) << 24)
    )


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    qh = _qh(w, p + 2)
    for j in range(16):
        q = np.int64(w[p + 6 + j])
        out[o + j] = d * np.float32(((q & 15) | (((qh >> j) & 1) << 4)) - 16)
        out[o + j + 16] = d * np.float32(((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16)


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    # q = nibble + 16 * bit - 16; the -16 is applied once per block through sum(x)
    p = b * TYPE_SIZE
    h0, h1, h2, h3 = _qh(w0, p + 2), _qh(w1, p + 2), _qh(w2, p + 2), _qh(w3, p + 2)
    s0 = s1 = s2 = s3 = xs = np.float32(0.0)
    for j in range(16):
        xa = x[o + j]
        xb = x[o + 16 + j]
        lo, hi = split_nibbles(np.float32(w0[p + 6 + j]))
        s0 += (lo + np.float32(16 * ((h0 >> j) & 1))) * xa
        s0 += (hi + np.float32(16 * ((h0 >> (j + 16)) & 1))) * xb
        lo, hi = split_nibbles(np.float32(w1[p + 6 + j]))
        s1 += (lo + np.float32(16 * ((h1 >> j) & 1))) * xa
        s1 += (hi + np.float32(16 * ((h1 >> (j + 16)) & 1))) * xb
        lo, hi = split_nibbles(np.float32(w2[p + 6 + j]))
        s2 += (lo + np.float32(16 * ((h2 >> j) & 1))) * xa
        s2 += (hi + np.float32(16 * ((h2 >> (j + 16)) & 1))) * xb
        lo, hi = split_nibbles(np.float32(w3[p + 6 + j]))
        s3 += (lo + np.float32(16 * ((h3 >> j) & 1))) * xa
        s3 += (hi + np.float32(16 * ((h3 >> (j + 16)) & 1))) * xb
        xs += xa + xb
    xs *= np.float32(16.0)
    return (
        (s0 - xs) * load_f16(w0, p),
        (s1 - xs) * load_f16(w1, p),
        (s2 - xs) * load_f16(w2, p),
        (s3 - xs) * load_f16(w3, p),
    )
