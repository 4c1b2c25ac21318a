import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import dot4_from_row32
from ..simd import load_half, vfma, vload_i8, vmul, vsplat

GGML_TYPE = GGMLQuantizationType.Q8_0
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 32 values in 34 bytes
VIEW = np.uint8
# block: d (f16) | qs[32] (int8); value = d * q


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    for j in range(32):
        out[o + j] = np.float32(np.int8(w[p + 2 + j])) * d


@njit(inline="always")
def _row(w, p, xa, xb, a):
    return vfma(
        vsplat(load_half(w, p)), vfma(vload_i8(w, p + 18), xb, vmul(vload_i8(w, p + 2), xa)), a
    )


dot4_block = dot4_from_row32(_row, TYPE_SIZE)
