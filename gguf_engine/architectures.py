"""What each architecture computes, in a table keyed by `general.architecture`."""

from __future__ import annotations

from dataclasses import dataclass

from .gguf_file import GGUFError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    rope_neox: bool  # NEOX rotation (i, i + n/2) instead of GGML's adjacent pairs
    gelu: bool = False  # GELU-tanh gate instead of SiLU
    qkv_bias: bool = False  # attn_q/k/v.bias (optional tensors when False)
    fused_qkv: bool = False  # one attn_qkv matrix: [q; k; v]
    fused_gate_up: bool = False  # ffn_up holds [gate; up]
    qk_norm: bool = False  # RMSNorm per head on q and k
    post_norms: bool = False  # post_attention_norm and post_ffw_norm
    embd_scale_sqrt: bool = False  # embeddings multiplied by sqrt(n_embd)
    swa_period: int = 0  # layer i uses the sliding window when i % period < period - 1
    softcap: bool = False  # attention-score and final-logit soft-capping (Gemma 2)
    rope_base_swa: float = 0.0  # RoPE base of sliding-window layers (0: the file's base)

    def is_swa_layer(self, i: int) -> bool:
        return self.swa_period > 0 and i % self.swa_period < self.swa_period - 1


ARCHITECTURES = {
    "llama": ArchSpec("llama", rope_neox=False),
    "qwen2": ArchSpec("qwen2", rope_neox=True, qkv_bias=True),
    "phi3": ArchSpec("phi3", rope_neox=True, fused_qkv=True, fused_gate_up=True),
    "qwen3": ArchSpec("qwen3", rope_neox=True, qk_norm=True),
    "gemma2": ArchSpec("gemma2", rope_neox=True, gelu=True, post_norms=True,
                       embd_scale_sqrt=True, swa_period=2, softcap=True),
    "gemma3": ArchSpec("gemma3", rope_neox=True, gelu=True, qk_norm=True, post_norms=True,
                       embd_scale_sqrt=True, swa_period=6, rope_base_swa=10000.0),
}
ALIASES = {"mistral": "llama", "llama3": "llama"}


def arch_spec(arch: str, path=None) -> ArchSpec:
    name = ALIASES.get(arch, arch)
    if name not in ARCHITECTURES:
        where = f"{path}: " if path else ""
        raise GGUFError(f"{where}unsupported architecture {arch!r} (supported: "
                        f"{', '.join(sorted(ARCHITECTURES) + sorted(ALIASES))})")
    return ARCHITECTURES[name]
