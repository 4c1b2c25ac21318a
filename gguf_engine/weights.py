"""The model's weights: zero-copy views of the GGUF tensors, grouped per layer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType

from .config import Config
from .gguf_file import GGUFError, GGUFFile, TensorInfo, drop_pages
from .kernels.quantized import block_rows, dequantize, matmul_view, matvec_scratch
from .kernels.registry import TypeKernels, UnsupportedTypeError

_NUMPY_FLOATS = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}

# Up to this many tokens, reading the quantized blocks once per token beats dequantizing tiles.
MATVEC_MAX_TOKENS = 16


class Linear:
    """y = W x (+ b) with W kept in its GGML blocks."""

    def __init__(self, t: TensorInfo, bias: np.ndarray | None = None, path=None):
        if len(t.shape) != 2:
            raise GGUFError(f"{path}: tensor {t.name!r} should be a matrix, has shape {t.shape}")
        try:
            self.tk: TypeKernels
            self.tk, self.w = block_rows(t.data, t.ggml_type, t.shape)  # w: (rows, units) view
        except UnsupportedTypeError as e:
            raise UnsupportedTypeError(f"{path}: tensor {t.name!r}: {e}") from None
        self.name = t.name
        self.rows, self.cols = t.shape
        self.nbytes = t.nbytes
        self.bias = bias  # (rows,) float32 or None
        self._scratch = matvec_scratch(self.tk, self.rows)  # (n_parts, 4 * block)
        self._out: np.ndarray | None = None  # (MATVEC_MAX_TOKENS * rows,), made when needed
        self._int_w: np.ndarray | None = None  # `integer_weights`, once made

    def matvec(self, X: np.ndarray, out: np.ndarray, integer: bool = False,
               staging: np.ndarray | None = None) -> np.ndarray:
        """X (n, cols) -> out (n, rows), the weights read once for all n tokens, each token
        summed exactly as if it were alone. integer: the integer route's kernels (activations
        quantized to int8), where this type has them; else the float ones (exact). staging:
        a flat float32 buffer for a non-contiguous out (this Linear's own otherwise)."""
        if self.integer_route(integer):
            kernels, w = self.tk.kernels.integer, self.integer_weights()
        else:
            kernels, w = self.tk.kernels, self.w
        kernel = kernels.matvec_one if X.shape[0] == 1 else kernels.matvec_tokens
        if out.flags.c_contiguous:
            kernel(w, X, out, self._scratch)
        else:
            # a column block of a wider buffer (gate and up side by side): through a
            # C-contiguous buffer, as many tokens at a time as it holds, so the kernels compile
            # for C-contiguous arrays only (a token's sums do not depend on the others)
            if staging is None or staging.size < self.rows:
                if self._out is None:
                    self._out = np.empty(MATVEC_MAX_TOKENS * self.rows, np.float32)
                staging = self._out
            step = staging.size // self.rows
            for t0 in range(0, X.shape[0], step):
                t1 = min(X.shape[0], t0 + step)
                buf = staging[:(t1 - t0) * self.rows].reshape(t1 - t0, self.rows)
                kernel(w, X[t0:t1], buf, self._scratch)
                out[t0:t1] = buf
        if self.bias is not None:
            out += self.bias
        return out

    def matmul(self, X: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """X (n, cols) -> out (n, rows) on the exact route's tiles."""
        matmul_view(self.tk, self.w, X, out, scratch)
        if self.bias is not None:
            out += self.bias
        return out

    def integer_weights(self) -> np.ndarray:
        """w as the integer route's kernels read it (their `prepare`: the 32-value types pack
        their rows), made on the first call (a first request's forward pass: measured on Gemma,
        load 0.8 s + first token 0.5-0.75 s, where packing at load gave 1.7-1.9 s + 0.12 s);
        the file's pages under a packed matrix are then dropped from memory (its rows are still
        read from the file for an embedding lookup)."""
        if self._int_w is None:
            self._int_w = self.tk.kernels.integer.prepare(self.w)
            if self._int_w is not self.w:
                drop_pages(self.w)
        return self._int_w

    def integer_route(self, integer: bool) -> bool:
        """Whether `integer` (the route asked for) applies to this matrix: its type has
        integer kernels (float matrices stay on float math on both routes)."""
        return integer and self.tk.kernels.integer is not None

    def __call__(self, X: np.ndarray, out: np.ndarray, scratch: np.ndarray,
                 integer: bool = False) -> np.ndarray:
        """X (n, cols) -> out (n, rows). Integer route: the integer kernels for any n (a
        token's result never depends on how many share its step). Exact route: matvecs for
        a few tokens, else tiles of dequantized rows shared by all tokens through BLAS."""
        if self.integer_route(integer):
            return self.matvec(X, out, integer=True, staging=scratch)
        if X.shape[0] <= MATVEC_MAX_TOKENS:
            return self.matvec(X, out)
        return self.matmul(X, out, scratch)

    def rows_of(self, ids: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Dequantized rows `ids` (an embedding lookup): out (len(ids), cols)."""
        self.tk.kernels.gather_rows(self.w, ids, out)
        return out


@dataclass
class LayerWeights:
    attn_norm: np.ndarray  # (n_embd,)
    wq: Linear | None  # (q_dim, n_embd); None when fused into wqkv
    wk: Linear | None  # (kv_dim, n_embd)
    wv: Linear | None  # (kv_dim, n_embd)
    wqkv: Linear | None  # (q_dim + 2 kv_dim, n_embd) for phi3
    wo: Linear  # (n_embd, q_dim)
    q_norm: np.ndarray | None  # (head_dim,) gemma3
    k_norm: np.ndarray | None  # (head_dim,)
    post_attn_norm: np.ndarray | None  # (n_embd,) gemma3
    ffn_norm: np.ndarray  # (n_embd,)
    w_gate: Linear | None  # (n_ff, n_embd); None when fused into w_up
    w_up: Linear  # (n_ff, n_embd), or (2 n_ff, n_embd) = [gate; up] for phi3
    w_down: Linear  # (n_embd, n_ff)
    post_ffn_norm: np.ndarray | None  # (n_embd,) gemma3


@dataclass
class Weights:
    token_embd: Linear  # (n_vocab, n_embd)
    output: Linear  # (n_vocab, n_embd); token_embd when tied
    output_norm: np.ndarray  # (n_embd,)
    rope_freqs: np.ndarray | None  # (n_rot // 2,) per-dimension frequency divisors
    layers: list[LayerWeights]

    @property
    def decode_bytes(self) -> int:
        """Weight bytes one decode step reads (everything but the embedding table)."""
        mats = [self.output]
        for lw in self.layers:
            mats += [m for m in (lw.wq, lw.wk, lw.wv, lw.wqkv, lw.wo, lw.w_gate, lw.w_up,
                                 lw.w_down) if m is not None]
        return sum(m.nbytes for m in mats)


def _vector(f: GGUFFile, name: str, n: int | None = None, optional=False) -> np.ndarray | None:
    if optional and name not in f.tensors:
        return None
    t = f.tensor(name)
    if t.ggml_type in _NUMPY_FLOATS:  # plain floats: NumPy converts them without a kernel
        v = t.data.reshape(-1).view(_NUMPY_FLOATS[t.ggml_type]).astype(np.float32)
    else:
        v = dequantize(t.data, t.ggml_type, (t.n_elements,))
    if n is not None and v.shape != (n,):
        raise GGUFError(f"{f.path}: tensor {name!r} has {v.shape[0]} values, expected {n}")
    return v


def _linear(f: GGUFFile, name: str, rows: int, cols: int, bias=None) -> Linear:
    t = f.tensor(name)
    if t.shape != (rows, cols):
        raise GGUFError(f"{f.path}: tensor {name!r} has shape {t.shape}, expected {(rows, cols)}")
    return Linear(t, bias, f.path)


def load_weights(f: GGUFFile, cfg: Config) -> Weights:
    spec, E = cfg.spec, cfg.n_embd
    layers = []
    for i in range(cfg.n_layers):
        p = f"blk.{i}."

        def bias(n, rows, p=p):
            return _vector(f, p + n + ".bias", rows, optional=True)

        if spec.fused_qkv:
            wq = wk = wv = None
            wqkv = _linear(f, p + "attn_qkv.weight", cfg.q_dim + 2 * cfg.kv_dim, E,
                           bias("attn_qkv", cfg.q_dim + 2 * cfg.kv_dim))
        else:
            wqkv = None
            wq = _linear(f, p + "attn_q.weight", cfg.q_dim, E, bias("attn_q", cfg.q_dim))
            wk = _linear(f, p + "attn_k.weight", cfg.kv_dim, E, bias("attn_k", cfg.kv_dim))
            wv = _linear(f, p + "attn_v.weight", cfg.kv_dim, E, bias("attn_v", cfg.kv_dim))
        if spec.fused_gate_up:
            w_gate, w_up = None, _linear(f, p + "ffn_up.weight", 2 * cfg.n_ff, E)
        else:
            w_gate = _linear(f, p + "ffn_gate.weight", cfg.n_ff, E)
            w_up = _linear(f, p + "ffn_up.weight", cfg.n_ff, E)
        layers.append(LayerWeights(
            attn_norm=_vector(f, p + "attn_norm.weight", E),
            wq=wq, wk=wk, wv=wv, wqkv=wqkv,
            wo=_linear(f, p + "attn_output.weight", E, cfg.q_dim, bias("attn_output", E)),
            q_norm=_vector(f, p + "attn_q_norm.weight", cfg.head_dim) if spec.qk_norm else None,
            k_norm=_vector(f, p + "attn_k_norm.weight", cfg.head_dim) if spec.qk_norm else None,
            post_attn_norm=(_vector(f, p + "post_attention_norm.weight", E)
                            if spec.post_norms else None),
            ffn_norm=_vector(f, p + "ffn_norm.weight", E),
            w_gate=w_gate, w_up=w_up,
            w_down=_linear(f, p + "ffn_down.weight", E, cfg.n_ff),
            post_ffn_norm=_vector(f, p + "post_ffw_norm.weight", E) if spec.post_norms else None,
        ))
    token_embd = _linear(f, "token_embd.weight", cfg.n_vocab, E)
    output = (_linear(f, "output.weight", cfg.n_vocab, E) if "output.weight" in f.tensors
              else token_embd)
    return Weights(token_embd=token_embd, output=output,
                   output_norm=_vector(f, "output_norm.weight", E),
                   rope_freqs=_vector(f, "rope_freqs.weight", cfg.n_rot // 2, optional=True),
                   layers=layers)
