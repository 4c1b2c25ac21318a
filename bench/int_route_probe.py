"""A probe of the integer route (#13): Q4_K weights against activations quantized to Q8_K,
multiplied with AVX-512 VNNI's vpdpbusd (64 unsigned 4-bit x signed 8-bit products per
instruction), beside the float route's matvec_one, on the matrix shapes of Llama 3.2 1B.
Not used by the engine: it measures what the route is worth and checks its arithmetic against
float64 before the route is built into the kernels.

    python bench/int_route_probe.py            # AVX-512 VNNI's vpdpbusd
    PROBE_NO_VNNI=1 python bench/int_route_probe.py   # vpmaddubsw + vpmaddwd, as AVX2 has

Needs a CPU with AVX-512 VNNI (LLVM has no other lowering for the intrinsic).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from gguf_engine.kernels.cpu.ggml_types.q4_k import TYPE_SIZE  # noqa: E402
from gguf_engine.kernels.cpu.simd import (  # noqa: E402
    f32x16,
    k_scale_bytes,
    load_half,
    vfma,
    vload_f32,
    vsplat,
    vsplat2,
    vsum,
    vzero,
)

_I8, _I32, _F32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
_V16I32 = ir.VectorType(_I32, 16)  # one 512-bit register: 16 int32 or 64 int8 lanes


class I32x16(types.Type):
    def __init__(self):
        super().__init__(name="i32x16")


i32x16 = I32x16()


@register_model(I32x16)
class _I32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V16I32)


def _bytes_at(context, builder, sig, args, n):
    """Pointer to n bytes at element args[1] of the 1-D array args[0]."""
    data = context.make_array(sig.args[0])(context, builder, args[0]).data
    i = context.cast(builder, args[1], sig.args[1], types.intp)
    return builder.bitcast(builder.gep(data, [i]), ir.PointerType(ir.VectorType(_I8, n)))


@intrinsic
def izero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_V16I32, [0] * 16)

    return i32x16(), codegen


@intrinsic
def iload64(typingctx, arr, i):
    """The 64 bytes arr[i:i + 64] of an int8 array."""
    def codegen(context, builder, sig, args):
        v = builder.load(_bytes_at(context, builder, sig, args, 64), align=1)
        return builder.bitcast(v, _V16I32)

    return i32x16(arr, i), codegen


@intrinsic
def inibbles(typingctx, arr, i):
    """The 32 bytes at arr[i:] of a uint8 array: their low nibbles, then their high ones."""
    def codegen(context, builder, sig, args):
        v = builder.load(_bytes_at(context, builder, sig, args, 32), align=1)
        lo = builder.and_(v, ir.Constant(ir.VectorType(_I8, 32), [15] * 32))
        hi = builder.lshr(v, ir.Constant(ir.VectorType(_I8, 32), [4] * 32))
        both = builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, 64),
                                                          list(range(64))))
        return builder.bitcast(both, _V16I32)

    return i32x16(arr, i), codegen


@intrinsic
def dpbusd(typingctx, acc, a, b):
    """acc + in each int32 lane the sum of four products of a's unsigned and b's signed bytes."""
    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_V16I32, [_V16I32] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            "llvm.x86.avx512.vpdpbusd.512")
        return builder.call(fn, list(args))

    return i32x16(acc, a, b), codegen


@intrinsic
def dpbusd_bw(typingctx, acc, a, b):
    """dpbusd without VNNI, as AVX2 does it (here on 512-bit AVX-512BW registers):
    vpmaddubsw (pairs of u8 x s8 into int16; a 4-bit weight times an int8 cannot saturate)
    then vpmaddwd by ones (pairs of int16 into int32)."""
    def codegen(context, builder, sig, args):
        v32i16 = ir.VectorType(ir.IntType(16), 32)
        v64i8 = ir.VectorType(_I8, 64)
        f1 = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v32i16, [v64i8, v64i8]),
            "llvm.x86.avx512.pmaddubs.w.512")
        f2 = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V16I32, [v32i16, v32i16]),
            "llvm.x86.avx512.pmaddw.d.512")
        pairs = builder.call(f1, [builder.bitcast(args[1], v64i8),
                                  builder.bitcast(args[2], v64i8)])
        quads = builder.call(f2, [pairs, ir.Constant(v32i16, [1] * 32)])
        return builder.add(args[0], quads)

    return i32x16(acc, a, b), codegen


# the dot product instruction the probe uses: VNNI, or its AVX2-style stand-in
DOT = dpbusd_bw if os.environ.get("PROBE_NO_VNNI") == "1" else dpbusd


@intrinsic
def imuladd(typingctx, a, b, c):
    """a * b + c, int32 lanes."""
    def codegen(context, builder, sig, args):
        return builder.add(builder.mul(args[0], args[1]), args[2])

    return i32x16(a, b, c), codegen


@intrinsic
def iload_k_scales(typingctx, arr, i):
    """A Q4_K block's eight scales (lanes 0-7) and eight mins (8-15) from the 12 bytes at
    arr[i:], as int32 (simd.vload_k_scales' unpacking)."""
    def codegen(context, builder, sig, args):
        return builder.zext(k_scale_bytes(context, builder, sig, args), _V16I32)

    return i32x16(arr, i), codegen


@intrinsic
def ipair(typingctx, v, c):
    """Lanes 0-7 = lane 2c of v, lanes 8-15 = lane 2c + 1 (c constant after inlining)."""
    def codegen(context, builder, sig, args):
        c = context.cast(builder, args[1], sig.args[1], types.int32)
        two_c = builder.shl(c, ir.Constant(_I32, 1))
        lo = builder.extract_element(args[0], two_c)
        hi = builder.extract_element(args[0], builder.add(two_c, ir.Constant(_I32, 1)))
        undef = ir.Constant(_V16I32, ir.Undefined)
        zeros = ir.Constant(ir.VectorType(_I32, 16), [0] * 16)
        lo = builder.shuffle_vector(builder.insert_element(undef, lo, ir.Constant(_I32, 0)),
                                    undef, zeros)
        hi = builder.shuffle_vector(builder.insert_element(undef, hi, ir.Constant(_I32, 0)),
                                    undef, zeros)
        return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, 16),
                                                          list(range(8)) + list(range(24, 32))))

    return i32x16(v, c), codegen


