"""RMSNorm."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def rmsnorm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]**2) + eps) * weight for x, out (n, d), weight (d,).
    The sum of squares is accumulated in float64, as ggml does."""
    n, d = x.shape
    for t in prange(n):
        ss = 0.0
        for i in range(d):
            v = np.float64(x[t, i])
            ss += v * v
        scale = np.float32(1.0 / np.sqrt(ss / d + eps))
        for i in range(d):
            out[t, i] = x[t, i] * scale * weight[i]
