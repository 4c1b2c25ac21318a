import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..quant_drivers import int_parts_from_blocks, nibble_pairs

GGML_TYPE = GGMLQuantizationType.IQ4_NL
BLOCK, TYPE_SIZE = GGML_QUANT_SIZES[GGML_TYPE]  # 32 values in 18 bytes
VIEW = np.uint8
# block: d (f16) | qs[16]; value j = d * KVALUES[qs[j] & 15], value j + 16 uses qs[j] >> 4
KVALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32
)


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p)
    for j in range(16):
        q = np.int32(w[p + 2 + j])
        out[o + j] = d * KVALUES[q & 15]
        out[o + j + 16] = d * KVALUES[q >> 4]

# integer route: Q8_0 activations against the table's signed values
ACT_BLOCK = 32
SIGNED = True

_int_bytes = nibble_pairs(2, table=KVALUES)

int_block, int_part = int_parts_from_blocks(_int_bytes, TYPE_SIZE, False)
