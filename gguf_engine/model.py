"""The transformer: prefill and decode over preallocated buffers and a KV cache."""

from __future__ import annotations

import math
import warnings

import numba
import numpy as np

from .config import Config
from .defaults import DEFAULT_N_CTX
from .gguf_file import GGUFFile
from .kernels.cpu import activations, attention, norms, rope
from .kv_cache import KVCache, available_memory
from .weights import MATVEC_MAX_TOKENS, Weights, load_weights

PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds the run buffers


class ContextOverflowError(ValueError):
    """More tokens than the context holds."""


class NonFiniteLogitsError(RuntimeError):
    """The network produced NaN or infinite logits (corrupt weights, usually)."""


class ContextMemoryError(ValueError):
    """The KV cache of the requested context does not fit the memory available."""


def context_size(cfg: Config, n_ctx: int | None, extend: bool = False) -> int:
    """n_ctx, or min(DEFAULT_N_CTX, the model's context length) when None. More than the model
    was trained for is capped to that (with a warning) unless `extend` asks for it."""
    if n_ctx is None:
        return min(DEFAULT_N_CTX, cfg.context_length)
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
        raise ValueError(f"invalid n_ctx={n_ctx!r}: must be a positive integer")
    if n_ctx > cfg.context_length and not extend:
        warnings.warn(f"n_ctx={n_ctx} is more than the {cfg.context_length} tokens the model was "
                      f"trained for: using {cfg.context_length} (extend_context=True, or "
                      "--extend-context, keeps the larger context)", stacklevel=3)
        return cfg.context_length
    return n_ctx


def check_cache_memory(cfg: Config, n_ctx: int) -> None:
    """A clear error instead of an allocation that fails or swaps: the KV cache must fit in
    the memory available now."""
    need = KVCache.bytes_for(cfg.n_layers, cfg.n_kv_heads, n_ctx, cfg.head_dim)
    have = available_memory()
    if have is not None and need > have:
        raise ContextMemoryError(
            f"a context of {n_ctx} tokens needs {need / 2**30:.1f} GiB of KV cache, but only "
            f"{have / 2**30:.1f} GiB of memory is available: lower n_ctx (-c)")


