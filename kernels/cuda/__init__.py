"""numba.cuda kernels: the GPU path. Imported only for device="cuda" (or "auto" with a GPU).

Reductions use shared memory (no warp shuffles), so every kernel also runs under Numba's CUDA
simulator (NUMBA_ENABLE_CUDASIM=1), where the tests check them against the CPU kernels.
"""
