"""Splitting packed bits in float32 arithmetic. Numba widens integer lanes to int64, which costs
most of the SIMD width; a byte converted to float32 and split with floor stays in float32 lanes
and is exact (every value involved is a small integer)."""

import numpy as np
from numba import njit


@njit(inline="always")
def split_nibbles(v):
    """v: a byte value as float32 -> (low nibble, high nibble) as float32."""
    hi = np.floor(v * np.float32(0.0625))
    return v - np.float32(16.0) * hi, hi
