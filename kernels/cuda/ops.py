"""The GPU kernels of the transformer besides the weight ones (kernels/cuda/quant.py). Launch
helpers at the bottom take device arrays and pick the grid."""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from .launch import THREADS, grid2
from .launch import block_reduce as _block_reduce


@cuda.jit
def rmsnorm(x, weight, eps, out):
    """One block per row of x (n, d)."""
    t = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sh = cuda.shared.array(THREADS, float32)
    d = x.shape[1]
    s = float32(0.0)
    for i in range(tid, d, THREADS):
        s += x[t, i] * x[t, i]
    s = _block_reduce(sh, tid, s, False)
    scale = float32(1.0) / math.sqrt(s / d + eps)
    for i in range(tid, d, THREADS):
        out[t, i] = x[t, i] * scale * weight[i]


@cuda.jit
def rope(x, positions, inv_freq, neox):
    """x (n_tokens, n_heads, head_dim) in place; one thread per (token, head, pair)."""
    idx = cuda.grid(1)
    n_tokens, n_heads, _ = x.shape
    half = inv_freq.shape[0]
    if idx >= n_tokens * n_heads * half:
        return
    i = idx % half
    h = (idx // half) % n_heads
    t = idx // (half * n_heads)
    ang = positions[t] * inv_freq[i]
    c = math.cos(ang)
    s = math.sin(ang)
    if neox:
        i0, i1 = i, i + half
    else:
        i0, i1 = 2 * i, 2 * i + 1
    a = x[t, h, i0]
    b = x[t, h, i1]
    x[t, h, i0] = a * c - b * s
    x[t, h, i1] = a * s + b * c


@cuda.jit
def attention(q, k_cache, v_cache, seqs, positions, window, scale, softcap, scores, out):
    """One block per (row, head): row t's query at positions[t] over slot seqs[t] of the caches
    (n_seq, KVH, n_ctx, D); scores (n_tokens * n_heads, n_ctx) is scratch; softcap > 0 caps
    each scaled score at softcap * tanh(s / softcap)."""
    th = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sh = cuda.shared.array(THREADS, float32)
    n_heads, head_dim = q.shape[1], q.shape[2]
    t, h = th // n_heads, th % n_heads
    kv = h // (n_heads // k_cache.shape[1])
    sq = seqs[t]
    p = positions[t]
    lo = 0
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    m = float32(-np.inf)
    for j in range(lo + tid, p + 1, THREADS):
        s = float32(0.0)
        for d in range(head_dim):
            s += q[t, h, d] * k_cache[sq, kv, j, d]
        s *= scale
        if softcap > 0:
            s = softcap * math.tanh(s / softcap)
        scores[th, j] = s
        m = max(m, s)
    m = _block_reduce(sh, tid, m, True)
    z = float32(0.0)
    for j in range(lo + tid, p + 1, THREADS):
        e = math.exp(scores[th, j] - m)
        scores[th, j] = e
        z += e
    z = _block_reduce(sh, tid, z, False)
    for d in range(tid, head_dim, THREADS):
        acc = float32(0.0)
        for j in range(lo, p + 1):
            acc += scores[th, j] * v_cache[sq, kv, j, d]
        out[t, h, d] = acc / z


@cuda.jit(device=True, inline=True)
def _half_bits(x):
    """The bit pattern of the half nearest to float32 x (finite, |x| < 65504), ties to even.
    Arithmetic rather than a bit cast, so the simulator runs it too."""
    a = abs(x)
    if a < float32(6.103515625e-05):  # below the smallest normal half: steps of 2^-24
        s = a * float32(16777216.0)
        base = 0
    else:
        m, e = math.frexp(a)  # a = m 2^e, 0.5 <= m < 1: half exponent field e + 14
        s = (m * float32(2.0) - float32(1.0)) * float32(1024.0)  # exact
        base = (e + 14) << 10
    f = math.floor(s)
    q = int(f)
    if s - f > 0.5 or (s - f == 0.5 and q % 2 == 1):
        q += 1  # a carry to 1024 moves into the exponent, as it should
    bits = base + q
    if x < 0:
        bits |= 0x8000
    return bits


@cuda.jit
def gated(gate_up, n_ff, out, use_gelu, gelu_table):
    """out = act(gate) * up for gate_up (n, 2 n_ff) = [gate | up]; GELU as the CPU's `gelu`
    (llama.cpp's half-precision table, gelu_table (65536,))."""
    t, i = cuda.grid(2)
    if t < out.shape[0] and i < n_ff:
        g = gate_up[t, i]
        if use_gelu:
            if g <= float32(-10.0):
                a = float32(0.0)
            elif g >= float32(10.0) or g != g:
                a = g
            else:
                a = gelu_table[_half_bits(g)]
        else:
            a = g / (float32(1.0) + math.exp(-g))
        out[t, i] = a * gate_up[t, n_ff + i]


@cuda.jit
def add_into(x, y):
    """x += y, both (n, d)."""
    t, i = cuda.grid(2)
    if t < x.shape[0] and i < x.shape[1]:
        x[t, i] += y[t, i]


@cuda.jit
def scale_into(x, s):
    t, i = cuda.grid(2)
    if t < x.shape[0] and i < x.shape[1]:
        x[t, i] *= s


@cuda.jit
def softcap_into(x, cap):
    """x = cap * tanh(x / cap), as llama.cpp's final-logit soft-capping."""
    t, i = cuda.grid(2)
    if t < x.shape[0] and i < x.shape[1]:
        x[t, i] = cap * math.tanh(x[t, i] / cap)


@cuda.jit
def add_bias(x, b):
    t, i = cuda.grid(2)
    if t < x.shape[0] and i < x.shape[1]:
        x[t, i] += b[i]


@cuda.jit
def store_kv(k, v, k_cache, v_cache, seqs, positions):
    """k, v (n, KVH, D) -> row t into slot seqs[t] of the caches (n_seq, KVH, n_ctx, D) at
    positions[t]."""
    idx = cuda.grid(1)
    n, kvh, d = k.shape
    if idx < n * kvh * d:
        i = idx % d
        h = (idx // d) % kvh
        t = idx // (d * kvh)
        k_cache[seqs[t], h, positions[t], i] = k[t, h, i]
        v_cache[seqs[t], h, positions[t], i] = v[t, h, i]


# -- launch helpers ------------------------------------------------------------------------
def launch_rmsnorm(x, weight, eps, out):
    rmsnorm[x.shape[0], THREADS](x, weight, np.float32(eps), out)


def launch_rope(x, positions, inv_freq, neox):
    n = x.shape[0] * x.shape[1] * inv_freq.shape[0]
    rope[math.ceil(n / THREADS), THREADS](x, positions, inv_freq, neox)


def launch_attention(q, k_cache, v_cache, seqs, positions, window, scale, scores, out,
                     softcap=0.0):
    attention[q.shape[0] * q.shape[1], THREADS](q, k_cache, v_cache, seqs, positions, window,
                                                np.float32(scale), np.float32(softcap), scores,
                                                out)


def launch_elementwise(kernel, x, *args):
    g, b = grid2(*x.shape)
    kernel[g, b](x, *args)
