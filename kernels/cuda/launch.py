"""Launch geometry shared by the GPU kernels, and the block reduction they use."""

from __future__ import annotations

import math

from numba import config, cuda

# Threads per block for row reductions (a power of two). The simulator runs every thread as a
# Python thread, so it gets few.
THREADS = 2 if config.ENABLE_CUDASIM else 128
# GEMM tile edge. Each simulated barrier costs milliseconds: with tiles of 8 a 3 x 256 by
# 256 x 5 product takes 1.3 s there, with tiles of 2 (fewer threads, more barriers) 10 s.
TILE = 8 if config.ENABLE_CUDASIM else 16
# Matvec blocks loop over rows beyond the grid. The simulator spends ~20 ms per block on
# bookkeeping whatever the block does, so there the grid stays small (a shared fixture's decode
# step: 163 s with a block per row, 100 s with 4 blocks).
MAX_BLOCKS = 4 if config.ENABLE_CUDASIM else 1 << 30


@cuda.jit(device=True, inline=True)
def block_reduce(sh, tid, v, take_max):
    """The sum (or the max) of v over the block's THREADS threads, through shared memory;
    every thread gets it."""
    sh[tid] = v
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if tid < step:
            if take_max:
                sh[tid] = max(sh[tid], sh[tid + step])
            else:
                sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step //= 2
    total = sh[0]
    cuda.syncthreads()
    return total


# Threads per block of the element-wise 2-D kernels (the simulator makes a Python thread each).
BLOCK2 = (1, 32) if config.ENABLE_CUDASIM else (8, 32)


def grid2(n, m, block=BLOCK2):
    """A 2-D grid covering (n, m) and its block shape."""
    return (math.ceil(n / block[0]), math.ceil(m / block[1])), block
