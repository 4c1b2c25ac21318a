"""Argument checks at the public kernel entries. The compiled cores index without bounds
checks, so a wrong shape there is a write past an array's end; these turn it into a ValueError
that names the argument. The model calls the cores directly on buffers it allocated itself."""

from __future__ import annotations

import math

import numpy as np


def array(name: str, a, shape: tuple, dtype=np.float32, contiguous: bool = False) -> np.ndarray:
    """`a` as an ndarray of `dtype` whose shape matches `shape` (None: any size in that axis)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
    if a.dtype not in [np.dtype(d) for d in dtypes]:
        want = " or ".join(np.dtype(d).name for d in dtypes)
        raise TypeError(f"{name} must be {want}, got {a.dtype}")
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape,
                                                                           strict=True)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}, got {a.shape}")
    if contiguous and not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def integers(name: str, a, n: int) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iu" or a.shape != (n,):
        raise ValueError(f"{name} must be ({n},) integers, got {a.dtype} {a.shape}")
    return a


def writable(name: str, out: np.ndarray, *inputs: np.ndarray, same_ok: bool = False) -> None:
    """`out` is writable and shares no memory with `inputs` (or is one of them, exactly, where
    the kernel reads each element before writing it: same_ok)."""
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for a in inputs:
        if same_ok and a is out:
            continue
        if np.shares_memory(out, a, max_work=1000):
            raise ValueError(f"{name} overlaps an input array; pass a separate output array")


def finite(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not \
            math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v!r}")
    return float(v)
