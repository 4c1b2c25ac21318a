import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import dot4_from_row32, int_parts_from_blocks, nibble_pairs
from ..simd import load_half, vadd, vfma, vload_bits, vmul, vsplat

GGML_TYPE = GGMLQuantizationType.Q4_1
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 32 values in 20 bytes
VIEW = np.uint8
# block: d (f16) | m (f16) | qs[16]; value j = d * (qs[j] & 15) + m, value j + 16 uses qs[j] >> 4


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    m = load_f16(w, p + 2)
    for j in range(16):
        q = np.int32(w[p + 4 + j])
        out[o + j] = d * np.float32(q & 15) + m
        out[o + j + 16] = d * np.float32(q >> 4) + m


@njit(inline="always")
def _row(w, p, xa, xb, a):
    # sum((d * q + m) * x) = d * sum(q * x) + m * sum(x), lane by lane
    xs = vadd(xa, xb)
    q_x = vfma(vload_bits(w, p + 4, 0, 15), xa, vmul(vload_bits(w, p + 4, 4, 15), xb))
    return vfma(vsplat(load_half(w, p)), q_x, vfma(vsplat(load_half(w, p + 2)), xs, a))


dot4_block = dot4_from_row32(_row, TYPE_SIZE)

# integer route: Q8_0 activations (llama.cpp's Q8_1 adds their sums, here xs); B = m
ACT_BLOCK = 32
VALUE_BITS = 4  # the packed integer route keeps them as nibbles
HAS_MIN = True

_int_bytes = nibble_pairs(4)

int_block, int_part = int_parts_from_blocks(_int_bytes, TYPE_SIZE, True)
