"""gguf-engine: a quantized LLM inference engine for GGUF files, with Numba kernels."""

from __future__ import annotations

import os
from pathlib import Path

# OpenBLAS (NumPy's BLAS, used for prefill tiles) keeps its idle threads spinning for about 2^28
# cycles after each call; on a machine with few cores they take the cores Numba's next parallel
# region needs (pp512 here: 125 tok/s spinning, 295 with the timeout at 2^4 cycles). It is read
# when OpenBLAS loads, so it only takes effect if gguf_engine is imported before NumPy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"

# Installed, the top-level folder kernels/ becomes gguf_engine.kernels (see pyproject.toml). Run
# from a checkout without an editable install (python -m pytest puts the checkout first on
# sys.path), the same name must reach that folder too.
_here = Path(__file__).resolve().parent
if not (_here / "kernels").is_dir() and (_here.parent / "kernels" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # noqa: F821 (the package's own __path__)
__all__ = ["GenerationResult", "Model", "Stream", "load", "__version__"]

DEVICES = ("cpu", "cuda", "auto")


def load(model=None, *, n_ctx: int | None = None, n_threads: int | None = None,
         device: str = "cpu", hf_repo: str | None = None, hf_file: str | None = None,
         extend_context: bool = False, n_seq: int = 1, exact: bool | None = None):
    """Load a GGUF model and return a `Model`. `model` is a local path or `hf://owner/repo/file`
    (or pass hf_repo= and a filename glob as hf_file=); None loads the embedded default model,
    Gemma 3 270M Q4_K_M (the 'gemma' extra). n_ctx above the model's trained context length is
    capped to it unless extend_context=True. n_threads (default: all cores) is this model's
    own: applied around its calls and restored after, never set for the process. n_seq
    sequence slots (each of n_ctx tokens) let `generate_batch` and the server decode that many
    sequences together. exact picks the CPU's route: True, float math on the dequantized
    weights; False, the integer route, which quantizes each matrix's input to int8 blocks and
    multiplies in integers, as llama.cpp does (faster, about as close to llama.cpp's tokens); None,
    the default (defaults.EXACT: the integer route where the CPU has AVX2 or AVX-512 VNNI, else
    exact). CUDA runs the exact route."""
    from .kv_cache import slot_count
    from .model import Model

    if device not in DEVICES:
        raise ValueError(f"invalid device {device!r} (choose from {', '.join(DEVICES)})")
    if device == "auto":  # only here, and for "cuda", is numba.cuda imported
        from .backend_cuda import cuda_available

        device = "cuda" if cuda_available() else "cpu"
    slot_count(n_seq)  # checked before the file is read or downloaded
    if n_threads is not None and device == "cpu":
        from .backend_cpu import thread_count

        thread_count(n_threads)  # checked before the file is read or downloaded
    return Model(model_path(model, hf_repo, hf_file), n_ctx=n_ctx, device=device,
                 extend_context=extend_context, n_threads=n_threads, n_seq=n_seq, exact=exact)


def model_path(model=None, hf_repo: str | None = None, hf_file: str | None = None):
    """The local path of a model as `load` takes it: a path, an hf:// reference or hf_repo=
    and hf_file= (downloaded or found in the cache), or None for the embedded default."""
    from .default_model import default_model_path
    from .hub import resolve_model

    if model is None and not (hf_repo or hf_file):
        return default_model_path()
    return resolve_model(model, hf_repo, hf_file)


def __getattr__(name):
    if name in ("Model", "GenerationResult", "Stream"):
        from . import model

        return getattr(model, name)
    raise AttributeError(name)
