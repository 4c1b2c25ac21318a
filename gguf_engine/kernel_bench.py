"""`gguf-engine bench --kernels`: GB/s of weight bytes each quantized matvec reads, beside the
machine's read bandwidth measured in the same run."""

from __future__ import annotations

import sys
import time

import numba
import numpy as np
from gguf import GGML_QUANT_SIZES

from .bandwidth import read_bandwidth
from .kernels import SUPPORTED_TYPES, matvec
from .progress import bar

WEIGHT_BYTES = 288 << 20  # above 256 MB, so the last-level cache cannot hold the weights
COLS = 4096


def _median_seconds(fn, repeats):
    fn()  # compile or load from cache, and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_matvec(data: np.ndarray, ggml_type, shape, repeats: int) -> dict:
    x = np.random.default_rng(0).standard_normal(shape[1]).astype(np.float32)
    out = np.empty(shape[0], dtype=np.float32)
    s = _median_seconds(lambda: matvec(data, ggml_type, shape, x, out), repeats)
    return {
        "type": ggml_type.name,
        "shape": list(shape),
        "mbytes": data.size / 1e6,
        "ms": s * 1e3,
        "gbs": data.size / s / 1e9,
    }


def run_kernel_bench(lm_head=None, repeats: int = 5, types=None, out=sys.stdout) -> dict:
    """Benchmark every supported type on one > 256 MB random weight buffer (fp16 fields kept
    finite and normal), plus `lm_head` (a TensorInfo) if given. Returns the figures."""
    bw = read_bandwidth()
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, size=WEIGHT_BYTES, dtype=np.uint8)
    buf.view(np.uint16)[:] &= 0x3BFF  # every aligned half finite and below 1
    rows = []
    for t in bar(sorted(types or SUPPORTED_TYPES, key=int), desc="matvec", unit=" types"):
        bs, ts = GGML_QUANT_SIZES[t]
        row_bytes = COLS // bs * ts
        n_rows = WEIGHT_BYTES // row_bytes
        rows.append(bench_matvec(buf[: n_rows * row_bytes], t, (n_rows, COLS), repeats))
    if lm_head is not None:
        r = bench_matvec(lm_head.data, lm_head.ggml_type, lm_head.shape, repeats)
        r["type"] = f"{lm_head.ggml_type.name} ({lm_head.name})"
        rows.append(r)
    two = bw["two_threads_gbs"]
    print(
        f"threads: {numba.get_num_threads()}  threading layer: {numba.threading_layer()}", file=out
    )
    print(
        f"read bandwidth (numpy.sum, 1 GiB): 1 thread {bw['one_thread_gbs']:.1f} GB/s, "
        f"2 threads {two:.1f} GB/s",
        file=out,
    )
    print("| type | shape | MB | ms | GB/s | % of 2-thread bandwidth |", file=out)
    print("|---|---|---:|---:|---:|---:|", file=out)
    for r in rows:
        print(
            f"| {r['type']} | {r['shape'][0]}x{r['shape'][1]} | {r['mbytes']:.0f} | "
            f"{r['ms']:.2f} | {r['gbs']:.2f} | {100 * r['gbs'] / two:.0f}% |",
            file=out,
        )
    return {"bandwidth": bw, "matvec": rows}
