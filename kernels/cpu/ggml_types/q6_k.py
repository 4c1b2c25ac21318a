import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import load_half, vfma, vlane, vload_bits2, vload_f32, vload_i8, vmul, vsplat
from ..simd_int import byte_program, vquad_lanes

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

# integer route: Q8_K activations; step c (64 values) is half h = c // 2, quarter pair
# k = c % 2: ql[64h:64h + 64] >> 4k, with qh[32h:32h + 32] >> 4k and >> 4k + 2 above
ACT_BLOCK = 256
OFFSET = 32


@byte_program
def _int_bytes(by, pl, ph, k4, k4_2):
    low = by.mask(by.shr(by.load(pl, 64), k4), 15)
    h = by.load(ph, 32)
    high = by.cat(by.mask(by.shr(h, k4), 3), by.mask(by.shr(h, k4_2), 3))
    return by.or_(low, by.shl(high, 4))


@njit(inline="always")
def int_block(w, b, nb):
    return _scales(w, b * TYPE_SIZE)


@njit(inline="always")
def int_part(w, b, s, c, nb):
    p = b * TYPE_SIZE
    h = c >> 1
    k = c & 1
    a = vquad_lanes(s, 4 * c)
    return _int_bytes(w, p + 64 * h, p + 128 + 32 * h, 4 * k, 4 * k + 2), a, a  # B unused
