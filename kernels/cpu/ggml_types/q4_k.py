import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import (
    load_half,
    prefetch,
    vadd,
    vfma,
    vlane,
    vload_bits,
    vload_f16,
    vload_f32,
    vload_k_scales,
    vmul,
    vsplat2,
    vsum,
)
from ..simd_int import (
    ISA,
    iadd,
    ibcast4,
    idot,
    idot16,
    ihigh4,
    iload64,
    ilow4,
    imul_add,
    ipairs_times,
    isplat,
    iwiden,
    iwiden_pairs,
    iwiden_words,
    izero,
)

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

# The integer route on packed rows (`quant_drivers.kpmatvec_tokens`): sixteen rows' block b in
# PACK_BYTES, the file's bytes regrouped so that lane r of a vector is row r:
#   values: vector 8c + i (64 bytes), lane r = row r's qs[32c + 4i : 32c + 4i + 4] (low
#           nibbles: four values of sub-block 2c, high nibbles: the same four of 2c + 1)
#   scales: byte 16j + r = row r's scale[j]; mins: byte 32c + 2r + n = row r's min[2c + n]
#   d, dmin: the sixteen rows' halves
# One vpdpbusd of a vector's nibbles against a token's four activations broadcast advances
# sixteen rows by four products; a sub-block's sums then take their rows' scales (vpmulld).
# The integers are those of the unpacked form, so the bits are too.
PACK_SCALES = 2048
PACK_MINS = PACK_SCALES + 128
PACK_D = PACK_MINS + 128
PACK_BYTES = PACK_D + 64  # 2368: 37 cache lines, 1.03 x the sixteen rows' 2304
SUB_QUADS = 8  # activation quads under one scale and min (32 values)
# How a sub-block's products are summed: VNNI's vpdpbusd sums four into int32 in one
# instruction, then a vpmulld per eight applies the rows' scales; AVX2 has no such dot, so as
# llama.cpp does there, vpmaddubsw's int16 pairs are summed in int16 over the sub-block (16
# products of at most 15 * 127 a lane: below 2^15), then one vpmaddwd against the scales
# (1.3-1.5x faster at 8 and 64 tokens on a Zen 3). AVX2's sixteen registers hold two tokens'
# sums, not four: `packed_four` is two `packed_two` there (spills and moves otherwise).
SUM16 = ISA == "avx2"


