import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import dot4_from_row32, int_parts_from_blocks, nibble_pairs
from ..simd import load_half, vadd, vfma, vload_bits, vmul, vsplat, vsub

GGML_TYPE = GGMLQuantizationType.Q4_0
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 32 values in 18 bytes
VIEW = np.uint8
# block: d (f16) | qs[16]; value j = d * ((qs[j] & 15) - 8), value j + 16 = d * ((qs[j] >> 4) - 8)


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    for j in range(16):
        q = np.int32(w[p + 2 + j])
        out[o + j] = d * np.float32((q & 15) - 8)
        out[o + j + 16] = d * np.float32((q >> 4) - 8)


@njit(inline="always")
def _row(w, p, xa, xb, a):
    # sum((q - 8) * x) = sum(q * x) - 8 * sum(x), lane by lane
    x8 = vmul(vadd(xa, xb), vsplat(8.0))
    q_x = vfma(vload_bits(w, p + 2, 0, 15), xa, vmul(vload_bits(w, p + 2, 4, 15), xb))
    return vfma(vsplat(load_half(w, p)), vsub(q_x, x8), a)


dot4_block = dot4_from_row32(_row, TYPE_SIZE)

# integer route: Q8_0 activations; q = nibble - 8, the 8 taken out in integers
ACT_BLOCK = 32
VALUE_BITS = 4  # the packed integer route keeps them as nibbles
OFFSET = 8

_int_bytes = nibble_pairs(2)

int_block, int_part = int_parts_from_blocks(_int_bytes, TYPE_SIZE, False)
