"""Causal attention over a preallocated KV cache, with grouped-query heads and an optional
sliding window."""

import numpy as np
from numba import njit, prange

from .. import checks
from .flags import FASTMATH
from .simd import (
    LANES,
    vexp,
    vfma,
    vload_f32,
    vmul,
    vsplat,
    vstore_f32,
    vsub,
    vsum,
    vzero,
)


def _check(q, k_cache, v_cache, pos0, window, scale, softcap, out):
    """The shared argument checks of `attention` and `attention_matmul`."""
    n, n_heads, head_dim = checks.array("q", q, (None, None, None), contiguous=True).shape
    n_kv, n_ctx, _ = checks.array("k_cache", k_cache, (None, None, head_dim),
                                  contiguous=True).shape
    checks.array("v_cache", v_cache, (n_kv, n_ctx, head_dim), contiguous=True)
    checks.array("out", out, (n, n_heads, head_dim), contiguous=True)
    if n_kv == 0 or n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads are not a multiple of {n_kv} KV heads")
    if isinstance(pos0, bool) or not isinstance(pos0, (int, np.integer)) or pos0 < 0 or \
            pos0 + n > n_ctx:
        raise ValueError(f"queries at positions {pos0}..{pos0 + n - 1} do not fit the cache "
                         f"of {n_ctx} positions")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ValueError(f"window must be an integer >= 0, got {window!r}")
    checks.finite("scale", scale)
    if checks.finite("softcap", softcap) < 0:
        raise ValueError(f"softcap must be >= 0 (0: off), got {softcap}")
    checks.writable("out", out, q, k_cache, v_cache)
    return n


def attention(q, k_cache, v_cache, pos0, window, scale, scores, out, softcap=0.0):
    """q (n_tokens, n_heads, head_dim): queries at positions pos0 .. pos0 + n_tokens - 1.
    k_cache, v_cache (n_kv_heads, n_ctx, head_dim): keys/values, filled up to the last query.
    window: a query at p sees keys at p - window + 1 .. p (llama.cpp's rule); 0 means no window.
    softcap > 0: each scaled score s becomes softcap * tanh(s / softcap) (Gemma 2).
    scores (n_parts * group, >= pos0 + n_tokens) float32 scratch, `group` rows (the query heads
    of a KV head) per parallel part; out (n_tokens, n_heads, head_dim). All float32,
    C-contiguous."""
    n = _check(q, k_cache, v_cache, pos0, window, scale, softcap, out)
    group = q.shape[1] // k_cache.shape[0]
    parts, width = checks.array("scores", scores, (None, None), contiguous=True).shape
    if parts < group or width < pos0 + n:
        raise ValueError(f"scores must have at least {group} rows of {pos0 + n} values, got "
                         f"{scores.shape}")
    checks.writable("scores", scores, q, k_cache, v_cache, out)
    attention_kernel(q, k_cache[None], v_cache[None], np.zeros(n, np.int64),
                     np.arange(pos0, pos0 + n, dtype=np.int64), int(window), np.float32(scale),
                     scores, out, np.float32(softcap))