@njit(inline="always")
def pack_block(w, b, pb, r):
    """Row w's block b into row slot r of pb (one packed block, PACK_BYTES uint8)."""
    p = b * TYPE_SIZE
    for c in range(4):
        for i in range(8):
            for k in range(4):
                pb[64 * (8 * c + i) + 4 * r + k] = w[p + 16 + 32 * c + 4 * i + k]
    for j in range(8):
        sc, m = scale_min(w, p + 4, j)
        pb[PACK_SCALES + 16 * j + r] = sc
        pb[PACK_MINS + 32 * (j // 2) + 2 * r + j % 2] = m
    for k in range(2):
        pb[PACK_D + 2 * r + k] = w[p + k]
        pb[PACK_D + 32 + 2 * r + k] = w[p + 2 + k]


@njit(inline="always")
def _scales_of(pb, c):
    """The rows' scales of sub-blocks 2c and 2c + 1, as `_fold` takes them."""
    if SUM16:
        return iwiden_words(pb, PACK_SCALES + 32 * c), iwiden_words(pb, PACK_SCALES + 32 * c + 16)
    return iwiden(pb, PACK_SCALES + 32 * c), iwiden(pb, PACK_SCALES + 32 * c + 16)


@njit(inline="always")
def _dots(lo, hi, q, qo, l, h):
    """l, h + sixteen rows' four low / high values against a token's four activations at qo /
    qo + 32 (the same positions of the next sub-block)."""
    if SUM16:
        return idot16(l, lo, ibcast4(q, qo)), idot16(h, hi, ibcast4(q, qo + 32))
    return idot(l, lo, ibcast4(q, qo)), idot(h, hi, ibcast4(q, qo + 32))


@njit(inline="always")
def _fold(l, h, sl, sh, acc):
    """acc + a pair of sub-blocks' sums (`_dots`), each times its rows' scales."""
    if SUM16:
        return iadd(acc, iadd(ipairs_times(l, sl), ipairs_times(h, sh)))
    return imul_add(imul_add(acc, l, sl), h, sh)


@njit(inline="always")
def _mins(pb, c, s, k, acc):
    """acc + the rows' mins of sub-blocks 2c, 2c + 1 against a token's sums of its quantized
    values there (s[k]: an int16 pair)."""
    return iadd(acc, ipairs_times(iwiden_pairs(pb, PACK_MINS + 32 * c), isplat(s[k])))


@njit(inline="always")
def _ask(Pn, b, pf, line):
    """Where pf: line `line` of block b of the next group's rows, as the same line of this
    group's block is used (quant_drivers: the requests spread through the block's compute)."""
    if pf:
        prefetch(Pn, b, 64 * line)


@njit(inline="always")
def _ask_scales(Pn, b, pf, c):
    """`_ask` for the scales, mins and d that follow the values: 5 lines over c = 0..3."""
    _ask(Pn, b, pf, 32 + c)
    if c == 0:
        _ask(Pn, b, pf, 36)


@njit(inline="always")
def packed_two(pb, b, q0, q1, s0, s1, Pn, pf):
    """`packed_four` for two tokens."""
    i0 = i1 = n0 = n1 = izero()
    for c in (0, 1, 2, 3):
        qo = 256 * b + 64 * c
        _ask_scales(Pn, b, pf, c)
        sl, sh = _scales_of(pb, c)
        l0 = l1 = h0 = h1 = izero()
        for i in range(8):
            _ask(Pn, b, pf, 8 * c + i)
            v = iload64(pb, 64 * (8 * c + i))
            lo, hi = ilow4(v), ihigh4(v)
            l0, h0 = _dots(lo, hi, q0, qo + 4 * i, l0, h0)
            l1, h1 = _dots(lo, hi, q1, qo + 4 * i, l1, h1)
        i0, i1 = _fold(l0, h0, sl, sh, i0), _fold(l1, h1, sl, sh, i1)
        n0, n1 = _mins(pb, c, s0, 4 * b + c, n0), _mins(pb, c, s1, 4 * b + c, n1)
    return i0, i1, n0, n1


@njit(inline="always")
def packed_four(pb, b, q0, q1, q2, q3, s0, s1, s2, s3, Pn, pf):
    """Sixteen packed rows' block b (pb) against four tokens (quantized values q, sub-block
    sums s as int16 pairs): per token the rows' scaled sums and min sums, exact integers.
    Where pf, block b of the next group's rows (Pn) is prefetched along the way."""
    if SUM16:
        i0, i1, n0, n1 = packed_two(pb, b, q0, q1, s0, s1, Pn, pf)
        i2, i3, n2, n3 = packed_two(pb, b, q2, q3, s2, s3, Pn, False)
        return i0, i1, i2, i3, n0, n1, n2, n3
    i0 = i1 = i2 = i3 = n0 = n1 = n2 = n3 = izero()
    for c in (0, 1, 2, 3):
        qo = 256 * b + 64 * c
        _ask_scales(Pn, b, pf, c)
        sl, sh = _scales_of(pb, c)
        l0 = l1 = l2 = l3 = h0 = h1 = h2 = h3 = izero()
        for i in range(8):
            _ask(Pn, b, pf, 8 * c + i)
            v = iload64(pb, 64 * (8 * c + i))
            lo, hi = ilow4(v), ihigh4(v)
            l0, h0 = _dots(lo, hi, q0, qo + 4 * i, l0, h0)
            l1, h1 = _dots(lo, hi, q1, qo + 4 * i, l1, h1)
            l2, h2 = _dots(lo, hi, q2, qo + 4 * i, l2, h2)
            l3, h3 = _dots(lo, hi, q3, qo + 4 * i, l3, h3)
        i0, i1 = _fold(l0, h0, sl, sh, i0), _fold(l1, h1, sl, sh, i1)
        i2, i3 = _fold(l2, h2, sl, sh, i2), _fold(l3, h3, sl, sh, i3)
        n0, n1 = _mins(pb, c, s0, 4 * b + c, n0), _mins(pb, c, s1, 4 * b + c, n1)
        n2, n3 = _mins(pb, c, s2, 4 * b + c, n2), _mins(pb, c, s3, 4 * b + c, n3)
    return i0, i1, i2, i3, n0, n1, n2, n3


@njit(inline="always")
def packed_one(pb, b, q, s, Pn, pf):
    """`packed_four` for one token."""
    i = n = izero()
    for c in (0, 1, 2, 3):
        qo = 256 * b + 64 * c
        _ask_scales(Pn, b, pf, c)
        sl, sh = _scales_of(pb, c)
        l = h = izero()
        for k in range(8):
            _ask(Pn, b, pf, 8 * c + k)
            v = iload64(pb, 64 * (8 * c + k))
            l, h = _dots(ilow4(v), ihigh4(v), q, qo + 4 * k, l, h)
        i = _fold(l, h, sl, sh, i)
        n = _mins(pb, c, s, 4 * b + c, n)
    return i, n


@njit(inline="always")
def packed_scales(pb):
    """The sixteen rows' d and dmin."""
    return vload_f16(pb, PACK_D), vload_f16(pb, PACK_D + 32)
