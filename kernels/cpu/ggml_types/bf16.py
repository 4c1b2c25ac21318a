import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import bf16_bits_to_f32
from ..quant_drivers import dot4_from_lanes
from ..simd import LANES, vload_bf16

GGML_TYPE = GGMLQuantizationType.BF16
BLOCK, TYPE_SIZE = 1, 2
STEP = LANES  # dot4_block covers one vector of values
VIEW = np.uint16


@njit(inline="always")
def dequant_block(w, b, out, o):
    out[o] = bf16_bits_to_f32(np.int32(w[b]))


dot4_block = dot4_from_lanes(vload_bf16)
