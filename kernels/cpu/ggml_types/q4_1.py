import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16

GGML_TYPE = GGMLQuantizationType.Q4_1
BLOCK, TYPE_SIZE = 32, 20
VIEW = np.uint8
# block: d (f16) | m (f16) | qs[16]; value j = d * (qs[j] & 15) + m, value j + 16 uses qs[j] >> 4


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    m = load_f16(w, p + 2)
    for j in range(16):
        q = np.int32(w[p + 4 + j])
        out[o + j] = d * np.float32(q & 15) + m
        out[o + j + 16] = d * np.float32(q >> 4) + m
