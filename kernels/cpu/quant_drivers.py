"""Row-parallel drivers shared by every GGML type: a type module supplies the per-block code,
these supply the loops, bound per type by `build(module)` and cached on disk by Numba."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import FunctionType, SimpleNamespace

import numpy as np
from numba import njit, prange

from .simd import LANES, prefetch, vfma, vload_f32, vstore_f32, vsum, vzero

# The rows of the group this many groups ahead are prefetched while a group is computed, every
# cache line of each step's bytes (a K-quant block spans two to four lines).
PREFETCH_GROUPS = 2
CACHE_LINE = 64


def _dot4_from_dequant(dequant_block, block):
    """A 4-row block dot product for types without a hand-written one: dequantize the four
    blocks into scratch, then FMA them against x a vector at a time."""

    @njit(inline="always")
    def dot4_block(w0, w1, w2, w3, b, x, xd, a0, a1, a2, a3, tmp):
        # tmp (4 * block,): this part's scratch, one block per row at offsets 0, block, ...
        dequant_block(w0, b, tmp, 0)
        dequant_block(w1, b, tmp, block)
        dequant_block(w2, b, tmp, 2 * block)
        dequant_block(w3, b, tmp, 3 * block)
        o = b * block
        for j in range(0, block, LANES):
            xv = vload_f32(x, o + j)
            a0 = vfma(vload_f32(tmp, j), xv, a0)
            a1 = vfma(vload_f32(tmp, block + j), xv, a1)
            a2 = vfma(vload_f32(tmp, 2 * block + j), xv, a2)
            a3 = vfma(vload_f32(tmp, 3 * block + j), xv, a3)
        return a0, a1, a2, a3

    return dot4_block


def dot4_from_row32(row, type_size):
    """A 4-row block dot product for types with 32-value blocks of type_size bytes, from
    row(w, p, xa, xb, a): a + one row's block at byte p against its x values, xa (values 0-15)
    and xb (16-31). What row derives from xa, xb alone, LLVM computes once for the four rows."""

    @njit(inline="always")
    def dot4_block(w0, w1, w2, w3, b, x, xd, a0, a1, a2, a3, tmp):
        p = b * type_size
        xa = vload_f32(x, b * 32)
        xb = vload_f32(x, b * 32 + 16)
        return (
            row(w0, p, xa, xb, a0),
            row(w1, p, xa, xb, a1),
            row(w2, p, xa, xb, a2),
            row(w3, p, xa, xb, a3),
        )

    return dot4_block


def dot4_from_lanes(load):
    """A 4-row dot product over LANES values for the float types, from load(w, i): LANES
    weights of row w from element i, as float32."""

    @njit(inline="always")
    def dot4_block(w0, w1, w2, w3, b, x, xd, a0, a1, a2, a3, tmp):
        o = b * LANES
        xv = vload_f32(x, o)
        return (
            vfma(load(w0, o), xv, a0),
            vfma(load(w1, o), xv, a1),
            vfma(load(w2, o), xv, a2),
            vfma(load(w3, o), xv, a3),
        )

    return dot4_block


@njit(inline="always")
def x_itself(x):
    """The default `derive_x`: dot products that need nothing derived from x get x."""
    return x


# The per-type names the loop templates below read; `build` binds them for each type.
BLOCK = STEP = STEP_UNITS = LINE_UNITS = 1
PAIRS = True
dequant_block = dot4_block = derive_x = None


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


@njit(inline="always")
def _prefetch_step(w, pr, s, step_units, line_units):
    """Every cache line of step s (step_units row elements) of rows pr .. pr + 3."""
    for u in range(s * step_units, (s + 1) * step_units, line_units):
        prefetch(w, pr, u)
        prefetch(w, pr + 1, u)
        prefetch(w, pr + 2, u)
        prefetch(w, pr + 3, u)


@njit(inline="always")
def _store4(acc, t, a0, a1, a2, a3):
    """Token t's four row accumulators into acc (n * 4 * LANES,)."""
    o = t * 4 * LANES
    vstore_f32(acc, o, a0)
    vstore_f32(acc, o + LANES, a1)
    vstore_f32(acc, o + 2 * LANES, a2)
    vstore_f32(acc, o + 3 * LANES, a3)


