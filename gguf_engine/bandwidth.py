"""The machine's memory read bandwidth, measured the way the benchmarks quote it."""

from __future__ import annotations

import threading
import time

import numpy as np

GIB = 1 << 30


def read_bandwidth(nbytes: int = GIB, repeats: int = 5) -> dict[str, float]:
    """GB/s of `numpy.sum` over `nbytes` of float32 on one thread, and over two halves on two
    threads at once (NumPy releases the GIL). Medians of `repeats` runs."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    halves = np.array_split(a, 2)

    def one():
        t = time.perf_counter()
        a.sum()
        return time.perf_counter() - t

    def two():
        threads = [threading.Thread(target=h.sum) for h in halves]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    one()
    two()
    t1 = float(np.median([one() for _ in range(repeats)]))
    t2 = float(np.median([two() for _ in range(repeats)]))
    return {"one_thread_gbs": a.nbytes / t1 / 1e9, "two_threads_gbs": a.nbytes / t2 / 1e9}
