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


def slot_count(n_seq) -> int:
    """n_seq checked: the number of sequence slots, a positive integer."""
    if isinstance(n_seq, bool) or not isinstance(n_seq, int) or n_seq < 1:
        raise ValueError(f"invalid n_seq={n_seq!r}: must be a positive integer")
    return n_seq


class KVCache:
    """K and V of every layer for `n_seq` sequence slots of a whole context each, on the device
    whose `zeros` made them."""

    def __init__(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int, zeros=None,
                 n_seq: int = 1):
        zeros = zeros or (lambda shape: np.zeros(shape, np.float32))
        self.n_ctx, self.n_seq = n_ctx, n_seq
        shape = (n_layers, n_seq, n_kv_heads, n_ctx, head_dim)
        self.k = zeros(shape)  # (L, S, KVH, n_ctx, D)
        self.v = zeros(shape)  # (L, S, KVH, n_ctx, D)
        # per slot: the tokens whose keys and values are in it, in order
        self.tokens: list[list[int]] = [[] for _ in range(n_seq)]
        # per slot: how many leading positions were written by whole prefill chunks that start
        # at a multiple of the chunk size, the positions a new prompt may reuse and still get
        # the numbers it would get from an empty slot
        self.reusable: list[int] = [0] * n_seq

    @staticmethod
    def bytes_for(n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int,
                  n_seq: int = 1) -> int:
        """Bytes of K and V for n_seq contexts of n_ctx (float32)."""
        return (2 * n_layers * n_seq * n_kv_heads * n_ctx * head_dim
                * np.dtype(np.float32).itemsize)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def truncate(self, seq: int, n: int) -> None:
        """Forget slot `seq`'s positions from n on."""
        del self.tokens[seq][n:]
        self.reusable[seq] = min(self.reusable[seq], n)

    def reuse(self, seq: int, tokens, chunk: int) -> int:
        """How many leading `tokens` slot `seq` already holds with the numbers a prefill from
        position 0 would give: the common prefix cut to whole aligned chunks, leaving at least
        the last token to run (its logits are needed)."""
        n = 0
        for a, b in zip(self.tokens[seq], tokens, strict=False):
            if a != b:
                break
            n += 1
        n = min(n, self.reusable[seq], len(tokens) - 1)
        return n - n % chunk
