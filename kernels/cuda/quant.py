"""GPU kernels for weights in GGML blocks, for every type the CPU supports. They call each
type's own `dequant_block` (kernels/cpu/ggml_types): the same scalar Python, compiled by
numba.cuda as a device function, so a block layout is written once for both targets."""

from __future__ import annotations

import math
from types import FunctionType

from numba import cuda, float32
from numba.core.registry import CPUDispatcher

from ..registry import kernels_for
from .launch import MAX_BLOCKS, THREADS, TILE, block_reduce, grid2

_DEVICE: dict = {}  # CPU function -> its device version


def device_function(fn):
    """The CUDA device version of a CPU @njit function: its Python source compiled by
    numba.cuda, with the @njit functions it calls made device functions the same way."""
    py = getattr(fn, "py_func", fn)
    if py not in _DEVICE:
        env = dict(py.__globals__)
        for name in py.__code__.co_names:
            if isinstance(env.get(name), CPUDispatcher):
                env[name] = device_function(env[name])
        retargeted = FunctionType(py.__code__, env, py.__name__, py.__defaults__,
                                  py.__closure__)
        _DEVICE[py] = cuda.jit(device=True, inline=True)(retargeted)
    return _DEVICE[py]


def _build(dequant_block, block: int):
    @cuda.jit
    def matvec(w, x, out):
        """out[r] = sum_j W[r, j] x[j]: a thread block per row (rows beyond the grid loop
        back), each thread dequantizing whole GGML blocks into its local array."""
        tid = cuda.threadIdx.x
        sh = cuda.shared.array(THREADS, float32)
        tmp = cuda.local.array(block, float32)
        n_blocks = x.shape[0] // block
        for r in range(cuda.blockIdx.x, out.shape[0], cuda.gridDim.x):
            s = float32(0.0)
            for b in range(tid, n_blocks, THREADS):
                dequant_block(w[r], b, tmp, 0)
                for e in range(block):
                    s += tmp[e] * x[b * block + e]
            s = block_reduce(sh, tid, s, False)
            if tid == 0:
                out[r] = s

    @cuda.jit
    def dequantize(w, out):
        """out (rows, cols) float32: a thread per GGML block."""
        r, b = cuda.grid(2)
        if r < out.shape[0] and b < out.shape[1] // block:
            dequant_block(w[r], b, out[r], b * block)

    @cuda.jit
    def embed(w, ids, out):
        """out[i] = row ids[i] of W, dequantized: a thread per GGML block."""
        i, b = cuda.grid(2)
        if i < ids.shape[0] and b < out.shape[1] // block:
            dequant_block(w[ids[i]], b, out[i], b * block)

    return matvec, dequantize, embed


_KERNELS: dict = {}


def _kernels(ggml_type):
    tk = kernels_for(ggml_type)  # unsupported types raise here, naming the type
    if tk.ggml_type not in _KERNELS:
        _KERNELS[tk.ggml_type] = (tk.block, *_build(device_function(tk.dequant_block),
                                                    tk.block))
    return _KERNELS[tk.ggml_type]


@cuda.jit
def gemm(X, W, out):
    """out[t, r] = sum_j X[t, j] W[r, j] for float32 X (n, cols), W (rows, cols), in
    TILE x TILE tiles through shared memory."""
    xs = cuda.shared.array((TILE, TILE), float32)
    ws = cuda.shared.array((TILE, TILE), float32)
    ty, tx = cuda.threadIdx.y, cuda.threadIdx.x
    t = cuda.blockIdx.y * TILE + ty  # token of this thread's output
    r = cuda.blockIdx.x * TILE + tx  # row of this thread's output
    n, cols = X.shape
    rows = W.shape[0]
    acc = float32(0.0)
    for j0 in range(0, cols, TILE):
        xs[ty, tx] = X[t, j0 + tx] if t < n and j0 + tx < cols else float32(0.0)
        wr = cuda.blockIdx.x * TILE + ty  # the tile of W is loaded transposed
        ws[ty, tx] = W[wr, j0 + tx] if wr < rows and j0 + tx < cols else float32(0.0)
        cuda.syncthreads()
        for k in range(TILE):
            acc += xs[ty, k] * ws[tx, k]
        cuda.syncthreads()
    if t < n and r < rows:
        out[t, r] = acc


def launch_matvec(ggml_type, w, x, out):
    _, matvec, _, _ = _kernels(ggml_type)
    matvec[min(out.shape[0], MAX_BLOCKS), THREADS](w, x, out)


def launch_dequantize(ggml_type, w, out):
    block, _, dequantize, _ = _kernels(ggml_type)
    g, b = grid2(out.shape[0], out.shape[1] // block)
    dequantize[g, b](w, out)


def launch_embed(ggml_type, w, ids, out):
    block, _, _, embed = _kernels(ggml_type)
    g, b = grid2(ids.shape[0], out.shape[1] // block)
    embed[g, b](w, ids, out)


def launch_matmul(ggml_type, w, X, out, tile):
    """X (n, cols) -> out (n, rows): one matvec for one token; for more, each tile of rows is
    dequantized once into `tile` (device float32, >= cols values) and multiplied with every
    token (as the CPU's prefill does)."""
    n, cols = X.shape
    rows = out.shape[1]
    if n == 1:
        launch_matvec(ggml_type, w, X[0], out[0])
        return
    step = max(1, min(rows, tile.shape[0] // cols))
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        t = tile[: (r1 - r0) * cols].reshape(r1 - r0, cols)
        launch_dequantize(ggml_type, w[r0:r1], t)
        gemm[(math.ceil((r1 - r0) / TILE), math.ceil(n / TILE)), (TILE, TILE)](
            X, t, out[:, r0:r1])

