import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..simd_int import byte_program, vpair
from .q4_k import _scales, scale_min

GGML_TYPE = GGMLQuantizationType.Q5_K
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 256 values in 176 bytes
VIEW = np.uint8
# block: d (f16) | dmin (f16) | scales[12] (as Q4_K) | qh[32] | qs[128] (as Q4_K)
# value e: q = low nibble as Q4_K | ((qh[e % 32] >> (e // 32)) & 1) << 4


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    dmin = load_f16(w, p + 2)
    for j in range(8):
        sc, m = scale_min(w, p + 4, j)
        dl = d * np.float32(sc)
        ml = dmin * np.float32(m)
        q0 = p + 48 + (j // 2) * 32
        shift = 4 * (j % 2)
        for l in range(32):
            q = ((np.int32(w[q0 + l]) >> shift) & 15) | (((np.int32(w[p + 16 + l]) >> j) & 1) << 4)
            out[o + j * 32 + l] = dl * np.float32(q) - ml

# integer route: Q8_K activations; a step is a quarter block, as Q4_K's
ACT_BLOCK = 256
HAS_MIN = True


@byte_program
def _int_bytes(by, pq, ph, c2, c2_1):
    v = by.load(pq, 32)
    h = by.load(ph, 32)
    return by.cat(by.or_(by.lo4(v), by.shl(by.mask(by.shr(h, c2), 1), 4)),
                  by.or_(by.hi4(v), by.shl(by.mask(by.shr(h, c2_1), 1), 4)))


@njit(inline="always")
def int_block(w, b, nb):
    """Q4_K's block scales: lanes 0-7 d * scale[j], lanes 8-15 -dmin * min[j]."""
    return _scales(w, b * TYPE_SIZE)


@njit(inline="always")
def int_part(w, b, s, c, nb):
    p = b * TYPE_SIZE
    return (_int_bytes(w, p + 48 + 32 * c, p + 16, 2 * c, 2 * c + 1), vpair(s, 2 * c),
            vpair(s, 8 + 2 * c))
