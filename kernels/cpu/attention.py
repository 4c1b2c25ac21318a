"""Causal attention over a preallocated KV cache, with grouped-query heads and an optional
sliding window."""

import numpy as np
from numba import njit, prange

from .flags import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def attention(q, k_cache, v_cache, pos0, window, scale, scores, out):
    """q (n_tokens, n_heads, head_dim): queries at positions pos0 .. pos0 + n_tokens - 1.
    k_cache, v_cache (n_kv_heads, n_ctx, head_dim): keys/values, filled up to the last query.
    window: a query at p sees keys at p - window + 1 .. p (llama.cpp's rule); 0 means no window.
    scores (n_parts, n_ctx) float32 scratch, one row per parallel part;
    out (n_tokens, n_heads, head_dim)."""
    n_tokens, n_heads, head_dim = q.shape
    group = n_heads // k_cache.shape[0]
    n_items = n_tokens * n_heads
    n_parts = min(scores.shape[0], n_items)
    for part in prange(n_parts):
        sc = scores[part]
        # interleaved, so the long rows of late causal queries spread over the parts
        for th in range(part, n_items, n_parts):
            _attend_one(q, k_cache, v_cache, pos0, window, scale, sc, out, th, n_heads, group)


@njit(inline="always")
def _attend_one(q, k_cache, v_cache, pos0, window, scale, sc, out, th, n_heads, group):
    head_dim = q.shape[2]
    t = th // n_heads
    h = th % n_heads
    kv = h // group
    p = pos0 + t
    lo = 0
    if window > 0 and p - window + 1 > 0:
        lo = p - window + 1
    m = -np.inf
    for j in range(lo, p + 1):
        s = np.float32(0.0)
        for d in range(head_dim):
            s += q[t, h, d] * k_cache[kv, j, d]
        s *= scale
        sc[j] = s
        if s > m:
            m = s
    total = np.float32(0.0)
    for j in range(lo, p + 1):
        e = np.exp(sc[j] - m)
        sc[j] = e
        total += e
    inv = np.float32(1.0) / total
    for d in range(head_dim):
        out[t, h, d] = 0.0
    for j in range(lo, p + 1):
        wgt = sc[j] * inv
        for d in range(head_dim):
            out[t, h, d] += wgt * v_cache[kv, j, d]


# Prefill attention takes queries this many at a time, so that a block's scores stop at its
# last query's position: causal masking then skips most of the upper triangle's work.
QUERY_BLOCK = 128


def attention_matmul(q, k_cache, v_cache, pos0, window, scale, out):
    """`attention` for many queries at once through BLAS (prefill): per block of queries and
    group of query heads that share a KV head, scores = Q K^T for the keys the block can see,
    masked, softmaxed in float32, times V. Same arguments and meaning as `attention`, without
    the scratch."""
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
            s3 += bias
            s -= s.max(axis=1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=1, keepdims=True)
            out[t0:t1, heads] = (s @ v_cache[kv, lo:end]).reshape(n, group, head_dim)
