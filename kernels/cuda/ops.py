"""The GPU kernels. Launch helpers at the bottom take device arrays and pick the grid."""

from __future__ import annotations

import math

import numpy as np
from numba import config, cuda, float32

from ..registry import UnsupportedTypeError, as_ggml_type
from .decode import VALUE

# Threads per block for row reductions (a power of two). The simulator runs every thread as a
# Python thread, so it gets few.
THREADS = 2 if config.ENABLE_CUDASIM else 128
TILE = 2 if config.ENABLE_CUDASIM else 16  # GEMM tile edge
# Matvec blocks loop over rows beyond the grid. The simulator spends ~20 ms per block on
# bookkeeping whatever the block does, so there the grid stays small (a shared fixture's decode
# step: 163 s with a block per row, 100 s with 4 blocks).
MAX_BLOCKS = 4 if config.ENABLE_CUDASIM else 1 << 30


@cuda.jit(device=True, inline=True)
def _block_reduce(sh, tid, v, take_max):
    """The sum (or the max) of v over the block's THREADS threads, through shared memory;
    every thread gets it."""
    sh[tid] = v
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            if take_max:
                sh[tid] = max(sh[tid], sh[tid + step])
            else:
                sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


def _make_quant_kernels(value):
    @cuda.jit
    def matvec(w, x, out, cols):
        """out[r] = sum_j W[r, j] x[j], a block per row (rows beyond the grid loop back)."""
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(THREADS, float32)
        for r in range(cuda.blockIdx.x, out.shape[0], cuda.gridDim.x):
            s = float32(0.0)
            for j in range(tid, cols, THREADS):
                s += value(w, r, j) * x[j]
            s = _block_reduce(sh, tid, s, False)
            if tid == 0:
                out[r] = s

    @cuda.jit
    def matmul(w, X, out, rows, cols):
        """out[t, r] = sum_j X[t, j] W[r, j], in TILE x TILE tiles through shared memory."""
        xs = cuda.shared.array((TILE, TILE), float32)
        ws = cuda.shared.array((TILE, TILE), float32)
        ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
        t = cuda.blockIdx.y * TILE + ty  # token of this thread's output
        r = cuda.blockIdx.x * TILE + tx  # row of this thread's output
        n = X.shape[0]
        acc = float32(0.0)
        for j0 in range(0, cols, TILE):
            xs[ty, tx] = X[t, j0 + tx] if t < n and j0 + tx < cols else float32(0.0)
            wr = cuda.blockIdx.x * TILE + ty  # the tile of W is loaded transposed
            ws[ty, tx] = value(w, wr, j0 + tx) if wr < rows and j0 + tx < cols else float32(0.0)
            cuda.syncthreads()
            for k in range(TILE):
                acc += xs[ty, k] * ws[tx, k]
            cuda.syncthreads()
        if t < n and r < rows:
            out[t, r] = acc

    @cuda.jit
    def dequantize(w, out):
        r, j = cuda.grid(2)
        if r < out.shape[0] and j < out.shape[1]:
            out[r, j] = value(w, r, j)

    @cuda.jit
    def embed(w, ids, out):
        """out[i] = row ids[i] of W, dequantized."""
        i, j = cuda.grid(2)
        if i < ids.shape[0] and j < out.shape[1]:
            out[i, j] = value(w, ids[i], j)

    return matvec, matmul, dequantize, embed


_QUANT = {t: _make_quant_kernels(v) for t, v in VALUE.items()}


def quant_kernels(ggml_type):
    t = as_ggml_type(ggml_type)
    if t not in _QUANT:
        supported = ", ".join(sorted(x.name for x in _QUANT))
        raise UnsupportedTypeError(f"GGML type {t.name} has no CUDA kernels (CUDA supports: "
                                   f"{supported})")
    return _QUANT[t]


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
def attention(q, k_cache, v_cache, pos0, window, scale, scores, out):
    """One block per (token, head); scores (n_tokens * n_heads, n_ctx) is scratch."""
    th = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    sh = cuda.shared.array(THREADS, float32)
    n_heads, head_dim = q.shape[1], q.shape[2]
    t, h = th // n_heads, th % n_heads
    kv = h // (n_heads // k_cache.shape[0])
    p = pos0 + t
    lo = 0
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    m = float32(-np.inf)
    for j in range(lo + tid, p + 1, THREADS):
        s = float32(0.0)
        for d in range(head_dim):
            s += q[t, h, d] * k_cache[kv, j, d]
        s *= scale
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
            acc += scores[th, j] * v_cache[kv, j, d]
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
def add_bias(x, b):
    t, i = cuda.grid(2)
    if t < x.shape[0] and i < x.shape[1]:
        x[t, i] += b[i]


@cuda.jit
def store_kv(k, v, k_cache, v_cache, pos0):
    """k, v (n, KVH, D) -> caches (KVH, n_ctx, D) at positions pos0.."""
    idx = cuda.grid(1)
    n, kvh, d = k.shape
    if idx < n * kvh * d:
        i = idx % d
        h = (idx // d) % kvh
        t = idx // (d * kvh)
        k_cache[h, pos0 + t, i] = k[t, h, i]
        v_cache[h, pos0 + t, i] = v[t, h, i]


# -- launch helpers ------------------------------------------------------------------------
def grid2(n, m, block=(8, 32)):
    return (math.ceil(n / block[0]), math.ceil(m / block[1])), block


def launch_matvec(ggml_type, w, x, out):
    matvec = quant_kernels(ggml_type)[0]
    matvec[min(w.shape[0], MAX_BLOCKS), THREADS](w, x, out, x.shape[0])


def launch_matmul(ggml_type, w, X, out):
    """X (n, cols) -> out (n, rows); one matvec per token when n is 1."""
    rows, cols = out.shape[1], X.shape[1]
    if X.shape[0] == 1:
        launch_matvec(ggml_type, w, X[0], out[0])
        return
    matmul = quant_kernels(ggml_type)[1]
    matmul[(math.ceil(rows / TILE), math.ceil(X.shape[0] / TILE)), (TILE, TILE)](
        w, X, out, rows, cols)


def launch_dequantize(ggml_type, w, out):
    g, b = grid2(*out.shape)
    quant_kernels(ggml_type)[2][g, b](w, out)


def launch_embed(ggml_type, w, ids, out):
    g, b = grid2(ids.shape[0], out.shape[1])
    quant_kernels(ggml_type)[3][g, b](w, ids, out)


def launch_rmsnorm(x, weight, eps, out):
    rmsnorm[x.shape[0], THREADS](x, weight, np.float32(eps), out)


def launch_rope(x, positions, inv_freq, neox):
    n = x.shape[0] * x.shape[1] * inv_freq.shape[0]
    rope[math.ceil(n / THREADS), THREADS](x, positions, inv_freq, neox)


def launch_attention(q, k_cache, v_cache, pos0, window, scale, scores, out):
    attention[q.shape[0] * q.shape[1], THREADS](q, k_cache, v_cache, pos0, window,
                                                np.float32(scale), scores, out)


def launch_elementwise(kernel, x, *args):
    g, b = grid2(*x.shape)
    kernel[g, b](x, *args)
