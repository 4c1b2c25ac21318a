"""RMSNorm."""

import numpy as np
from numba import njit, prange

from .flags import FASTMATH


@njit(fastmath=FASTMATH, cache=True)
def _sum_squares(row):
    """Sum of row**2 in float64, as ggml accumulates it; reassociation lets LLVM keep
    several vector partial sums instead of one serial chain of additions."""
    s = 0.0
    for i in range(row.shape[0]):
        v = np.float64(row[i])
        s += v * v
    return s


@njit(parallel=True, cache=True)
def rmsnorm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]**2) + eps) * weight for x, out (n, d), weight (d,)."""
    n, d = x.shape
    for t in prange(n):
        scale = np.float32(1.0 / np.sqrt(_sum_squares(x[t]) / d + eps))
        for i in range(d):
            out[t, i] = x[t, i] * scale * weight[i]
