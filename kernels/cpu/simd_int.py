"""The integer route's vector layer: 64 weight bytes against 64 int8 activations per step.

A step's weights are `i8x64` values (64 bytes in one LLVM vector, one zmm where the host has
them), built by a type's `byte_program` from its block bytes; `idot` multiplies them with 64
quantized activations into sixteen int32 lanes, each the sum of four products (lane k holds
values 4k .. 4k + 3, so any sub-block of 4, 16 or 32 values owns whole lanes). The instruction
is chosen once, at import, from the host's features:

- "avx512vnni": vpdpbusd on 512-bit registers (Ice Lake, Zen 4 and later);
- "avx2": vpmaddubsw + vpmaddwd on two 256-bit halves, as llama.cpp does without VNNI;
- "none": the host has neither (or the target is not this CPU): only the exact route exists.

`GGUF_ENGINE_SIMD=avx2` (or `none`) forces a narrower choice, so the AVX2 code runs and is
tested on a VNNI machine. Integer sums are exact on both, so the two give the same bits.
"""

from __future__ import annotations

import os

from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic, models, register_model

from .simd import LANES, _contiguous_1d, _splat, _vector_pointer, f32x16

ISA_CHOICES = ("avx512vnni", "avx2", "none")


def _host_isa() -> str:
    if numba_config.CPU_NAME not in (None, "host"):
        return "none"  # compiled for another CPU (a portable cache): its features are unknown
    try:
        f = llvm_binding.get_host_cpu_features()
    except RuntimeError:
        return "none"
    if f.get("avx512vnni") and f.get("avx512bw"):
        return "avx512vnni"
    if f.get("avx2"):
        return "avx2"
    return "none"


def choose_isa(forced: str | None, host: str) -> str:
    """The route's instruction set: the host's, or a narrower one that `forced` names."""
    if not forced:
        return host
    forced = forced.strip().lower()
    if forced not in ISA_CHOICES:
        raise ValueError(f"GGUF_ENGINE_SIMD={forced!r}: expected one of {', '.join(ISA_CHOICES)}")
    if ISA_CHOICES.index(forced) < ISA_CHOICES.index(host):
        raise ValueError(f"GGUF_ENGINE_SIMD={forced!r}: this CPU offers at most {host!r}")
    return forced


HOST_ISA = _host_isa()
ISA = choose_isa(os.environ.get("GGUF_ENGINE_SIMD"), HOST_ISA)
# Signed weights against signed activations: with vpdpbusd (no int16 pair to overflow) w + 128
# as unsigned bytes, then 128 * sum(q) taken out, costs less than llama.cpp's sign trick (|w|
# against q with w's sign, per row and token); vpmaddubsw's pairs would saturate, so AVX2 keeps
# the trick. Both are exact: the same integers.
SIGN_BY_OFFSET = ISA == "avx512vnni"

_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_V64I8 = ir.VectorType(_I8, 64)
_V16I32 = ir.VectorType(_I32, LANES)
_VF32 = ir.VectorType(ir.FloatType(), LANES)


class I8x64(types.Type):
    def __init__(self):
        super().__init__(name="i8x64")


class I32x16(types.Type):
    def __init__(self):
        super().__init__(name="i32x16")


i8x64 = I8x64()
i32x16 = I32x16()


@register_model(I8x64)
class _I8x64Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V64I8)


@register_model(I32x16)
class _I32x16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V16I32)


