import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from .q5_0 import _qh

GGML_TYPE = GGMLQuantizationType.Q5_1
BLOCK, TYPE_SIZE = 32, 24
VIEW = np.uint8
# block: d (f16) | m (f16) | qh (u32) | qs[16]; value = d * q + m, q as in Q5_0 without the -16


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    m = load_f16(w, p + 2)
    qh = _qh(w, p + 4)
    for j in range(16):
        q = np.int64(w[p + 8 + j])
        out[o + j] = d * np.float32((q & 15) | (((qh >> j) & 1) << 4)) + m
        out[o + j + 16] = d * np.float32((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) + m
