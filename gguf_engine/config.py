"""Hyperparameters of a model, read from GGUF metadata with explicit keys and defaults."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from .architectures import ArchSpec, arch_spec
from .defaults import FALLBACK_CONTEXT_LENGTH
from .gguf_file import GGUFError, GGUFFile


@dataclass(frozen=True)
class Config:
    arch: str  # general.architecture as written in the file
    spec: ArchSpec  # what the architecture computes
    n_vocab: int
    n_embd: int
    n_layers: int
    n_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int  # key/query width per head
    n_rot: int  # leading dimensions of each head that RoPE rotates
    rope_base: float
    rope_base_swa: float  # RoPE base of sliding-window layers
    rope_scale: float  # positions are multiplied by this on global layers (1 / linear factor)
    norm_eps: float
    context_length: int  # what the model was trained for
    sliding_window: int  # 0: none
    swa_layers: tuple[bool, ...] = field(default=())  # (n_layers,) True where the window applies
    attn_scale: float = 0.0
    attn_softcap: float = 0.0  # scores s -> cap * tanh(s / cap) before the softmax; 0: off
    final_softcap: float = 0.0  # the same on the output logits

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> Config:
        """Read and validate every hyperparameter the engine uses, before anything is sized by
        one: counts positive and consistent with each other and with the tensors present."""
        arch = f.get_str("general.architecture")
        if arch is None:
            raise GGUFError(f"{f.path}: missing metadata key 'general.architecture'")
        spec = arch_spec(arch, f.path)
        p = arch + "."

        def count(key, default=None):
            if isinstance(f.get(p + key), np.ndarray):
                raise GGUFError(f"{f.path}: per-layer values of {p + key!r} are not supported")
            v = f.get_int(p + key, default, min_value=1)
            if v is None:
                raise GGUFError(f"{f.path}: missing metadata key {p + key!r}")
            return v

        n_embd = count("embedding_length")
        n_heads = count("attention.head_count")
        n_layers = count("block_count")
        blocks = _block_indices(f)
        # distinct non-negative numbers: they are 0..n_layers - 1 exactly when there are
        # n_layers of them and the largest is n_layers - 1 (no set sized by the file's count)
        if len(blocks) != n_layers or max(blocks, default=-1) != n_layers - 1:
            gap = min(set(range(len(blocks) + 1)) - blocks)
            raise GGUFError(f"{f.path}: {p}block_count is {n_layers} but the file has tensors "
                            f"for {len(blocks)} layers (" + (f"unexpected blk.{max(blocks)}"
                                                              if gap >= n_layers else
                                                              f"missing blk.{gap}") + ")")
        n_kv = count("attention.head_count_kv", n_heads)
        if n_heads % n_kv:
            raise GGUFError(f"{f.path}: {n_heads} heads are not a multiple of {n_kv} KV heads")
        if f.get(p + "attention.key_length") is None and n_embd % n_heads:
            raise GGUFError(f"{f.path}: embedding length {n_embd} is not a multiple of "
                            f"{n_heads} heads, and {p}attention.key_length is missing")
        head_dim = count("attention.key_length", n_embd // n_heads)
        value_dim = count("attention.value_length", head_dim)
        if value_dim != head_dim:
            raise GGUFError(f"{f.path}: value width {value_dim} differs from key width "
                            f"{head_dim}; not supported")
        n_rot = count("rope.dimension_count", head_dim)
        if n_rot % 2 or n_rot > head_dim:
            raise GGUFError(f"{f.path}: {p}rope.dimension_count = {n_rot} must be even and at "
                            f"most the head size {head_dim}")
        n_ff = count("feed_forward_length")
        emb = f.tensor("token_embd.weight")
        n_vocab = emb.shape[0]
        tokens = f.get_strings("tokenizer.ggml.tokens")
        if tokens is not None and len(tokens) != n_vocab:
            raise GGUFError(f"{f.path}: the vocabulary has {len(tokens)} tokens but "
                            f"token_embd.weight has {n_vocab} rows")
        window = f.get_int(p + "attention.sliding_window", 0, min_value=0)
        swa = tuple(spec.is_swa_layer(i) for i in range(n_layers)) if window else ()
        rope_scale = 1.0
        if f.get_str(p + "rope.scaling.type") == "linear":
            rope_scale = 1.0 / f.get_float(p + "rope.scaling.factor", 1.0, positive=True)
        base = f.get_float(p + "rope.freq_base", 10000.0, positive=True)
        attn_softcap = final_softcap = 0.0
        if spec.softcap:  # llama.cpp's defaults when the file does not say
            attn_softcap = f.get_float(p + "attn_logit_softcapping", 50.0, positive=True)
            final_softcap = f.get_float(p + "final_logit_softcapping", 30.0, positive=True)
        # Gemma 2 27B (46 layers) scales queries by 1/sqrt(n_embd / n_heads), not by the head
        # size (llama.cpp's f_attention_scale)
        scale_dim = n_embd / n_heads if arch == "gemma2" and n_layers == 46 else head_dim
        return cls(
            arch=arch, spec=spec, n_vocab=n_vocab, n_embd=n_embd, n_layers=n_layers, n_ff=n_ff,
            n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, n_rot=n_rot,
            rope_base=base, rope_base_swa=spec.rope_base_swa or base, rope_scale=rope_scale,
            norm_eps=f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-5, positive=True),
            context_length=count("context_length", FALLBACK_CONTEXT_LENGTH),
            sliding_window=window, swa_layers=swa,
            attn_scale=1.0 / math.sqrt(scale_dim),
            attn_softcap=attn_softcap, final_softcap=final_softcap,
        )


_BLOCK_NAME = re.compile(r"blk\.(\d+)\.")


def _block_indices(f: GGUFFile) -> set[int]:
    """The layer numbers that tensor names mention (blk.N.*)."""
    out = set()
    for name in f.tensors:
        m = _BLOCK_NAME.match(name)
        if m:
            out.add(int(m.group(1)))
    return out