@intrinsic
def itof(typingctx, a):
    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], ir.VectorType(_F32, 16))

    return f32x16(a), codegen


@njit(cache=True)
def quantize_q8k(x, q, d, bsum):
    """llama.cpp's quantize_row_q8_K: x (cols,) -> q (cols,) int8 and d (cols // 256,) scales;
    bsum (cols // 16,) per block 8 zeros, then the sums of q over its 8 sub-blocks (what a
    Q4_K row's mins multiply, in the lanes simd.vload_k_scales puts them), as float32."""
    for b in range(x.shape[0] // 256):
        amax = np.float32(0.0)
        vmax = np.float32(0.0)
        for j in range(256):
            v = x[b * 256 + j]
            if abs(v) > amax:
                amax, vmax = abs(v), v
        bsum[b * 16:(b + 1) * 16] = 0
        if amax == 0:
            d[b] = 0
            q[b * 256:(b + 1) * 256] = 0
            continue
        iscale = np.float32(-127.0) / vmax
        for j in range(256):
            q[b * 256 + j] = min(127, np.int32(np.rint(iscale * x[b * 256 + j])))
        d[b] = np.float32(1.0) / iscale
        for j in range(8):
            s = np.int32(0)
            for k in range(32):
                s += np.int32(q[b * 256 + j * 32 + k])
            bsum[b * 16 + 8 + j] = np.float32(s)


@njit(inline="always")
def _row_block(wr, p, q, qo, xm, a):
    """a + one row's Q4_K block at byte p against the 256 quantized activations at q[qo:],
    xm their sums' lanes; the caller scales it by the activations' d."""
    si = iload_k_scales(wr, p + 4)
    isum = imuladd(DOT(izero(), inibbles(wr, p + 16), iload64(q, qo)), ipair(si, 0), izero())
    isum = imuladd(DOT(izero(), inibbles(wr, p + 48), iload64(q, qo + 64)), ipair(si, 1),
                   isum)
    isum = imuladd(DOT(izero(), inibbles(wr, p + 80), iload64(q, qo + 128)), ipair(si, 2),
                   isum)
    isum = imuladd(DOT(izero(), inibbles(wr, p + 112), iload64(q, qo + 192)),
                   ipair(si, 3), isum)
    # the mins: lanes 8-15 of -dmin * min[j] against xm's d * sum of q over sub-block j
    a = vfma(itof(si), vfma(vsplat2(0.0, -load_half(wr, p + 2)), xm, vzero()), a)
    return vfma(itof(isum), vsplat(load_half(wr, p)), a)


@njit(parallel=True, fastmath=True)  # not cached: DOT is chosen per run
def matvec_int(w, q, d, bsum, out):
    """out (rows,) = W @ x with x as quantize_q8k left it; four rows share each activation
    load. rows % 4 == 0. Each row's sum: per block d_x * (d * sum_j scale_j (q4 . q8)_j) and
    minus dmin * min_j * d_x * (sum of q8)_j, in float lanes."""
    nb = q.shape[0] // 256
    for g in prange(w.shape[0] // 4):
        r = 4 * g
        w0, w1, w2, w3 = w[r], w[r + 1], w[r + 2], w[r + 3]
        a0, a1, a2, a3 = vzero(), vzero(), vzero(), vzero()
        for b in range(nb):
            p = b * TYPE_SIZE
            xm = vload_f32(bsum, b * 16)
            db = vsplat(d[b])
            a0 = vfma(_row_block(w0, p, q, b * 256, xm, vzero()), db, a0)
            a1 = vfma(_row_block(w1, p, q, b * 256, xm, vzero()), db, a1)
            a2 = vfma(_row_block(w2, p, q, b * 256, xm, vzero()), db, a2)
            a3 = vfma(_row_block(w3, p, q, b * 256, xm, vzero()), db, a3)
        out[r], out[r + 1], out[r + 2], out[r + 3] = vsum(a0), vsum(a1), vsum(a2), vsum(a3)


def probe(rows: int, cols: int, rng) -> str:
    """One matrix: the errors (small shapes) or the times of both routes."""
    from gguf import GGMLQuantizationType as T
    from gguf_engine.kernels.quantized import block_rows, matvec_scratch
    from test_quant_kernels import float64_reference, random_weights

    from gguf_engine.bench import median_seconds

    data = random_weights(T.Q4_K, rows, cols, rng)
    tk, w = block_rows(data, T.Q4_K, (rows, cols))
    x = rng.standard_normal(cols).astype(np.float32)
    q = np.empty(cols, np.int8)  # (cols,) quantized activations
    d = np.empty(cols // 256, np.float32)  # (cols / 256,) their scales
    bsum = np.empty(cols // 16, np.float32)  # (cols / 16,) lanes of d * sums per 32
    out = np.empty(rows, np.float32)
    X, out_f = x[None].copy(), np.empty((1, rows), np.float32)
    scratch = matvec_scratch(tk, rows)

    def integer():
        quantize_q8k(x, q, d, bsum)
        matvec_int(w, q, d, bsum, out)

    def floating():
        tk.kernels.matvec_one(w, X, out_f, scratch)

    integer()
    floating()
    if rows * cols <= 1 << 16:
        ref_w = float64_reference(data, T.Q4_K, (rows, cols))
        exact = ref_w @ x.astype(np.float64)
        on_q = ref_w @ (q.reshape(-1, 256) * d[:, None].astype(np.float64)).reshape(-1)

        def rel(a, b):
            return np.abs(a - b).max() / np.abs(b).max()

        return (f"{rows} x {cols}, max |error| / max |W x|: integer route vs float64 on the "
                f"quantized x {rel(out, on_q):.1e}, vs exact {rel(out, exact):.1e}; float "
                f"route vs exact {rel(out_f[0], exact):.1e}")
    gb = w.nbytes / 1e9
    ti, tf = median_seconds(integer, 30), median_seconds(floating, 30)
    return (f"{rows} x {cols}: integer {ti * 1e3:.3f} ms ({gb / ti:.1f} GB/s), float "
            f"{tf * 1e3:.3f} ms ({gb / tf:.1f} GB/s): {tf / ti:.2f}x")


def main() -> None:
    rng = np.random.default_rng(0)
    for rows, cols in ((64, 512), (8192, 2048), (2048, 8192)):
        print(probe(rows, cols, rng))


if __name__ == "__main__":
    main()
