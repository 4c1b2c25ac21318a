import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import half_bits_to_f32

GGML_TYPE = GGMLQuantizationType.F16
BLOCK, TYPE_SIZE = 1, 2
VIEW = np.uint16


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = half_bits_to_f32(np.int32(w[b]))


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    xv = x[o]
    return (
        half_bits_to_f32(np.int32(w0[b])) * xv,
        half_bits_to_f32(np.int32(w1[b])) * xv,
        half_bits_to_f32(np.int32(w2[b])) * xv,
        half_bits_to_f32(np.int32(w3[b])) * xv,
    )
