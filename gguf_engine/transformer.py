"""The transformer: prefill and decode over preallocated buffers and a KV cache."""

from __future__ import annotations

import math
import warnings

import numpy as np

from .backend_cpu import CPUBackend
from .config import Config
from .defaults import DEFAULT_N_CTX
from .gguf_file import GGUFFile
from .kernels.cpu import rope
from .kernels.cpu.reductions import all_finite
from .kv_cache import KVCache, slot_count
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


def check_cache_memory(cfg: Config, n_ctx: int, n_seq: int, have: int | None) -> None:
    """A clear error instead of an allocation that fails or swaps: the KV cache must fit in
    the memory available now (`have` bytes on the backend's device; None: unknown)."""
    need = KVCache.bytes_for(cfg.n_layers, cfg.n_kv_heads, n_ctx, cfg.head_dim, n_seq)
    if have is not None and need > have:
        what = f"{n_seq} sequences of {n_ctx} tokens" if n_seq > 1 else f"{n_ctx} tokens"
        raise ContextMemoryError(
            f"a context of {what} needs {need / 2**30:.1f} GiB of KV cache, but only "
            f"{have / 2**30:.1f} GiB of memory is available: lower n_ctx (-c)"
            + (" or n_seq" if n_seq > 1 else ""))


class RunState:
    """Activations for up to `n` tokens at once, allocated once on the backend's device."""

    def __init__(self, cfg: Config, n: int, zeros):
        E, F, H, KVH, D = cfg.n_embd, cfg.n_ff, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.x = zeros((n, E))  # (n, E) residual stream
        self.xn = zeros((n, E))  # (n, E) normalized input of a sublayer
        self.qkv = zeros((n, cfg.q_dim + 2 * cfg.kv_dim)) if cfg.spec.fused_qkv else None
        self.q = zeros((n, H, D))  # (n, H, D) queries, rotated in place
        self.k = zeros((n, KVH, D))  # (n, KVH, D) keys, rotated in place
        self.v = zeros((n, KVH, D))  # (n, KVH, D)
        self.att = zeros((n, H, D))  # (n, H, D) attention output
        self.proj = zeros((n, E))  # (n, E) sublayer output
        self.gate_up = zeros((n, 2 * F))  # (n, 2F) [gate | up]
        self.act = zeros((n, F))  # (n, F)
        # (min(n, MATVEC_MAX_TOKENS), V) logits of a decode step's rows, or of a prefill's last
        self.logits = zeros((min(n, MATVEC_MAX_TOKENS), cfg.n_vocab))