class RunState:
    """Activations for up to `n` tokens at once, allocated once."""

    def __init__(self, cfg: Config, n: int, n_ctx: int):
        E, F = cfg.n_embd, cfg.n_ff
        self.n = n
        self.x = np.zeros((n, E), np.float32)  # (n, E) residual stream
        self.xn = np.zeros((n, E), np.float32)  # (n, E) normalized input of a sublayer
        self.qkv = np.zeros((n, cfg.q_dim + 2 * cfg.kv_dim), np.float32)  # (n, q_dim + 2 kv_dim)
        self.att = np.zeros((n, cfg.q_dim), np.float32)  # (n, q_dim) attention output
        self.proj = np.zeros((n, E), np.float32)  # (n, E) sublayer output
        self.gate_up = np.zeros((n, 2 * F), np.float32)  # (n, 2F) [gate | up]
        self.act = np.zeros((n, F), np.float32)  # (n, F)
        self.positions = np.zeros(n, np.int64)  # (n,)
        self.steps = np.arange(n, dtype=np.int64)  # (n,) 0..n-1, to make positions from
        self.ids = np.zeros(n, np.int64)  # (n,) token ids of the chunk
        self.q = np.zeros((n, cfg.n_heads, cfg.head_dim), np.float32)  # (n, H, D) rotated q
        self.k = np.zeros((n, cfg.n_kv_heads, cfg.head_dim), np.float32)  # (n, KVH, D) rotated k
        # (2, n, n_rot // 2) RoPE cosines and sines of the chunk's positions: global layers'
        # frequencies at [0], sliding-window layers' at [1]
        self.rope_cos = np.zeros((2, n, cfg.n_rot // 2), np.float32)
        self.rope_sin = np.zeros((2, n, cfg.n_rot // 2), np.float32)
        self.scores = np.zeros((4 * numba.config.NUMBA_NUM_THREADS, n_ctx), np.float32)
        self.logits = np.zeros((1, cfg.n_vocab), np.float32)  # (1, V) last position's logits
        self.scratch = np.zeros(1 << 19, np.float32)  # dequantized weight tiles for prefill


class Transformer:
    """The network of a GGUF file with its own context (KV cache): logits from tokens."""

    def __init__(self, f: GGUFFile, n_ctx: int | None = None, extend_context: bool = False):
        self.file = f
        self.config = cfg = Config.from_gguf(f)
        self.weights: Weights = load_weights(f, cfg)
        self.n_ctx = context_size(cfg, n_ctx, extend_context)
        check_cache_memory(cfg, self.n_ctx)
        self.cache = KVCache(cfg.n_layers, cfg.n_kv_heads, self.n_ctx, cfg.head_dim)
        self.chunk = min(PREFILL_CHUNK, self.n_ctx)  # tokens per forward pass at most
        self.state = RunState(cfg, self.chunk, self.n_ctx)
        ff = self.weights.rope_freqs
        # (n_rot // 2,) float64 per layer kind: RoPE frequencies of global and sliding layers
        self._inv_freq = rope.inv_frequencies(cfg.n_rot, cfg.rope_base, ff) * cfg.rope_scale
        self._inv_freq_swa = rope.inv_frequencies(cfg.n_rot, cfg.rope_base_swa, ff)
        self._embd_scale = np.float32(math.sqrt(cfg.n_embd)) if cfg.spec.embd_scale_sqrt else None

    # -- the forward pass ---------------------------------------------------------------
    def forward(self, tokens, pos0: int, all_logits: bool = False) -> np.ndarray:
        """Run `tokens` at positions pos0.. (their KV goes into the cache) and return logits:
        (n, V) for every token with all_logits, else (1, V) for the last one (a view of a buffer
        that the next call overwrites)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        if n == 0:
            raise ValueError("no tokens to evaluate")
        if pos0 + n > self.n_ctx:
            raise ContextOverflowError(f"{pos0 + n} tokens do not fit the context of "
                                       f"{self.n_ctx} (n_ctx)")
        if tokens.min() < 0 or tokens.max() >= self.config.n_vocab:
            raise ValueError(f"token ids must be in 0..{self.config.n_vocab - 1}")
        del self.cache.tokens[pos0:]
        chunks = []
        threads = numba.get_num_threads()
        for c0 in range(0, n, self.chunk):
            chunk = tokens[c0 : c0 + self.chunk]
            last = c0 + len(chunk) == n
            # A batch spends most of its time in BLAS, whose threads use every core; Numba's
            # worker threads spinning between its kernels would take cores from it (pp512
            # here: 380 tok/s that way, 550 with Numba's share of the batch on one thread).
            numba.set_num_threads(1 if len(chunk) > MATVEC_MAX_TOKENS else threads)
            try:
                out = self._forward_chunk(chunk, pos0 + c0, all_logits, last)
            finally:
                numba.set_num_threads(threads)
            if all_logits:
                chunks.append(out)
            self.cache.tokens.extend(int(t) for t in chunk)
        logits = np.concatenate(chunks) if all_logits else out
        # one sum (tens of microseconds for 262k logits) is NaN or infinite if any value is:
        # sampling would otherwise pick token 0 at temperature 0 and say nothing
        if not np.isfinite(logits.sum(dtype=np.float64)):
            del self.cache.tokens[pos0:]
            raise NonFiniteLogitsError(
                f"{self.file.path}: the model produced non-finite logits (NaN or infinity) at "
                f"positions {pos0}..{pos0 + n - 1}; its weights may be corrupt")
        return logits

    def _forward_chunk(self, tokens, pos0, all_logits, last):
        cfg, w, s, cache = self.config, self.weights, self.state, self.cache
        n = len(tokens)
        H, KVH, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        x, xn, proj = s.x[:n], s.xn[:n], s.proj[:n]
        qkv, att, gate_up, act = s.qkv[:n], s.att[:n], s.gate_up[:n], s.act[:n]
        q = qkv[:, : cfg.q_dim].reshape(n, H, D)
        k = qkv[:, cfg.q_dim : cfg.q_dim + cfg.kv_dim].reshape(n, KVH, D)
        v = qkv[:, cfg.q_dim + cfg.kv_dim :].reshape(n, KVH, D)
        qc, kc = s.q[:n], s.k[:n]  # contiguous copies that RoPE rotates in place
        positions = s.positions[:n]
        np.add(s.steps[:n], pos0, out=positions)
        ids = s.ids[:n]
        ids[:] = tokens
        kinds = 2 if cfg.swa_layers else 1
        for kind, inv in enumerate((self._inv_freq, self._inv_freq_swa)[:kinds]):
            rope.rope_tables_kernel(positions, inv, s.rope_cos[kind, :n], s.rope_sin[kind, :n])
        w.token_embd.rows_of(ids, x)
        if self._embd_scale is not None:
            x *= self._embd_scale
        for i, lw in enumerate(w.layers):
            swa = bool(cfg.swa_layers) and cfg.swa_layers[i]
            norms.rmsnorm_kernel(x, lw.attn_norm, cfg.norm_eps, xn)
            if lw.wqkv is not None:
                lw.wqkv(xn, qkv, s.scratch)
            else:
                self._into(lw.wq, xn, qkv, 0, cfg.q_dim)
                self._into(lw.wk, xn, qkv, cfg.q_dim, cfg.kv_dim)
                self._into(lw.wv, xn, qkv, cfg.q_dim + cfg.kv_dim, cfg.kv_dim)
            np.copyto(qc, q)
            np.copyto(kc, k)
            if lw.q_norm is not None:
                qf, kf = qc.reshape(n * H, D), kc.reshape(n * KVH, D)
                norms.rmsnorm_kernel(qf, lw.q_norm, cfg.norm_eps, qf)
                norms.rmsnorm_kernel(kf, lw.k_norm, cfg.norm_eps, kf)
            cos, sin = s.rope_cos[int(swa), :n], s.rope_sin[int(swa), :n]
            rope.rope_rotate_kernel(qc, cos, sin, cfg.spec.rope_neox)
            rope.rope_rotate_kernel(kc, cos, sin, cfg.spec.rope_neox)
            cache.store(i, pos0, kc, v)
            attn = att.reshape(n, H, D)
            window = cfg.sliding_window if swa else 0
            if n > MATVEC_MAX_TOKENS:
                attention.attention_matmul_unchecked(qc, cache.k[i], cache.v[i], pos0, window,
                                           np.float32(cfg.attn_scale), attn)
            else:
                attention.attention_kernel(qc, cache.k[i], cache.v[i], pos0, window,
                                    np.float32(cfg.attn_scale), s.scores, attn)
            lw.wo(att, proj, s.scratch)
            if lw.post_attn_norm is not None:
                norms.rmsnorm_kernel(proj, lw.post_attn_norm, cfg.norm_eps, proj)
            x += proj
            norms.rmsnorm_kernel(x, lw.ffn_norm, cfg.norm_eps, xn)
            if lw.w_gate is not None:
                self._into(lw.w_gate, xn, gate_up, 0, cfg.n_ff)
                self._into(lw.w_up, xn, gate_up, cfg.n_ff, cfg.n_ff)
            else:
                lw.w_up(xn, gate_up, s.scratch)
            activations.gated_kernel(gate_up, act, cfg.spec.gelu)
            lw.w_down(act, proj, s.scratch)
            if lw.post_ffn_norm is not None:
                norms.rmsnorm_kernel(proj, lw.post_ffn_norm, cfg.norm_eps, proj)
            x += proj
        if all_logits:
            norms.rmsnorm_kernel(x, w.output_norm, cfg.norm_eps, xn)
            out = np.empty((n, cfg.n_vocab), np.float32)
            return w.output(xn, out, s.scratch)
        if not last:
            return None
        norms.rmsnorm_kernel(x[n - 1 : n], w.output_norm, cfg.norm_eps, xn[:1])
        return w.output(xn[:1], s.logits, s.scratch)

    def _into(self, lin, X, buf, c0, width):
        """lin(X) into columns c0:c0 + width of buf (n, *)."""
        lin(X, buf[:, c0 : c0 + width], self.state.scratch)
