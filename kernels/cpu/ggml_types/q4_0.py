import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd import load_half, vadd, vfma, vload_bits, vload_f32, vmul, vsplat, vsub

GGML_TYPE = GGMLQuantizationType.Q4_0
BLOCK, TYPE_SIZE = 32, 18
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
def _row(w, p, xa, xb, x8, a):
    # sum((q - 8) * x) = sum(q * x) - 8 * sum(x), lane by lane
    q_x = vfma(vload_bits(w, p + 2, 0, 15), xa, vmul(vload_bits(w, p + 2, 4, 15), xb))
    return vfma(vsplat(load_half(w, p)), vsub(q_x, x8), a)


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, a0, a1, a2, a3, tmp):
    p = b * TYPE_SIZE
    xa = vload_f32(x, b * 32)
    xb = vload_f32(x, b * 32 + 16)
    x8 = vmul(vadd(xa, xb), vsplat(8.0))
    return (
        _row(w0, p, xa, xb, x8, a0),
        _row(w1, p, xa, xb, x8, a1),
        _row(w2, p, xa, xb, x8, a2),
        _row(w3, p, xa, xb, x8, a3),
    )