class Bytes:
    """What a byte program builds with: loads from the block bytes and byte-lane arithmetic,
    in LLVM IR. Offsets are the program's integer arguments (LLVM values) plus constants."""

    def __init__(self, context, builder, sig, args):
        self.b = builder
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        self._data = arr.data
        self.args = [context.cast(builder, a, t, types.intp) for a, t in
                     zip(args[1:], sig.args[1:], strict=True)]

    def load(self, offset, n: int, plus: int = 0):
        """n bytes at element offset + plus."""
        i = self.b.add(offset, ir.Constant(offset.type, plus)) if plus else offset
        p = self.b.bitcast(self.b.gep(self._data, [i]), ir.PointerType(ir.VectorType(_I8, n)))
        return self.b.load(p, align=1)

    def load_u32(self, offset, plus: int = 0):
        """The little-endian 32-bit word at element offset + plus."""
        return self.b.bitcast(self.load(offset, 4, plus), _I32)

    def splat(self, value, n: int):
        """n byte lanes of value (a Python int or an LLVM integer)."""
        vty = ir.VectorType(_I8, n)
        if isinstance(value, int):
            return ir.Constant(vty, [value & 255] * n)
        v = self.b.trunc(value, _I8) if value.type != _I8 else value
        v = self.b.insert_element(ir.Constant(vty, ir.Undefined), v, ir.Constant(_I32, 0))
        return self.b.shuffle_vector(v, ir.Constant(vty, ir.Undefined),
                                     ir.Constant(ir.VectorType(_I32, n), [0] * n))

    def _n(self, v) -> int:
        return v.type.count

    def lo4(self, v):
        return self.b.and_(v, self.splat(15, self._n(v)))

    def hi4(self, v):
        return self.b.lshr(v, self.splat(4, self._n(v)))

    def shr(self, v, k):
        return self.b.lshr(v, self.splat(k, self._n(v)))

    def shl(self, v, k):
        return self.b.shl(v, self.splat(k, self._n(v)))

    def mask(self, v, m):
        return self.b.and_(v, self.splat(m, self._n(v)))

    def or_(self, a, c):
        return self.b.or_(a, c)

    def cat(self, *vs):
        """The vectors one after another (equal sizes, a power-of-two count)."""
        while len(vs) > 1:
            vs = [_join(self.b, vs[k], vs[k + 1]) for k in range(0, len(vs), 2)]
        return vs[0]

    def word_bits(self, word, first: int, n: int, up: int):
        """n byte lanes: lane k = bit (first + k) of the 32-bit word, shifted left by up."""
        bits = self.b.trunc(self.b.lshr(word, ir.Constant(_I32, first)), ir.IntType(n))
        bits = self.b.bitcast(bits, ir.VectorType(ir.IntType(1), n))
        return self.b.select(bits, self.splat(1 << up, n), self.splat(0, n))

    def table(self, v, values):
        """Lane k = values[v[k]] for 64 lanes of 4-bit indices and a 16-entry int8 table."""
        tab = ir.Constant(_V64I8, [int(x) & 255 for x in values] * 4)
        if ISA == "avx512vnni":
            return _call(self.b, "llvm.x86.avx512.pshuf.b.512", _V64I8, [tab, v])
        v32 = ir.VectorType(_I8, 32)
        halves = [_half(self.b, tab, k, 32) for k in (0, 1)]
        parts = [_call(self.b, "llvm.x86.avx2.pshuf.b", v32, [halves[0], _half(self.b, v, k, 32)])
                 for k in (0, 1)]
        return self.cat(*parts)


def _call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module,
                                        ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _half(builder, v, k: int, n: int):
    """Lanes k * n .. k * n + n - 1 of v."""
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n),
                                                    list(range(k * n, k * n + n))))


def byte_program(fn):
    """An intrinsic (arr, *offsets) -> i8x64 from fn(bytes: Bytes, *offsets as LLVM values),
    which returns the 64 byte lanes of one step."""

    def typer(typingctx, arr, offsets):
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.uint8
                and all(isinstance(t, types.Integer) for t in offsets)):
            return None

        def codegen(context, builder, sig, args):
            by = Bytes(context, builder, sig, args)
            return fn(by, *by.args)

        return i8x64(arr, *offsets), codegen

    # Numba's intrinsics take no *args: one fixed signature per program's offset count
    n = fn.__code__.co_argcount - 1
    names = ", ".join(f"o{k}" for k in range(n))
    scope = {"typer": typer}
    exec(f"def program(typingctx, arr, {names}):\n    return typer(typingctx, arr, ({names},))",
         scope)
    return intrinsic(scope["program"])


