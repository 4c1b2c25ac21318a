"""Defaults that more than one layer uses (the Python API, the command line, the model), kept
here once. Importing this module costs nothing: the command line reads it before Numba loads."""

# Context size when the caller gives none: min(this, the model's trained context length).
DEFAULT_N_CTX = 4096
# The trained context length assumed for a file that does not give one.
FALLBACK_CONTEXT_LENGTH = 4096

# Sampling, as llama.cpp's CLI defaults them.
SAMPLING = {
    "max_tokens": 256,
    "temperature": 0.8,  # 0: greedy
    "top_k": 40,  # 0: every token
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.0,  # 1: off
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "penalty_last_n": 64,  # how many recent tokens the penalties look at
}

# The route of the CPU's matrix products when the caller names none. Exact (float math on the
# dequantized weights) for now: the integer route (int8 activations, llama.cpp's math) decodes
# the 1B-class K-quant files 1.4x faster but prefills at two thirds of the exact route's speed
# (no integer GEMM tiles yet), and on Gemma 3 270M it is no closer to llama.cpp's own logits.
EXACT = True
