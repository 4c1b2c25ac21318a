import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import nibble_pairs
from ..simd import load_half, vsplat2
from .iq4_nl import KVALUES

GGML_TYPE = GGMLQuantizationType.IQ4_XS
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 136 bytes
VIEW = np.uint8
# block: d (f16) | scales_h (u16: 2 bits per sub-block) | scales_l[4] (4 bits per sub-block) |
#        qs[128]; sub-block j of 32: scale = (low | high << 4) - 32,
# value j*32 + n*16 + l = (d * scale) * KVALUES[(qs[j*16 + l] >> 4n) & 15]


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    scales_h = np.int32(w[p + 2]) | (np.int32(w[p + 3]) << 8)
    for j in range(8):
        lo = (np.int32(w[p + 4 + j // 2]) >> (4 * (j % 2))) & 15
        hi = (scales_h >> (2 * j)) & 3
        dl = d * np.float32((lo | (hi << 4)) - 32)
        for l in range(16):
            q = np.int32(w[p + 8 + j * 16 + l])
            out[o + j * 32 + l] = dl * KVALUES[q & 15]
            out[o + j * 32 + 16 + l] = dl * KVALUES[q >> 4]

# integer route: Q8_K activations against the table's signed values; step c is sub-blocks
# 2c and 2c + 1
ACT_BLOCK = 256
SIGNED = True

# step c: its 32 bytes as two Q4_0-style halves of 16
_int_bytes = nibble_pairs(0, table=KVALUES)


@njit(inline="always")
def _scale(w, p, j):
    lo = (np.int32(w[p + 4 + j // 2]) >> (4 * (j % 2))) & 15
    hi = ((np.int32(w[p + 2]) | (np.int32(w[p + 3]) << 8)) >> (2 * j)) & 3
    return np.float32((lo | (hi << 4)) - 32)


@njit(inline="always")
def int_block(w, b, nb):
    return load_half(w, b * TYPE_SIZE)


@njit(inline="always")
def int_part(w, b, d, c, nb):
    p = b * TYPE_SIZE
    a = vsplat2(d * _scale(w, p, 2 * c), d * _scale(w, p, 2 * c + 1))
    q = p + 8 + 32 * c
    return _int_bytes(w, q, q + 16), a, a  # B unused: the values are signed