@intrinsic
def iload64(typingctx, arr, i):
    """The 64 int8 values arr[i:i + 64]."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1
            and arr.dtype in (types.int8, types.uint8)):
        return None

    def codegen(context, builder, sig, args):
        return Bytes(context, builder, sig, args).load(
            context.cast(builder, args[1], sig.args[1], types.intp), 64)

    return i8x64(arr, i), codegen


def _join(builder, lo, hi):
    """Two vectors of one type, lo's lanes then hi's, as one twice as long."""
    n = 2 * lo.type.count
    return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(_I32, n), list(range(n))))


def _byte_pairs(builder, u, s):
    """vpmaddubsw: the 32 int16 sums of adjacent products of u's unsigned and s's signed bytes,
    as sixteen int32 lanes (two int16 each; on AVX2 two 256-bit halves). A pair must fit int16:
    u below 128 or |u| * 127 * 2 < 32768."""
    if ISA == "avx512vnni":
        return builder.bitcast(_call(builder, "llvm.x86.avx512.pmaddubs.w.512",
                                     ir.VectorType(_I16, 32), [u, s]), _V16I32)
    v16i16 = ir.VectorType(_I16, 16)
    return _join(builder, *(builder.bitcast(_call(builder, "llvm.x86.avx2.pmadd.ub.sw", v16i16,
                                                  [_half(builder, u, k, 32),
                                                   _half(builder, s, k, 32)]),
                                            ir.VectorType(_I32, 8)) for k in (0, 1)))


# each int32 lane's two int16 halves 1 and 1: vpmaddwd with it adds a lane's pair
_ONE_PAIRS = ir.Constant(_V16I32, [0x00010001] * LANES)


def _dot_unsigned(builder, base, u, s):
    """base + sixteen int32 lanes, each the sum of four products of u's unsigned and s's signed
    bytes (on AVX2 `_byte_pairs`' bound applies)."""
    if ISA == "avx512vnni":  # vpdpbusd adds into its accumulator: base costs nothing
        return _call(builder, "llvm.x86.avx512.vpdpbusd.512", _V16I32,
                     [base, builder.bitcast(u, _V16I32), builder.bitcast(s, _V16I32)])
    return builder.add(base, _pairs_times(builder, _byte_pairs(builder, u, s), _ONE_PAIRS))


@intrinsic
def idot2(typingctx, base, u, s, w, t):
    """base + u . s + w . t (`idot` twice) for unsigned weight bytes below 64: on AVX2 the two
    vpmaddubsw's int16 pairs (each at most 2 * 63 * 127) add in int16 before one vpmaddwd."""
    if not (isinstance(base, I32x16) and all(isinstance(a, I8x64) for a in (u, s, w, t))):
        return None

    def codegen(context, builder, sig, args):
        base, u, s, w, t = args
        if ISA == "avx512vnni":
            return _dot_unsigned(builder, _dot_unsigned(builder, base, u, s), w, t)
        words = ir.VectorType(_I16, 32)
        pairs = builder.add(builder.bitcast(_byte_pairs(builder, u, s), words),
                            builder.bitcast(_byte_pairs(builder, w, t), words))
        return builder.add(base, _pairs_times(builder, builder.bitcast(pairs, _V16I32),
                                              _ONE_PAIRS))

    return i32x16(base, u, s, w, t), codegen


@intrinsic
def idot(typingctx, base, u, s):
    """base + unsigned weight bytes u (each below 128) . signed activations s, in int32 lanes
    of four."""
    if not (isinstance(base, I32x16) and isinstance(u, I8x64) and isinstance(s, I8x64)):
        return None

    def codegen(context, builder, sig, args):
        return _dot_unsigned(builder, *args)

    return i32x16(base, u, s), codegen


@intrinsic
def idot_signed(typingctx, base, w, s):
    """base + signed weight bytes w . signed activations s (|s| <= 127): |w| against s with
    w's sign, as llama.cpp does (a pair of products stays within int16 for the AVX2 path)."""
    if not (isinstance(base, I32x16) and isinstance(w, I8x64) and isinstance(s, I8x64)):
        return None

    def codegen(context, builder, sig, args):
        base, w, s = args
        zero = ir.Constant(_V64I8, [0] * 64)
        neg = builder.icmp_signed("<", w, zero)
        mag = builder.select(neg, builder.sub(zero, w), w)
        if ISA == "avx2":  # vpsignb: one instruction where the compare-and-negate took three
            v32 = ir.VectorType(_I8, 32)
            signed = _join(builder, *(_call(builder, "llvm.x86.avx2.psign.b", v32,
                                            [_half(builder, s, k, 32), _half(builder, w, k, 32)])
                                      for k in (0, 1)))
        else:
            signed = builder.select(neg, builder.sub(zero, s), s)
        return _dot_unsigned(builder, base, mag, signed)

    return i32x16(base, w, s), codegen


@intrinsic
def ibcast4(typingctx, arr, i):
    """The four int8 values arr[i:i + 4] in every int32 lane: one token's four activations
    against sixteen rows' four weights each (vpdpbusd takes it as a broadcast operand)."""
    if not _contiguous_1d(arr, types.int8):
        return None

    def codegen(context, builder, sig, args):
        p = builder.gep(context.make_array(sig.args[0])(context, builder, args[0]).data,
                        [context.cast(builder, args[1], sig.args[1], types.intp)])
        word = builder.load(builder.bitcast(p, ir.PointerType(_I32)), align=1)
        return builder.bitcast(_splat(builder, word, _V16I32), _V64I8)

    return i8x64(arr, i), codegen


@intrinsic
def isplat(typingctx, v):
    """Sixteen int32 lanes of v."""
    if not isinstance(v, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        return _splat(builder, context.cast(builder, args[0], sig.args[0], types.int32), _V16I32)

    return i32x16(v), codegen


@intrinsic
def iflip(typingctx, w):
    """Signed bytes w as unsigned w + 128 (the sign bit flipped)."""
    if not isinstance(w, I8x64):
        return None

    def codegen(context, builder, sig, args):
        return builder.xor(args[0], ir.Constant(_V64I8, [0x80] * 64))

    return i8x64(w), codegen


@intrinsic
def iload16(typingctx, arr, i):
    """The 16 int32 values arr[i:i + 16]."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.int32):
        return None

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        i = context.cast(builder, args[1], sig.args[1], types.intp)
        p = builder.bitcast(builder.gep(data, [i]), ir.PointerType(_V16I32))
        return builder.load(p, align=4)

    return i32x16(arr, i), codegen


@intrinsic
def izero(typingctx):
    """Sixteen int32 zeros: `idot`'s start where nothing is taken out."""

    def codegen(context, builder, sig, args):
        return ir.Constant(_V16I32, [0] * LANES)

    return i32x16(), codegen


@intrinsic
def itof(typingctx, a):
    """int32 lanes as float32 lanes."""
    if not isinstance(a, I32x16):
        return None

    def codegen(context, builder, sig, args):
        return builder.sitofp(args[0], _VF32)

    return f32x16(a), codegen


# (dtype, vector type, element) of what `istore` moves
_STORE_KINDS = {types.int8: (I8x64, _V64I8, _I8), types.int32: (I32x16, _V16I32, _I32),
               types.float32: (type(f32x16), _VF32, ir.FloatType())}


@intrinsic
def vquad_bits(typingctx, arr, i, shift, mask):
    """Lanes 4k .. 4k + 3 = (arr[i + k] >> shift) & mask for k < 4, as floats: four 4-bit
    scales of 16 values each (Q2_K)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.uint8):
        return None

    def codegen(context, builder, sig, args):
        by = Bytes(context, builder, sig, args)
        v = by.load(by.args[0], 4)
        v = builder.and_(builder.lshr(v, by.splat(by.args[1], 4)), by.splat(by.args[2], 4))
        quad = builder.shuffle_vector(v, v, ir.Constant(_V16I32, [k // 4 for k in range(16)]))
        return builder.uitofp(quad, _VF32)

    return f32x16(arr, i, shift, mask), codegen


def _gather_lanes(builder, v, j, pattern):
    """Lane k = v[j + pattern[k]], j an LLVM integer (a constant once inlined: one shuffle)."""
    out = ir.Constant(v.type, ir.Undefined)
    picked = {}
    for k, off in enumerate(pattern):
        if off not in picked:
            picked[off] = builder.extract_element(v, builder.add(j, ir.Constant(j.type, off)))
        out = builder.insert_element(out, picked[off], ir.Constant(_I32, k))
    return out


def _lane_picker(width: int, vtype):
    """An intrinsic (v, j): lane k = v[j + k // width], each of v's lanes from j on spread over
    `width` lanes (one scale over the lanes of its sub-block); v of type vtype."""

    @intrinsic
    def pick(typingctx, v, j):
        if not (isinstance(v, type(vtype)) and isinstance(j, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            j = context.cast(builder, args[1], sig.args[1], types.int32)
            return _gather_lanes(builder, args[0], j, [k // width for k in range(LANES)])

        return vtype(v, j), codegen

    return pick


# lanes 0-7 = v[j], 8-15 = v[j + 1]: two 32-value sub-blocks' scales
vpair = _lane_picker(8, f32x16)
# lanes 4k .. 4k + 3 = v[j + k]: four 16-value sub-blocks' scales
vquad_lanes = _lane_picker(4, f32x16)


@intrinsic
def vload_q3k_scales(typingctx, arr, i):
    """Q3_K's sixteen 6-bit scales, minus 32, from the 12 bytes at arr[i:], as floats:
    low 4 bits of scale k from byte k % 8 (>> 4 for k >= 8), high 2 bits from byte
    8 + k % 4 (>> 2 (k // 4)). Reads 16 bytes: the 4 after the scales are ignored."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.dtype == types.uint8
            and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        by = Bytes(context, builder, sig, args)
        raw = by.load(by.args[0], 16)
        v16 = ir.VectorType(_I8, 16)

        def pick(idx):
            return builder.shuffle_vector(raw, raw, ir.Constant(ir.VectorType(_I32, 16), idx))

        low = builder.and_(builder.lshr(pick([k % 8 for k in range(16)]),
                                        ir.Constant(v16, [0] * 8 + [4] * 8)),
                           ir.Constant(v16, [15] * 16))
        high = builder.and_(builder.lshr(pick([8 + k % 4 for k in range(16)]),
                                         ir.Constant(v16, [2 * (k // 4) for k in range(16)])),
                            ir.Constant(v16, [3] * 16))
        six = builder.or_(low, builder.shl(high, ir.Constant(v16, [4] * 16)))
        return builder.sitofp(builder.sub(six, ir.Constant(v16, [32] * 16)), _VF32)

    return f32x16(arr, i), codegen


@intrinsic
def istore(typingctx, arr, i, v):
    """arr[i:] = v: the 64 bytes of an int8 vector, or the 16 lanes of an int32 one."""
    if not (_contiguous_1d(arr, types.int8, types.int32) and isinstance(v, (I8x64, I32x16))
            and isinstance(v, _STORE_KINDS[arr.dtype][0])):
        return None
    _, ir_vec, elem = _STORE_KINDS[arr.dtype]

    def codegen(context, builder, sig, args):
        p = _vector_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[1], elem)
        builder.store(args[2], builder.bitcast(p, ir.PointerType(ir_vec)), align=1)
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


# The K-quants' integer scales (llama.cpp's order: a block's sum is an exact integer, then one
# float step per block). A lane's scale sits in both 16-bit halves of its int32, so vpmaddwd
# scales the two int16 pair sums vpmaddubsw leaves there.


def _words(builder, v):
    """Each int32 lane's low 16 bits in both of its halves."""
    low = builder.and_(v, ir.Constant(_V16I32, [0xFFFF] * LANES))
    return builder.or_(low, builder.shl(v, ir.Constant(_V16I32, [16] * LANES)))


def _pairs_times(builder, a, b):
    """vpmaddwd: each int32 lane = a.lo16 * b.lo16 + a.hi16 * b.hi16 (signed, exact)."""
    if ISA == "avx512vnni":
        v32i16 = ir.VectorType(_I16, 32)
        return _call(builder, "llvm.x86.avx512.pmaddw.d.512", _V16I32,
                     [builder.bitcast(a, v32i16), builder.bitcast(b, v32i16)])
    v16i16 = ir.VectorType(_I16, 16)
    return _join(builder, *(_call(builder, "llvm.x86.avx2.pmadd.wd", ir.VectorType(_I32, 8),
                                  [builder.bitcast(_half(builder, a, k, 8), v16i16),
                                   builder.bitcast(_half(builder, b, k, 8), v16i16)])
                            for k in (0, 1)))


@intrinsic
def ipairs_times(typingctx, a, b):
    """Each lane: a's two int16 halves times b's, summed (vpmaddwd)."""
    if not (isinstance(a, I32x16) and isinstance(b, I32x16)):
        return None

    def codegen(context, builder, sig, args):
        return _pairs_times(builder, *args)

    return i32x16(a, b), codegen


@intrinsic
def idot_scaled(typingctx, acc, u, s, scale):
    """acc + scale * (u . s) in int32 lanes of four: unsigned weight bytes u (below 128),
    signed activations s, each lane's scale in both of its halves (`iwiden_words`):
    vpmaddubsw's int16 pairs, then vpdpwssds (vpmaddwd and an add on AVX2), llama.cpp's
    integer order. Exact while a pair of products fits int16 (u * 127 * 2 < 32768). The
    saturating form because LLVM's machine combiner splits most plain vpdpwssd back into
    vpmaddwd + vpaddd (a shorter chain, a quarter more instructions) and leaves this one
    alone; a K-quant block's sums stay far below 2^31, so it never saturates."""
    if not (isinstance(acc, I32x16) and isinstance(u, I8x64) and isinstance(s, I8x64)
            and isinstance(scale, I32x16)):
        return None

    def codegen(context, builder, sig, args):
        acc, u, s, scale = args
        pairs = _byte_pairs(builder, u, s)
        if ISA == "avx512vnni":
            return _call(builder, "llvm.x86.avx512.vpdpwssds.512", _V16I32, [acc, pairs, scale])
        return builder.add(acc, _pairs_times(builder, pairs, scale))

    return i32x16(acc, u, s, scale), codegen


# Packed K-quant rows (Q4_K): sixteen rows a vector, lane r row r's, their nibbles, scales
# and mins widened from bytes.


def _byte_op(doc, fn):
    """An intrinsic (v) -> i8x64 applying fn(builder, v) to the 64 byte lanes."""

    @intrinsic
    def op(typingctx, v):
        if not isinstance(v, I8x64):
            return None

        def codegen(context, builder, sig, args):
            return fn(builder, args[0])

        return i8x64(v), codegen

    op.__doc__ = doc
    return op


# a packed byte's two 4-bit values (the high one: a 16-bit shift and a mask on x86)
ilow4 = _byte_op("Each byte & 15.", lambda b, v: b.and_(v, ir.Constant(_V64I8, [15] * 64)))
ihigh4 = _byte_op("Each byte >> 4.", lambda b, v: b.lshr(v, ir.Constant(_V64I8, [4] * 64)))



@intrinsic
def ibit4(typingctx, v, plane, up, down):
    """v | bit 4 of each byte of ((plane << up) >> down), shifted as sixteen-bit words: a
    packed 5-bit value's fifth bit, stored at bit k of a bit plane's byte, moved to bit 4 (up
    = 4 - k for k <= 4, down = k - 4 otherwise; a word's shift moves no other byte's bit
    there, as bit 4 of a byte comes from bit 4 - up + down of the same byte)."""
    if not (isinstance(v, I8x64) and isinstance(plane, I8x64) and isinstance(up, types.Integer)
            and isinstance(down, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        words = ir.VectorType(_I16, 32)
        w = builder.bitcast(args[1], words)
        for arg, ty, shift in ((args[2], sig.args[2], builder.shl),
                               (args[3], sig.args[3], builder.lshr)):
            k = builder.trunc(context.cast(builder, arg, ty, types.int32), _I16)
            k = builder.insert_element(ir.Constant(words, ir.Undefined), k, ir.Constant(_I32, 0))
            w = shift(w, builder.shuffle_vector(k, ir.Constant(words, ir.Undefined),
                                                ir.Constant(ir.VectorType(_I32, 32), [0] * 32)))
        bit = builder.and_(builder.bitcast(w, _V64I8), ir.Constant(_V64I8, [16] * 64))
        return builder.or_(args[0], bit)

    return i8x64(v, plane, up, down), codegen

def _widen(n: int, elem: ir.IntType, doc: str, then=None, signed=False):
    """An intrinsic (arr, i): the n bytes at arr[i:] of a uint8 array zero-extended (signed:
    sign-extended) to `elem` lanes (vpmovzx / vpmovsx from memory), as sixteen int32 lanes,
    then then(builder, v) if given."""

    @intrinsic
    def widen(typingctx, arr, i):
        if not (_contiguous_1d(arr, types.uint8) and isinstance(i, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            v = Bytes(context, builder, sig, args).load(
                context.cast(builder, args[1], sig.args[1], types.intp), n)
            extend = builder.sext if signed else builder.zext
            v = builder.bitcast(extend(v, ir.VectorType(elem, n)), _V16I32)
            return then(builder, v) if then else v

        return i32x16(arr, i), codegen

    widen.__doc__ = doc
    return widen


iwiden_words = _widen(16, _I32, "Sixteen bytes at arr[i:], each in both int16 halves of its "
                                "int32 lane (rows' scales for `ipairs_times`).", _words)
iwiden = _widen(16, _I32, "Sixteen bytes at arr[i:] as int32 lanes (rows' integer scales).")
iwiden_pairs = _widen(32, _I16, "Thirty-two bytes at arr[i:] as int16 halves, bytes 2k and "
                                "2k + 1 in lane k (rows' pairs of mins, for `ipairs_times`).")
iwiden_signed_pairs = _widen(32, _I16, "`iwiden_pairs` of signed bytes (rows' pairs of int8 "
                                       "scales).", signed=True)


@intrinsic
def idot16(typingctx, acc, u, s):
    """acc + unsigned bytes u . signed bytes s in int16 lanes of two (vpmaddubsw, vpaddw),
    held as int32 lanes: exact while every lane's sums fit int16 (the caller's bound)."""
    if not (isinstance(acc, I32x16) and isinstance(u, I8x64) and isinstance(s, I8x64)):
        return None

    def codegen(context, builder, sig, args):
        v32i16 = ir.VectorType(_I16, 32)
        pairs = builder.bitcast(_byte_pairs(builder, args[1], args[2]), v32i16)
        return builder.bitcast(builder.add(builder.bitcast(args[0], v32i16), pairs), _V16I32)

    return i32x16(acc, u, s), codegen


@intrinsic
def imul_add(typingctx, acc, a, b):
    """acc + a * b in int32 lanes (the low 32 bits: vpmulld)."""
    if not all(isinstance(t, I32x16) for t in (acc, a, b)):
        return None

    def codegen(context, builder, sig, args):
        return builder.add(args[0], builder.mul(args[1], args[2]))

    return i32x16(acc, a, b), codegen


@intrinsic
def iadd(typingctx, a, b):
    """a + b in int32 lanes."""
    if not (isinstance(a, I32x16) and isinstance(b, I32x16)):
        return None

    def codegen(context, builder, sig, args):
        return builder.add(args[0], args[1])

    return i32x16(a, b), codegen


@intrinsic
def round_half(typingctx, x):
    """float32 x rounded to the nearest IEEE half and back (a Q8_0 block's stored scale)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        v = context.cast(builder, args[0], sig.args[0], types.float32)
        return builder.fpext(builder.fptrunc(v, ir.HalfType()), ir.FloatType())

    return types.float32(x), codegen


__all__ = [
    "HOST_ISA",
    "ISA",
    "SIGN_BY_OFFSET",
    "byte_program",
    "choose_isa",
    "iadd",
    "ibcast4",
    "ibit4",
    "idot",
    "idot2",
    "idot16",
    "idot_scaled",
    "idot_signed",
    "iflip",
    "ihigh4",
    "ilow4",
    "imul_add",
    "iwiden",
    "iwiden_pairs",
    "iwiden_signed_pairs",
    "iwiden_words",
    "iload16",
    "iload64",
    "isplat",
    "ipairs_times",
    "istore",
    "itof",
    "izero",
    "round_half",
    "vload_q3k_scales",
    "vpair",
    "vquad_bits",
    "vquad_lanes",
]
