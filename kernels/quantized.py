"""The public quantized-kernel API: dequantize, matvec and matmul on raw GGML block bytes."""

from __future__ import annotations

import numba
import numpy as np

from . import checks
from .registry import TypeKernels, kernels_for

# Prefill dequantizes this many weight values at a time (2 MB of float32, about an L2) and hands
# each tile to BLAS for all prompt tokens, so no weight is ever dequantized whole.
TILE_VALUES = 1 << 19


def _rows_cols(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) == 1:
        return 1, shape[0]
    if len(shape) != 2:
        raise ValueError(f"shape must be (cols,) or (rows, cols), got {shape}")
    return shape


def block_rows(data: np.ndarray, ggml_type, shape) -> tuple[TypeKernels, np.ndarray]:
    """Check `data` against type and shape; return the type's kernels and the (rows, units) view
    they read (uint8 for quantized blocks, float32 / uint16 for float types). Zero-copy."""
    tk = kernels_for(ggml_type)
    rows, cols = _rows_cols(shape)
    if cols % tk.block:
        raise ValueError(
            f"{tk.ggml_type.name}: row length {cols} is not a multiple of the block size {tk.block}"
        )
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise TypeError(f"data must be uint8 block bytes, got {data.dtype}")
    row_bytes = tk.row_bytes(cols)
    if data.size != rows * row_bytes:
        raise ValueError(
            f"{tk.ggml_type.name} {(rows, cols)} needs {rows * row_bytes} bytes, "
            f"data has {data.size}"
        )
    w = np.ascontiguousarray(data).reshape(rows, row_bytes).view(tk.view)
    # read-only, as a model's memory-mapped weights are: one compiled signature serves both
    w.flags.writeable = False
    return tk, w


def matvec_scratch(tk: TypeKernels, rows: int) -> np.ndarray:
    """(n_parts, 4 * block) float32 scratch for `matvec_rows`: several row chunks per thread so
    an uneven split costs little. Allocate once and reuse it for every call."""
    parts = max(1, min((rows + 3) // 4, 8 * numba.get_num_threads()))
    return np.empty((parts, 4 * tk.block), dtype=np.float32)


def _out(out, shape, *inputs) -> np.ndarray:
    """`out` checked (a writable C-contiguous float32 array of `shape`, apart from the
    inputs), or a new one when None."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    checks.array("out", out, shape, contiguous=True)
    checks.writable("out", out, *inputs)
    return out


def dequantize(data, ggml_type, shape) -> np.ndarray:
    """Block bytes -> float32 array of `shape` (NumPy order), bit-exact with gguf.dequantize."""
    tk, w = block_rows(data, ggml_type, shape)
    out = np.empty(w.shape[0:1] + (_rows_cols(shape)[1],), dtype=np.float32)
    tk.kernels.dequantize_rows(w, out)
    return out.reshape(tuple(shape))


def integer_kernels(tk: TypeKernels):
    """The integer route's kernels of a type (activations quantized to int8 blocks, llama.cpp's
    math), or an error naming why there are none."""
    if tk.kernels.integer is None:
        from .cpu.simd_int import ISA

        why = ("this CPU has neither AVX-512 VNNI nor AVX2 (or GGUF_ENGINE_SIMD=none)"
               if ISA == "none" else "float types stay on float math")
        raise ValueError(f"{tk.ggml_type.name}: no integer route: {why}")
    return tk.kernels.integer


def matvec(data, ggml_type, shape, x, out=None, integer: bool = False) -> np.ndarray:
    """W @ x for W (rows, cols) in GGML blocks and x (cols,) float32; returns out (rows,).
    integer: on the integer route (x quantized to int8 blocks first), else exact."""
    tk, w = block_rows(data, ggml_type, shape)
    rows, cols = w.shape[0], _rows_cols(shape)[1]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape != (cols,):
        raise ValueError(f"x must have shape ({cols},), got {x.shape}")
    out = _out(out, (rows,), x, w)
    if integer:
        ik = integer_kernels(tk)
        ik.matvec_one(ik.prepare(w), x.reshape(1, -1), out.reshape(1, -1),
                      matvec_scratch(tk, rows))
    else:
        tk.kernels.matvec_rows(w, x, out, matvec_scratch(tk, rows))
    return out


def matmul_view(tk: TypeKernels, w: np.ndarray, X: np.ndarray, out: np.ndarray,
                scratch: np.ndarray | None = None) -> np.ndarray:
    """`matmul` on an already checked (rows, units) view `w`, e.g. one made by `block_rows`."""
    rows, cols = w.shape[0], X.shape[1]
    if tk.view == np.float32:
        np.matmul(X, w.T, out=out)
        return out
    tile = max(1, min(rows, TILE_VALUES // cols))
    if scratch is None or scratch.size < tile * cols:
        scratch = np.empty(tile * cols, dtype=np.float32)
    for r0 in range(0, rows, tile):
        r1 = min(rows, r0 + tile)
        t = scratch[: (r1 - r0) * cols].reshape(r1 - r0, cols)
        tk.kernels.dequantize_rows(w[r0:r1], t)
        np.matmul(X, t.T, out=out[:, r0:r1])
    return out


def matmul(data, ggml_type, shape, X, out=None, scratch=None) -> np.ndarray:
    """X @ W.T for W (rows, cols) in GGML blocks and X (n_tokens, cols) float32; returns out
    (n_tokens, rows). Dequantizes one tile of rows at a time into `scratch` and multiplies it
    with every token through BLAS."""
    tk, w = block_rows(data, ggml_type, shape)
    rows, cols = w.shape[0], _rows_cols(shape)[1]
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != cols:
        raise ValueError(f"X must have shape (n_tokens, {cols}), got {X.shape}")
    out = _out(out, (X.shape[0], rows), X, w)
    if scratch is not None:
        checks.array("scratch", scratch, (None,), contiguous=True)
        checks.writable("scratch", scratch, X, w, out)
    return matmul_view(tk, w, X, out, scratch)
