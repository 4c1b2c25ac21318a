import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import half_bits_to_f32
from ..simd import LANES, vfma, vload_f16, vload_f32

GGML_TYPE = GGMLQuantizationType.F16
BLOCK, TYPE_SIZE = 1, 2
STEP = LANES  # dot4_block covers one vector of values
VIEW = np.uint16


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = half_bits_to_f32(np.int32(w[b]))


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, a0, a1, a2, a3, tmp):
    o = b * LANES
    xv = vload_f32(x, o)
    return (
        vfma(vload_f16(w0, o), xv, a0),
        vfma(vload_f16(w1, o), xv, a1),
        vfma(vload_f16(w2, o), xv, a2),
        vfma(vload_f16(w3, o), xv, a3),
    )
