import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import half_bits_to_f32
from ..quant_drivers import dot4_from_lanes
from ..simd import LANES, vload_f16

GGML_TYPE = GGMLQuantizationType.F16
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 1 values in 2 bytes
STEP = LANES  # dot4_block covers one vector of values
VIEW = np.uint16


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = half_bits_to_f32(np.int32(w[b]))


dot4_block = dot4_from_lanes(vload_f16)
