"""GGML type -> its kernels. Adding a type is one module in `cpu/ggml_types/` and one line here."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
from gguf import GGMLQuantizationType

from .cpu import quant_drivers
from .cpu.ggml_types import (
    bf16,
    f16,
    f32,
    iq4_nl,
    iq4_xs,
    q2_k,
    q3_k,
    q4_0,
    q4_1,
    q4_k,
    q5_0,
    q5_1,
    q5_k,
    q6_k,
    q8_0,
)

_MODULES = (
    f32,
    f16,
    bf16,
    q4_0,
    q4_1,
    q5_0,
    q5_1,
    q8_0,
    q2_k,
    q3_k,
    q4_k,
    q5_k,
    q6_k,
    iq4_nl,
    iq4_xs,
)


@dataclass(frozen=True)
class TypeKernels:
    ggml_type: GGMLQuantizationType
    block: int  # values per block
    type_size: int  # bytes per block
    view: np.dtype  # the dtype the kernels read rows as (uint8 for quantized blocks)
    # dequantize_rows(w, out), gather_rows(w, ids, out), matvec_tokens(w, X, out, scratch),
    # matvec_one (the same for X of one token, compiled apart), matvec_rows(w, x, out, scratch)
    kernels: SimpleNamespace
    # dequant_block(row, b, out, o): block b of a row into out[o : o + block], scalar code that
    # the CUDA kernels compile for the GPU too (kernels/cuda/quant.py)
    dequant_block: object

    def row_bytes(self, cols: int) -> int:
        return cols // self.block * self.type_size


_REGISTRY: dict[GGMLQuantizationType, TypeKernels] = {}
for _m in _MODULES:
    _REGISTRY[_m.GGML_TYPE] = TypeKernels(
        _m.GGML_TYPE, _m.BLOCK, _m.TYPE_SIZE, np.dtype(_m.VIEW), quant_drivers.build(_m),
        _m.dequant_block,
    )

SUPPORTED_TYPES = frozenset(_REGISTRY)


class UnsupportedTypeError(ValueError):
    """A GGML type this engine has no kernels for."""


def as_ggml_type(ggml_type) -> GGMLQuantizationType:
    try:
        return GGMLQuantizationType(int(ggml_type))
    except ValueError:
        raise UnsupportedTypeError(f"unknown GGML type {ggml_type!r}") from None


def kernels_for(ggml_type) -> TypeKernels:
    t = as_ggml_type(ggml_type)
    if t not in _REGISTRY:
        supported = ", ".join(sorted(x.name for x in SUPPORTED_TYPES))
        raise UnsupportedTypeError(f"GGML type {t.name} is not supported (supported: {supported})")
    return _REGISTRY[t]
