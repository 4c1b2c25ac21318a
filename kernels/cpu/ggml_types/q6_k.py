import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import (
    load_half,
    prefetch_span,
    vfma,
    vlane,
    vload_bits2,
    vload_f16,
    vload_f32,
    vload_i8,
    vmul,
    vsplat,
    vzero,
)
from ..simd_int import (
    ISA,
    byte_program,
    iadd,
    ibcast4,
    idot_scaled,
    imul_add,
    ipairs_times,
    isplat,
    iwiden_signed_pairs,
    izero,
)

GGML_TYPE = GGMLQuantizationType.Q6_K
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 210 bytes
VIEW = np.uint8
# block: ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] (int8, per 16 values) | d (f16)
# value e = h*128 + r:  low = (ql[h*64 + r % 64] >> 4 * (r // 64)) & 15,
#                      high = (qh[h*32 + r % 32] >> 2 * (r // 32)) & 3,
#                      (d * scales[e // 16]) * ((low | high << 4) - 32)


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p + 208)
    for h in range(2):
        for s in range(4):
            for half16 in range(2):
                dl = d * np.float32(np.int8(w[p + 192 + h * 8 + s * 2 + half16]))
                for k in range(16):
                    r = s * 32 + half16 * 16 + k
                    low = (np.int32(w[p + h * 64 + r % 64]) >> (4 * (r // 64))) & 15
                    high = (np.int32(w[p + 128 + h * 32 + r % 32]) >> (2 * s)) & 3
                    out[o + h * 128 + r] = dl * np.float32((low | (high << 4)) - 32)


@njit(inline="always")
def _row(w, p, h, s, half, sv, xv, x32, a):
    """a + row w's 16 values (h, quarter s, half) of the block at p against x lanes xv;
    x32 = -32 xv applies the values' offset of -32 in the same FMA; sv its 16 scales * d."""
    q = vload_bits2(
        w,
        p + h * 64 + (s % 2) * 32 + half * 16,
        4 * (s // 2),
        15,
        p + 128 + h * 32 + half * 16,
        2 * s,
        3,
        4,
    )
    return vfma(vlane(sv, h * 8 + s * 2 + half), vfma(q, xv, x32), a)


@njit(inline="always")
def _quarter(w0, w1, w2, w3, p, x, o, h, s, m32, sv, a0, a1, a2, a3):
    s0, s1, s2, s3 = sv
    for half in range(2):
        xv = vload_f32(x, o + h * 128 + s * 32 + half * 16)
        x32 = vmul(xv, m32)
        a0 = _row(w0, p, h, s, half, s0, xv, x32, a0)
        a1 = _row(w1, p, h, s, half, s1, xv, x32, a1)
        a2 = _row(w2, p, h, s, half, s2, xv, x32, a2)
        a3 = _row(w3, p, h, s, half, s3, xv, x32, a3)
    return a0, a1, a2, a3


@njit(inline="always")
def _half(w0, w1, w2, w3, p, x, o, h, m32, sv, a0, a1, a2, a3):
    a0, a1, a2, a3 = _quarter(w0, w1, w2, w3, p, x, o, h, 0, m32, sv, a0, a1, a2, a3)
    a0, a1, a2, a3 = _quarter(w0, w1, w2, w3, p, x, o, h, 1, m32, sv, a0, a1, a2, a3)
    a0, a1, a2, a3 = _quarter(w0, w1, w2, w3, p, x, o, h, 2, m32, sv, a0, a1, a2, a3)
    return _quarter(w0, w1, w2, w3, p, x, o, h, 3, m32, sv, a0, a1, a2, a3)


@njit(inline="always")
def _scales(w, p):
    """A row's 16 int8 block scales times d, one per lane."""
    return vmul(vload_i8(w, p + 192), vsplat(load_half(w, p + 208)))


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, xd, a0, a1, a2, a3, tmp):
    # quarters written out, not looped: constant shifts, offsets and lanes fold
    p = b * TYPE_SIZE
    m32 = vsplat(-32.0)
    sv = (_scales(w0, p), _scales(w1, p), _scales(w2, p), _scales(w3, p))
    a0, a1, a2, a3 = _half(w0, w1, w2, w3, p, x, b * 256, 0, m32, sv, a0, a1, a2, a3)
    return _half(w0, w1, w2, w3, p, x, b * 256, 1, m32, sv, a0, a1, a2, a3)

# The integer route on packed rows (`quant_drivers.kpmatvec_tokens`), sixteen rows a group as
# Q4_K's are, llama.cpp's order of operations: a block's sum is an exact integer (each 16-value
# sub-block's products times its int8 scale, vpmaddubsw then vpmaddwd, the offset of 32 taken
# out through the activations' sub-block sums), then one float step a block. Block b of the
# sixteen rows in PACK_BYTES (the file's 16 x 210 bytes, regrouped):
#   values: the block's 32-value groups G = 0..7 (sub-blocks 2G, 2G + 1); vector i of group G
#           holds in lane r row r's values at positions 2i, 2i + 1, 16 + 2i, 16 + 2i + 1 of the
#           group (vpmaddubsw's first int16 in sub-block 2G, the second in 2G + 1: one
#           vpmaddwd against the pair of scales), the activations reordered to match
#           (`order_quants`). Per half h (groups 4h .. 4h + 3) and i, three vectors at
#           192 (8h + i): X0 = group 4h's six bits | group 4h + 2's top two << 6, X1 the same
#           for 4h + 1 and 4h + 3, Y = group 4h + 2's low four | group 4h + 3's << 4
#   scales: byte 32G + 2r + n = row r's scale of sub-block 2G + n (int16 pairs, sign-extended)
#   d: the sixteen rows' halves
PACK_SCALES = 3072
PACK_D = PACK_SCALES + 256
PACK_BYTES = PACK_D + 32  # 3360: the sixteen rows' 16 x 210 bytes, no more
SUB_QUADS = 4  # activation quads under one scale (16 values)


@njit(inline="always")
def _value(w, p, e):
    """Value e (0..255) of the block at p, unsigned (0..63: the offset of 32 not taken out)."""
    h, r = e // 128, e % 128
    low = (np.int32(w[p + h * 64 + r % 64]) >> (4 * (r // 64))) & 15
    return low | (((np.int32(w[p + 128 + h * 32 + r % 32]) >> (2 * (r // 32))) & 3) << 4)


@njit(inline="always")
def _position(i, k):
    """Where byte k of a lane of vector i sits in its 32-value group."""
    return 2 * i + (k & 1) + 16 * (k >> 1)


@njit(inline="always")
def pack_block(w, b, pb, r):
    """Row w's block b into row slot r of pb (one packed block, PACK_BYTES uint8)."""
    p = b * TYPE_SIZE
    for h in range(2):
        for i in range(8):
            for k in range(4):
                e = 128 * h + _position(i, k)
                v0, v1 = _value(w, p, e), _value(w, p, e + 32)
                v2, v3 = _value(w, p, e + 64), _value(w, p, e + 96)
                o = 192 * (8 * h + i) + 4 * r + k
                pb[o] = v0 | ((v2 >> 4) << 6)
                pb[o + 64] = v1 | ((v3 >> 4) << 6)
                pb[o + 128] = (v2 & 15) | ((v3 & 15) << 4)
    for G in range(8):
        for n in range(2):
            pb[PACK_SCALES + 32 * G + 2 * r + n] = w[p + 192 + 2 * G + n]
    for k in range(2):
        pb[PACK_D + 2 * r + k] = w[p + 208 + k]


@njit(inline="always")
def order_quants(q):
    """A token's quantized activations (cols,) reordered in place as the packed values are:
    in each 32-value group, quad i = positions 2i, 2i + 1, 16 + 2i, 17 + 2i."""
    t = np.empty(32, np.int8)
    for g in range(0, q.shape[0], 32):
        for i in range(8):
            for k in range(4):
                t[4 * i + k] = q[g + _position(i, k)]
        q[g:g + 32] = t


@byte_program
def _whole(by, o):
    """Groups 4h, 4h + 1 (X0, X1 at o): the low six bits."""
    return by.mask(by.load(o, 64), 63)


@byte_program
def _split(by, x, y, k):
    """Groups 4h + 2, 4h + 3 (X at x, Y at y, k = 0 / 4): Y's nibble, X's top two bits above."""
    return by.or_(by.mask(by.shr(by.load(y, 64), k), 15), by.mask(by.shr(by.load(x, 64), 2), 48))


@njit(inline="always")
def _values(pb, G, i):
    """Sixteen rows' four values (unsigned) of vector i of group G."""
    o = 192 * (8 * (G // 4) + i)
    m = G % 4
    if m < 2:
        return _whole(pb, o + 64 * m)
    return _split(pb, o + 64 * (m - 2), o + 128, 4 * (m - 2))


@njit(inline="always")
def _four_groups(pb, h, i):
    """Vector i of groups 4h .. 4h + 3, from three loads (the split groups share theirs)."""
    o = 192 * (8 * h + i)
    return (_whole(pb, o), _whole(pb, o + 64), _split(pb, o, o + 128, 0),
            _split(pb, o + 64, o + 128, 4))


@njit(inline="always")
def _scales4(pb, h):
    """The rows' scales of groups 4h .. 4h + 3, as `idot_scaled` takes them."""
    o = PACK_SCALES + 128 * h
    return (iwiden_signed_pairs(pb, o), iwiden_signed_pairs(pb, o + 32),
            iwiden_signed_pairs(pb, o + 64), iwiden_signed_pairs(pb, o + 96))


@njit(inline="always")
def _token4(v, c, q, qo, a):
    """a + a token's products of vector v (groups 4h .. 4h + 3, activations at qo, qo + 32,
    ...) times the groups' scales c: a group a chain, so that four vpdpwssds are in flight
    where one chain of 64 a block waited on each (the sums are exact integers: the order
    changes no bit)."""
    return (idot_scaled(a[0], v[0], ibcast4(q, qo), c[0]),
            idot_scaled(a[1], v[1], ibcast4(q, qo + 32), c[1]),
            idot_scaled(a[2], v[2], ibcast4(q, qo + 64), c[2]),
            idot_scaled(a[3], v[3], ibcast4(q, qo + 96), c[3]))


@njit(inline="always")
def _sum4(a):
    return iadd(iadd(a[0], a[1]), iadd(a[2], a[3]))


@njit(inline="always")
def _offset(pb, s, k, acc):
    """acc - 32 * the rows' scales against a token's sub-block sums (s[k + G]: int16 pairs)."""
    off = izero()
    for G in (0, 1, 2, 3, 4, 5, 6, 7):
        off = iadd(off, ipairs_times(iwiden_signed_pairs(pb, PACK_SCALES + 32 * G),
                                     isplat(s[k + G])))
    return imul_add(acc, off, isplat(-32))


@njit(inline="always")
def _ask(Pn, b, pf, k):
    """Where pf: vector k's 192 bytes of block b of the next group's rows, as this group's
    are used, and with k = 0 the scales and d after the values (quant_drivers: the requests
    spread through the block's compute)."""
    if pf:
        prefetch_span(Pn, b, 192 * k, 192)
        if k == 0:
            prefetch_span(Pn, b, PACK_SCALES, PACK_BYTES - PACK_SCALES)


@njit(inline="always")
def _packed_four_narrow(pb, b, q0, q1, q2, q3, Pn, pf):
    """`packed_four`'s sums for sixteen vector registers (AVX2): four tokens' chains a group
    at a time; sixteen chains (four tokens by four groups) would not fit."""
    i0 = i1 = i2 = i3 = izero()
    for G in (0, 1, 2, 3, 4, 5, 6, 7):
        qo = 256 * b + 32 * G
        sc = iwiden_signed_pairs(pb, PACK_SCALES + 32 * G)
        for i in range(8):
            if G % 4 == 0:
                _ask(Pn, b, pf, 8 * (G // 4) + i)
            v = _values(pb, G, i)
            i0 = idot_scaled(i0, v, ibcast4(q0, qo + 4 * i), sc)
            i1 = idot_scaled(i1, v, ibcast4(q1, qo + 4 * i), sc)
            i2 = idot_scaled(i2, v, ibcast4(q2, qo + 4 * i), sc)
            i3 = idot_scaled(i3, v, ibcast4(q3, qo + 4 * i), sc)
    return i0, i1, i2, i3


@njit(inline="always")
def packed_four(pb, b, q0, q1, q2, q3, s0, s1, s2, s3, Pn, pf):
    """Sixteen packed rows' block b (pb) against four tokens (quantized values q in
    `order_quants`' order, sub-block sums s as int16 pairs): per token the rows' exact
    integer sums, and zeros for the mins the type has not. Where pf, block b of the next
    group's rows (Pn) is prefetched along the way."""
    z = izero()
    if ISA == "avx2":
        i0, i1, i2, i3 = _packed_four_narrow(pb, b, q0, q1, q2, q3, Pn, pf)
    else:
        t0 = t1 = t2 = t3 = (z, z, z, z)
        for h in range(2):
            c = _scales4(pb, h)
            qo = 256 * b + 128 * h
            for i in range(8):
                _ask(Pn, b, pf, 8 * h + i)
                v = _four_groups(pb, h, i)
                t0 = _token4(v, c, q0, qo + 4 * i, t0)
                t1 = _token4(v, c, q1, qo + 4 * i, t1)
                t2 = _token4(v, c, q2, qo + 4 * i, t2)
                t3 = _token4(v, c, q3, qo + 4 * i, t3)
        i0, i1, i2, i3 = _sum4(t0), _sum4(t1), _sum4(t2), _sum4(t3)
    return (_offset(pb, s0, 8 * b, i0), _offset(pb, s1, 8 * b, i1), _offset(pb, s2, 8 * b, i2),
            _offset(pb, s3, 8 * b, i3), z, z, z, z)


@njit(inline="always")
def packed_one(pb, b, q, s, Pn, pf):
    """`packed_four` for one token."""
    z = izero()
    t = (z, z, z, z)
    for h in range(2):
        c = _scales4(pb, h)
        qo = 256 * b + 128 * h
        for i in range(8):
            _ask(Pn, b, pf, 8 * h + i)
            t = _token4(_four_groups(pb, h, i), c, q, qo + 4 * i, t)
    return _offset(pb, s, 8 * b, _sum4(t)), z


@njit(inline="always")
def packed_scales(pb):
    """The sixteen rows' d, and zeros for the dmin the type has not."""
    return vload_f16(pb, PACK_D), vzero()
