import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..nibbles import split_nibbles

GGML_TYPE = GGMLQuantizationType.Q4_K
BLOCK, TYPE_SIZE = 256, 144
VIEW = np.uint8
# block: d (f16) | dmin (f16) | scales[12] | qs[128]
# scales packs eight 6-bit scales (A-H) and eight 6-bit mins (a-h):
#  0 EEAAAAAA   4 eeaaaaaa   8 eeeeEEEE
#  1 FFBBBBBB   5 ffbbbbbb   9 ffffFFFF
#  2 GGCCCCCC   6 ggcccccc  10 ggggGGGG
#  3 HHDDDDDD   7 hhdddddd  11 hhhhHHHH
# value e = c*64 + n*32 + l, sub-block j = 2c + n: q = (qs[c*32 + l] >> 4n) & 15,
#           (d * scale[j]) * q - (dmin * min[j])


@njit(inline="always")
def scale_min(w, s, j):
    """The 6-bit scale and min of sub-block j from the 12 bytes at w[s:]."""
    if j < 4:
        return np.int32(w[s + j]) & 63, np.int32(w[s + j + 4]) & 63
    sc = (np.int32(w[s + j + 4]) & 15) | ((np.int32(w[s + j - 4]) >> 6) << 4)
    m = (np.int32(w[s + j + 4]) >> 4) | ((np.int32(w[s + j]) >> 6) << 4)
    return sc, m


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    dmin = load_f16(w, p + 2)
    for j in range(8):
        sc, m = scale_min(w, p + 4, j)
        dl = d * np.float32(sc)
        ml = dmin * np.float32(m)
        q0 = p + 16 + (j // 2) * 32
        shift = 4 * (j % 2)
        for l in range(32):
            out[o + j * 32 + l] = dl * np.float32((np.int32(w[q0 + l]) >> shift) & 15) - ml


@njit(inline="always")
def _finish(w, p, c, s_lo, s_hi, x_lo, x_hi):
    """One row's contribution of chunk c (sub-blocks 2c, 2c + 1) from its sums."""
    sc0, m0 = scale_min(w, p + 4, 2 * c)
    sc1, m1 = scale_min(w, p + 4, 2 * c + 1)
    return load_f16(w, p) * (np.float32(sc0) * s_lo + np.float32(sc1) * s_hi) - load_f16(
        w, p + 2
    ) * (np.float32(m0) * x_lo + np.float32(m1) * x_hi)


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    p = b * TYPE_SIZE
    r0 = r1 = r2 = r3 = np.float32(0.0)
    for c in range(4):
        q0 = p + 16 + c * 32
        xo = o + c * 64
        l0 = h0 = l1 = h1 = l2 = h2 = l3 = h3 = xl = xh = np.float32(0.0)
        for l in range(32):
            xa = x[xo + l]
            xb = x[xo + 32 + l]
            lo, hi = split_nibbles(np.float32(w0[q0 + l]))
            l0 += lo * xa
            h0 += hi * xb
            lo, hi = split_nibbles(np.float32(w1[q0 + l]))
            l1 += lo * xa
            h1 += hi * xb
            lo, hi = split_nibbles(np.float32(w2[q0 + l]))
            l2 += lo * xa
            h2 += hi * xb
            lo, hi = split_nibbles(np.float32(w3[q0 + l]))
            l3 += lo * xa
            h3 += hi * xb
            xl += xa
            xh += xb
        r0 += _finish(w0, p, c, l0, h0, xl, xh)
        r1 += _finish(w1, p, c, l1, h1, xl, xh)
        r2 += _finish(w2, p, c, l2, h2, xl, xh)
        r3 += _finish(w3, p, c, l3, h3, xl, xh)
    return r0, r1, r2, r3
