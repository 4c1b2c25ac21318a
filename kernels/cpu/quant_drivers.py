"""Row-parallel drivers shared by every GGML type: a type module supplies the per-block code,
these supply the loops, bound per type by `build(module)` and cached on disk by Numba."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import FunctionType, SimpleNamespace

import numpy as np
from numba import njit, prange

from .flags import FASTMATH


def _dot4_from_dequant(dequant_block, block):
    """A 4-row block dot product for types without a hand-written one: dequantize, then FMA."""

    @njit(inline="always", fastmath=FASTMATH)
    def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
        dequant_block(w0, b, tmp[0], 0)
        dequant_block(w1, b, tmp[1], 0)
        dequant_block(w2, b, tmp[2], 0)
        dequant_block(w3, b, tmp[3], 0)
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for j in range(block):
            xv = x[o + j]
            s0 += tmp[0, j] * xv
            s1 += tmp[1, j] * xv
            s2 += tmp[2, j] * xv
            s3 += tmp[3, j] * xv
        return s0, s1, s2, s3

    return dot4_block


# The per-type names the loop templates below read; `build` binds them for each type.
BLOCK = 1
dequant_block = dot4_block = None


def dequantize_rows(w, out):
    """w (rows, row_units) -> out (rows, cols) float32; bit-exact (no fast-math)."""
    nb = out.shape[1] // BLOCK
    for r in prange(w.shape[0]):
        wr = w[r]
        outr = out[r]
        for b in range(nb):
            dequant_block(wr, b, outr, b * BLOCK)


def gather_rows(w, ids, out):
    """out[i] = row ids[i] of w, dequantized (an embedding lookup); bit-exact."""
    nb = out.shape[1] // BLOCK
    for i in prange(ids.shape[0]):
        wr = w[ids[i]]
        outr = out[i]
        for b in range(nb):
            dequant_block(wr, b, outr, b * BLOCK)


def matvec_rows(w, x, out, scratch):
    """out[r] = dot(row r of w, x) for w (rows, row_units), x (cols,), out (rows,).
    Four rows at a time share every loaded x value. scratch (n_parts, 4, BLOCK) float32: one
    slice per parallel part (generic types dequantize into it); n_parts chunks go to threads."""
    rows = w.shape[0]
    nb = x.shape[0] // BLOCK
    n_groups = (rows + 3) // 4
    n_parts = scratch.shape[0]
    for part in prange(n_parts):
        tmp = scratch[part]
        for g in range(part * n_groups // n_parts, (part + 1) * n_groups // n_parts):
            r = 4 * g
            # a short last group repeats its last row; only real rows are stored
            w0 = w[r]
            w1 = w[min(r + 1, rows - 1)]
            w2 = w[min(r + 2, rows - 1)]
            w3 = w[min(r + 3, rows - 1)]
            a0 = a1 = a2 = a3 = np.float32(0.0)
            for b in range(nb):
                s0, s1, s2, s3 = dot4_block(w0, w1, w2, w3, b, x, b * BLOCK, tmp)
                a0 += s0
                a1 += s1
                a2 += s2
                a3 += s3
            out[r] = a0
            if r + 1 < rows:
                out[r + 1] = a1
            if r + 2 < rows:
                out[r + 2] = a2
            if r + 3 < rows:
                out[r + 3] = a3


def _sources_digest() -> str:
    """A digest of this folder's sources. Numba's disk cache only watches the file that holds a
    function, not the type modules it inlines, so the digest goes into each cached name."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


_DIGEST = _sources_digest()


def _bind(template, suffix: str, **names):
    """A copy of `template` whose globals carry `names`, under a name of its own. Closures would
    do, but Numba cannot cache a closure over dispatchers from one process to the next."""
    env = dict(template.__globals__, **names)
    fn = FunctionType(template.__code__, env, f"{template.__name__}_{suffix}")
    fn.__qualname__ = fn.__name__
    fn.__doc__ = template.__doc__
    return fn


def build(mod) -> SimpleNamespace:
    dot4 = getattr(mod, "dot4_block", None) or _dot4_from_dequant(mod.dequant_block, mod.BLOCK)
    suffix = f"{mod.GGML_TYPE.name}_{_DIGEST}"
    names = dict(BLOCK=mod.BLOCK, dequant_block=mod.dequant_block, dot4_block=dot4)
    return SimpleNamespace(
        dequantize_rows=njit(parallel=True, cache=True)(_bind(dequantize_rows, suffix, **names)),
        gather_rows=njit(parallel=True, cache=True)(_bind(gather_rows, suffix, **names)),
        matvec_rows=njit(parallel=True, cache=True, fastmath=FASTMATH)(
            _bind(matvec_rows, suffix, **names)
        ),
    )
