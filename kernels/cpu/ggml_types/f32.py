import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..quant_drivers import dot4_from_lanes
from ..simd import LANES, vload_f32

GGML_TYPE = GGMLQuantizationType.F32
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 1 values in 4 bytes
STEP = LANES  # dot4_block covers one vector of values
VIEW = np.float32  # the kernels see rows as float32, not bytes


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = w[b]


dot4_block = dot4_from_lanes(vload_f32)
