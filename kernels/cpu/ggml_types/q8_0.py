import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import dot4_from_row32, int_parts_from_blocks
from ..simd import load_half, vfma, vload_i8, vmul, vsplat
from ..simd_int import byte_program

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

# integer route: Q8_0 activations against the signed values
ACT_BLOCK = 32
SIGNED = True


@byte_program
def _int_bytes(by, p0, p1):
    return by.cat(by.load(p0, 32, 2), by.load(p1, 32, 2))


int_block, int_part = int_parts_from_blocks(_int_bytes, TYPE_SIZE, False)
