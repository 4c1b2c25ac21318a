"""Sixteen float32 lanes as one LLVM vector value inside Numba code.

Numba's loop vectorizer reduces each block's sum to a scalar before the block scale can be
applied, and widens integer lanes to int64; both cost most of the SIMD width in the block dot
products. These intrinsics let a kernel keep a `<16 x float>` accumulator in registers across
blocks and unpack bytes straight into float lanes. LLVM lowers the generic vector IR to whatever
the host has (one zmm, two ymm or four xmm registers), so nothing here is x86-specific.

Loads read `LANES` consecutive elements of a 1-D C-contiguous array starting at element `i`
with no bounds check: callers validate shapes before entering compiled code.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 16
CACHE_LINE = 64  # bytes: what one `prefetch` brings in

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_VF32 = ir.VectorType(_F32, LANES)
_VI32 = ir.VectorType(_I32, LANES)
_I8 = ir.IntType(8)
_VI8 = ir.VectorType(_I8, LANES)


class F32x16(types.Type):
    def __init__(self):
        super().__init__(name=f"f32x{LANES}")


f32x16 = F32x16()


@register_model(F32x16)
class _F32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VF32)


def _is_vec(t) -> bool:
    return isinstance(t, F32x16)


def _contiguous_1d(arr, *dtypes) -> bool:
    return (
        isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and arr.dtype in dtypes
    )


def _vector_pointer(context, builder, arrty, arr, idx, idxty, elem: ir.Type):
    """Pointer to LANES elements of type `elem` at element `idx` of a 1-D array."""
    data = context.make_array(arrty)(context, builder, arr).data
    i = context.cast(builder, idx, idxty, types.intp)
    return builder.bitcast(builder.gep(data, [i]), ir.PointerType(ir.VectorType(elem, LANES)))


def _splat(builder, value, vty):
    v = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(
        v, ir.Constant(vty, ir.Undefined), ir.Constant(_VI32, [0] * LANES)
    )


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VF32, [0.0] * LANES)

    return f32x16(), codegen


@intrinsic
def vsplat(typingctx, s):
    """Every lane = the scalar s."""
    if not isinstance(s, (types.Float, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.float32), _VF32)

    return f32x16(s), codegen


def _binary(op):
    @intrinsic
    def fn(typingctx, a, b):
        if not (_is_vec(a) and _is_vec(b)):
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])

        return f32x16(a, b), codegen

    return fn


vadd = _binary("fadd")
vsub = _binary("fsub")
vmul = _binary("fmul")
vdiv = _binary("fdiv")


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, fused where the target has FMA."""
    if not (_is_vec(a) and _is_vec(b) and _is_vec(c)):
        return None

    def codegen(context, builder, sig, args):
        a, b, c = args
        return builder.fadd(builder.fmul(a, b, flags=("contract",)), c, flags=("contract",))

    return f32x16(a, b, c), codegen


def _tree_sum(builder, v, n: int):
    """The sum of v's n lanes, as a pairwise tree: the low half plus the high half, again."""
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), list(range(n))))
        hi = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n),
                                                      list(range(n, 2 * n))))
        v = builder.fadd(lo, hi)
    return builder.extract_element(v, ir.Constant(_I32, 0))


def _f32s(values):
    return ir.Constant(_VF32, [float(v) for v in values])


@intrinsic
def vexp(typingctx, x):
    """e^x lane by lane, ggml's `ggml_v_expf` polynomial (within about 2 ulp; x clamped to
    [-87.3, 88.3], where 2^n stays a normal float; NaN stays NaN): what softmax needs, 16 at
    a time instead of one libm call per score. Built from llvm.fma and llvm.roundeven, which
    a caller's fast-math flags cannot reassociate."""
    if not _is_vec(x):
        return None

    def codegen(context, builder, sig, args):
        def c(v):
            return _f32s([float.fromhex(v) if isinstance(v, str) else v] * LANES)

        def call(name, *vs):
            fn = cgutils.get_or_insert_function(builder.module,
                                                ir.FunctionType(_VF32, [_VF32] * len(vs)), name)
            return builder.call(fn, list(vs))

        def fma(a, b, d):
            return call("llvm.fma.v16f32", a, b, d)

        x = args[0]
        x = builder.select(builder.fcmp_ordered("<", x, c(-87.3)), c(-87.3), x)
        x = builder.select(builder.fcmp_ordered(">", x, c(88.3)), c(88.3), x)
        n = call("llvm.roundeven.v16f32", builder.fmul(x, c("0x1.715476p+0")))  # x / ln 2
        b = fma(n, c("-0x1.62e4p-1"), x)  # x - n ln 2, in two parts (Cody and Waite)
        b = fma(n, c("-0x1.7f7d1cp-20"), b)
        e = builder.shl(builder.fptosi(n, _VI32), _splat(builder, ir.Constant(_I32, 23), _VI32))
        k = builder.bitcast(builder.add(e, builder.bitcast(c(1.0), _VI32)), _VF32)  # 2^n
        u = builder.fmul(b, b)
        j = fma(fma(fma(c("0x1.0e4020p-7"), b, c("0x1.573e2ep-5")), u,
                    fma(c("0x1.555e66p-3"), b, c("0x1.fffdb6p-2"))),
                u, builder.fmul(c("0x1.ffffecp-1"), b))
        return fma(j, k, k)

    return f32x16(x), codegen


