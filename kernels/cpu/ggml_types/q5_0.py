import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import dot4_from_row32, int_parts_from_blocks, nibble_pairs
from ..simd import load_half, vadd, vfma, vload_bits_word, vmul, vsplat, vsub

GGML_TYPE = GGMLQuantizationType.Q5_0
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 32 values in 22 bytes
VIEW = np.uint8
# block: d (f16) | qh (u32: bit j is the fifth bit of value j) | qs[16] (low nibbles as Q4_0)
# value = d * (q - 16)


@njit(inline="always")
def _qh(w, p):
    return (
        np.int64(w[p])
        | (np.int64(w[p + 1]) << 8)
        | (np.int64(w[p + 2]) << 16)
        | (np.int64(w[p + 3]) << 24)
    )


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    qh = _qh(w, p + 2)
    for j in range(16):
        q = np.int64(w[p + 6 + j])
        out[o + j] = d * np.float32(((q & 15) | (((qh >> j) & 1) << 4)) - 16)
        out[o + j + 16] = d * np.float32(((q >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16)


@njit(inline="always")
def _row(w, p, xa, xb, a):
    # q = nibble + 16 * high bit - 16; the -16 goes through sum(x), lane by lane
    x16 = vmul(vadd(xa, xb), vsplat(16.0))
    h = _qh(w, p + 2)
    qa = vload_bits_word(w, p + 6, 0, 15, h, 0, 4)
    qb = vload_bits_word(w, p + 6, 4, 15, h, 16, 4)
    return vfma(vsplat(load_half(w, p)), vsub(vfma(qa, xa, vmul(qb, xb)), x16), a)


dot4_block = dot4_from_row32(_row, TYPE_SIZE)

# integer route: Q8_0 activations; q = 5-bit value - 16, the 16 taken out in integers
ACT_BLOCK = 32
VALUE_BITS = 5  # the packed integer route keeps them as nibbles and a bit plane
OFFSET = 16

_int_bytes = nibble_pairs(6, qh=2)

int_block, int_part = int_parts_from_blocks(_int_bytes, TYPE_SIZE, False)