def matvec_tokens(w, X, out, scratch):
    """out[t, r] = dot(row r of w, X[t]) for w (rows, row_units), X (n, cols), out (n, rows).
    Four rows at a time share every loaded x vector; each row keeps a vector accumulator across
    blocks and is summed once at its end. The tokens take turns on each group of four rows, so
    the group's weights come from memory once for all of them (from cache after the first),
    and every (row, token) is summed in the same order whatever n is: a token's result does not
    depend on the others. dot4_block covers STEP values (a block, or LANES values of a float
    type, whose last cols % LANES values are done a block at a time after); the type derives
    what it needs from each x once per call (derive_x; x itself by default).
    scratch (n_parts, 4 * BLOCK) float32: one slice per parallel part (chunks go to threads)."""
    rows = w.shape[0]
    n, cols = X.shape
    xd0 = derive_x(X[0])
    XD = np.empty((n, xd0.shape[0]), np.float32)  # (n, what derive_x gives per token)
    XD[0] = xd0
    for t in range(1, n):
        XD[t] = derive_x(X[t])
    n_steps = cols // STEP
    ahead = PREFETCH_GROUPS * 4
    n_groups = (rows + 3) // 4
    n_parts = scratch.shape[0]
    for part in prange(n_parts):
        tmp = scratch[part]
        acc = np.empty(n * 4 * LANES, np.float32)  # (n * 4 * LANES,) 4 accumulators a token
        for g in range(part * n_groups // n_parts, (part + 1) * n_groups // n_parts):
            r = 4 * g
            # a short last group repeats its last row; only real rows are stored
            w0 = w[r]
            w1 = w[min(r + 1, rows - 1)]
            w2 = w[min(r + 2, rows - 1)]
            w3 = w[min(r + 3, rows - 1)]
            pr = min(r + ahead, rows - 4)
            # two tokens at a time side by side, their 8 accumulators in registers: the two
            # inlined dot4_blocks read the same weights with no store between them, so the
            # compiler decodes each weight block once for both (four side by side would share
            # more, but take minutes to compile for the K-quants). An odd last token pairs
            # with itself. Without PAIRS (one token), the same loop for one.
            t = 0
            while t < n:
                x0, q0 = X[t], XD[t]
                a0 = a1 = a2 = a3 = vzero()
                if PAIRS:
                    u = min(t + 1, n - 1)
                    x1, q1 = X[u], XD[u]
                    b0 = b1 = b2 = b3 = vzero()
                    for s in range(n_steps):
                        if pr >= 0 and t == 0:
                            _prefetch_step(w, pr, s, STEP_UNITS, LINE_UNITS)
                        a0, a1, a2, a3 = dot4_block(w0, w1, w2, w3, s, x0, q0, a0, a1, a2, a3,
                                                    tmp)
                        b0, b1, b2, b3 = dot4_block(w0, w1, w2, w3, s, x1, q1, b0, b1, b2, b3,
                                                    tmp)
                    if t + 1 < n:
                        _store4(acc, t + 1, b0, b1, b2, b3)
                else:
                    for s in range(n_steps):
                        if pr >= 0 and t == 0:
                            _prefetch_step(w, pr, s, STEP_UNITS, LINE_UNITS)
                        a0, a1, a2, a3 = dot4_block(w0, w1, w2, w3, s, x0, q0, a0, a1, a2, a3,
                                                    tmp)
                _store4(acc, t, a0, a1, a2, a3)
                t += 2 if PAIRS else 1
            for t in range(n):
                x = X[t]
                o = t * 4 * LANES
                t0 = vsum(vload_f32(acc, o))
                t1 = vsum(vload_f32(acc, o + LANES))
                t2 = vsum(vload_f32(acc, o + 2 * LANES))
                t3 = vsum(vload_f32(acc, o + 3 * LANES))
                for b in range(n_steps * STEP // BLOCK, cols // BLOCK):
                    dequant_block(w0, b, tmp, 0)
                    dequant_block(w1, b, tmp, BLOCK)
                    dequant_block(w2, b, tmp, 2 * BLOCK)
                    dequant_block(w3, b, tmp, 3 * BLOCK)
                    for j in range(BLOCK):
                        xv = x[b * BLOCK + j]
                        t0 += tmp[j] * xv
                        t1 += tmp[BLOCK + j] * xv
                        t2 += tmp[2 * BLOCK + j] * xv
                        t3 += tmp[3 * BLOCK + j] * xv
                ot = out[t]
                ot[r] = t0
                if r + 1 < rows:
                    ot[r + 1] = t1
                if r + 2 < rows:
                    ot[r + 2] = t2
                if r + 3 < rows:
                    ot[r + 3] = t3


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
    step = getattr(mod, "STEP", mod.BLOCK)
    # row elements (of the VIEW dtype) one dot4_block step spans
    step_units = step // mod.BLOCK * (mod.TYPE_SIZE // np.dtype(mod.VIEW).itemsize)
    names = dict(
        LINE_UNITS=CACHE_LINE // np.dtype(mod.VIEW).itemsize,
        BLOCK=mod.BLOCK,
        STEP=step,
        STEP_UNITS=step_units,
        dequant_block=mod.dequant_block,
        dot4_block=dot4,
        derive_x=getattr(mod, "derive_x", x_itself),
    )
    tokens = njit(parallel=True, cache=True)(_bind(matvec_tokens, suffix, PAIRS=True, **names))
    # the same driver without the pairs: what one token needs, at a third of the compile time
    # (the pairs are compiled only where several tokens are decoded at once)
    one = njit(parallel=True, cache=True)(_bind(matvec_tokens, suffix + "_one", PAIRS=False,
                                                **names))

    def matvec_rows(w, x, out, scratch):
        """out (rows,) = w @ x (cols,): `matvec_tokens` for one token."""
        one(w, x.reshape(1, -1), out.reshape(1, -1), scratch)

    return SimpleNamespace(
        dequantize_rows=njit(parallel=True, cache=True)(_bind(dequantize_rows, suffix, **names)),
        gather_rows=njit(parallel=True, cache=True)(_bind(gather_rows, suffix, **names)),
        matvec_tokens=tokens,
        matvec_one=one,
        matvec_rows=matvec_rows,
    )
