import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import dot4_from_row32, int_parts_from_blocks, nibble_pairs
from ..simd import load_half, vadd, vfma, vload_bits_word, vmul, vsplat
from .q5_0 import _qh

GGML_TYPE = GGMLQuantizationType.Q5_1
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 32 values in 24 bytes
VIEW = np.uint8
# block: d (f16) | m (f16) | qh (u32) | qs[16]; value = d * q + m, q as in Q5_0 without the -16


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    m = load_f16(w, p + 2)
    qh = _qh(w, p + 4)
    for j in range(16):
        q = np.int64(w[p + 8 + j])
        out[o + j] = d * np.float32((q & 15) | (((qh >> j) & 1) << 4)) + m
        out[o + j + 16] = d * np.float32((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) + m


@njit(inline="always")
def _row(w, p, xa, xb, a):
    # q = nibble + 16 * high bit; sum((d * q + m) * x) = d * sum(q * x) + m * sum(x)
    xs = vadd(xa, xb)
    h = _qh(w, p + 4)
    qa = vload_bits_word(w, p + 8, 0, 15, h, 0, 4)
    qb = vload_bits_word(w, p + 8, 4, 15, h, 16, 4)
    q_x = vfma(qa, xa, vmul(qb, xb))
    return vfma(vsplat(load_half(w, p)), q_x, vfma(vsplat(load_half(w, p + 2)), xs, a))


dot4_block = dot4_from_row32(_row, TYPE_SIZE)

# integer route: Q8_0 activations; q = 5-bit value, B = m
ACT_BLOCK = 32
VALUE_BITS = 5  # the packed integer route keeps them as nibbles and a bit plane
HAS_MIN = True

_int_bytes = nibble_pairs(8, qh=4)

int_block, int_part = int_parts_from_blocks(_int_bytes, TYPE_SIZE, True)
