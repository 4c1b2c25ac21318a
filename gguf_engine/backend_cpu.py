"""The CPU backend of the forward pass (transformer.Transformer): the Numba kernels on NumPy
arrays, run with the model's own thread count."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

from .defaults import EXACT
from .kernels.cpu import activations, attention, norms, rope, simd_int
from .kernels.quantized import TILE_VALUES
from .kv_cache import available_memory
from .thread_tuner import ThreadTuner
from .weights import MATVEC_MAX_TOKENS, Linear

# A single row (a decode step's) goes to the serial twins of the row-wise kernels, and so does an
# RMSNorm of at most this many values (a step's per-head norms): a parallel region costs ~3 us
# to start and join on two cores, more than such a norm, rotation or activation (Gemma 3 270M's
# step runs ~150 of them). A row's numbers are the same either way.
SERIAL_VALUES = 4096

_BLAS = None  # one ThreadpoolController: building one scans the loaded libraries (~ms)


def _blas_controller() -> ThreadpoolController:
    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS


def thread_count(n_threads: int | None) -> int:
    """n_threads checked against NUMBA_NUM_THREADS, which caps it and is the default."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(
            n_threads, int) or not 1 <= n_threads <= limit):
        raise ValueError(f"invalid n_threads={n_threads!r}: must be 1..{limit} "
                         "(NUMBA_NUM_THREADS caps it)")
    return n_threads or limit


