import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from .q4_k import scale_min

GGML_TYPE = GGMLQuantizationType.Q5_K
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 176 bytes
VIEW = np.uint8
# block: d (f16) | dmin (f16) | scales[12] (as Q4_K) | qh[32] | qs[128] (as Q4_K)
# value e: q = low nibble as Q4_K | ((qh[e % 32] >> (e // 32)) & 1) << 4


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    dmin = load_f16(w, p + 2)
    for j in range(8):
        sc, m = scale_min(w, p + 4, j)
        dl = d * np.float32(sc)
        ml = dmin * np.float32(m)
        q0 = p + 48 + (j // 2) * 32
        shift = 4 * (j % 2)
        for l in range(32):
            q = ((np.int32(w[q0 + l]) >> shift) & 15) | (((np.int32(w[p + 16 + l]) >> j) & 1) << 4)
            out[o + j * 32 + l] = dl * np.float32(q) - ml