@intrinsic
def vsum(typingctx, a):
    """The sum of the lanes, as a pairwise tree (float32)."""
    if not _is_vec(a):
        return None

    def codegen(context, builder, sig, args):
        return _tree_sum(builder, args[0], LANES)

    return types.float32(a), codegen


@intrinsic
def vlane(typingctx, v, j):
    """Every lane = lane j of v (j constant after inlining: one shuffle)."""
    if not (_is_vec(v) and isinstance(j, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        j = _int_arg(context, builder, sig, args, 1, _I32)
        return _splat(builder, builder.extract_element(args[0], j), _VF32)

    return f32x16(v, j), codegen


@intrinsic
def vsplat2(typingctx, a, b):
    """Lanes 0 to LANES/2 - 1 = the scalar a, the rest = b."""
    if not all(isinstance(t, (types.Float, types.Integer)) for t in (a, b)):
        return None

    def codegen(context, builder, sig, args):
        lo, hi = (
            _splat(builder, context.cast(builder, args[k], sig.args[k], types.float32), _VF32)
            for k in (0, 1)
        )
        half = LANES // 2
        return builder.shuffle_vector(
            lo, hi, ir.Constant(_VI32, list(range(half)) + list(range(LANES + half, 2 * LANES)))
        )

    return f32x16(a, b), codegen


@intrinsic
def vload_f32(typingctx, arr, i):
    """arr[i : i + LANES] of a float32 array, or the LANES float32 at byte i of a uint8 one
    (a packed matrix's scales beside its bytes)."""
    if not _contiguous_1d(arr, types.float32, types.uint8):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], _F32)
        return builder.load(p, align=4)

    return f32x16(arr, i), codegen


@intrinsic
def vstore_f32(typingctx, arr, i, v):
    """arr[i : i + LANES] = v for a float32 array."""
    if not (_contiguous_1d(arr, types.float32) and _is_vec(v)):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], _F32)
        builder.store(args[2], p, align=4)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def vload_f16(typingctx, arr, i):
    """arr[i : i + LANES] of a uint16 array holding IEEE half bit patterns, exactly widened,
    or the LANES halves at byte i of a uint8 one (a packed matrix's scales)."""
    if not _contiguous_1d(arr, types.uint16, types.uint8):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(
            context, builder, sig.args[0], args[0], args[1], sig.args[1], ir.HalfType()
        )
        return builder.fpext(builder.load(p, align=2), _VF32)

    return f32x16(arr, i), codegen


@intrinsic
def vload_bf16(typingctx, arr, i):
    """arr[i : i + LANES] of a uint16 array holding bfloat16 bit patterns (the high half of a
    float32, so widening is a shift)."""
    if not _contiguous_1d(arr, types.uint16):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(
            context, builder, sig.args[0], args[0], args[1], sig.args[1], ir.IntType(16)
        )
        wide = builder.zext(builder.load(p, align=2), _VI32)
        return builder.bitcast(
            builder.shl(wide, _splat(builder, ir.Constant(_I32, 16), _VI32)), _VF32
        )

    return f32x16(arr, i), codegen


@intrinsic
def vload_i8(typingctx, arr, i):
    """Bytes arr[i : i + LANES] read as int8 values."""
    if not _contiguous_1d(arr, types.uint8, types.int8):
        return None

    def codegen(context, builder, sig, args):
        p = _vector_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], _I8)
        return builder.sitofp(builder.load(p, align=1), _VF32)

    return f32x16(arr, i), codegen


