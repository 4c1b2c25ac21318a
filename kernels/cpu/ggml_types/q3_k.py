import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import load_half, vmul, vsplat
from ..simd_int import byte_program, vload_q3k_scales, vquad_lanes

GGML_TYPE = GGMLQuantizationType.Q3_K
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 110 bytes
VIEW = np.uint8
# block: hmask[32] | qs[64] (low 2 bits) | scales[12] (16 six-bit scales) | d (f16)
# scale i: low 4 bits = scales[i] & 15 (i < 8) or scales[i - 8] >> 4;
#          high 2 bits = (scales[8 + i % 4] >> 2 * (i // 4)) & 3; minus 32
# value e = half*128 + s*32 + l:
#   q = ((qs[half*32 + l] >> 2s) & 3) - (0 if bit e // 32 of hmask[l] else 4)
#           (d * scale[e // 16]) * q


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p + 108)
    for e in range(256):
        i = e // 16
        lo = (np.int32(w[p + 96 + i]) & 15) if i < 8 else (np.int32(w[p + 96 + i - 8]) >> 4)
        hi = (np.int32(w[p + 104 + i % 4]) >> (2 * (i // 4))) & 3
        dl = d * np.float32((lo | (hi << 4)) - 32)
        ql = (np.int32(w[p + 32 + (e // 128) * 32 + e % 32]) >> (2 * ((e // 32) % 4))) & 3
        hbit = (np.int32(w[p + e % 32]) >> (e // 32)) & 1
        out[o + e] = dl * np.float32(ql - (0 if hbit else 4))

# integer route: Q8_K activations; step c (64 values) is half n = c // 2, shifts
# j = 2 (c % 2) and j + 1: q | high bit << 2 in 0..7, the 4 taken out in integers
ACT_BLOCK = 256
OFFSET = 4


@byte_program
def _int_bytes(by, pq, ph, j2, j2_2, hj, hj_1):
    q = by.load(pq, 32)
    hm = by.load(ph, 32)
    return by.cat(by.or_(by.mask(by.shr(q, j2), 3), by.shl(by.mask(by.shr(hm, hj), 1), 2)),
                  by.or_(by.mask(by.shr(q, j2_2), 3), by.shl(by.mask(by.shr(hm, hj_1), 1), 2)))


@njit(inline="always")
def _scale(w, p, i):
    lo = (np.int32(w[p + 96 + i]) & 15) if i < 8 else (np.int32(w[p + 96 + i - 8]) >> 4)
    hi = (np.int32(w[p + 104 + i % 4]) >> (2 * (i // 4))) & 3
    return np.float32((lo | (hi << 4)) - 32)


@njit(inline="always")
def int_block(w, b, nb):
    """The block's sixteen scales times d, one per lane."""
    p = b * TYPE_SIZE
    return vmul(vload_q3k_scales(w, p + 96), vsplat(load_half(w, p + 108)))


@njit(inline="always")
def int_part(w, b, s, c, nb):
    p = b * TYPE_SIZE
    n = c >> 1
    j = 2 * (c & 1)
    a = vquad_lanes(s, 4 * c)
    # B unused
    return _int_bytes(w, p + 32 + 32 * n, p, 2 * j, 2 * j + 2, 4 * n + j, 4 * n + j + 1), a, a
