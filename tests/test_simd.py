"""The LLVM vector intrinsics the matvec kernels are built from, against NumPy."""

import numpy as np
from gguf_engine.kernels.cpu.simd import (
    LANES,
    half_bits,
    load_half,
    vadd,
    vexp,
    vfma,
    vlane,
    vload_bf16,
    vload_bits,
    vload_bits2,
    vload_bits_word,
    vload_f16,
    vload_f32,
    vload_i8,
    vload_k_scales,
    vmul,
    vsplat,
    vsplat2,
    vstore_f32,
    vsub,
    vsum,
    vzero,
)
from gguf_engine.kernels.cpu.simd_int import (
    iadd,
    ibit4,
    idot2,
    idot_scaled,
    ihigh4,
    iload16,
    iload64,
    ilow4,
    imul_add,
    ipairs_times,
    istore,
    iwiden,
    iwiden_pairs,
    iwiden_signed_pairs,
    iwiden_words,
)
from numba import njit

rng = np.random.default_rng(7)


@njit
def _loads(u8, f, h16, bf, out):
    vstore_f32(out, 0, vload_i8(u8, 3))
    vstore_f32(out, 16, vload_bits(u8, 5, 4, 15))
    vstore_f32(out, 32, vload_bits(u8, 5, 2, 3))
    vstore_f32(out, 48, vload_f16(h16, 7))
    vstore_f32(out, 64, vload_bf16(bf, 2))
    vstore_f32(out, 80, vfma(vload_f32(f, 1), vload_f32(f, 17), vsplat(2.0)))
    vstore_f32(out, 96, vload_bits_word(u8, 30, 4, 15, np.uint32(0xA5F00F5A), 16, 4))
    vstore_f32(out, 112, vsub(vadd(vmul(vload_f32(f, 0), vsplat(3)), vzero()), vload_f32(f, 40)))
    vstore_f32(out, 128, vload_bits2(u8, 1, 4, 15, 20, 6, 3, 4))
    return vsum(vload_f32(f, 10)), load_half(u8, 9)


def test_vector_loads_and_arithmetic():
    assert LANES == 16
    u8 = rng.integers(0, 256, 64, dtype=np.uint8)
    f = rng.standard_normal(64).astype(np.float32)
    h = rng.standard_normal(64).astype(np.float16)
    bf = (f.view(np.uint32) >> 16).astype(np.uint16)
    out = np.zeros(144, np.float32)
    total, half = _loads(u8, f, h.view(np.uint16), bf, out)
    np.testing.assert_array_equal(out[:16], u8[3:19].view(np.int8))
    np.testing.assert_array_equal(out[16:32], (u8[5:21] >> 4) & 15)
    np.testing.assert_array_equal(out[32:48], (u8[5:21] >> 2) & 3)
    np.testing.assert_array_equal(out[48:64], h[7:23].astype(np.float32))
    np.testing.assert_array_equal(out[64:80], (bf[2:18].astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_allclose(out[80:96], f[1:17] * f[17:33] + 2, rtol=1e-6, atol=1e-6)
    bits = np.array([(0xA5F00F5A >> (16 + k)) & 1 for k in range(16)])
    np.testing.assert_array_equal(out[96:112], (u8[30:46] >> 4) | (bits << 4))
    np.testing.assert_allclose(out[112:128], f[0:16] * 3 - f[40:56], rtol=1e-6)
    np.testing.assert_array_equal(
        out[128:144], ((u8[1:17] >> 4) & 15) | (((u8[20:36] >> 6) & 3) << 4)
    )
    np.testing.assert_allclose(total, f[10:26].astype(np.float64).sum(), rtol=1e-6)
    assert half == u8[9:11].view(np.float16)[0]


@njit
def _half_bits_all(x, out):
    for i in range(x.shape[0]):
        out[i] = half_bits(x[i])


def test_half_bits_rounds_to_nearest_even():
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)].astype(np.float32)
    # every half, the midpoints between neighbours (ties) and random values
    mid = (np.sort(finite)[:-1].astype(np.float64) + np.sort(finite)[1:]) / 2
    x = np.concatenate(
        [finite, mid.astype(np.float32), rng.standard_normal(10000).astype(np.float32) * 100]
    )
    out = np.empty(x.shape, np.int32)
    _half_bits_all(x, out)
    np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))


