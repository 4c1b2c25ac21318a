"""The integer route's activations: a float vector quantized to int8 once per matvec, as
llama.cpp's quantize_row_q8_0 (blocks of 32, an f16 scale: for the 32-value weight types) and
quantize_row_q8_K (blocks of 256, a float32 scale: for the K-quants and IQ4_XS) do.

Besides the int8 values q, each group of four values (one int32 lane of the integer dot
product) gets d, its block's scale, the sum of its four q and d times that sum: a weight
sub-block's `A * d * (q_w . q - offset * sum(q))` and `B * d * sum(q)` terms then need no
knowledge of the block size.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .simd_int import round_half

STEP = 64  # values per integer step; rows are padded to a multiple with zeros


@njit(inline="always")
def quantize_token(x, act_block, q, qs, xd, xs):
    """x (cols,) float32 -> q (cols_pad,) int8, qs (cols_pad // 4,) int32, xd and xs
    (cols_pad // 4,) float32; the padding past cols is zero. act_block: 32 (Q8_0) or 256
    (Q8_K)."""
    cols = x.shape[0]
    for o in range(0, cols, act_block):
        amax = np.float32(0.0)
        vmax = np.float32(0.0)
        for j in range(o, o + act_block):
            v = x[j]
            if abs(v) > amax:
                amax = abs(v)
                vmax = v
        if act_block == 256:
            # Q8_K: the largest magnitude maps to -127 exactly (its sign flips the scale)
            iscale = np.float32(-127.0) / vmax if amax != 0 else np.float32(0.0)
            d = np.float32(1.0) / iscale if amax != 0 else np.float32(0.0)
            for j in range(o, o + act_block):
                q[j] = min(127, np.int32(np.rint(iscale * x[j])))
        else:
            # Q8_0: d = amax / 127, stored as f16; q from 127 / amax (llama.cpp's x86 code)
            d = amax / np.float32(127.0)
            inv = np.float32(127.0) / amax if amax != 0 else np.float32(0.0)
            for j in range(o, o + act_block):
                q[j] = np.int32(np.rint(x[j] * inv))
            d = round_half(d)
        for k in range(o // 4, (o + act_block) // 4):
            s = np.int32(q[4 * k]) + np.int32(q[4 * k + 1]) + np.int32(q[4 * k + 2]) + np.int32(
                q[4 * k + 3])
            qs[k] = s
            xd[k] = d
            xs[k] = d * np.float32(s)
    q[cols:] = 0
    qs[cols // 4:] = 0
    xd[cols // 4:] = 0
    xs[cols // 4:] = 0


def padded(cols: int) -> int:
    return (cols + STEP - 1) // STEP * STEP


@njit(cache=True)
def quantize_rows(X, act_block, Q, QS, XD, XS):
    """Every row of X (n, cols) as quantize_token: Q (n, cols_pad), QS, XD, XS (n, cols_pad/4)."""
    for t in range(X.shape[0]):
        quantize_token(X[t], act_block, Q[t], QS[t], XD[t], XS[t])


def quantize(x: np.ndarray, act_block: int):
    """(q, qs, xd, xs) for one float32 vector: what the integer kernels see (tests,
    experiments)."""
    X = np.ascontiguousarray(x, np.float32).reshape(1, -1)
    n = padded(X.shape[1])
    Q = np.empty((1, n), np.int8)
    QS = np.empty((1, n // 4), np.int32)
    XD = np.empty((1, n // 4), np.float32)
    XS = np.empty((1, n // 4), np.float32)
    quantize_rows(X, act_block, Q, QS, XD, XS)
    return Q[0], QS[0], XD[0], XS[0]
