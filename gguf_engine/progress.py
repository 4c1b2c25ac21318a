"""Progress for work that takes more than a few seconds: the first run's kernel compilation
(Numba compiles on first use and caches on disk, so a cold start is silent for a minute without
this) and long benchmark loops. Bars go to stderr, only on a terminal (tqdm's disable=None)."""

from __future__ import annotations

import sys
import threading
import time

from tqdm import tqdm

COMPILE_NOTICE = "compiling kernels (first run only, about a minute)"


def bar(iterable=None, **kw):
    """A tqdm bar on stderr that shows only on a terminal."""
    return tqdm(iterable, file=sys.stderr, disable=None, leave=False, dynamic_ncols=True, **kw)


class CompileNotice:
    """While active, the first Numba compilation (a cache miss) prints a one-line notice and
    each later one advances a counter; `close()` ends the bar and says how long it took."""

    def __init__(self):
        self._lock = threading.Lock()
        self._bar = None
        self._count = 0
        self._t0 = 0.0
        self._listener = None

    def __enter__(self):
        from numba.core import event

        notice = self

        class Listener(event.Listener):
            def on_start(self, ev):
                notice._started()

            def on_end(self, ev):
                pass

        self._listener = Listener()
        event.register("numba:compile", self._listener)
        return self

    def __exit__(self, *exc):
        from numba.core import event

        event.unregister("numba:compile", self._listener)
        self.close()

    def _started(self):
        with self._lock:
            if self._count == 0:
                self._t0 = time.perf_counter()
                print(f"gguf-engine: {COMPILE_NOTICE}...", file=sys.stderr, flush=True)
                self._bar = bar(unit=" kernels", desc="compiling")
            self._count += 1
            if self._bar is not None:
                self._bar.update(1)

    def close(self):
        """End the bar (before output starts, so the two do not mix on a terminal)."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
                print(f"gguf-engine: compiled {self._count} kernels in "
                      f"{time.perf_counter() - self._t0:.0f} s (cached for later runs)",
                      file=sys.stderr, flush=True)
