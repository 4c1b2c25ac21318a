import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..nibbles import split_nibbles

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
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    # sum((q - 8) * x) = sum(q * x) - 8 * sum(x): the offset is applied once per block
    p = b * TYPE_SIZE + 2
    s0 = s1 = s2 = s3 = xs = np.float32(0.0)
    for j in range(16):
        xa = x[o + j]
        xb = x[o + 16 + j]
        lo, hi = split_nibbles(np.float32(w0[p + j]))
        s0 += lo * xa + hi * xb
        lo, hi = split_nibbles(np.float32(w1[p + j]))
        s1 += lo * xa + hi * xb
        lo, hi = split_nibbles(np.float32(w2[p + j]))
        s2 += lo * xa + hi * xb
        lo, hi = split_nibbles(np.float32(w3[p + j]))
        s3 += lo * xa + hi * xb
        xs += xa + xb
    xs *= np.float32(8.0)
    p -= 2
    return (
        (s0 - xs) * load_f16(w0, p),
        (s1 - xs) * load_f16(w1, p),
        (s2 - xs) * load_f16(w2, p),
        (s3 - xs) * load_f16(w3, p),
    )
