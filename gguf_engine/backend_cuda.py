"""The CUDA backend of the forward pass (transformer.Transformer): weights uploaded once in
their GGML blocks, KV cache and activations on the device, only the logits copied back.
numba.cuda is imported here only, so device="cpu" never loads it."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import fields, is_dataclass, replace

import numpy as np

from .kernels.cpu import activations
from .kernels.quantized import TILE_VALUES
from .weights import Linear


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


class DeviceLinear:
    """A Linear's blocks and bias on the device."""

    def __init__(self, lin: Linear, cuda):
        self.ggml_type = lin.tk.ggml_type
        self.w = cuda.to_device(np.ascontiguousarray(lin.w))  # (rows, units), as in the file
        self.rows, self.cols, self.nbytes = lin.rows, lin.cols, lin.nbytes
        self.bias = None if lin.bias is None else cuda.to_device(lin.bias)  # (rows,)


class CudaBackend:
    name = "cuda"

    def __init__(self):
        if not cuda_available():
            raise CudaUnavailableError(
                "device='cuda' needs an NVIDIA GPU with its driver and numba-cuda "
                "(pip install 'gguf-engine[cuda]'); none is usable here: use device='cpu'")
        from numba import cuda

        from .kernels.cuda import ops, quant

        self.cuda, self.ops, self.quant = cuda, ops, quant

    # -- memory ------------------------------------------------------------------------
    def free_memory(self) -> int | None:
        """Bytes of device memory free now (None where the driver cannot say; the simulator
        says infinity)."""
        try:
            free = float(self.cuda.current_context().get_memory_info().free)
        except Exception:  # a failed query must not stop a load: the allocation still checks
            return None
        return int(free) if math.isfinite(free) else None

    def zeros(self, shape):
        return self.cuda.to_device(np.zeros(shape, np.float32))

    def prepare(self, cfg, chunk: int, n_ctx: int, inv_freq) -> None:
        up = self.cuda.to_device
        self.inv_freq = [up(np.ascontiguousarray(f)) for f in inv_freq]  # 2 x (n_rot // 2,)
        self.scores = self.zeros((chunk * cfg.n_heads, n_ctx))  # (chunk * H, n_ctx)
        self.tile = self.zeros(TILE_VALUES)  # dequantized weight tiles (prefill)
        self.gelu_table = up(activations.GELU_TABLE)  # (65536,)

    def weights(self, w, _done=None):
        """The same structure with every Linear and vector on the device (a tied output matrix
        stays one upload)."""
        done = {} if _done is None else _done
        if id(w) in done:
            return done[id(w)]
        done[id(w)] = out = self._upload(w, done)
        return out

    def _upload(self, w, done):
        if isinstance(w, Linear):
            self._check_type(w)
            return DeviceLinear(w, self.cuda)
        if isinstance(w, np.ndarray):
            return self.cuda.to_device(np.ascontiguousarray(w))
        if isinstance(w, list):
            return [self.weights(x, done) for x in w]
        if is_dataclass(w):
            return replace(w, **{f.name: self.weights(getattr(w, f.name), done)
                                 for f in fields(w)})
        return w

    def _check_type(self, lin: Linear) -> None:
        self.quant._kernels(lin.tk.ggml_type)  # builds the type's kernels, or names the type

    def to_host(self, a) -> np.ndarray:
        return a.copy_to_host()

    def running(self, n_tokens: int):
        return nullcontext()

    # -- operations --------------------------------------------------------------------
    def begin(self, tokens: np.ndarray, positions: np.ndarray, seqs: np.ndarray) -> None:
        """The rows' token ids, positions and sequence slots on the device."""
        up = self.cuda.to_device
        self.ids = up(np.ascontiguousarray(tokens, dtype=np.int64))
        self.positions = up(np.ascontiguousarray(positions, dtype=np.int64))
        self.seqs = up(np.ascontiguousarray(seqs, dtype=np.int64))

    def embed(self, table: DeviceLinear, n: int, out) -> None:
        self.quant.launch_embed(table.ggml_type, table.w, self.ids, out)

    def linear(self, lin: DeviceLinear, X, out) -> None:
        self.quant.launch_matmul(lin.ggml_type, lin.w, X, out, self.tile)
        if lin.bias is not None:
            self.ops.launch_elementwise(self.ops.add_bias, out, lin.bias)

    def rmsnorm(self, x, weight, eps, out) -> None:
        self.ops.launch_rmsnorm(x, weight, eps, out)

    def rope(self, x, swa: bool, neox: bool) -> None:
        self.ops.launch_rope(x, self.positions, self.inv_freq[int(swa)], neox)

    def split(self, qkv, q, k, v) -> None:
        n, qd, kd = q.shape[0], q.shape[1] * q.shape[2], k.shape[1] * k.shape[2]
        q.reshape(n, qd).copy_to_device(qkv[:, :qd])
        k.reshape(n, kd).copy_to_device(qkv[:, qd:qd + kd])
        v.reshape(n, kd).copy_to_device(qkv[:, qd + kd:])

    def store_kv(self, k_cache, v_cache, k, v) -> None:
        ops = self.ops
        n, kvh, d = k.shape
        ops.store_kv[max(1, math.ceil(n * kvh * d / ops.THREADS)), ops.THREADS](
            k, v, k_cache, v_cache, self.seqs, self.positions)

    def attention(self, q, k_cache, v_cache, window, scale, softcap, out) -> None:
        self.ops.launch_attention(q, k_cache, v_cache, self.seqs, self.positions, window, scale,
                                  self.scores, out, softcap)

    def gated(self, gate_up, out, gelu: bool) -> None:
        n, f = out.shape
        g, b = self.ops.grid2(n, f)
        self.ops.gated[g, b](gate_up, f, out, gelu, self.gelu_table)

    def add(self, x, y) -> None:
        self.ops.launch_elementwise(self.ops.add_into, x, y)

    def scale(self, x, s) -> None:
        self.ops.launch_elementwise(self.ops.scale_into, x, s)

    def softcap(self, x, cap) -> None:
        self.ops.launch_elementwise(self.ops.softcap_into, x, cap)
