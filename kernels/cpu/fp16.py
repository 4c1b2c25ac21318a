"""IEEE half and bfloat16 bit patterns to float32, exact, in Numba arithmetic (Numba has no
float16 type on the CPU, and a scalar bit cast would need an array per value)."""

import numpy as np
from numba import njit

# A normal half is (1024 + mantissa) * 2**(e - 25); a subnormal one mantissa * 2**-24.
_HALF_POW2 = np.array([2.0 ** (max(e, 1) - 25) for e in range(32)], dtype=np.float32)
# A normal bfloat16 is (128 + mantissa) * 2**(e - 134); a subnormal one mantissa * 2**-133.
_BF16_POW2 = np.array([2.0 ** (max(e, 1) - 134) for e in range(256)], dtype=np.float32)


@njit(inline="always")
def half_bits_to_f32(h):
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 31:
        v = np.float32(np.inf) if m == 0 else np.float32(np.nan)
    else:
        v = np.float32(m + (1024 if e else 0)) * _HALF_POW2[e]
    return -v if h & 0x8000 else v


@njit(inline="always")
def bf16_bits_to_f32(h):
    e = (h >> 7) & 0xFF
    m = h & 0x7F
    if e == 255:
        v = np.float32(np.inf) if m == 0 else np.float32(np.nan)
    else:
        v = np.float32(m + (128 if e else 0)) * _BF16_POW2[e]
    return -v if h & 0x8000 else v


@njit(inline="always")
def load_f16(w, o):
    """The little-endian half at byte offset o of the uint8 array w, as float32."""
    return half_bits_to_f32(np.int32(w[o]) | (np.int32(w[o + 1]) << 8))
