"""The KV cache: allocated once for the whole context, written in place at each position."""

from __future__ import annotations

import os

import numpy as np


def available_memory() -> int | None:
    """Bytes of memory the system can give now without swapping (Linux's MemAvailable), or
    None where it cannot tell."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class KVCache:
    """K and V of every layer for the whole context, on the device whose `zeros` made them."""

    def __init__(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int, zeros=None):
        zeros = zeros or (lambda shape: np.zeros(shape, np.float32))
        self.n_ctx = n_ctx
        self.k = zeros((n_layers, n_kv_heads, n_ctx, head_dim))  # (L, KVH, n_ctx, D)
        self.v = zeros((n_layers, n_kv_heads, n_ctx, head_dim))  # (L, KVH, n_ctx, D)
        self.tokens: list[int] = []  # the tokens whose keys and values are in the cache, in order

    @staticmethod
    def bytes_for(n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int) -> int:
        """Bytes of K and V for a context of n_ctx (float32)."""
        return 2 * n_layers * n_kv_heads * n_ctx * head_dim * np.dtype(np.float32).itemsize

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def common_prefix(self, tokens) -> int:
        n = 0
        for a, b in zip(self.tokens, tokens, strict=False):
            if a != b:
                break
            n += 1
        return n
