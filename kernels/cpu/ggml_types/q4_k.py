import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import (
    load_half,
    vadd,
    vfma,
    vlane,
    vload_bits,
    vload_f32,
    vload_k_scales,
    vmul,
    vsplat2,
    vsum,
)
from ..simd_int import byte_program, ik_min_words, ik_scales, ipair

GGML_TYPE = GGMLQuantizationType.Q4_K
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 144 bytes
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
def derive_x(x):
    """(cols // 16,) per block: 8 zeros, then the sums of x over its 8 sub-blocks. One FMA of a
    row's block scales (lanes 0-7: d * scale, 8-15: -dmin * min) with them applies all 8 mins."""
    nb = x.shape[0] // BLOCK
    xd = np.zeros(nb * 16, dtype=np.float32)
    for b in range(nb):
        for j in range(8):
            o = b * BLOCK + j * 32
            xd[b * 16 + 8 + j] = vsum(vadd(vload_f32(x, o), vload_f32(x, o + 16)))
    return xd


@njit(inline="always")
def _scales(w, p):
    """A row's block scales: lanes 0-7 d * scale[j], lanes 8-15 -dmin * min[j]."""
    return vmul(vload_k_scales(w, p + 4), vsplat2(load_half(w, p), -load_half(w, p + 2)))


@njit(inline="always")
def _row(w, qo, c, s, xl0, xl1, xh0, xh1, a):
    """a + row w's chunk c: 32 bytes at qo, low nibbles sub-block 2c, high ones 2c + 1."""
    lo = vfma(vload_bits(w, qo + 16, 0, 15), xl1, vmul(vload_bits(w, qo, 0, 15), xl0))
    hi = vfma(vload_bits(w, qo + 16, 4, 15), xh1, vmul(vload_bits(w, qo, 4, 15), xh0))
    return vfma(vlane(s, 2 * c + 1), hi, vfma(vlane(s, 2 * c), lo, a))


@njit(inline="always")
def _chunk(w0, w1, w2, w3, p, x, xo, c, s0, s1, s2, s3, a0, a1, a2, a3):
    xl0 = vload_f32(x, xo)
    xl1 = vload_f32(x, xo + 16)
    xh0 = vload_f32(x, xo + 32)
    xh1 = vload_f32(x, xo + 48)
    qo = p + 16 + c * 32
    return (
        _row(w0, qo, c, s0, xl0, xl1, xh0, xh1, a0),
        _row(w1, qo, c, s1, xl0, xl1, xh0, xh1, a1),
        _row(w2, qo, c, s2, xl0, xl1, xh0, xh1, a2),
        _row(w3, qo, c, s3, xl0, xl1, xh0, xh1, a3),
    )


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, xd, a0, a1, a2, a3, tmp):
    # chunks written out, not looped: a constant c makes each vlane one shuffle
    p = b * TYPE_SIZE
    o = b * 256
    s0, s1, s2, s3 = _scales(w0, p), _scales(w1, p), _scales(w2, p), _scales(w3, p)
    m = vload_f32(xd, b * 16)
    a0, a1, a2, a3 = vfma(s0, m, a0), vfma(s1, m, a1), vfma(s2, m, a2), vfma(s3, m, a3)
    a0, a1, a2, a3 = _chunk(w0, w1, w2, w3, p, x, o, 0, s0, s1, s2, s3, a0, a1, a2, a3)
    a0, a1, a2, a3 = _chunk(w0, w1, w2, w3, p, x, o + 64, 1, s0, s1, s2, s3, a0, a1, a2, a3)
    a0, a1, a2, a3 = _chunk(w0, w1, w2, w3, p, x, o + 128, 2, s0, s1, s2, s3, a0, a1, a2, a3)
    return _chunk(w0, w1, w2, w3, p, x, o + 192, 3, s0, s1, s2, s3, a0, a1, a2, a3)

# integer route: Q8_K activations, llama.cpp's order (its repacked Q4_K kernels): per block
# and (row, token) the exact integer sums  sum_j scale[j] * (q_w . q)_j  and
# sum_j min[j] * sum(q)_j , then acc += float(sum) * (d * dx) and acc_min likewise with dmin;
# the result is acc - acc_min. A step is a quarter block (64 values, sub-blocks 2c, 2c + 1).
ACT_BLOCK = 256


@byte_program
def _int_bytes(by, p):
    v = by.load(p, 32)
    return by.nibbles(v)


@njit(inline="always")
def kblock(w, b):
    """Block b's integer scales (lanes 0-7, `ik_scales`), its mins as int16 pairs (lanes 0-3),
    d and dmin."""
    p = b * TYPE_SIZE
    sc = ik_scales(w, p + 4)
    return sc, ik_min_words(sc), load_half(w, p), load_half(w, p + 2)


@njit(inline="always")
def kpart(w, b, sc, c):
    """Step c of block b: its 64 weight bytes, each int32 lane's scale."""
    return _int_bytes(w, b * TYPE_SIZE + 16 + 32 * c), ipair(sc, 2 * c)
