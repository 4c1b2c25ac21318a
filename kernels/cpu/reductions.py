"""Reductions over whole arrays."""

import numpy as np
from numba import njit, prange

_EXPONENT = np.uint32(0x7F800000)  # float32's exponent bits: all set in NaN and infinity
_PART = 32768  # values a thread tests at a time: a single row of logits is split too


@njit(parallel=True, cache=True)
def all_finite(x):
    """Whether every value of x (rows, cols) float32, C-contiguous, is finite: an integer test
    of the exponent bits, which vectorizes and is exact. A float sum of each row vectorizes
    only under FASTMATH, and with those flags NaN rows tested finite (measured)."""
    bits = x.view(np.uint32)  # (rows, cols)
    rows, cols = x.shape
    parts = (cols + _PART - 1) // _PART
    bad = np.zeros(rows * parts, np.bool_)  # (rows * parts,)
    for k in prange(rows * parts):
        i0 = k % parts * _PART
        part = bits[k // parts, i0:min(cols, i0 + _PART)]
        m = np.uint32(0)
        for i in range(part.shape[0]):
            m = max(m, part[i] & _EXPONENT)
        bad[k] = m == _EXPONENT
    return not bad.any()
