"""gguf-engine: a quantized LLM inference engine for GGUF files, with Numba kernels."""

__version__ = "0.1.0"
