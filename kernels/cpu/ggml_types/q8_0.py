import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16

GGML_TYPE = GGMLQuantizationType.Q8_0
BLOCK, TYPE_SIZE = 32, 34
VIEW = np.uint8
# block: d (f16) | qs[32] (int8); value = d * q


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    for j in range(32):
        out[o + j] = np.float32(np.int8(w[p + 2 + j])) * d


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    p = b * TYPE_SIZE
    s0 = s1 = s2 = s3 = np.float32(0.0)
    for j in range(32):
        xv = x[o + j]
        s0 += np.float32(np.int8(w0[p + 2 + j])) * xv
        s1 += np.float32(np.int8(w1[p + 2 + j])) * xv
        s2 += np.float32(np.int8(w2[p + 2 + j])) * xv
        s3 += np.float32(np.int8(w3[p + 2 + j])) * xv
    return s0 * load_f16(w0, p), s1 * load_f16(w1, p), s2 * load_f16(w2, p), s3 * load_f16(w3, p)
