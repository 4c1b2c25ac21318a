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

# The route of the CPU's matrix products when the caller names none: the integer route (int8
# activations, llama.cpp's math) where the CPU has AVX2 or AVX-512 VNNI. Measured side by side
# (README, "Two routes"), it prefills and decodes both Gemma 3 270M and the 1B-class K-quant
# file faster than the exact route (float math on the dequantized weights), and is about as
# close to llama.cpp's own run on the file (Gemma: top token at 95.5% of positions against
# 96.4%, greedy prompts 6 of 7 against 5).
EXACT = False
