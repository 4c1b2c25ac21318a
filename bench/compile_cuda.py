"""Compile every GPU kernel to PTX without a GPU: `python bench/compile_cuda.py [--cc 8.0]`.

Needs the 'cuda' extra (numba-cuda with NVVM); no driver or device. It compiles each GGML
type's kernels (matvec, dequantize, embedding rows: each type's CPU dequant_block turned into a
device function) and the other kernels for real hardware, which the simulator cannot check
(it runs the kernels as Python). Prints the PTX size of each."""

from __future__ import annotations

import argparse
import os

os.environ["NUMBA_ENABLE_CUDASIM"] = "0"  # before numba is imported

from gguf_engine.kernels import SUPPORTED_TYPES  # noqa: E402
from gguf_engine.kernels.cuda import ops, quant  # noqa: E402
from gguf_engine.kernels.registry import kernels_for  # noqa: E402
from numba import cuda, types  # noqa: E402
from numba.np.numpy_support import from_dtype  # noqa: E402


def arr(dtype, ndim):
    return types.Array(dtype, ndim, "C")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cc", default="8.0", help="compute capability")
    cc = tuple(int(v) for v in p.parse_args().cc.split("."))
    f32, i64 = types.float32, types.int64
    for t in sorted(SUPPORTED_TYPES, key=int):
        tk = kernels_for(t)
        view = from_dtype(tk.view)
        matvec, dequantize, embed = quant._build(quant.device_function(tk.dequant_block),
                                                 tk.block)
        sizes = [len(cuda.compile_ptx(k.py_func, sig, cc=cc)[0]) for k, sig in (
            (matvec, (arr(view, 2), arr(f32, 1), arr(f32, 1))),
            (dequantize, (arr(view, 2), arr(f32, 2))),
            (embed, (arr(view, 2), arr(i64, 1), arr(f32, 2))))]
        print(f"{t.name}: matvec, dequantize, embed PTX {sizes} bytes")
    others = {
        quant.gemm: (arr(f32, 2), arr(f32, 2), arr(f32, 2)),
        ops.rmsnorm: (arr(f32, 2), arr(f32, 1), f32, arr(f32, 2)),
        ops.rope: (arr(f32, 3), arr(i64, 1), arr(types.float64, 1), types.boolean),
        ops.attention: (arr(f32, 3), arr(f32, 4), arr(f32, 4), arr(i64, 1), arr(i64, 1), i64,
                        f32, f32, arr(f32, 2), arr(f32, 3)),
        ops.gated: (arr(f32, 2), i64, arr(f32, 2), types.boolean, arr(f32, 1)),
        ops.store_kv: (arr(f32, 3), arr(f32, 3), arr(f32, 4), arr(f32, 4), arr(i64, 1),
                       arr(i64, 1)),
    }
    for k, sig in others.items():
        print(f"{k.py_func.__name__}: PTX {len(cuda.compile_ptx(k.py_func, sig, cc=cc)[0])} bytes")


if __name__ == "__main__":
    main()