class CPUBackend:
    name = "cpu"

    def __init__(self, n_threads: int | None = None, exact: bool | None = None):
        self.n_threads = thread_count(n_threads)
        # the integer route (int8 activations against the quantized weights, llama.cpp's
        # math) when asked for and this CPU has the instructions; else the exact one
        exact = EXACT if exact is None else exact
        self.integer = not exact and simd_int.ISA != "none"
        self.route = "integer" if self.integer else "exact"
        # a count the caller chose is kept; the default (every core) adapts to the machine's
        # other load, one tuner per number of rows a step takes (thread_tuner)
        self._tuners: dict[int, ThreadTuner] | None = (
            {} if n_threads is None and self.n_threads > 1 else None)

    # -- memory ------------------------------------------------------------------------
    def free_memory(self) -> int | None:
        """Bytes of memory available now (None where the system cannot say)."""
        return available_memory()

    def zeros(self, shape) -> np.ndarray:
        return np.zeros(shape, np.float32)

    def prepare(self, cfg, chunk: int, n_ctx: int, inv_freq) -> None:
        """Scratch for a forward pass of up to `chunk` tokens; inv_freq: (2, n_rot // 2) RoPE
        frequencies of global [0] and sliding-window [1] layers."""
        half = cfg.n_rot // 2
        self.inv_freq = inv_freq
        self.kinds = 2 if cfg.swa_layers else 1
        self.positions = np.zeros(chunk, np.int64)  # (chunk,) each row's position
        self.seqs = np.zeros(chunk, np.int64)  # (chunk,) each row's sequence slot
        self.ids = np.zeros(chunk, np.int64)  # (chunk,) each row's token id
        self.n = 0  # rows of the current pass
        self.run = None  # (slot, first position) when the rows are one slot's consecutive run
        # (2, chunk, n_rot // 2) cosines and sines of the chunk's angles, per layer kind
        self.rope_cos = np.zeros((2, chunk, half), np.float32)
        self.rope_sin = np.zeros((2, chunk, half), np.float32)
        # (parts * group, n_ctx) attention scores: a part takes the query heads of a KV head
        group = cfg.n_heads // cfg.n_kv_heads
        self.scores = np.zeros((group * numba.config.NUMBA_NUM_THREADS, n_ctx), np.float32)
        # (TILE_VALUES,) dequantized weight tiles (exact prefill); on the integer route the
        # staging of outputs bound for a column block (Linear.matvec)
        self.scratch = np.zeros(TILE_VALUES, np.float32)

    def weights(self, w):
        return w  # the kernels read the memory-mapped blocks in place

    def to_host(self, a) -> np.ndarray:
        return a

    @contextmanager
    def running(self, n_tokens: int):
        """The model's thread count for one chunk, the caller's restored after. On the exact
        route a batch spends most of its time in BLAS, whose threads use every core; Numba's
        workers spinning between its kernels would take cores from it (pp512 here: 380 tok/s
        that way, 550 with Numba's share of the batch on one thread). On the integer route
        the batch's matrices are Numba's: it keeps the model's count."""
        before = numba.get_num_threads()
        batch = n_tokens > MATVEC_MAX_TOKENS and not self.integer  # BLAS's chunk
        tuner = None
        if batch:
            count = 1
        elif n_tokens > MATVEC_MAX_TOKENS or self._tuners is None:
            count = self.n_threads
        else:
            tuner = self._tuners.get(n_tokens)
            if tuner is None:
                tuner = self._tuners[n_tokens] = ThreadTuner(self.n_threads)
            count = tuner.pick()
        numba.set_num_threads(count)
        t0 = time.perf_counter()
        try:
            if batch:
                with _blas_controller().limit(limits=self.n_threads, user_api="blas"):
                    yield
            else:
                yield
        finally:
            numba.set_num_threads(before)
        if tuner is not None:  # a step that raised is not timed
            tuner.record(time.perf_counter() - t0)

    # -- operations --------------------------------------------------------------------
    def begin(self, tokens: np.ndarray, positions: np.ndarray, seqs: np.ndarray) -> None:
        """The rows' token ids, sequence slots, positions and RoPE tables."""
        self.n = n = len(tokens)
        self.ids[:n] = tokens
        self.positions[:n] = positions
        self.seqs[:n] = seqs
        one_run = (seqs == seqs[0]).all() and (np.diff(positions) == 1).all()
        self.run = (int(seqs[0]), int(positions[0])) if one_run else None
        for kind in range(self.kinds):
            rope.rope_tables_kernel(self.positions[:n], self.inv_freq[kind],
                                    self.rope_cos[kind, :n], self.rope_sin[kind, :n])

    def embed(self, table: Linear, n: int, out) -> None:
        table.rows_of(self.ids[:n], out)

    def linear(self, lin: Linear, X, out) -> None:
        lin(X, out, self.scratch, integer=self.integer)

    def rmsnorm(self, x, weight, eps, out) -> None:
        serial = x.shape[0] == 1 or x.size <= SERIAL_VALUES
        (norms.rmsnorm_serial if serial else norms.rmsnorm_kernel)(x, weight, eps, out)

    def rope(self, x, swa: bool, neox: bool) -> None:
        n = x.shape[0]
        rotate = rope.rope_rotate_serial if n == 1 else rope.rope_rotate_kernel
        rotate(x, self.rope_cos[int(swa), :n], self.rope_sin[int(swa), :n], neox)

    def split(self, qkv, q, k, v) -> None:
        """Columns [q | k | v] of a fused projection into the per-head buffers."""
        n, qd, kd = q.shape[0], q.shape[1] * q.shape[2], k.shape[1] * k.shape[2]
        np.copyto(q.reshape(n, qd), qkv[:, :qd])
        np.copyto(k.reshape(n, kd), qkv[:, qd:qd + kd])
        np.copyto(v.reshape(n, kd), qkv[:, qd + kd:])

    def store_kv(self, k_cache, v_cache, k, v) -> None:
        """The rows' keys and values into the layer's caches (n_seq, KVH, n_ctx, D)."""
        n = self.n
        if self.run is not None:
            seq, pos0 = self.run
            k_cache[seq, :, pos0:pos0 + n] = k.transpose(1, 0, 2)
            v_cache[seq, :, pos0:pos0 + n] = v.transpose(1, 0, 2)
        else:
            attention.store_kv_kernel(k_cache, v_cache, self.seqs[:n], self.positions[:n], k, v)

    def attention(self, q, k_cache, v_cache, window, scale, softcap, out) -> None:
        n = self.n
        # exact route: a prefill chunk (one slot's run) through BLAS. The integer route keeps
        # every token on the decode kernel: a last-bit difference there would move an int8
        # rounding of the next matrix's input, and a prompt's logits would then depend on how
        # it was split into steps (measured: 0.05 of the logits' std on a 97-token prompt)
        if n > MATVEC_MAX_TOKENS and not self.integer:
            seq, pos0 = self.run
            attention.attention_matmul_unchecked(q, k_cache[seq], v_cache[seq], pos0, window,
                                                 scale, out, softcap)
        else:
            attention.attention_kernel(q, k_cache, v_cache, self.seqs[:n], self.positions[:n],
                                       window, scale, self.scores, out, softcap)

    def gated(self, gate_up, out, gelu: bool) -> None:
        (activations.gated_serial if out.shape[0] == 1 else activations.gated_kernel)(
            gate_up, out, gelu)

    def add(self, x, y) -> None:
        x += y

    def scale(self, x, s) -> None:
        x *= s

    def softcap(self, x, cap) -> None:
        """x = cap * tanh(x / cap) in place, in llama.cpp's order of operations."""
        x /= cap
        np.tanh(x, out=x)
        x *= cap