def _ints(*ts) -> bool:
    return all(isinstance(t, types.Integer) for t in ts)


def _int_arg(context, builder, sig, args, k, ty: ir.IntType):
    """Integer argument k, whatever its Numba integer type, as the LLVM integer type ty."""
    return builder.trunc(context.cast(builder, args[k], sig.args[k], types.int64), ty)


def _byte_field(context, builder, sig, args, k_index, k_shift, k_mask):
    """(arr[i : i + LANES] >> shift) & mask as LANES bytes, where arr is argument 0 (a uint8
    array) and i, shift, mask are the arguments at k_index, k_shift, k_mask."""
    p = _vector_pointer(
        context, builder, sig.args[0], args[0], args[k_index], sig.args[k_index], _I8
    )
    shift = _splat(builder, _int_arg(context, builder, sig, args, k_shift, _I8), _VI8)
    mask = _splat(builder, _int_arg(context, builder, sig, args, k_mask, _I8), _VI8)
    return builder.and_(builder.lshr(builder.load(p, align=1), shift), mask)


@intrinsic
def vload_bits(typingctx, arr, i, shift, mask):
    """(arr[i : i + LANES] >> shift) & mask of a uint8 array: nibbles and 2-bit fields."""
    if not (_contiguous_1d(arr, types.uint8) and _ints(i, shift, mask)):
        return None

    def codegen(context, builder, sig, args):
        return builder.uitofp(_byte_field(context, builder, sig, args, 1, 2, 3), _VF32)

    return f32x16(arr, i, shift, mask), codegen


@intrinsic
def vload_bits2(typingctx, arr, i, shift, mask, j, shift2, mask2, up):
    """((arr[i:i+LANES] >> shift) & mask) | (((arr[j:j+LANES] >> shift2) & mask2) << up) of a
    uint8 array: a value whose low and high bits live in two places (Q6_K), put together in
    byte lanes so only one conversion to float remains."""
    if not (_contiguous_1d(arr, types.uint8) and _ints(i, shift, mask, j, shift2, mask2, up)):
        return None

    def codegen(context, builder, sig, args):
        low = _byte_field(context, builder, sig, args, 1, 2, 3)
        high = _byte_field(context, builder, sig, args, 4, 5, 6)
        up = _splat(builder, _int_arg(context, builder, sig, args, 7, _I8), _VI8)
        return builder.uitofp(builder.or_(low, builder.shl(high, up)), _VF32)

    return f32x16(arr, i, shift, mask, j, shift2, mask2, up), codegen


@intrinsic
def vload_bits_word(typingctx, arr, i, shift, mask, word, first, up):
    """((arr[i:i+LANES] >> shift) & mask) | (bit (first + k) of the 32-bit word << up) for lane
    k, of a uint8 array: Q5 values, whose fifth bits are packed in one word per block."""
    if not (_contiguous_1d(arr, types.uint8) and _ints(i, shift, mask, word, first, up)):
        return None

    def codegen(context, builder, sig, args):
        low = builder.zext(_byte_field(context, builder, sig, args, 1, 2, 3), _VI32)
        word, first = (_int_arg(context, builder, sig, args, k, _I32) for k in (4, 5))
        # the LANES bits as a vector of i1: one mask register where the target has them
        bits = builder.bitcast(
            builder.trunc(builder.lshr(word, first), ir.IntType(LANES)),
            ir.VectorType(ir.IntType(1), LANES),
        )
        up = _splat(builder, _int_arg(context, builder, sig, args, 6, _I32), _VI32)
        one = builder.shl(ir.Constant(_VI32, [1] * LANES), up)
        high = builder.select(bits, one, ir.Constant(_VI32, [0] * LANES))
        return builder.uitofp(builder.or_(low, high), _VF32)

    return f32x16(arr, i, shift, mask, word, first, up), codegen


