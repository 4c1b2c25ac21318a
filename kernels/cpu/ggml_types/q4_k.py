import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import load_half, vadd, vfma, vload_bits, vload_f32, vmul, vsplat

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
def _sub_block(w, p, j, qo, shift, x0, x1, xs, d, dmin, a):
    """Row w's sub-block j (32 nibbles at qo, low or high by shift) against x0, x1 (sum xs)."""
    sc, m = scale_min(w, p + 4, j)
    q_x = vfma(vload_bits(w, qo + 16, shift, 15), x1, vmul(vload_bits(w, qo, shift, 15), x0))
    return vfma(vsplat(-dmin * np.float32(m)), xs, vfma(vsplat(d * np.float32(sc)), q_x, a))


@njit(inline="always")
def _row(w, p, c, xl0, xl1, xls, xh0, xh1, xhs, a):
    d = load_half(w, p)
    dmin = load_half(w, p + 2)
    qo = p + 16 + c * 32
    a = _sub_block(w, p, 2 * c, qo, 0, xl0, xl1, xls, d, dmin, a)
    return _sub_block(w, p, 2 * c + 1, qo, 4, xh0, xh1, xhs, d, dmin, a)


@njit(inline="always")
def _chunk(w0, w1, w2, w3, p, x, xo, c, a0, a1, a2, a3):
    # chunk c: 32 bytes whose low nibbles are sub-block 2c and high nibbles sub-block 2c + 1
    xl0 = vload_f32(x, xo)
    xl1 = vload_f32(x, xo + 16)
    xh0 = vload_f32(x, xo + 32)
    xh1 = vload_f32(x, xo + 48)
    xls = vadd(xl0, xl1)
    xhs = vadd(xh0, xh1)
    return (
        _row(w0, p, c, xl0, xl1, xls, xh0, xh1, xhs, a0),
        _row(w1, p, c, xl0, xl1, xls, xh0, xh1, xhs, a1),
        _row(w2, p, c, xl0, xl1, xls, xh0, xh1, xhs, a2),
        _row(w3, p, c, xl0, xl1, xls, xh0, xh1, xhs, a3),
    )


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, a0, a1, a2, a3, tmp):
    # written out, not looped: a constant c lets the 6-bit scale unpacking fold
    p = b * TYPE_SIZE
    o = b * 256
    a0, a1, a2, a3 = _chunk(w0, w1, w2, w3, p, x, o, 0, a0, a1, a2, a3)
    a0, a1, a2, a3 = _chunk(w0, w1, w2, w3, p, x, o + 64, 1, a0, a1, a2, a3)
    a0, a1, a2, a3 = _chunk(w0, w1, w2, w3, p, x, o + 128, 2, a0, a1, a2, a3)
    return _chunk(w0, w1, w2, w3, p, x, o + 192, 3, a0, a1, a2, a3)
