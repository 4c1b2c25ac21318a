import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

GGML_TYPE = GGMLQuantizationType.F32
BLOCK, TYPE_SIZE = 1, 4
VIEW = np.float32  # the kernels see rows as float32, not bytes


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = w[b]


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    xv = x[o]
    return w0[b] * xv, w1[b] * xv, w2[b] * xv, w3[b] * xv
