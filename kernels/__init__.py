"""Pure compute kernels (Numba), installed as `gguf_engine.kernels`.

Quantized weights stay in their GGML blocks: `matvec` (decode) and `matmul` (prefill) read the
block bytes directly; `dequantize` is bit-exact with gguf-py's `gguf.dequantize`. Every kernel can
write into a caller-owned `out` array.
"""

from .cpu import activations, attention, norms, rope
from .quantized import dequantize, matmul, matvec
from .registry import SUPPORTED_TYPES, UnsupportedTypeError

__all__ = [
    "SUPPORTED_TYPES",
    "UnsupportedTypeError",
    "activations",
    "attention",
    "dequantize",
    "matmul",
    "matvec",
    "norms",
    "rope",
]
