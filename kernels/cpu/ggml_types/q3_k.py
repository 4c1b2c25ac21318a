import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16

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