class Transformer:
    """The network of a GGUF file with its own context (KV cache): logits from tokens. One
    forward pass for every device; `backend` (backend_cpu.CPUBackend by default, or
    backend_cuda.CudaBackend) owns the device's memory and kernels."""

    def __init__(self, f: GGUFFile, n_ctx: int | None = None, extend_context: bool = False,
                 backend=None, n_seq: int = 1):
        self.file = f
        self.config = cfg = Config.from_gguf(f)
        self.backend = be = backend or CPUBackend()
        slot_count(n_seq)
        host_weights = load_weights(f, cfg)
        self.n_ctx = context_size(cfg, n_ctx, extend_context)
        check_cache_memory(cfg, self.n_ctx, n_seq, be.free_memory())
        self.weights: Weights = be.weights(host_weights)
        self.cache = KVCache(cfg.n_layers, cfg.n_kv_heads, self.n_ctx, cfg.head_dim, be.zeros,
                             n_seq)
        self.chunk = min(PREFILL_CHUNK, self.n_ctx)  # tokens per forward pass at most
        self.state = RunState(cfg, self.chunk, be.zeros)
        self.decode_rows = self.state.logits.shape[0]  # sequences one decode step takes at most
        ff = host_weights.rope_freqs
        # (2, n_rot // 2) float64: RoPE frequencies of global and sliding-window layers
        inv_freq = np.stack([rope.inv_frequencies(cfg.n_rot, cfg.rope_base, ff) * cfg.rope_scale,
                             rope.inv_frequencies(cfg.n_rot, cfg.rope_base_swa, ff)])
        be.prepare(cfg, self.chunk, self.n_ctx, inv_freq)
        self._embd_scale = np.float32(math.sqrt(cfg.n_embd)) if cfg.spec.embd_scale_sqrt else None

    # -- the forward pass ---------------------------------------------------------------
    def forward(self, tokens, pos0: int, all_logits: bool = False, seq: int = 0) -> np.ndarray:
        """Run `tokens` of sequence slot `seq` at positions pos0.. (their KV goes into its
        cache), in chunks of `self.chunk` from pos0, and return logits: (n, V) for every token
        with all_logits, else (1, V) for the last one (a view of a buffer that the next call
        overwrites). This is prefill; `decode` runs one token of several sequences."""
        tokens = self._check(tokens)
        n = len(tokens)
        self._check_seq(seq)
        if pos0 + n > self.n_ctx:
            raise ContextOverflowError(f"{pos0 + n} tokens do not fit the context of "
                                       f"{self.n_ctx} (n_ctx)")
        cache = self.cache
        cache.truncate(seq, pos0)
        chunks = []
        for c0 in range(0, n, self.chunk):
            chunk = tokens[c0 : c0 + self.chunk]
            p0 = pos0 + c0
            with self.backend.running(len(chunk)):
                out = self._run(chunk, np.arange(p0, p0 + len(chunk)), np.full(len(chunk), seq),
                                "all" if all_logits else "last" if c0 + len(chunk) == n
                                else None)
            if all_logits:
                chunks.append(out)
            cache.tokens[seq].extend(int(t) for t in chunk)
            if p0 == cache.reusable[seq] and p0 % self.chunk == 0 and len(chunk) == self.chunk:
                cache.reusable[seq] = p0 + len(chunk)
        logits = np.concatenate(chunks) if all_logits else out
        self._check_finite(logits, seq, pos0, pos0 + n - 1)
        return logits

    def decode(self, tokens, seqs) -> np.ndarray:
        """One next token for each of several sequences: tokens[r] goes to slot seqs[r] at the
        position after what it holds. Returns (m, V) logits, row r for tokens[r] (a view of a
        buffer that the next call overwrites). Each row is computed exactly as it would be
        alone: the rows share the reading of the weights, never a sum."""
        tokens = self._check(tokens)
        seqs = [self._check_seq(s) for s in seqs]
        if len(seqs) != len(tokens) or len(set(seqs)) != len(seqs):
            raise ValueError("decode takes one token for each of distinct sequences")
        positions = np.array([len(self.cache.tokens[s]) for s in seqs], np.int64)
        if positions.max() >= self.n_ctx:
            raise ContextOverflowError(f"a sequence is full: {self.n_ctx} tokens (n_ctx)")
        if len(tokens) > self.state.logits.shape[0]:
            raise ValueError(f"decode takes at most {self.state.logits.shape[0]} sequences "
                             "at once")
        with self.backend.running(len(tokens)):
            logits = self._run(tokens, positions, np.array(seqs, np.int64), "all_rows")
        for s, t in zip(seqs, tokens, strict=True):
            self.cache.tokens[s].append(int(t))
        self._check_finite(logits, None, int(positions.min()), int(positions.max()))
        return logits

    def _check(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or len(tokens) == 0:
            raise ValueError("no tokens to evaluate")
        if tokens.min() < 0 or tokens.max() >= self.config.n_vocab:
            raise ValueError(f"token ids must be in 0..{self.config.n_vocab - 1}")
        return tokens

    def _check_seq(self, seq) -> int:
        if isinstance(seq, bool) or not isinstance(seq, (int, np.integer)) or not (
                0 <= seq < self.cache.n_seq):
            raise ValueError(f"sequence slot {seq!r} is not one of 0..{self.cache.n_seq - 1}")
        return int(seq)

    def _check_finite(self, logits, seq, first, last) -> None:
        # sampling would otherwise pick token 0 at temperature 0 and say nothing. A Numba
        # kernel, not a BLAS product with ones: with NumPy imported before gguf_engine,
        # OpenBLAS's threads spun after it through the step's kernels (a batched step of
        # eight Gemma sequences: 46-57 ms against 21-24)
        finite = all_finite(logits.reshape(-1, logits.shape[-1]))
        if not finite:
            for s in ([seq] if seq is not None else range(self.cache.n_seq)):
                self.cache.truncate(s, min(first, len(self.cache.tokens[s])))
            raise NonFiniteLogitsError(
                f"{self.file.path}: the model produced non-finite logits (NaN or infinity) at "
                f"positions {first}..{last}; its weights may be corrupt")

    def _run(self, tokens, positions, seqs, logits):
        """The network over rows: token tokens[r] of slot seqs[r] at positions[r] (a prefill
        chunk is one slot's consecutive positions). logits: "all" (a new (n, V) array),
        "all_rows" or "last" (rows of the state's buffer), None (no logits)."""
        cfg, w, s, cache, be = self.config, self.weights, self.state, self.cache, self.backend
        n = len(tokens)
        H, KVH, D, eps, F = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.norm_eps, cfg.n_ff
        x, xn, proj = s.x[:n], s.xn[:n], s.proj[:n]
        q, k, v, att = s.q[:n], s.k[:n], s.v[:n], s.att[:n]
        gate_up, act = s.gate_up[:n], s.act[:n]
        be.begin(tokens, positions, seqs)
        be.embed(w.token_embd, n, x)
        if self._embd_scale is not None:
            be.scale(x, self._embd_scale)
        for i, lw in enumerate(w.layers):
            swa = bool(cfg.swa_layers) and cfg.swa_layers[i]
            be.rmsnorm(x, lw.attn_norm, eps, xn)
            if lw.wqkv is not None:
                be.linear(lw.wqkv, xn, s.qkv[:n])
                be.split(s.qkv[:n], q, k, v)
            else:
                be.linear(lw.wq, xn, q.reshape(n, H * D))
                be.linear(lw.wk, xn, k.reshape(n, KVH * D))
                be.linear(lw.wv, xn, v.reshape(n, KVH * D))
            if lw.q_norm is not None:
                be.rmsnorm(q.reshape(n * H, D), lw.q_norm, eps, q.reshape(n * H, D))
                be.rmsnorm(k.reshape(n * KVH, D), lw.k_norm, eps, k.reshape(n * KVH, D))
            be.rope(q, swa, cfg.spec.rope_neox)
            be.rope(k, swa, cfg.spec.rope_neox)
            be.store_kv(cache.k[i], cache.v[i], k, v)
            be.attention(q, cache.k[i], cache.v[i], cfg.sliding_window if swa else 0,
                         np.float32(cfg.attn_scale), np.float32(cfg.attn_softcap), att)
            be.linear(lw.wo, att.reshape(n, H * D), proj)
            if lw.post_attn_norm is not None:
                be.rmsnorm(proj, lw.post_attn_norm, eps, proj)
            be.add(x, proj)
            be.rmsnorm(x, lw.ffn_norm, eps, xn)
            if lw.w_gate is not None:
                be.linear(lw.w_gate, xn, gate_up[:, :F])
                be.linear(lw.w_up, xn, gate_up[:, F:])
            else:
                be.linear(lw.w_up, xn, gate_up)
            be.gated(gate_up, act, cfg.spec.gelu)
            be.linear(lw.w_down, act, proj)
            if lw.post_ffn_norm is not None:
                be.rmsnorm(proj, lw.post_ffn_norm, eps, proj)
            be.add(x, proj)
        if logits == "all":
            be.rmsnorm(x, w.output_norm, eps, xn)
            out = be.zeros((n, cfg.n_vocab))
        elif logits == "all_rows":
            be.rmsnorm(x, w.output_norm, eps, xn)
            out = s.logits[:n]
        elif logits == "last":
            be.rmsnorm(x[n - 1 : n], w.output_norm, eps, xn[:1])
            out, xn = s.logits[:1], xn[:1]
        else:
            return None
        be.linear(w.output, xn, out)
        if cfg.final_softcap:
            be.softcap(out, np.float32(cfg.final_softcap))
        return be.to_host(out)
