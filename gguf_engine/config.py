"""Hyperparameters of a model, read from GGUF metadata with explicit keys and defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .architectures import ArchSpec, arch_spec
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

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> Config:
        arch = f.architecture
        spec = arch_spec(arch, f.path)
        p = arch + "."

        def need(key):
            v = f.get(p + key)
            if v is None:
                raise GGUFError(f"{f.path}: missing metadata key {p + key!r}")
            return v

        n_embd = int(need("embedding_length"))
        n_heads = int(need("attention.head_count"))
        n_layers = int(need("block_count"))
        head_dim = int(f.get(p + "attention.key_length", n_embd // n_heads))
        n_kv = f.get(p + "attention.head_count_kv", n_heads)
        if not isinstance(n_kv, int):
            raise GGUFError(f"{f.path}: per-layer head counts are not supported")
        ff = need("feed_forward_length")
        if not isinstance(ff, int):
            raise GGUFError(f"{f.path}: per-layer feed-forward lengths are not supported")
        tokens = f.get("tokenizer.ggml.tokens")
        emb = f.tensor("token_embd.weight")
        n_vocab = emb.shape[0]
        if tokens is not None and len(tokens) != n_vocab:
            raise GGUFError(f"{f.path}: the vocabulary has {len(tokens)} tokens but "
                            f"token_embd.weight has {n_vocab} rows")
        window = int(f.get(p + "attention.sliding_window", 0) or 0)
        swa = tuple(spec.is_swa_layer(i) for i in range(n_layers)) if window else ()
        rope_scale = 1.0
        if f.get(p + "rope.scaling.type") == "linear":
            rope_scale = 1.0 / float(f.get(p + "rope.scaling.factor", 1.0))
        base = float(f.get(p + "rope.freq_base", 10000.0))
        cfg = cls(
            arch=arch, spec=spec, n_vocab=n_vocab, n_embd=n_embd, n_layers=n_layers, n_ff=int(ff),
            n_heads=n_heads, n_kv_heads=int(n_kv), head_dim=head_dim,
            n_rot=int(f.get(p + "rope.dimension_count", head_dim)),
            rope_base=base, rope_base_swa=spec.rope_base_swa or base, rope_scale=rope_scale,
            norm_eps=float(f.get(p + "attention.layer_norm_rms_epsilon", 1e-5)),
            context_length=int(f.get(p + "context_length", 4096)),
            sliding_window=window, swa_layers=swa,
            attn_scale=1.0 / math.sqrt(head_dim),
        )
        if n_heads % cfg.n_kv_heads:
            raise GGUFError(f"{f.path}: {n_heads} heads are not a multiple of {n_kv} KV heads")
        return cfg