# Keys taken at a time: their keys and values (KEY_BLOCK * head_dim floats each) stay in L1
# while every query head of the group reads them, instead of coming from L2 once per head.
KEY_BLOCK = 8


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def attention_kernel(q, k_cache, v_cache, seqs, positions, window, scale, scores, out,
                     softcap):
    """`attention` without the checks, for rows of any sequences: query row t belongs to slot
    seqs[t] of k_cache, v_cache (n_seq, n_kv_heads, n_ctx, head_dim) and sits at positions[t].
    A part takes a row's query heads that share a KV head together; each (row, head) is
    computed alone, the same way whatever the other rows are."""
    n_tokens, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[1]
    group = n_heads // n_kv
    n_items = n_tokens * n_kv
    n_parts = min(scores.shape[0] // group, n_items)
    for part in prange(n_parts):
        sc = scores[part * group:(part + 1) * group]  # (group, width) one row per head
        # interleaved, so the long rows of late causal queries spread over the parts
        for item in range(part, n_items, n_parts):
            _attend_group(q, k_cache, v_cache, seqs, positions, window, scale, softcap, sc, out,
                          item // n_kv, item % n_kv, group)


@njit(cache=True)
def _softmax(s, lo, end):
    """s[lo:end] = softmax(s[lo:end]) in place, as ggml's soft_max does it on AVX-512: 16
    exponentials at a time (`vexp`, ggml's polynomial) each summed as a tree and added into a
    float64 total, the last few through libm, then every value times 1 / total. A function of
    its own, not fast-math whatever its caller's flags."""
    # the maximum in four chains (exact in any order): one chain waits on each compare
    m0 = m1 = m2 = m3 = -np.inf
    j = lo
    while j + 4 <= end:
        m0, m1, m2, m3 = max(m0, s[j]), max(m1, s[j + 1]), max(m2, s[j + 2]), max(m3, s[j + 3])
        j += 4
    m = max(max(m0, m1), max(m2, m3))
    while j < end:
        m = max(m, s[j])
        j += 1
    mv = vsplat(m)
    total = 0.0
    j = lo
    while j + LANES <= end:
        e = vexp(vsub(vload_f32(s, j), mv))
        vstore_f32(s, j, e)
        total += vsum(e)
        j += LANES
    while j < end:
        e = np.exp(np.float32(s[j] - m))
        s[j] = e
        total += e
        j += 1
    inv = np.float32(1.0 / total)
    iv = vsplat(inv)
    j = lo
    while j + LANES <= end:
        vstore_f32(s, j, vmul(vload_f32(s, j), iv))
        j += LANES
    while j < end:
        s[j] *= inv
        j += 1


@njit(inline="always")
def _score(qv, keys, kj, vec_dim, head_dim, s, scale, softcap):
    """One key's score from s, its dot product's sum over the whole vectors: plus the
    dimensions past them, times scale, then softcap * tanh(s / softcap) where softcap > 0."""
    for d in range(vec_dim, head_dim):
        s += qv[d] * keys[kj + d]
    s = s * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    return s


@njit(inline="always")
def _splat8(sg, j0):
    """The weights sg[j0 .. j0 + 7], each in every lane."""
    return (vsplat(sg[j0]), vsplat(sg[j0 + 1]), vsplat(sg[j0 + 2]), vsplat(sg[j0 + 3]),
            vsplat(sg[j0 + 4]), vsplat(sg[j0 + 5]), vsplat(sg[j0 + 6]), vsplat(sg[j0 + 7]))


@njit(inline="always")
def _fma8(acc, w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6, v7):
    """acc + w0 v0 + ... + w7 v7, one FMA after the other (the keys in order)."""
    acc = vfma(w0, v0, acc)
    acc = vfma(w1, v1, acc)
    acc = vfma(w2, v2, acc)
    acc = vfma(w3, v3, acc)
    acc = vfma(w4, v4, acc)
    acc = vfma(w5, v5, acc)
    acc = vfma(w6, v6, acc)
    return vfma(w7, v7, acc)


@njit(inline="always")
def _weigh8(o, sg, vals, vj, j0, vec_dim, head_dim, o2, sg2, two):
    """o (+)= the weights sg[j0 .. j0 + 7] times eight value rows from vals[vj:], each output
    lane's sum over the keys in order; with two, the same for a second head (o2, sg2) in the
    same loop, so two chains of FMAs are in flight instead of one."""
    w0, w1, w2, w3, w4, w5, w6, w7 = _splat8(sg, j0)
    x0, x1, x2, x3, x4, x5, x6, x7 = _splat8(sg2, j0)
    for d in range(0, vec_dim, LANES):
        v0, v1 = vload_f32(vals, vj + d), vload_f32(vals, vj + head_dim + d)
        v2, v3 = vload_f32(vals, vj + 2 * head_dim + d), vload_f32(vals, vj + 3 * head_dim + d)
        v4, v5 = vload_f32(vals, vj + 4 * head_dim + d), vload_f32(vals, vj + 5 * head_dim + d)
        v6, v7 = vload_f32(vals, vj + 6 * head_dim + d), vload_f32(vals, vj + 7 * head_dim + d)
        acc = _fma8(vload_f32(o, d), w0, w1, w2, w3, w4, w5, w6, w7, v0, v1, v2, v3, v4, v5, v6,
                    v7)
        if two:
            vstore_f32(o2, d, _fma8(vload_f32(o2, d), x0, x1, x2, x3, x4, x5, x6, x7, v0, v1, v2,
                                    v3, v4, v5, v6, v7))
        vstore_f32(o, d, acc)


@njit(inline="always")
def _attend_group(q, k_cache, v_cache, seqs, positions, window, scale, softcap, sc, out, t, kv,
                  group):
    """Row t's query heads kv * group .. of KV head kv. A head's scores and sums keep one order
    (each key's dot product over the dimensions in vectors, then the keys in order), a block of
    KEY_BLOCK keys at a time for every head of the group."""
    head_dim = q.shape[2]
    p = positions[t]
    lo = 0
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    # one flat view per item, indexed by offset: a view per key would touch the cache's
    # shared reference count from every thread
    keys = k_cache[seqs[t], kv].reshape(-1)  # (n_ctx * head_dim,)
    vals = v_cache[seqs[t], kv].reshape(-1)
    vec_dim = head_dim - head_dim % LANES
    h0 = kv * group
    for j0 in range(lo, p + 1, KEY_BLOCK):
        j1 = min(j0 + KEY_BLOCK, p + 1)
        for g in range(group):
            qv = q[t, h0 + g]
            sg = sc[g]
            j = j0
            if j1 - j0 == 8:  # eight keys side by side (written out): eight chains
                kj = j0 * head_dim
                a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzero()
                for d in range(0, vec_dim, LANES):
                    qd = vload_f32(qv, d)
                    a0 = vfma(qd, vload_f32(keys, kj + d), a0)
                    a1 = vfma(qd, vload_f32(keys, kj + head_dim + d), a1)
                    a2 = vfma(qd, vload_f32(keys, kj + 2 * head_dim + d), a2)
                    a3 = vfma(qd, vload_f32(keys, kj + 3 * head_dim + d), a3)
                    a4 = vfma(qd, vload_f32(keys, kj + 4 * head_dim + d), a4)
                    a5 = vfma(qd, vload_f32(keys, kj + 5 * head_dim + d), a5)
                    a6 = vfma(qd, vload_f32(keys, kj + 6 * head_dim + d), a6)
                    a7 = vfma(qd, vload_f32(keys, kj + 7 * head_dim + d), a7)
                sg[j0] = _score(qv, keys, kj, vec_dim, head_dim, vsum(a0), scale, softcap)
                sg[j0 + 1] = _score(qv, keys, kj + head_dim, vec_dim, head_dim, vsum(a1), scale,
                                    softcap)
                sg[j0 + 2] = _score(qv, keys, kj + 2 * head_dim, vec_dim, head_dim, vsum(a2),
                                    scale, softcap)
                sg[j0 + 3] = _score(qv, keys, kj + 3 * head_dim, vec_dim, head_dim, vsum(a3),
                                    scale, softcap)
                sg[j0 + 4] = _score(qv, keys, kj + 4 * head_dim, vec_dim, head_dim, vsum(a4),
                                    scale, softcap)
                sg[j0 + 5] = _score(qv, keys, kj + 5 * head_dim, vec_dim, head_dim, vsum(a5),
                                    scale, softcap)
                sg[j0 + 6] = _score(qv, keys, kj + 6 * head_dim, vec_dim, head_dim, vsum(a6),
                                    scale, softcap)
                sg[j0 + 7] = _score(qv, keys, kj + 7 * head_dim, vec_dim, head_dim, vsum(a7),
                                    scale, softcap)
                j = j1
            while j < j1:
                kj = j * head_dim
                acc = vzero()
                for d in range(0, vec_dim, LANES):
                    acc = vfma(vload_f32(qv, d), vload_f32(keys, kj + d), acc)
                sg[j] = _score(qv, keys, kj, vec_dim, head_dim, vsum(acc), scale, softcap)
                j += 1
    for g in range(group):
        _softmax(sc[g], lo, p + 1)
        out[t, h0 + g] = 0.0
    # each output dimension's sum over the keys in order, continued from out a block at a time
    for j0 in range(lo, p + 1, KEY_BLOCK):
        j1 = min(j0 + KEY_BLOCK, p + 1)
        if j1 - j0 == 8:  # eight keys written out, two heads at a time
            vj = j0 * head_dim
            for g in range(0, group - 1, 2):
                _weigh8(out[t, h0 + g], sc[g], vals, vj, j0, vec_dim, head_dim,
                        out[t, h0 + g + 1], sc[g + 1], True)
            if group % 2:
                o = out[t, h0 + group - 1]
                _weigh8(o, sc[group - 1], vals, vj, j0, vec_dim, head_dim, o, sc[group - 1],
                        False)
        else:
            for g in range(group):
                o = out[t, h0 + g]
                sg = sc[g]
                for d in range(0, vec_dim, LANES):
                    acc = vload_f32(o, d)
                    for j in range(j0, j1):
                        acc = vfma(vsplat(sg[j]), vload_f32(vals, j * head_dim + d), acc)
                    vstore_f32(o, d, acc)
        for g in range(group):
            o = out[t, h0 + g]
            sg = sc[g]
            for e in range(vec_dim, head_dim):
                acc1 = o[e]
                for j in range(j0, j1):
                    acc1 += sg[j] * vals[j * head_dim + e]
                o[e] = acc1


@njit(cache=True)
def store_kv_kernel(k_cache, v_cache, seqs, positions, k, v):
    """k, v (n, n_kv_heads, head_dim) -> row t into slot seqs[t] of k_cache, v_cache
    (n_seq, n_kv_heads, n_ctx, head_dim) at positions[t]."""
    for t in range(k.shape[0]):
        k_cache[seqs[t], :, positions[t]] = k[t]
        v_cache[seqs[t], :, positions[t]] = v[t]


# Prefill attention takes queries this many at a time, so that a block's scores stop at its
# last query's position: causal masking then skips most of the upper triangle's work.
QUERY_BLOCK = 128


def attention_matmul(q, k_cache, v_cache, pos0, window, scale, out, softcap=0.0):
    """`attention` for many queries at once through BLAS (prefill): per block of queries and
    group of query heads that share a KV head, scores = Q K^T for the keys the block can see,
    masked, softmaxed in float32, times V. Same arguments and meaning as `attention`, without
    the scratch."""
    _check(q, k_cache, v_cache, pos0, window, scale, softcap, out)
    attention_matmul_unchecked(q, k_cache, v_cache, pos0, window, scale, out, softcap)


def attention_matmul_unchecked(q, k_cache, v_cache, pos0, window, scale, out, softcap=0.0):
    """`attention_matmul` without the checks."""
    n_tokens, n_heads, head_dim = q.shape
    n_kv = k_cache.shape[0]
    group = n_heads // n_kv
    for t0 in range(0, n_tokens, QUERY_BLOCK):
        t1 = min(n_tokens, t0 + QUERY_BLOCK)
        n = t1 - t0
        first, end = pos0 + t0, pos0 + t1  # the block's first query position, one past its last
        lo = max(0, first - window + 1) if window > 0 else 0  # the first key the block sees
        keys = np.arange(lo, end)
        pos = np.arange(first, end)[:, None]
        hidden = keys > pos
        if window > 0:
            hidden |= keys <= pos - window
        bias = np.where(hidden, np.float32(-np.inf), np.float32(0.0))[:, None, :]  # (n, 1, keys)
        for kv in range(n_kv):
            heads = slice(kv * group, (kv + 1) * group)
            qg = np.ascontiguousarray(q[t0:t1, heads]).reshape(n * group, head_dim)
            s = qg @ k_cache[kv, lo:end].T  # (n * group, keys)
            s3 = s.reshape(n, group, -1)
            s3 *= scale
            if softcap > 0:
                s3 /= np.float32(softcap)
                np.tanh(s3, out=s3)
                s3 *= np.float32(softcap)
            s3 += bias
            s -= s.max(axis=1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=1, keepdims=True)
            out[t0:t1, heads] = (s @ v_cache[kv, lo:end]).reshape(n, group, head_dim)