@njit
def _lanes(u8, f, out):
    v = vload_f32(f, 0)
    vstore_f32(out, 0, vlane(v, 5))
    vstore_f32(out, 16, vsplat2(1.5, -2))
    vstore_f32(out, 32, vload_k_scales(u8, 3))
    for j in range(LANES):  # a lane index only known at run time
        vstore_f32(out, 48 + 16 * j, vlane(v, j))


def _scale_min_k4(q, j):
    """llama.cpp's get_scale_min_k4, transcribed."""
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def test_lane_splats_and_k_quant_scales():
    f = rng.standard_normal(16).astype(np.float32)
    out = np.zeros(48 + 16 * LANES, np.float32)
    for trial in range(20):
        u8 = rng.integers(0, 256, 24, dtype=np.uint8)
        if trial == 0:
            u8[:] = 255
        _lanes(u8, f, out)
        q = u8[3:15].astype(np.int64)
        pairs = [_scale_min_k4(q, j) for j in range(8)]
        want = [s for s, _ in pairs] + [m for _, m in pairs]
        np.testing.assert_array_equal(out[32:48], want)
    np.testing.assert_array_equal(out[:16], np.full(16, f[5]))
    np.testing.assert_array_equal(out[16:32], [1.5] * 8 + [-2.0] * 8)
    np.testing.assert_array_equal(out[48:].reshape(LANES, 16), np.repeat(f[:, None], 16, 1))


@njit(fastmath=True)  # as attention calls it: its rounding must survive reassociation
def _exps(x, out):
    for i in range(0, x.shape[0], LANES):
        vstore_f32(out, i, vexp(vload_f32(x, i)))


def test_vexp_against_float64():
    x = np.concatenate([np.linspace(-87.0, 88.0, 4000 * LANES),
                        rng.uniform(-20, 0, 63 * LANES)]).astype(np.float32)
    out = np.empty_like(x)
    _exps(x, out)
    ref = np.exp(x.astype(np.float64))
    assert (np.abs(out - ref) / ref).max() < 3e-7  # about 2 ulp
    edges = np.array([0.0, -0.0, np.nan, -np.inf, -1e4, 1e4] + [1.0] * 10, np.float32)
    _exps(edges, out[:LANES])
    assert out[0] == 1.0 and out[1] == 1.0 and np.isnan(out[2])
    # clamped where 2^n leaves the normal floats: underflow to the smallest, not 0 or garbage
    assert 0 < out[3] == out[4] < 2e-38 and 1e38 < out[5] < np.inf


@njit
def _packed_ops(u8, i8, a, b, out, nib):
    """What the packed Q4_K kernel is built from: nibbles, widened bytes, int32 arithmetic."""
    v = iload64(u8, 3)
    istore(nib, 0, ilow4(v))
    istore(nib, 64, ihigh4(v))
    istore(out, 0, iwiden(u8, 5))
    istore(out, 16, iwiden_pairs(u8, 7))
    istore(out, 32, iwiden_words(u8, 9))
    istore(out, 48, imul_add(iload16(a, 0), iload16(a, 16), iload16(b, 0)))
    istore(out, 64, iadd(iload16(a, 0), iload16(b, 0)))
    istore(out, 80, ipairs_times(iwiden_pairs(u8, 7), iload16(b, 16)))
    istore(out, 96, idot_scaled(iload16(a, 0), ilow4(v), iload64(i8, 0), iwiden_words(u8, 9)))
    istore(out, 112, ipairs_times(iwiden_signed_pairs(u8, 7), iload16(b, 16)))


