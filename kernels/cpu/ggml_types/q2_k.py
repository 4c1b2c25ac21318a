import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import load_half, vmul, vsplat2
from ..simd_int import byte_program, vpair, vquad_bits

GGML_TYPE = GGMLQuantizationType.Q2_K
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 84 bytes
VIEW = np.uint8
# block: scales[16] (low nibble: scale, high nibble: min, per 16 values) | qs[64] (2-bit) |
#        d (f16) | dmin (f16)
# value e = half*128 + s*32 + l:  q = (qs[half*32 + l] >> 2s) & 3,
#           (d * scale[e // 16]) * q - (dmin * min[e // 16])


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p + 80)
    dmin = load_f16(w, p + 82)
    for e in range(256):
        sc = np.int32(w[p + e // 16])
        dl = d * np.float32(sc & 15)
        ml = dmin * np.float32(sc >> 4)
        q = (np.int32(w[p + 16 + (e // 128) * 32 + e % 32]) >> (2 * ((e // 32) % 4))) & 3
        out[o + e] = dl * np.float32(q) - ml

# integer route: Q8_K activations; step c (64 values) is half n = c // 2, shifts
# j = 2 (c % 2) and j + 1; scales[4c:4c + 4] give A (low nibbles) and B (high ones)
ACT_BLOCK = 256
HAS_MIN = True


@byte_program
def _int_bytes(by, pq, j2, j2_2):
    q = by.load(pq, 32)
    return by.cat(by.mask(by.shr(q, j2), 3), by.mask(by.shr(q, j2_2), 3))


@njit(inline="always")
def int_block(w, b, nb):
    """d and -dmin, as lanes."""
    p = b * TYPE_SIZE
    return vsplat2(load_half(w, p + 80), -load_half(w, p + 82))


@njit(inline="always")
def int_part(w, b, dm, c, nb):
    p = b * TYPE_SIZE
    j = 2 * (c & 1)
    return (_int_bytes(w, p + 16 + 32 * (c >> 1), 2 * j, 2 * j + 2),
            vmul(vquad_bits(w, p + 4 * c, 0, 15), vpair(dm, 0)),
            vmul(vquad_bits(w, p + 4 * c, 4, 15), vpair(dm, 8)))
