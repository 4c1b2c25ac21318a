"""Row-parallel drivers shared by every GGML type: a type module supplies the per-block code,
these supply the loops, bound per type by `build(module)` and cached on disk by Numba."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import FunctionType, SimpleNamespace

import numpy as np
from numba import njit, prange

from . import simd_int
from .q8_activations import quantize_token
from .simd import (
    CACHE_LINE,
    LANES,
    load_half,
    prefetch,
    prefetch_span,
    vfma,
    vload_f16,
    vload_f32,
    vmul,
    vsplat,
    vsplat2,
    vstore_f32,
    vsub,
    vsum,
    vzero,
)
from .simd_int import (
    SIGN_BY_OFFSET,
    byte_program,
    ibcast4,
    ibit4,
    idot,
    idot2,
    idot_signed,
    iflip,
    ihigh4,
    iload16,
    iload64,
    ilow4,
    isplat,
    istore,
    itof,
    izero,
)

# The rows of the group this many groups ahead are prefetched while a group is computed, every
# cache line of each step's bytes (a K-quant block spans two to four lines).
PREFETCH_GROUPS = 2
# Tokens the integer route's tile serves before the next group of rows: their activations stay
# in L1/L2 while every group is read (each group's tile is unpacked again for the next chunk)
TOKEN_CHUNK = 32
# Steps (64 values) of a group's tile unpacked at a time: 4 rows x 32 steps x 192 bytes stay in L1
TILE_STEPS = 32


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


def nibble_pairs(qs, qh=None, table=None):
    """A `byte_program` (w, p0, p1) for two blocks at byte offsets p0 and p1 whose 16 bytes at
    qs hold value j in their low nibble and value j + 16 in their high one (Q4_0's layout).
    With qh, the 32-bit word there gives value j its fifth bit j (Q5_0); with table, the
    nibbles index its 16 values (IQ4_NL)."""

    def program(by, p0, p1):
        parts = []
        for p in (p0, p1):
            v = by.load(p, 16, qs)
            lo, hi = by.lo4(v), by.hi4(v)
            if qh is not None:
                h = by.load_u32(p, qh)
                lo = by.or_(lo, by.word_bits(h, 0, 16, 4))
                hi = by.or_(hi, by.word_bits(h, 16, 16, 4))
            parts += [lo, hi]
        v = by.cat(*parts)
        return v if table is None else by.table(v, table)

    return byte_program(program)


def int_parts_from_blocks(program, type_size, has_min):
    """The integer route's (int_block, int_part) for 32-value types: a part is two blocks,
    d (f16) at each block's start, program(w, p0, p1) their 64 byte lanes; with has_min B is
    each block's m (f16) after d. A row with an odd block count repeats its last block in the
    last part (`pack_rows` reads only the real ones)."""

    @njit(inline="always")
    def int_block(w, b, nb):
        return 0  # nothing shared: a part is its own block pair

    @njit(inline="always")
    def int_part(w, b, k, c, nb):
        p0 = 2 * b * type_size
        p1 = min(2 * b + 1, nb - 1) * type_size
        d0 = load_half(w, p0)
        d1 = load_half(w, p1)
        a = vsplat2(d0, d1)
        if has_min:
            return program(w, p0, p1), a, vsplat2(load_half(w, p0 + 2), load_half(w, p1 + 2))
        return program(w, p0, p1), a, a  # B unused

    return int_block, int_part


@njit(inline="always")
def x_itself(x):
    """The default `derive_x`: dot products that need nothing derived from x get x."""
    return x


# The per-type names the loop templates below read; `build` binds them for each type.
BLOCK = STEP = STEP_UNITS = LINE_UNITS = ACT_BLOCK = BLOCK_BYTES = SUB_QUADS = 1
PAIRS = True
SIGNED = HAS_MIN = TILE = False
BASE_K = 0
BITS = 8
dequant_block = dot4_block = derive_x = int_block = int_part = None
pack_block = packed_four = packed_one = packed_scales = order_quants = None


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
def _rows4(w, r, rows):
    """Rows r .. r + 3 of w; a short last group repeats its last row (only real rows are
    stored, `_store_rows`)."""
    return w[r], w[min(r + 1, rows - 1)], w[min(r + 2, rows - 1)], w[min(r + 3, rows - 1)]


@njit(inline="always")
def _store_rows(ot, r, t0, t1, t2, t3):
    """One token's sums of rows r .. r + 3 into its output row ot, the rows that exist."""
    rows = ot.shape[0]
    ot[r] = t0
    if r + 1 < rows:
        ot[r + 1] = t1
    if r + 2 < rows:
        ot[r + 2] = t2
    if r + 3 < rows:
        ot[r + 3] = t3


@njit(inline="always")
def _load4(acc, t):
    """Token t's four row accumulators from acc (n * 4 * LANES,)."""
    o = t * 4 * LANES
    return (vload_f32(acc, o), vload_f32(acc, o + LANES), vload_f32(acc, o + 2 * LANES),
            vload_f32(acc, o + 3 * LANES))


@njit(inline="always")
def _sums4(acc, t):
    """Token t's four row sums: each accumulator of acc (n * 4 * LANES,) summed once."""
    a0, a1, a2, a3 = _load4(acc, t)
    return vsum(a0), vsum(a1), vsum(a2), vsum(a3)


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
            w0, w1, w2, w3 = _rows4(w, r, rows)
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
                t0, t1, t2, t3 = _sums4(acc, t)
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
                _store_rows(out[t], r, t0, t1, t2, t3)


@njit(inline="always")
def _int_base(base_k, v):
    """A token step's start of every row's integer sum, v = -BASE_K * sum(q) (`imatvec_tokens`
    makes it once per token): zeros where there is no offset."""
    if base_k == 0:
        return izero()  # and the load goes
    return v


@njit(inline="always")
def _int_acc(signed, has_min, u, a, b, q, base, xd, xs, acc):
    """acc + one row's step against one token's (q, base, xd, xs), lane by lane:
    A * d * (q_w . q - OFFSET * sum(q)) + B * d * sum(q) (base: `_int_base`); B (a block's min)
    is a float term of its own. signed, has_min: the bound type's SIGNED and HAS_MIN
    (an inlined function reads this module's globals, not the bound copy's)."""
    isum = _stored_dot(signed, base, u, q)
    t = vmul(a, xd)
    if has_min:
        acc = vfma(b, xs, acc)
    return vfma(t, itof(isum), acc)


@njit(inline="always")
def _stored_dot(signed, base, u, q):
    """base + a step's weight bytes u (as `_as_unsigned` stores them) . activations q: signed
    bytes on AVX2 through llama.cpp's sign trick, everything else through `idot` (base then
    holds -128 * sum(q) for signed bytes stored + 128, zeros on AVX2's trick)."""
    if signed and not SIGN_BY_OFFSET:
        return idot_signed(base, u, q)
    return idot(base, u, q)


@njit(inline="always")
def _stored_dot2(signed, bits, base, u, q, w, r):
    """`_stored_dot` of u . q, then of w . r: for values below 64 (the packed nibble types) as
    one `idot2`, whose int16 pairs hold both."""
    if bits < 8:
        return idot2(base, u, q, w, r)
    return _stored_dot(signed, _stored_dot(signed, base, u, q), w, r)


@njit(inline="always")
def _as_unsigned(signed, u):
    """A step's weight bytes as `_int_acc` takes them: signed ones + 128 where SIGN_BY_OFFSET."""
    if signed and SIGN_BY_OFFSET:
        return iflip(u)
    return u


@njit(inline="always")
def _prefetch_int_block(w, pr, b, block_bytes):
    """Every cache line of block b (block_bytes) of rows pr .. pr + 3."""
    for k in range(4):
        prefetch_span(w, pr + k, b * block_bytes, block_bytes)


@njit(inline="always")
def _tile_load(U, AB, s, row):
    """Row `row`'s (u, A, B) of step s from the group's tile."""
    o = s * 4 + row
    return iload64(U, o * 64), vload_f32(AB, o * 2 * LANES), vload_f32(AB, (o * 2 + 1) * LANES)


@njit(inline="always")
def _tile_store(U, AB, has_min, s, row, u, a, bt):
    """Row `row`'s (u, A, B) of step s into the group's tile (B only where the type has one)."""
    o = s * 4 + row
    istore(U, o * 64, u)
    vstore_f32(AB, o * 2 * LANES, a)
    if has_min:
        vstore_f32(AB, (o * 2 + 1) * LANES, bt)


@njit(inline="always")
def _unpack_block(int_block, int_part, signed, has_min, w, b, nb, row, U, AB, s0):
    """Row `row`'s block b (four parts) into the group's tile, whose first step is s0 (parts
    written out: a constant c folds). int_block and int_part are called here, not passed on:
    Numba cannot inline a closure handed down two levels."""
    k = int_block(w, b, nb)
    s = b * 4 - s0
    u, a, bt = int_part(w, b, k, 0, nb)
    _tile_store(U, AB, has_min, s, row, _as_unsigned(signed, u), a, bt)
    u, a, bt = int_part(w, b, k, 1, nb)
    _tile_store(U, AB, has_min, s + 1, row, _as_unsigned(signed, u), a, bt)
    u, a, bt = int_part(w, b, k, 2, nb)
    _tile_store(U, AB, has_min, s + 2, row, _as_unsigned(signed, u), a, bt)
    u, a, bt = int_part(w, b, k, 3, nb)
    _tile_store(U, AB, has_min, s + 3, row, _as_unsigned(signed, u), a, bt)


@njit(inline="always")
def _step4(signed, base_k, has_min, s, tok, u0, u1, u2, u3, A0, A1, A2, A3, B0, B1, B2,
           B3, a0, a1, a2, a3):
    """Four rows' step s (their u, A, B) into one token's four accumulators; tok = (q, qs, xd,
    xs) of the token."""
    q, i0 = iload64(tok[0], s * 64), _int_base(base_k, iload16(tok[1], s * 16))
    xd, xs = vload_f32(tok[2], s * 16), vload_f32(tok[3], s * 16)
    a0 = _int_acc(signed, has_min, u0, A0, B0, q, i0, xd, xs, a0)
    a1 = _int_acc(signed, has_min, u1, A1, B1, q, i0, xd, xs, a1)
    a2 = _int_acc(signed, has_min, u2, A2, B2, q, i0, xd, xs, a2)
    a3 = _int_acc(signed, has_min, u3, A3, B3, q, i0, xd, xs, a3)
    return a0, a1, a2, a3


@njit(inline="always")
def _tile_acc(signed, base_k, has_min, s, ub, tok, a0, a1, a2, a3):
    """One token's four row accumulators over step s of the group's tile ub = (U, AB, its
    first step); tok = (q, qs, xd, xs) of the token. The tokens of a pass read the same tile
    loads (nothing is stored between them, so the compiler loads once)."""
    u0, A0, B0 = _tile_load(ub[0], ub[1], s - ub[2], 0)
    u1, A1, B1 = _tile_load(ub[0], ub[1], s - ub[2], 1)
    u2, A2, B2 = _tile_load(ub[0], ub[1], s - ub[2], 2)
    u3, A3, B3 = _tile_load(ub[0], ub[1], s - ub[2], 3)
    return _step4(signed, base_k, has_min, s, tok, u0, u1, u2, u3, A0, A1, A2, A3, B0, B1,
                  B2, B3, a0, a1, a2, a3)


@njit(inline="always")
def _int_part(int_part, signed, base_k, has_min, pairs, tile, c, s, w0, w1, w2, w3, k0,
              k1, k2, k3, b, nb, ub, tok0, tok1, a0, a1, a2, a3, b0, b1, b2, b3):
    """Part c of block b of four rows (their block contexts k0 .. k3, or the group's tile
    ub = (U, AB, its first step): `_tile_acc`) into the accumulators of token tok0 (a) and,
    with pairs, tok1 (b); tok = (q, qs, xd, xs) of the token; s is the part's step (64 values)
    in the row. (At most 30 arguments: past that CPython passes them as *args, which Numba
    cannot inline.)"""
    if tile:
        a0, a1, a2, a3 = _tile_acc(signed, base_k, has_min, s, ub, tok0, a0, a1, a2, a3)
        if pairs:
            b0, b1, b2, b3 = _tile_acc(signed, base_k, has_min, s, ub, tok1, b0, b1, b2, b3)
        return a0, a1, a2, a3, b0, b1, b2, b3
    u0, A0, B0 = int_part(w0, b, k0, c, nb)
    u1, A1, B1 = int_part(w1, b, k1, c, nb)
    u2, A2, B2 = int_part(w2, b, k2, c, nb)
    u3, A3, B3 = int_part(w3, b, k3, c, nb)
    u0, u1 = _as_unsigned(signed, u0), _as_unsigned(signed, u1)
    u2, u3 = _as_unsigned(signed, u2), _as_unsigned(signed, u3)
    a0, a1, a2, a3 = _step4(signed, base_k, has_min, s, tok0, u0, u1, u2, u3, A0, A1, A2, A3,
                            B0, B1, B2, B3, a0, a1, a2, a3)
    if pairs:
        b0, b1, b2, b3 = _step4(signed, base_k, has_min, s, tok1, u0, u1, u2, u3, A0, A1, A2, A3,
                                B0, B1, B2, B3, b0, b1, b2, b3)
    return a0, a1, a2, a3, b0, b1, b2, b3


def imatvec_tokens(w, X, out, scratch):
    """`matvec_tokens` on the integer route for the 256-value types without integer sub-block
    scales: each token quantized to int8 blocks of ACT_BLOCK (q8_activations), then per 64
    values and row one integer dot product (int_part's bytes against q) and two float
    multiply-adds with the row's sub-block scales (A, B). A weight block (4 steps of 64
    values) first gives each row a context (int_block: its decoded scales), which its parts
    share. Four rows share each loaded activation vector. With several tokens (TILE) a group's
    steps are unpacked once into a tile (u, A, B of every step, 32 steps at a time so it stays
    in L1) that two tokens at a time read, a chunk of TOKEN_CHUNK tokens at a time; one token
    unpacks as it goes. Every (row, token) is summed in the same order whatever n is. scratch
    is unused (the float route's)."""
    rows = w.shape[0]
    n, cols = X.shape
    nb = cols // BLOCK
    n_steps = (cols + 63) // 64
    n_blocks = (n_steps + 3) // 4
    Q = np.empty((n, n_steps * 64), np.int8)  # (n, cols_pad) quantized tokens
    # (n, cols_pad / 4) -BASE_K * the sum of each 4 q: where every row's integer sum starts
    QS = np.empty((n, n_steps * 16), np.int32)
    XD = np.empty((n, n_steps * 16), np.float32)  # (n, cols_pad / 4) block scale per lane
    XS = np.empty((n, n_steps * 16), np.float32)  # (n, cols_pad / 4) scale * sum of 4 q
    for t in prange(n):
        quantize_token(X[t], ACT_BLOCK, Q[t], QS[t], XD[t], XS[t])
        if BASE_K != 0:
            qs = QS[t]
            for j in range(qs.shape[0]):
                qs[j] *= -BASE_K
    ahead = PREFETCH_GROUPS * 4
    n_groups = (rows + 3) // 4
    n_parts = scratch.shape[0]
    chunk_blocks = max(1, TILE_STEPS // 4) if TILE else n_blocks
    # per part, small (below malloc's mmap threshold: two threads mapping and unmapping
    # buffers each call serialize in the kernel; a 2048-row matrix scaled 1.4x on 2 threads)
    for part in prange(n_parts):
        # (chunk * 4 * LANES,) 4 accumulators a token of the chunk
        acc = np.empty(min(n, TOKEN_CHUNK) * 4 * LANES, np.float32)
        tiles = chunk_blocks * 4 * 4 if TILE else 1
        U = np.empty(tiles * 64, np.int8)  # (TILE_STEPS, 4 rows, 64) the group's weight bytes
        AB = np.empty(tiles * 2 * LANES, np.float32)  # (TILE_STEPS, 4 rows, 2, LANES) A, B
        # a block context of the right type for `_int_part`, which the tile path never reads
        k_unused = int_block(w[0], 0, nb)
        for t0 in range(0, n, TOKEN_CHUNK):
            t1 = min(n, t0 + TOKEN_CHUNK)
            for g in range(part * n_groups // n_parts, (part + 1) * n_groups // n_parts):
                r = 4 * g
                w0, w1, w2, w3 = _rows4(w, r, rows)
                pr = min(r + ahead, rows - 4)
                for kb0 in range(0, n_blocks, chunk_blocks):
                    kb1 = min(n_blocks, kb0 + chunk_blocks)
                    ub = (U, AB, kb0 * 4)
                    if TILE:
                        for b in range(kb0, kb1):
                            if pr >= 0 and t0 == 0:  # the next groups' rows, while this computes
                                _prefetch_int_block(w, pr, b, BLOCK_BYTES)
                            _unpack_block(int_block, int_part, SIGNED, HAS_MIN, w0, b, nb,
                                          0, U, AB, kb0 * 4)
                            _unpack_block(int_block, int_part, SIGNED, HAS_MIN, w1, b, nb,
                                          1, U, AB, kb0 * 4)
                            _unpack_block(int_block, int_part, SIGNED, HAS_MIN, w2, b, nb,
                                          2, U, AB, kb0 * 4)
                            _unpack_block(int_block, int_part, SIGNED, HAS_MIN, w3, b, nb,
                                          3, U, AB, kb0 * 4)
                    t = t0
                    while t < t1:  # in pairs (one token without PAIRS)
                        u = min(t + 1, t1 - 1)
                        tok0 = (Q[t], QS[t], XD[t], XS[t])
                        tok1 = (Q[u], QS[u], XD[u], XS[u])
                        if kb0 == 0:
                            a0 = a1 = a2 = a3 = vzero()
                            b0 = b1 = b2 = b3 = vzero()
                        else:  # the same sums, continued: a lane's order does not change
                            a0, a1, a2, a3 = _load4(acc, t - t0)
                            b0, b1, b2, b3 = _load4(acc, u - t0)
                        for b in range(kb0, kb1):
                            if TILE:
                                k0 = k1 = k2 = k3 = k_unused
                            else:
                                if pr >= 0 and t == 0:
                                    _prefetch_int_block(w, pr, b, BLOCK_BYTES)
                                k0 = int_block(w0, b, nb)
                                k1 = int_block(w1, b, nb)
                                k2 = int_block(w2, b, nb)
                                k3 = int_block(w3, b, nb)
                            a0, a1, a2, a3, b0, b1, b2, b3 = _int_part(
                                int_part, SIGNED, BASE_K, HAS_MIN, PAIRS, TILE, 0,
                                b * 4, w0, w1, w2, w3, k0, k1, k2, k3, b, nb, ub, tok0, tok1,
                                a0, a1, a2, a3, b0, b1, b2, b3)
                            # written out: a constant part makes picks shuffles
                            a0, a1, a2, a3, b0, b1, b2, b3 = _int_part(
                                int_part, SIGNED, BASE_K, HAS_MIN, PAIRS, TILE, 1,
                                b * 4 + 1, w0, w1, w2, w3, k0, k1, k2, k3, b, nb, ub,
                                tok0, tok1, a0, a1, a2, a3, b0, b1, b2, b3)
                            a0, a1, a2, a3, b0, b1, b2, b3 = _int_part(
                                int_part, SIGNED, BASE_K, HAS_MIN, PAIRS, TILE, 2,
                                b * 4 + 2, w0, w1, w2, w3, k0, k1, k2, k3, b, nb, ub,
                                tok0, tok1, a0, a1, a2, a3, b0, b1, b2, b3)
                            a0, a1, a2, a3, b0, b1, b2, b3 = _int_part(
                                int_part, SIGNED, BASE_K, HAS_MIN, PAIRS, TILE, 3,
                                b * 4 + 3, w0, w1, w2, w3, k0, k1, k2, k3, b, nb, ub,
                                tok0, tok1, a0, a1, a2, a3, b0, b1, b2, b3)
                        _store4(acc, t - t0, a0, a1, a2, a3)
                        if PAIRS and t + 1 < t1:
                            _store4(acc, t + 1 - t0, b0, b1, b2, b3)
                        t += 2 if PAIRS else 1
                for t in range(t0, t1):
                    s0, s1, s2, s3 = _sums4(acc, t - t0)
                    _store_rows(out[t], r, s0, s1, s2, s3)


# The 32-value types on the integer route: a matrix's rows packed sixteen at a time when it
# first takes the route (`pack_rows`), each block's eight value vectors in lanes of four, lane r
# of every 64-byte vector holding four of row r's values, then the rows' scales (the file's
# halves):
#   P[g, b] = values | d of the 16 rows (f16) | m of the 16 rows (f16, the _1 types)
#   values: 8-bit types (Q8_0, IQ4_NL) the eight vectors as bytes (512); 4-bit ones (Q4_0,
#     Q4_1) vector i's values in the low nibbles and vector i + 4's in the high ones of 4
#     vectors (256); 5-bit ones (Q5_0, Q5_1) those nibbles, then a bit plane whose byte holds
#     in bit j the fifth bit of that byte of vector j (320): a block as many bytes as the file's
# A token's four activations broadcast to every lane against one vector is one vpdpbusd for
# sixteen rows; eight give each row its block's exact integer sum, then one float step a block,
#   acc += float(isum) * (d * dx)  (+ m * (dx * sum(q)) for the types with a min),
# per (row, token) in block order whatever else the call computes: the same bits for any token
# count. Per 512 products and token that is 8 integer and 3 float instructions (and for
# nibbles 2 to 5 more a vector) where the unpacked form took 32. The 5-bit form reads 0.61x the
# bytes of one a value: Gemma 3's Q5_0 matrices took 0.7x the time at one token (Zen 3).
PACK_ROWS = 16
PACK_VALUES = 8 * 64  # bytes of a block's values for the sixteen rows


def value_bytes(bits: int) -> int:
    """Bytes of a packed block's values: one a value, or nibbles (and a bit plane for five
    bits), the file's own size."""
    return PACK_VALUES if bits == 8 else PACK_VALUES // 2 + (64 if bits == 5 else 0)


def pack_bytes(has_min: bool, bits: int) -> int:
    """Bytes of one block of a packed group: its values, d, and m where the type has one."""
    return value_bytes(bits) + 2 * PACK_ROWS * (2 if has_min else 1)


def pack_rows(w, P):
    """w (rows, row_units) -> P (groups, nb, pack_bytes) uint8 as above, zeros on entry (the
    nibbles and bits are or-ed in). A last group short of sixteen rows repeats its last row
    (`_pack_store` stores only real rows). Signed values (Q8_0, IQ4_NL) are stored as
    `_as_unsigned` gives them (+ 128 where SIGN_BY_OFFSET); the unsigned ones (Q4_0, Q5_0
    before their OFFSET, Q4_1, Q5_1) as they are, so that vpmaddubsw takes them without AVX2's
    sign trick (their offset comes out through the activations' block sums, BASE_K)."""
    rows = w.shape[0]
    nb = P.shape[1]
    for g in prange(P.shape[0]):
        part = np.empty(64, np.int8)  # (64,) one part's values: two blocks
        sc = _scales_at(HAS_MIN, P[g, 0])
        for r in range(PACK_ROWS):
            wr = w[min(PACK_ROWS * g + r, rows - 1)]
            k = int_block(wr, 0, nb)
            for b in range(nb):
                u, a, bt = int_part(wr, b // 2, k, 0, nb)
                istore(part, 0, _as_unsigned(SIGNED, u))
                for j in range(32):
                    v = np.int32(part[32 * (b % 2) + j])
                    o = 4 * r + j % 4  # value vector j // 4, lane r
                    if BITS == 8:
                        P[g, b, 64 * (j // 4) + o] = np.uint8(v & 255)
                    else:
                        P[g, b, 64 * (j // 4 % 4) + o] |= np.uint8((v & 15) << (4 * (j // 16)))
                    if BITS == 5:
                        P[g, b, PACK_VALUES // 2 + o] |= np.uint8((v >> 4) << (j // 4))
                for k in range(2 if HAS_MIN else 1):  # d, m: the file's halves
                    for c in range(2):
                        P[g, b, sc + 2 * PACK_ROWS * k + 2 * r + c] = wr[
                            b * BLOCK_BYTES + 2 * k + c]


@njit(inline="always")
def _scales_at(has_min, pb):
    """Where a packed block's d sits: its last sixteen halves, or before the sixteen m."""
    return pb.shape[0] - 2 * PACK_ROWS * (2 if has_min else 1)


@njit(inline="always")
def _bit_plane(bits, pb):
    """A packed block's fifth bits (5-bit values; any vector otherwise, unused)."""
    return iload64(pb, PACK_VALUES // 2 if bits == 5 else 0)


@njit(inline="always")
def _packed_values(bits, pb, i, plane):
    """Value vectors i and i + 4 (i < 4) of a packed block pb: stored as bytes, or as the low
    and high nibbles of vector i, a fifth bit from the bit plane (bits i, i + 4 of a byte)."""
    if bits == 8:
        return iload64(pb, 64 * i), iload64(pb, 64 * (i + 4))
    v = iload64(pb, 64 * i)
    lo, hi = ilow4(v), ihigh4(v)
    if bits == 5:
        return ibit4(lo, plane, 4 - i, 0), ibit4(hi, plane, 0, i)
    return lo, hi


@njit(inline="always")
def _pack_block(signed, has_min, bits, pb, q, b, base, dx, xs, f):
    """One token's block b against sixteen packed rows (pb = P[g, b]) into f: each row's
    exact integer sum from base (-BASE_K * sum(q)), then one float step. signed, has_min,
    bits: the bound SIGNED, HAS_MIN, BITS (an inlined function reads this module's globals)."""
    acc = isplat(base)
    plane = _bit_plane(bits, pb)
    for i in range(4):
        u, w = _packed_values(bits, pb, i, plane)
        acc = _stored_dot2(signed, bits, acc, u, ibcast4(q, 32 * b + 4 * i), w,
                           ibcast4(q, 32 * b + 4 * i + 16))
    return _pack_float(has_min, pb, acc, vload_f16(pb, _scales_at(has_min, pb)), dx, xs, f)


@njit(inline="always")
def _pack_float(has_min, pb, acc, d, dx, xs, f):
    """The float step of a token's block: f + float(acc) * (d * dx), + m * xs where the type
    has a min (d: the sixteen rows' scales)."""
    f = vfma(itof(acc), vmul(d, vsplat(dx)), f)
    if has_min:
        f = vfma(vload_f16(pb, _scales_at(has_min, pb) + 2 * PACK_ROWS), vsplat(xs), f)
    return f


@njit(inline="always")
def _prefetch_packed(Pn, b):
    """Every cache line of block b of the next group of packed rows (Pn), asked for during the
    first pass over this group's block b: the hardware prefetcher alone leaves the packed
    kernels short of the read bandwidth, the more so the more tokens a pass computes (out of
    order execution cannot look a block ahead). In-process alternation, median, on a Zen 3
    (AVX2): Gemma's Q8_0 LM head 0.86-0.91x the time at 4 and 8 tokens, 0.89-0.97x at one, its
    Q5_0 matrices 0.87-1.0x. These blocks are 5 to 9 lines: asking for them one value vector
    at a time, as the K-quants do, measured nothing on a Xeon (Q8_0 equal, Q5_0 at 8 tokens
    1.08x the time)."""
    for o in range(0, Pn.shape[1], CACHE_LINE):
        prefetch(Pn, b, o)


@njit(inline="always")
def _pack_store(o, g, f, tail):
    """The sixteen row sums f of group g into one token's output row o, the rows that exist."""
    r = PACK_ROWS * g
    if r + PACK_ROWS <= o.shape[0]:
        vstore_f32(o, r, f)
    else:
        vstore_f32(tail, 0, f)
        for k in range(o.shape[0] - r):
            o[r + k] = tail[k]


def pmatvec_tokens(P, X, out, scratch):
    """`imatvec_tokens` on packed rows (`pack_rows`): out (n, rows) from P (groups, nb,
    pack_bytes) and X (n, cols). Four tokens at a time share each loaded weight vector (the
    group's bytes come from memory once, then from L1); every (row, token) takes the steps of
    `_pack_block` in block order. scratch: its row count is the number of parallel parts."""
    n, cols = X.shape
    G, nb = P.shape[0], P.shape[1]
    cols_pad = (cols + 63) // 64 * 64
    Q = np.empty((n, cols_pad), np.int8)  # (n, cols_pad) quantized tokens
    QS = np.empty((n, cols_pad // 4), np.int32)  # (n, cols_pad / 4) sums of four q
    XD = np.empty((n, cols_pad // 4), np.float32)  # (n, cols_pad / 4) block scale per lane
    XS = np.empty((n, cols_pad // 4), np.float32)  # (n, cols_pad / 4) unused here
    BQ = np.empty((n, nb), np.int32)  # (n, nb) where a block's sums start (`_pack_block`)
    BX = np.empty((n, 2 * nb), np.float32)  # (n, 2 nb) each block's dx, then dx * sum(q)
    for t in prange(n):
        quantize_token(X[t], 32, Q[t], QS[t], XD[t], XS[t])
        for b in range(nb):
            s = np.int32(0)
            for k in range(8):
                s += QS[t, 8 * b + k]
            BQ[t, b] = -BASE_K * s
            BX[t, b] = XD[t, 8 * b]
            BX[t, nb + b] = XD[t, 8 * b] * np.float32(s)
    n_parts = scratch.shape[0]
    # a block's pairs of value vectors (4), as a count LLVM cannot see: unrolled, the loop over
    # its vectors became token by token, each block's sixteen weight vectors and magnitudes
    # spilled to the stack and reloaded for every token (1.3-1.4x the time at 4 and 8 tokens on
    # AVX2)
    nj = min(4, P.shape[2] // 64)
    for part in prange(n_parts):
        tail = np.empty(LANES, np.float32)  # (LANES,) a short last group's sums
        for g in range(part * G // n_parts, (part + 1) * G // n_parts):
            Pg = P[g]
            Pn = P[min(g + 1, G - 1)]
            t = 0
            while t + 4 <= n:
                f0 = f1 = f2 = f3 = vzero()
                q0, q1, q2, q3 = Q[t], Q[t + 1], Q[t + 2], Q[t + 3]
                for b in range(nb):
                    if t == 0:
                        _prefetch_packed(Pn, b)
                    pb = Pg[b]
                    a0, a1 = isplat(BQ[t, b]), isplat(BQ[t + 1, b])
                    a2, a3 = isplat(BQ[t + 2, b]), isplat(BQ[t + 3, b])
                    plane = _bit_plane(BITS, pb)
                    for i in range(nj):  # each vector of weights once for the four tokens
                        u, w = _packed_values(BITS, pb, i, plane)
                        qo = 32 * b + 4 * i
                        r = qo + 16
                        a0 = _stored_dot2(SIGNED, BITS, a0, u, ibcast4(q0, qo), w, ibcast4(q0, r))
                        a1 = _stored_dot2(SIGNED, BITS, a1, u, ibcast4(q1, qo), w, ibcast4(q1, r))
                        a2 = _stored_dot2(SIGNED, BITS, a2, u, ibcast4(q2, qo), w, ibcast4(q2, r))
                        a3 = _stored_dot2(SIGNED, BITS, a3, u, ibcast4(q3, qo), w, ibcast4(q3, r))
                    d = vload_f16(pb, _scales_at(HAS_MIN, pb))
                    f0 = _pack_float(HAS_MIN, pb, a0, d, BX[t, b], BX[t, nb + b], f0)
                    f1 = _pack_float(HAS_MIN, pb, a1, d, BX[t + 1, b], BX[t + 1, nb + b], f1)
                    f2 = _pack_float(HAS_MIN, pb, a2, d, BX[t + 2, b], BX[t + 2, nb + b], f2)
                    f3 = _pack_float(HAS_MIN, pb, a3, d, BX[t + 3, b], BX[t + 3, nb + b], f3)
                _pack_store(out[t], g, f0, tail)
                _pack_store(out[t + 1], g, f1, tail)
                _pack_store(out[t + 2], g, f2, tail)
                _pack_store(out[t + 3], g, f3, tail)
                t += 4
            while t < n:
                f0 = vzero()
                for b in range(nb):
                    if t == 0:
                        _prefetch_packed(Pn, b)
                    f0 = _pack_block(SIGNED, HAS_MIN, BITS, Pg[b], Q[t], b, BQ[t, b], BX[t, b],
                                     BX[t, nb + b], f0)
                _pack_store(out[t], g, f0, tail)
                t += 1


# Q4_K and Q6_K on the integer route, rows packed sixteen at a time by the type (`pack_block`,
# its layout), a matrix when it first takes the route: P (groups, nb, PACK_BYTES). A type gives
#   packed_four(pb, b, q0..q3, s0..s3, Pn, pf) / packed_one(pb, b, q, s, Pn, pf) -> per token
#       the sixteen rows' scaled integer sums and min sums of block b (exact), and
#       packed_scales(pb) -> (d, dmin);
# s holds a token's sums over pairs of sub-blocks of SUB_QUADS quads (int16 pairs), q its
# quantized values in the order of the type's `order_quants`. With pf (a group's first pass
# over block b) the type prefetches block b of the next group's rows Pn into L2, each line as
# it loads the same line of pb: a block is 37 (Q4_K) or 53 (Q6_K) lines, and asked for all at
# once at its start (`_prefetch_packed`) the requests held the fill buffers that the
# compute's own loads wait for. In-process alternation on a Xeon (AVX-512 VNNI), the 1B file,
# median: Q4_K at one token 0.90x the time of all at once, at 8 0.89-0.92x; Q6_K 0.97-0.99x
# and 0.88-0.94x; with GGUF_ENGINE_SIMD=avx2 0.94-0.95x at one, 0.86-0.89x at 8.
# The float steps are llama.cpp's (its repacked Q4_K kernels), per (row, token) in block order:
#   acc += float(isum) * (d * dx),  acc_min += float(imin) * (dmin * dx),  out = acc - acc_min,
# so a (row, token) gets the same bits whatever else the call computes.


@njit(inline="always")
def quants_in_order(q):
    """The default `order_quants`: packed values in the activations' own order."""


@njit(inline="always")
def _kfloat(isum, imin, d, dmin, dx, a, m):
    """One token's float steps of a block: a + float(isum) * (d * dx), m likewise with dmin."""
    x = vsplat(dx)
    return vfma(itof(isum), vmul(d, x), a), vfma(itof(imin), vmul(dmin, x), m)


def kpack_rows(w, P):
    """w (rows, row_bytes) -> P (groups, nb, PACK_BYTES); a last group short of sixteen rows
    repeats its last row (`_pack_store` stores only real rows)."""
    rows = w.shape[0]
    for g in prange(P.shape[0]):
        for r in range(PACK_ROWS):
            wr = w[min(PACK_ROWS * g + r, rows - 1)]
            for b in range(P.shape[1]):
                pack_block(wr, b, P[g, b], r)


def kpmatvec_tokens(P, X, out, scratch):
    """out (n, rows) from packed rows P (`kpack_rows`) and X (n, cols), four tokens at a time
    sharing each loaded weight vector and its nibbles. scratch: its row count is the number of
    parallel parts."""
    n, cols = X.shape
    G, nb = P.shape[0], P.shape[1]
    Q = np.empty((n, cols), np.int8)  # (n, cols) quantized tokens
    QS = np.empty((n, cols // 4), np.int32)  # (n, cols / 4) sum of each 4 q
    XD = np.empty((n, cols // 4), np.float32)  # (n, cols / 4) the block's dx per lane
    XS = np.empty((n, cols // 4), np.float32)  # (n, cols / 4) unused here
    # (n, cols / (8 SUB_QUADS)) the sums of q over pairs of sub-blocks, as int16 pairs
    SW = np.empty((n, cols // (8 * SUB_QUADS)), np.int32)
    for t in prange(n):
        quantize_token(X[t], 256, Q[t], QS[t], XD[t], XS[t])
        for i in range(SW.shape[1]):
            lo = np.int32(0)
            hi = np.int32(0)
            for k in range(SUB_QUADS):
                lo += QS[t, 2 * SUB_QUADS * i + k]
                hi += QS[t, 2 * SUB_QUADS * i + SUB_QUADS + k]
            SW[t, i] = (lo & 0xFFFF) | (hi << 16)
        order_quants(Q[t])
    n_parts = scratch.shape[0]
    for part in prange(n_parts):
        tail = np.empty(LANES, np.float32)  # (LANES,) a short last group's sums
        for g in range(part * G // n_parts, (part + 1) * G // n_parts):
            Pg = P[g]
            Pn = P[min(g + 1, G - 1)]
            t = 0
            while t + 4 <= n:
                a0 = a1 = a2 = a3 = m0 = m1 = m2 = m3 = vzero()
                for b in range(nb):
                    pb = Pg[b]
                    i0, i1, i2, i3, n0, n1, n2, n3 = packed_four(
                        pb, b, Q[t], Q[t + 1], Q[t + 2], Q[t + 3], SW[t], SW[t + 1], SW[t + 2],
                        SW[t + 3], Pn, t == 0)
                    d, dmin = packed_scales(pb)
                    a0, m0 = _kfloat(i0, n0, d, dmin, XD[t, 64 * b], a0, m0)
                    a1, m1 = _kfloat(i1, n1, d, dmin, XD[t + 1, 64 * b], a1, m1)
                    a2, m2 = _kfloat(i2, n2, d, dmin, XD[t + 2, 64 * b], a2, m2)
                    a3, m3 = _kfloat(i3, n3, d, dmin, XD[t + 3, 64 * b], a3, m3)
                _pack_store(out[t], g, vsub(a0, m0), tail)
                _pack_store(out[t + 1], g, vsub(a1, m1), tail)
                _pack_store(out[t + 2], g, vsub(a2, m2), tail)
                _pack_store(out[t + 3], g, vsub(a3, m3), tail)
                t += 4
            while t < n:
                a0 = m0 = vzero()
                for b in range(nb):
                    pb = Pg[b]
                    i0, n0 = packed_one(pb, b, Q[t], SW[t], Pn, t == 0)
                    d, dmin = packed_scales(pb)
                    a0, m0 = _kfloat(i0, n0, d, dmin, XD[t, 64 * b], a0, m0)
                _pack_store(out[t], g, vsub(a0, m0), tail)
                t += 1


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


def _base_k(mod) -> int:
    """The integer route's offset taken out of a type's sums (`_int_base`): the type's OFFSET,
    or 128 for signed bytes flipped to unsigned (`_as_unsigned`); none on AVX2's sign trick."""
    if getattr(mod, "SIGNED", False):
        return 128 if SIGN_BY_OFFSET else 0
    return getattr(mod, "OFFSET", 0)


def _as_is(w):
    """The integer route's form of w (rows, row_units) for the types that read it as stored."""
    return w


def build(mod) -> SimpleNamespace:
    dot4 = getattr(mod, "dot4_block", None) or _dot4_from_dequant(mod.dequant_block, mod.BLOCK)
    suffix = f"{mod.GGML_TYPE.name}_{_DIGEST}_{simd_int.ISA}"
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

    integer = None
    if simd_int.ISA != "none" and hasattr(mod, "packed_four"):
        knames = dict(names, pack_block=mod.pack_block, packed_four=mod.packed_four,
                      packed_one=mod.packed_one, packed_scales=mod.packed_scales,
                      order_quants=getattr(mod, "order_quants", quants_in_order),
                      SUB_QUADS=mod.SUB_QUADS)
        kpack = njit(parallel=True, cache=True)(_bind(kpack_rows, suffix + "_pack", **knames))
        kpacked = njit(parallel=True, cache=True)(_bind(kpmatvec_tokens, suffix + "_int",
                                                        **knames))

        def kprepare(w):
            """w (rows, row_bytes) packed for `kpmatvec_tokens` (once per matrix)."""
            P = np.empty(((w.shape[0] + PACK_ROWS - 1) // PACK_ROWS, w.shape[1] // mod.TYPE_SIZE,
                          mod.PACK_BYTES), np.uint8)
            kpack(w, P)
            return P

        integer = SimpleNamespace(prepare=kprepare, matvec_tokens=kpacked, matvec_one=kpacked)
    elif simd_int.ISA != "none" and hasattr(mod, "int_part") and mod.BLOCK == 32:
        pnames = dict(names, HAS_MIN=getattr(mod, "HAS_MIN", False),
                      SIGNED=getattr(mod, "SIGNED", False), BASE_K=_base_k(mod),
                      BLOCK_BYTES=mod.TYPE_SIZE, BITS=getattr(mod, "VALUE_BITS", 8),
                      int_block=mod.int_block, int_part=mod.int_part)
        pack = njit(parallel=True, cache=True)(_bind(pack_rows, suffix + "_pack", **pnames))
        packed = njit(parallel=True, cache=True)(_bind(pmatvec_tokens, suffix + "_int", **pnames))
        per_block = pack_bytes(pnames["HAS_MIN"], pnames["BITS"])

        def prepare(w):
            """w (rows, row_units) packed for `pmatvec_tokens` (once per matrix)."""
            P = np.zeros(((w.shape[0] + PACK_ROWS - 1) // PACK_ROWS, w.shape[1] // mod.TYPE_SIZE,
                          per_block), np.uint8)
            pack(w, P)
            return P

        integer = SimpleNamespace(prepare=prepare, matvec_tokens=packed, matvec_one=packed)
    elif simd_int.ISA != "none" and hasattr(mod, "int_part"):  # the other 256-value types
        inames = dict(names, ACT_BLOCK=mod.ACT_BLOCK, SIGNED=getattr(mod, "SIGNED", False),
                      BASE_K=_base_k(mod), HAS_MIN=getattr(mod, "HAS_MIN", False),
                      BLOCK_BYTES=mod.TYPE_SIZE, int_block=mod.int_block, int_part=mod.int_part)
        integer = SimpleNamespace(
            prepare=_as_is,
            matvec_tokens=njit(parallel=True, cache=True)(
                _bind(imatvec_tokens, suffix + "_int", PAIRS=True, TILE=True, **inames)),
            matvec_one=njit(parallel=True, cache=True)(
                _bind(imatvec_tokens, suffix + "_int_one", PAIRS=False, **inames)),
        )
    return SimpleNamespace(
        integer=integer,
        dequantize_rows=njit(parallel=True, cache=True)(_bind(dequantize_rows, suffix, **names)),
        gather_rows=njit(parallel=True, cache=True)(_bind(gather_rows, suffix, **names)),
        matvec_tokens=tokens,
        matvec_one=one,
        matvec_rows=matvec_rows,
    )
