"""The transformer on an NVIDIA GPU through numba.cuda: weights uploaded once in their GGML
blocks, KV cache and activations on the device, only the logits copied back."""

from __future__ import annotations

import math

import numpy as np

from .config import Config
from .gguf_file import GGUFFile
from .kernels.cpu import activations
from .kernels.cpu.rope import inv_frequencies
from .kv_cache import KVCache
from .model import PREFILL_CHUNK, Transformer, context_size
from .weights import Linear, Weights, load_weights


class CudaUnavailableError(RuntimeError):
    """device="cuda" without a usable GPU, driver or numba.cuda."""


def cuda_available() -> bool:
    try:
        from numba import cuda
    except ImportError:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


class _DeviceLinear:
    def __init__(self, lin: Linear, cuda):
        from .kernels.cuda.ops import quant_kernels

        quant_kernels(lin.tk.ggml_type)  # unsupported types fail at load, naming the type
        self.type = lin.tk.ggml_type
        self.w = cuda.to_device(np.ascontiguousarray(lin.w))  # (rows, units), as in the file
        self.rows, self.cols = lin.rows, lin.cols
        self.bias = None if lin.bias is None else cuda.to_device(lin.bias)  # (rows,)

    def __call__(self, X, out):
        from .kernels.cuda import ops

        ops.launch_matmul(self.type, self.w, X, out)
        if self.bias is not None:
            ops.launch_elementwise(ops.add_bias, out, self.bias)
        return out


