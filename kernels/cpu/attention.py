"""Causal attention over a preallocated KV cache, with grouped-query heads and an optional
sliding window."""

import numpy as np
from numba import njit, prange

from .. import checks
from .flags import FASTMATH
from .simd import LANES, vfma, vload_f32, vmul, vsplat, vstore_f32, vsum, vzero


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
    scores (n_parts, >= pos0 + n_tokens) float32 scratch, one row per parallel part;
    out (n_tokens, n_heads, head_dim). All float32, C-contiguous."""
    n = _check(q, k_cache, v_cache, pos0, window, scale, softcap, out)
    parts, width = checks.array("scores", scores, (None, None), contiguous=True).shape
    if parts < 1 or width < pos0 + n:
        raise ValueError(f"scores must have at least 1 row of {pos0 + n} values, got "
                         f"{scores.shape}")
    checks.writable("scores", scores, q, k_cache, v_cache, out)
    attention_kernel(q, k_cache[None], v_cache[None], np.zeros(n, np.int64),
                     np.arange(pos0, pos0 + n, dtype=np.int64), int(window), np.float32(scale),
                     scores, out, np.float32(softcap))


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def attention_kernel(q, k_cache, v_cache, seqs, positions, window, scale, scores, out,
                     softcap):
    """`attention` without the checks, for rows of any sequences: query row t belongs to slot
    seqs[t] of k_cache, v_cache (n_seq, n_kv_heads, n_ctx, head_dim) and sits at positions[t].
    Each (row, head) is computed alone, the same way whatever the other rows are."""
    n_tokens, n_heads, head_dim = q.shape
    group = n_heads // k_cache.shape[1]
    n_items = n_tokens * n_heads
    n_parts = min(scores.shape[0], n_items)
    for part in prange(n_parts):
        sc = scores[part]
        # interleaved, so the long rows of late causal queries spread over the parts
        for th in range(part, n_items, n_parts):
            _attend_one(q, k_cache, v_cache, seqs, positions, window, scale, softcap, sc, out,
                        th, n_heads, group)


@njit(inline="always")
def _attend_one(q, k_cache, v_cache, seqs, positions, window, scale, softcap, sc, out, th,
                n_heads, group):
    head_dim = q.shape[2]
    t = th // n_heads
    h = th % n_heads
    kv = h // group
    p = positions[t]
    lo = 0
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    # one flat view per item, indexed by offset: a view per key would touch the cache's
    # shared reference count from every thread
    qv = q[t, h]
    keys = k_cache[seqs[t], kv].reshape(-1)  # (n_ctx * head_dim,)
    vals = v_cache[seqs[t], kv].reshape(-1)
    o = out[t, h]
    vec_dim = head_dim - head_dim % LANES
    m = -np.inf
    for j in range(lo, p + 1):
        kj = j * head_dim
        acc = vzero()
        for d in range(0, vec_dim, LANES):
            acc = vfma(vload_f32(qv, d), vload_f32(keys, kj + d), acc)
        s = vsum(acc)
        for d in range(vec_dim, head_dim):
            s += qv[d] * keys[kj + d]
        s *= scale
        if softcap > 0:
            s = softcap * np.tanh(s / softcap)
        sc[j] = s
        if s > m:
            m = s
    total = np.float32(0.0)
    for j in range(lo, p + 1):
        e = np.exp(sc[j] - m)
        sc[j] = e
        total += e
    inv = np.float32(1.0) / total
    # 4 x LANES output dimensions at a time, each a vector accumulator over the keys
    d = 0
    while d + 4 * LANES <= vec_dim:
        a0 = a1 = a2 = a3 = vzero()
        for j in range(lo, p + 1):
            w = vsplat(sc[j])
            vj = j * head_dim + d
            a0 = vfma(w, vload_f32(vals, vj), a0)
            a1 = vfma(w, vload_f32(vals, vj + LANES), a1)
            a2 = vfma(w, vload_f32(vals, vj + 2 * LANES), a2)
            a3 = vfma(w, vload_f32(vals, vj + 3 * LANES), a3)
        iv = vsplat(inv)
        vstore_f32(o, d, vmul(a0, iv))
        vstore_f32(o, d + LANES, vmul(a1, iv))
        vstore_f32(o, d + 2 * LANES, vmul(a2, iv))
        vstore_f32(o, d + 3 * LANES, vmul(a3, iv))
        d += 4 * LANES
    for e in range(d, head_dim):
        acc1 = np.float32(0.0)
        for j in range(lo, p + 1):
            acc1 += sc[j] * vals[j * head_dim + e]
        o[e] = acc1 * inv


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
