import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16

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