@intrinsic
def vload_k_scales(typingctx, arr, i):
    """The eight 6-bit scales (lanes 0-7) and eight 6-bit mins (lanes 8-15) that Q4_K and Q5_K
    pack into the 12 bytes at arr[i:] of a uint8 array, as floats (llama.cpp's
    get_scale_min_k4, all at once). Reads 16 bytes: the 4 after the scales are ignored."""
    if not (_contiguous_1d(arr, types.uint8) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.uitofp(_k_scale_bytes(context, builder, sig, args), _VF32)

    return f32x16(arr, i), codegen


def _k_scale_bytes(context, builder, sig, args):
    """vload_k_scales' sixteen 6-bit values as LANES bytes (arguments: the array, the offset)."""

    def const(values):
        return ir.Constant(_VI8, values)

    p = _vector_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], _I8)
    raw = builder.load(p, align=1)
    q = ir.Constant(_VI32, [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11])
    # lanes 4-7 and 12-15 take two high bits from bytes 0-3 and 4-7
    top = ir.Constant(_VI32, [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 4, 5, 6, 7])
    low = builder.shuffle_vector(raw, raw, q)
    low = builder.and_(builder.lshr(low, const([0] * 12 + [4] * 4)),
                       const(([63] * 4 + [15] * 4) * 2))
    high = builder.shuffle_vector(raw, raw, top)
    high = builder.and_(builder.shl(builder.lshr(high, const([6] * LANES)), const([4] * LANES)),
                        const(([0] * 4 + [0x30] * 4) * 2))
    return builder.or_(low, high)


@intrinsic
def load_half(typingctx, arr, i):
    """The little-endian IEEE half at byte offset i of a uint8 array, as float32 (exact)."""
    if not _contiguous_1d(arr, types.uint8):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        p = builder.bitcast(builder.gep(data, [i]), ir.PointerType(ir.HalfType()))
        return builder.fpext(builder.load(p, align=1), _F32)

    return types.float32(arr, i), codegen


@intrinsic
def half_bits(typingctx, x):
    """The IEEE half bit pattern nearest to float32 x (round to nearest even), as an int32."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float32)
        h = builder.bitcast(builder.fptrunc(v, ir.HalfType()), ir.IntType(16))
        return builder.zext(h, _I32)

    return types.int32(x), codegen


@intrinsic
def prefetch(typingctx, arr, r, i):
    """Ask the cache for element (r, i) of a 2-D array ahead of use. The hardware prefetcher
    alone leaves a streaming matvec at about 60% of the read bandwidth here."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None

    def codegen(context, builder, sig, args):
        a = context.make_array(sig.args[0])(context, builder, args[0])
        row = context.cast(builder, args[1], sig.args[1], types.intp)
        col = context.cast(builder, args[2], sig.args[2], types.intp)
        strides = cgutils.unpack_tuple(builder, a.strides, 2)
        offset = builder.add(builder.mul(row, strides[0]), builder.mul(col, strides[1]))
        i8p = ir.PointerType(ir.IntType(8))
        ptr = builder.gep(builder.bitcast(a.data, i8p), [offset])
        fnty = ir.FunctionType(ir.VoidType(), [i8p, _I32, _I32, _I32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read, into L2 (prefetcht1), data cache: into L1 (prefetcht0) the 1B file's Q4_K
        # matrices took 41.4 vs 36.0 ms at 8 tokens, 26.8 vs 23.1 at one (Xeon, alternated;
        # Gemma's Q5_0 / Q8_0 the same within the noise); a guess at why: a block's burst of
        # requests then holds fewer of the L1 fill buffers that the compute's loads use
        builder.call(fn, [ptr, ir.Constant(_I32, 0), ir.Constant(_I32, 2), ir.Constant(_I32, 1)])
        return context.get_dummy_value()

    return types.none(arr, r, i), codegen


@njit(inline="always")
def prefetch_span(arr, r, i, n):
    """`prefetch` every cache line of bytes i .. i + n - 1 of row r of a uint8 array: every
    CACHE_LINE-th byte and the last (a span need not start on a line)."""
    for k in range(i, i + n, CACHE_LINE):
        prefetch(arr, r, k)
    prefetch(arr, r, i + n - 1)


__all__ = [
    "CACHE_LINE",
    "LANES",
    "half_bits",
    "f32x16",
    "load_half",
    "prefetch",
    "prefetch_span",
    "vadd",
    "vdiv",
    "vexp",
    "vfma",
    "vload_bf16",
    "vload_f16",
    "vload_bits",
    "vload_bits2",
    "vload_bits_word",
    "vload_f32",
    "vload_i8",
    "vload_k_scales",
    "vlane",
    "vmul",
    "vsplat",
    "vsplat2",
    "vstore_f32",
    "vsub",
    "vsum",
    "vzero",
]
