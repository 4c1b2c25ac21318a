import numpy as np
from gguf import GGMLQuantizationType
from numba import njit

from ..fp16 import load_f16
from ..nibbles import split_nibbles

GGML_TYPE = GGMLQuantizationType.Q6_K
BLOCK, TYPE_SIZE = 256, 210
VIEW = np.uint8
# block: ql[128] (low 4 bits) | qh[64] (high 2 bits) | scales[16] (int8, per 16 values) | d (f16)
# value e = h*128 + r:  low = (ql[h*64 + r % 64] >> 4 * (r // 64)) & 15,
#                      high = (qh[h*32 + r % 32] >> 2 * (r // 32)) & 3,
#                      (d * scales[e // 16]) * ((low | high << 4) - 32)


@njit(inline="always")
def dequant_block(w, b, out, o):
    p = b * TYPE_SIZE
    d = load_f16(w, p + 208)
    for h in range(2):
        for s in range(4):
            for half16 in range(2):
                dl = d * np.float32(np.int8(w[p + 192 + h * 8 + s * 2 + half16]))
                for k in range(16):
                    r = s * 32 + half16 * 16 + k
                    low = (np.int32(w[p + h * 64 + r % 64]) >> (4 * (r // 64))) & 15
                    high = (np.int32(w[p + 128 + h * 32 + r % 32]) >> (2 * s)) & 3
                    out[o + h * 128 + r] = dl * np.float32((low | (high << 4)) - 32)


@njit(inline="always")
def _q4(a, c, hb):
    """The four 6-bit values (minus 32) built from ql bytes a, c and the qh byte hb."""
    alo, ahi = split_nibbles(a)
    clo, chi = split_nibbles(c)
    t1 = np.floor(hb * np.float32(0.25))
    t2 = np.floor(t1 * np.float32(0.25))
    t3 = np.floor(t2 * np.float32(0.25))
    return (
        alo + np.float32(16.0) * (hb - np.float32(4.0) * t1) - np.float32(32.0),
        clo + np.float32(16.0) * (t1 - np.float32(4.0) * t2) - np.float32(32.0),
        ahi + np.float32(16.0) * (t2 - np.float32(4.0) * t3) - np.float32(32.0),
        chi + np.float32(16.0) * t3 - np.float32(32.0),
    )


@njit(inline="always")
def _row16(w, qlp, qhp, l, xa, xb, xc, xd):
    q0, q1, q2, q3 = _q4(
        np.float32(w[qlp + l]), np.float32(w[qlp + 32 + l]), np.float32(w[qhp + l])
    )
    return q0 * xa, q1 * xb, q2 * xc, q3 * xd


@njit(inline="always")
def _scaled(w, scp, half16, s0, s1, s2, s3):
    return (
        np.float32(np.int8(w[scp + half16])) * s0
        + np.float32(np.int8(w[scp + 2 + half16])) * s1
        + np.float32(np.int8(w[scp + 4 + half16])) * s2
        + np.float32(np.int8(w[scp + 6 + half16])) * s3
    )


@njit(inline="always")
def dot4_block(w0, w1, w2, w3, b, x, o, tmp):
    # Each (h, half16) step covers four sub-blocks of 16 (one per 32-value quarter of the half).
    p = b * TYPE_SIZE
    r0 = r1 = r2 = r3 = np.float32(0.0)
    for h in range(2):
        qlp = p + h * 64
        qhp = p + 128 + h * 32
        scp = p + 192 + h * 8
        xo = o + h * 128
        for half16 in range(2):
            a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = np.float32(0.0)
            c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = np.float32(0.0)
            for k in range(16):
                l = half16 * 16 + k
                xa, xb, xc, xd = x[xo + l], x[xo + 32 + l], x[xo + 64 + l], x[xo + 96 + l]
                e0, e1, e2, e3 = _row16(w0, qlp, qhp, l, xa, xb, xc, xd)
                a0 += e0
                a1 += e1
                a2 += e2
                a3 += e3
                e0, e1, e2, e3 = _row16(w1, qlp, qhp, l, xa, xb, xc, xd)
                b0 += e0
                b1 += e1
                b2 += e2
                b3 += e3
                e0, e1, e2, e3 = _row16(w2, qlp, qhp, l, xa, xb, xc, xd)
                c0 += e0
                c1 += e1
                c2 += e2
                c3 += e3
                e0, e1, e2, e3 = _row16(w3, qlp, qhp, l, xa, xb, xc, xd)
                d0 += e0
                d1 += e1
                d2 += e2
                d3 += e3
            r0 += _scaled(w0, scp, half16, a0, a1, a2, a3)
            r1 += _scaled(w1, scp, half16, b0, b1, b2, b3)
            r2 += _scaled(w2, scp, half16, c0, c1, c2, c3)
            r3 += _scaled(w3, scp, half16, d0, d1, d2, d3)
    return (
        r0 * load_f16(w0, p + 208),
        r1 * load_f16(w1, p + 208),
        r2 * load_f16(w2, p + 208),
        r3 * load_f16(w3, p + 208),
    )
