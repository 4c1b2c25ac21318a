"""Pure compute kernels (Numba), installed as `gguf_engine.kernels`.

Quantized weights stay in their GGML blocks: `matvec` (decode) and `matmul` (prefill) read the
block bytes directly; `dequantize` is bit-exact with gguf-py's `gguf.dequantize`. Every kernel can
write into a caller-owned `out` array.
"""

import sys

from .cpu import activations, attention, norms, rope
from .quantized import dequantize, matmul, matvec
from .registry import SUPPORTED_TYPES, UnsupportedTypeError

# `kernels.norms` is kernels.cpu.norms; registering the short names makes
# `import gguf_engine.kernels.norms` (and `from gguf_engine.kernels.norms import rmsnorm`) work
# as the attribute does.
for _module in (activations, attention, norms, rope):
    sys.modules[f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"] = _module

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