class CudaTransformer(Transformer):
    """`model.Transformer` with its forward pass on the GPU; forward() returns host logits."""

    def __init__(self, f: GGUFFile, n_ctx: int | None = None, extend_context: bool = False):
        if not cuda_available():
            raise CudaUnavailableError(
                "device='cuda' needs an NVIDIA GPU with its driver and numba-cuda "
                "(pip install 'gguf-engine[cuda]'); none is usable here: use device='cpu'")
        from numba import cuda

        self.file = f
        self.config = cfg = Config.from_gguf(f)
        self.weights: Weights = load_weights(f, cfg)  # host views, kept for decode_bytes
        self.n_ctx = context_size(cfg, n_ctx, extend_context)
        self.cache = KVCache.__new__(KVCache)  # token bookkeeping only; tensors live on device
        self.cache.n_ctx, self.cache.tokens = self.n_ctx, []
        L, KVH, D = cfg.n_layers, cfg.n_kv_heads, cfg.head_dim
        self.k = cuda.to_device(np.zeros((L, KVH, self.n_ctx, D), np.float32))  # (L, KVH, n_ctx, D)
        self.v = cuda.to_device(np.zeros((L, KVH, self.n_ctx, D), np.float32))  # (L, KVH, n_ctx, D)
        w = self.weights
        up = lambda a: None if a is None else cuda.to_device(np.ascontiguousarray(a))  # noqa: E731
        lin = lambda m: None if m is None else _DeviceLinear(m, cuda)  # noqa: E731
        self.layers = [{
            "attn_norm": up(lw.attn_norm), "ffn_norm": up(lw.ffn_norm),
            "q_norm": up(lw.q_norm), "k_norm": up(lw.k_norm),
            "post_attn_norm": up(lw.post_attn_norm), "post_ffn_norm": up(lw.post_ffn_norm),
            "wq": lin(lw.wq), "wk": lin(lw.wk), "wv": lin(lw.wv), "wqkv": lin(lw.wqkv),
            "wo": lin(lw.wo), "w_gate": lin(lw.w_gate), "w_up": lin(lw.w_up),
            "w_down": lin(lw.w_down)} for lw in w.layers]
        self.token_embd = lin(w.token_embd)
        self.output = self.token_embd if w.output is w.token_embd else lin(w.output)
        self.output_norm = up(w.output_norm)
        self.gelu_table = up(activations.GELU_TABLE)  # (65536,)
        ff = w.rope_freqs
        self.inv_freq = up(inv_frequencies(cfg.n_rot, cfg.rope_base, ff) * cfg.rope_scale)
        self.inv_freq_swa = up(inv_frequencies(cfg.n_rot, cfg.rope_base_swa, ff))
        self.chunk = min(PREFILL_CHUNK, self.n_ctx)
        n, E, F = self.chunk, cfg.n_embd, cfg.n_ff
        zeros = lambda *s: cuda.to_device(np.zeros(s, np.float32))  # noqa: E731
        self.x, self.xn, self.proj = zeros(n, E), zeros(n, E), zeros(n, E)
        self.q = zeros(n, cfg.n_heads, D)  # (n, H, D)
        self.kk = zeros(n, KVH, D)  # (n, KVH, D)
        self.vv = zeros(n, KVH, D)  # (n, KVH, D)
        self.att = zeros(n, cfg.n_heads, D)  # (n, H, D)
        self.qkv = zeros(n, cfg.q_dim + 2 * cfg.kv_dim) if cfg.spec.fused_qkv else None
        self.gate_up = zeros(n, 2 * F)  # (n, 2F) [gate | up]
        self.act = zeros(n, F)  # (n, F)
        self.scores = zeros(n * cfg.n_heads, self.n_ctx)  # (n * H, n_ctx)
        self.logits = zeros(1, cfg.n_vocab)  # (1, V)
        self._cuda = cuda

    def _forward_chunk(self, tokens, pos0, all_logits, last):
        from .kernels.cuda import ops

        cuda, cfg = self._cuda, self.config
        n = len(tokens)
        H, KVH, D, E = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_embd
        x, xn, proj = self.x[:n], self.xn[:n], self.proj[:n]
        q, k, v, att = self.q[:n], self.kk[:n], self.vv[:n], self.att[:n]
        gate_up, act = self.gate_up[:n], self.act[:n]
        ids = cuda.to_device(tokens)
        positions = cuda.to_device(np.arange(pos0, pos0 + n, dtype=np.int64))
        ops.launch_embed(self.token_embd.type, self.token_embd.w, ids, x)
        if cfg.spec.embd_scale_sqrt:
            ops.launch_elementwise(ops.scale_into, x, np.float32(math.sqrt(E)))
        for i, lw in enumerate(self.layers):
            swa = bool(cfg.swa_layers) and cfg.swa_layers[i]
            ops.launch_rmsnorm(x, lw["attn_norm"], cfg.norm_eps, xn)
            if lw["wqkv"] is not None:
                qkv = self.qkv[:n]
                lw["wqkv"](xn, qkv)
                _split_qkv(cuda, qkv, q, k, v, cfg)
            else:
                lw["wq"](xn, q.reshape(n, H * D))
                lw["wk"](xn, k.reshape(n, KVH * D))
                lw["wv"](xn, v.reshape(n, KVH * D))
            if lw["q_norm"] is not None:
                ops.launch_rmsnorm(q.reshape(n * H, D), lw["q_norm"], cfg.norm_eps,
                                   q.reshape(n * H, D))
                ops.launch_rmsnorm(k.reshape(n * KVH, D), lw["k_norm"], cfg.norm_eps,
                                   k.reshape(n * KVH, D))
            inv = self.inv_freq_swa if swa else self.inv_freq
            ops.launch_rope(q, positions, inv, cfg.spec.rope_neox)
            ops.launch_rope(k, positions, inv, cfg.spec.rope_neox)
            ops.store_kv[max(1, math.ceil(n * KVH * D / ops.THREADS)), ops.THREADS](
                k, v, self.k[i], self.v[i], pos0)
            ops.launch_attention(q, self.k[i], self.v[i], pos0,
                                 cfg.sliding_window if swa else 0, cfg.attn_scale,
                                 self.scores, att)
            lw["wo"](att.reshape(n, H * D), proj)
            if lw["post_attn_norm"] is not None:
                ops.launch_rmsnorm(proj, lw["post_attn_norm"], cfg.norm_eps, proj)
            ops.launch_elementwise(ops.add_into, x, proj)
            ops.launch_rmsnorm(x, lw["ffn_norm"], cfg.norm_eps, xn)
            if lw["w_gate"] is not None:
                lw["w_gate"](xn, gate_up[:, : cfg.n_ff])
                lw["w_up"](xn, gate_up[:, cfg.n_ff :])
            else:
                lw["w_up"](xn, gate_up)
            g, b = ops.grid2(n, cfg.n_ff)
            ops.gated[g, b](gate_up, cfg.n_ff, act, cfg.spec.gelu, self.gelu_table)
            lw["w_down"](act, proj)
            if lw["post_ffn_norm"] is not None:
                ops.launch_rmsnorm(proj, lw["post_ffn_norm"], cfg.norm_eps, proj)
            ops.launch_elementwise(ops.add_into, x, proj)
        if all_logits:
            ops.launch_rmsnorm(x, self.output_norm, cfg.norm_eps, xn)
            out = cuda.device_array((n, cfg.n_vocab), np.float32)
            self.output(xn, out)
            return out.copy_to_host()
        if not last:
            return None
        ops.launch_rmsnorm(x[n - 1 : n], self.output_norm, cfg.norm_eps, xn[:1])
        self.output(xn[:1], self.logits)
        return self.logits.copy_to_host()


def _split_qkv(cuda, qkv, q, k, v, cfg):
    """Columns [q | k | v] of a fused projection into the per-head buffers (device copies)."""
    n = qkv.shape[0]
    q.reshape(n, cfg.q_dim).copy_to_device(qkv[:, : cfg.q_dim])
    k.reshape(n, cfg.kv_dim).copy_to_device(qkv[:, cfg.q_dim : cfg.q_dim + cfg.kv_dim])
    v.reshape(n, cfg.kv_dim).copy_to_device(qkv[:, cfg.q_dim + cfg.kv_dim :])
