"""Element-wise activations and softmax."""

import math

import numpy as np
from numba import njit, prange

from .. import checks
from .simd import (
    LANES,
    half_bits,
    vadd,
    vdiv,
    vexp,
    vload_f32,
    vmul,
    vsplat,
    vstore_f32,
    vsub,
    vzero,
)

_SQRT_2_OVER_PI = np.float32(math.sqrt(2.0 / math.pi))


@njit(inline="always")
def _silu(v):
    return v / (np.float32(1.0) + np.exp(-v))


def gelu_table() -> np.ndarray:
    """(65536,) float32: GELU (tanh form, float32 arithmetic as ggml writes it) of every half
    bit pattern, rounded to half. llama.cpp's CPU GELU looks its input up here."""
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        u = (_SQRT_2_OVER_PI * h) * (np.float32(1.0) + (np.float32(0.044715) * h) * h)
        g = (np.float32(0.5) * h) * (np.float32(1.0) + np.tanh(u))
        return g.astype(np.float16).astype(np.float32)


GELU_TABLE = gelu_table()


@njit(inline="always")
def _gelu(v):
    """llama.cpp's GELU: 0 below -10, identity above 10, else the table at v rounded to half."""
    if v <= np.float32(-10.0):
        return np.float32(0.0)
    if v >= np.float32(10.0):
        return v
    return GELU_TABLE[half_bits(v)]


def _elementwise(x, out):
    n, d = checks.array("x", x, (None, None)).shape
    checks.array("out", out, (n, d))
    checks.writable("out", out, x, same_ok=True)


def silu(x, out):
    """out = x * sigmoid(x), x and out (n, d) float32 (out may be x)."""
    _elementwise(x, out)
    silu_kernel(x, out)


def gelu(x, out):
    """out = GELU(x) as llama.cpp computes it (tanh form through a half-precision table),
    x and out (n, d) float32 (out may be x)."""
    _elementwise(x, out)
    gelu_kernel(x, out)


def gated(gate_up, out, use_gelu):
    """out = act(gate) * up for gate_up (n, 2d) = [gate | up] and out (n, d) float32: SwiGLU
    (SiLU) or GeGLU (`gelu`)."""
    n, d = checks.array("out", out, (None, None)).shape
    checks.array("gate_up", gate_up, (n, 2 * d))
    checks.writable("out", out, gate_up)
    gated_kernel(gate_up, out, bool(use_gelu))


def softmax(x, out):
    """out = softmax(x) of a 1-D x, normalised in float64; out float32 or float64."""
    n = checks.array("x", x, (None,), (np.float32, np.float64)).shape[0]
    checks.array("out", out, (n,), (np.float32, np.float64))
    checks.writable("out", out, x, same_ok=True)
    softmax_kernel(x, out)


@njit(parallel=True, cache=True)
def silu_kernel(x, out):
    """`silu` without the checks."""
    for t in prange(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = _silu(x[t, i])


@njit(parallel=True, cache=True)
def gelu_kernel(x, out):
    """`gelu` without the checks."""
    for t in prange(x.shape[0]):
        for i in range(x.shape[1]):
            out[t, i] = _gelu(x[t, i])


@njit(inline="always")
def _gated_row(gate_up, out, use_gelu, t):
    d = out.shape[1]
    i0 = 0
    if not use_gelu:
        # llama.cpp's ggml_vec_swiglu_f32: sixteen lanes at a time through ggml_v_silu,
        # x / (1 + e^-x) with ggml_v_expf (`vexp`), the rest through expf (`_silu`). With
        # libm's expf on every value, SiLU-gating took 2.1 ms of a 1B file's step of eight
        row, out_row = gate_up[t], out[t]
        for i in range(0, d - LANES + 1, LANES):
            x = vload_f32(row, i)
            silu = vdiv(x, vadd(vsplat(1.0), vexp(vsub(vzero(), x))))
            vstore_f32(out_row, i, vmul(silu, vload_f32(row, d + i)))
        i0 = d - d % LANES
    for i in range(i0, d):
        g = gate_up[t, i]
        a = _gelu(g) if use_gelu else _silu(g)
        out[t, i] = a * gate_up[t, d + i]


@njit(parallel=True, cache=True)
def gated_kernel(gate_up, out, use_gelu):
    """`gated` without the checks. One contiguous array in, so the compiled loop knows its
    strides (two column slices of it ran 3x slower)."""
    for t in prange(out.shape[0]):
        _gated_row(gate_up, out, use_gelu, t)


@njit(cache=True)
def gated_serial(gate_up, out, use_gelu):
    """`gated_kernel` on the calling thread, for a decode step's one row (`backend_cpu`)."""
    for t in range(out.shape[0]):
        _gated_row(gate_up, out, use_gelu, t)


@njit(cache=True)
def softmax_kernel(x, out):
    """`softmax` without the checks."""
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