def test_packed_row_intrinsics_against_numpy():
    u8 = rng.integers(0, 256, 80, dtype=np.uint8)
    i8 = rng.integers(-127, 128, 64).astype(np.int8)
    a = rng.integers(-2**20, 2**20, 32).astype(np.int32)
    b = np.concatenate([rng.integers(-2**10, 2**10, 16),
                        rng.integers(-4000, 4000, 32).astype(np.int16).view(np.int32)])
    b = b.astype(np.int32)
    out = np.zeros(128, np.int32)
    nib = np.zeros(128, np.int8)
    _packed_ops(u8, i8, a, b, out, nib)
    v = u8[3:67]
    np.testing.assert_array_equal(nib[:64], v & 15)
    np.testing.assert_array_equal(nib[64:], v >> 4)
    np.testing.assert_array_equal(out[:16], u8[5:21])
    pairs = u8[7:39].astype(np.int64).reshape(16, 2)  # lane k: bytes 2k (low half), 2k + 1
    np.testing.assert_array_equal(out[16:32], (pairs[:, 0] | pairs[:, 1] << 16).astype(np.int32))
    both_halves = (u8[9:25].astype(np.int64) * 0x10001).astype(np.int32)
    np.testing.assert_array_equal(out[32:48], both_halves)
    np.testing.assert_array_equal(out[48:64], a[:16] + a[16:] * b[:16])
    np.testing.assert_array_equal(out[64:80], a[:16] + b[:16])
    words = b[16:].view(np.int16).astype(np.int64).reshape(16, 2)
    np.testing.assert_array_equal(out[80:96], (pairs * words).sum(1))
    dots = ((v & 15).astype(np.int64) * i8).reshape(16, 4).sum(1) * u8[9:25]
    np.testing.assert_array_equal(out[96:112], a[:16] + dots)
    signed = u8[7:39].view(np.int8).astype(np.int64).reshape(16, 2)  # Q6_K's int8 scales
    np.testing.assert_array_equal(out[112:], (signed * words).sum(1))


@njit
def _fifth_bits(u8, plane, out):
    """Bit k of each plane byte moved to bit 4 of the nibble's byte, k = 0..7, shifts as the
    packed 5-bit kernels give them (a count known only at run time)."""
    v = iload64(u8, 0)
    p = iload64(plane, 0)
    for k in range(u8.shape[0] // 64 * 8):
        up, down = (4 - k, 0) if k <= 4 else (0, k - 4)
        istore(out, 64 * k, ibit4(ilow4(v), p, up, down))


def test_fifth_bit_against_numpy():
    u8 = rng.integers(0, 256, 64, dtype=np.uint8)
    plane = rng.integers(0, 256, 64, dtype=np.uint8)
    out = np.zeros(8 * 64, np.int8)
    _fifth_bits(u8, plane, out)
    for k in range(8):
        want = (u8 & 15) | (((plane >> k) & 1) << 4)
        np.testing.assert_array_equal(out[64 * k:64 * (k + 1)], want.astype(np.int8))


@njit
def _dot_pairs(base, u, s, w, t, out):
    istore(out, 0, idot2(iload16(base, 0), iload64(u, 0), iload64(s, 0), iload64(w, 0),
                         iload64(t, 0)))


def test_idot2_against_numpy():
    """Two dot products of values below 64 (the packed nibble types): exact, also at the
    bound where both int16 pairs are at their largest."""
    base = rng.integers(-2**20, 2**20, 16).astype(np.int32)
    out = np.zeros(16, np.int32)
    for lo, hi in ((0, 64), (63, 64)):
        u, w = (rng.integers(lo, hi, 64).astype(np.int8) for _ in range(2))
        s, t = (rng.integers(-127, 128, 64).astype(np.int8) for _ in range(2))
        if lo:
            s[:] = t[:] = 127
        _dot_pairs(base, u, s, w, t, out)
        want = base + (u.astype(np.int64) * s + w.astype(np.int64) * t).reshape(16, 4).sum(1)
        np.testing.assert_array_equal(out, want)
