"""RMSNorm."""

import numpy as np
from numba import njit, prange

from .. import checks
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


def rmsnorm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]**2) + eps) * weight for x, out (n, d) float32, weight (d,);
    out may be x itself."""
    n, d = checks.array("x", x, (None, None)).shape
    checks.array("weight", weight, (d,))
    checks.array("out", out, (n, d))
    checks.writable("out", out, x, weight, same_ok=True)
    if checks.finite("eps", eps) < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    rmsnorm_kernel(x, weight, eps, out)


@njit(inline="always")
def _row(x, weight, eps, out, t):
    d = x.shape[1]
    scale = np.float32(1.0 / np.sqrt(_sum_squares(x[t]) / d + eps))
    for i in range(d):
        out[t, i] = x[t, i] * scale * weight[i]


@njit(parallel=True, cache=True)
def rmsnorm_kernel(x, weight, eps, out):
    """`rmsnorm` without the checks."""
    for t in prange(x.shape[0]):
        _row(x, weight, eps, out, t)


@njit(cache=True)
def rmsnorm_serial(x, weight, eps, out):
    """`rmsnorm_kernel` on the calling thread, for a few rows (`backend_cpu.SERIAL_VALUES`)."""
    for t in range(x.shape[0]):
        _row(x, weight, eps, out, t)
