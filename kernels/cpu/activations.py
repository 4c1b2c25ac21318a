"""Element-wise activations and softmax."""

import math

import numpy as np
from numba import njit, prange

_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))


@njit(inline="always")
def _silu(v):
    return v / (np.float32(1.0) + np.exp(-v))


@njit(inline="always")
def _gelu_tanh(v):
    return (
        np.float32(0.5)
        * v
        * (np.float32(1.0) + np.tanh(_SQRT_2_OVER_PI * (v + np.float32(0.044715) * v * v * v)))
    )


@njit(parallel=True, cache=True)
def silu(x, out):
    """out = x * sigmoid(x), x and out (n, d)."""
    for t in prange(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = _silu(x[t, i])


@njit(parallel=True, cache=True)
def gelu_tanh(x, out):
    """out = GELU(x) in its tanh form, x and out (n, d)."""
    for t in prange(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = _gelu_tanh(x[t, i])


@njit(parallel=True, cache=True)
def gated(gate, up, out, use_gelu):
    """out = act(gate) * up, all (n, d): SwiGLU (SiLU) or GeGLU (GELU-tanh)."""
    for t in prange(gate.shape[0]):
        for i in range(gate.shape[1]):
            g = gate[t, i]
            a = _gelu_tanh(g) if use_gelu else _silu(g)
            out[t, i] = a * up[t, i]


@njit(cache=True)
def softmax(x, out):
    """out = softmax(x) over the last axis of a 1-D x, in float64 for the normalisation."""
    m = -np.inf
    for i in range(x.shape[0]):
        if x[i] > m:
            m = x[i]
    s = 0.0
    for i in range(x.shape[0]):
        e = np.exp(np.float64(x[i]) - m)
        out[i] = e
        s += e
    for i in range(x.shape[0]):
        out[i] = out[i] / s
