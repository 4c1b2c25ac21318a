import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..simd import LANES, vfma, vload_f32

GGML_TYPE = GGMLQuantizationType.F32
BLOCK, TYPE_SIZE = 1, 4
STEP = LANES  # dot4_block covers one vector of values
VIEW = np.float32  # the kernels see rows as float32, not bytes


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = w[b]


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, a0, a1, a2, a3, tmp):
    o = b * LANES
    xv = vload_f32(x, o)
    return (
        vfma(vload_f32(w0, o), xv, a0),
        vfma(vload_f32(w1, o), xv, a1),
        vfma(vload_f32(w2, o), xv, a2),
        vfma(vload_f32(w3, o), xv, a3),
    )
