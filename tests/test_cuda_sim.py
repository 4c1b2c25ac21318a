"""The numba.cuda kernels under Numba's CUDA simulator (tiny shapes) against the CPU kernels,
and a simulated greedy generation against the CPU path."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import config
from test_quant_kernels import random_weights

from gguf_engine import kernels

pytestmark = pytest.mark.skipif(not config.ENABLE_CUDASIM,
                                reason="simulator tests (NUMBA_ENABLE_CUDASIM=0 here)")

def _ops():
    from gguf_engine.kernels.cuda import ops
    from numba import cuda

    return cuda, ops


@pytest.mark.parametrize("t", sorted(kernels.SUPPORTED_TYPES, key=int), ids=lambda t: t.name)
def test_matvec_matmul_dequantize_embed(t):
    """Every type the CPU supports, through its own dequant_block compiled for the device."""
    from gguf_engine.kernels.cuda import quant
    from numba import cuda

    rng = np.random.default_rng(int(t))
    rows, cols = 5, 256
    data = random_weights(t, rows, cols, rng)
    _, w = kernels.quantized.block_rows(data, t, (rows, cols))
    dw = cuda.to_device(np.ascontiguousarray(w))
    ref_w = kernels.dequantize(data, t, (rows, cols))
    out = cuda.device_array((rows, cols), np.float32)
    quant.launch_dequantize(t, dw, out)
    np.testing.assert_array_equal(out.copy_to_host(), ref_w)
    ids = np.array([4, 0, 2])
    emb = cuda.device_array((3, cols), np.float32)
    quant.launch_embed(t, dw, cuda.to_device(ids), emb)
    np.testing.assert_array_equal(emb.copy_to_host(), ref_w[ids])
    x = rng.standard_normal(cols).astype(np.float32)
    y = cuda.device_array(rows, np.float32)
    quant.launch_matvec(t, dw, cuda.to_device(x), y)
    ref = kernels.matvec(data, t, (rows, cols), x)
    np.testing.assert_allclose(y.copy_to_host(), ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    X = rng.standard_normal((3, cols)).astype(np.float32)
    Y = cuda.device_array((3, rows), np.float32)
    tile = cuda.device_array(2 * cols, np.float32)  # two rows a tile: the loop over tiles runs
    quant.launch_matmul(t, dw, cuda.to_device(X), Y, tile)
    refm = kernels.matmul(data, t, (rows, cols), X)
    np.testing.assert_allclose(Y.copy_to_host(), refm, rtol=1e-4, atol=1e-4 * np.abs(refm).max())


def test_rmsnorm_rope_gated():
    cuda, ops = _ops()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    w = rng.standard_normal(40).astype(np.float32)
    out = cuda.device_array_like(x)
    ops.launch_rmsnorm(cuda.to_device(x), cuda.to_device(w), 1e-6, out)
    ref = np.empty_like(x)
    kernels.norms.rmsnorm(x, w, 1e-6, ref)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-5, atol=1e-6)
    for neox in (False, True):
        q = rng.standard_normal((2, 2, 16)).astype(np.float32)
        pos = np.array([3, 9], dtype=np.int64)
        inv = kernels.rope.inv_frequencies(16, 10000.0)
        dq = cuda.to_device(q)
        ops.launch_rope(dq, cuda.to_device(pos), cuda.to_device(inv), neox)
        kernels.rope.rope(q, pos, inv, neox)
        np.testing.assert_allclose(dq.copy_to_host(), q, rtol=1e-5, atol=1e-6)
    for gelu in (False, True):
        gu = rng.standard_normal((2, 24)).astype(np.float32) * 4
        gu[0, :3] = (-12.0, 11.0, 3e-6)  # both clamps, and a half subnormal
        act = cuda.device_array((2, 12), np.float32)
        g, b = ops.grid2(2, 12)
        ops.gated[g, b](cuda.to_device(gu), 12, act, gelu,
                        cuda.to_device(kernels.activations.GELU_TABLE))
        ref = np.empty((2, 12), np.float32)
        kernels.activations.gated(gu, ref, gelu)
        np.testing.assert_allclose(act.copy_to_host(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window, softcap", [(0, 0.0), (3, 0.0), (3, 0.5)])
def test_attention_gqa_window(window, softcap):
    """Rows of two sequence slots at their own positions, each against the CPU kernel on its
    slot alone."""
    cuda, ops = _ops()
    rng = np.random.default_rng(2)
    H, KVH, D, n_ctx = 4, 2, 8, 8
    seqs, positions = np.array([1, 0, 1]), np.array([2, 5, 7])
    n = len(seqs)
    q = rng.standard_normal((n, H, D)).astype(np.float32)
    k = rng.standard_normal((2, KVH, n_ctx, D)).astype(np.float32)
    v = rng.standard_normal((2, KVH, n_ctx, D)).astype(np.float32)
    out = cuda.device_array((n, H, D), np.float32)
    scores = cuda.device_array((n * H, n_ctx), np.float32)
    ops.launch_attention(cuda.to_device(q), cuda.to_device(k), cuda.to_device(v),
                         cuda.to_device(seqs), cuda.to_device(positions), window, 0.35, scores,
                         out, softcap)
    ref = np.empty((n, H, D), np.float32)
    for t in range(n):
        kernels.attention.attention(q[t:t + 1], k[seqs[t]], v[seqs[t]], int(positions[t]),
                                    window, np.float32(0.35), np.empty((2, n_ctx), np.float32),
                                    ref[t:t + 1], softcap)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-5, atol=1e-6)


def test_final_logit_softcap():
    from gguf_engine.backend_cpu import CPUBackend

    cuda, ops = _ops()
    x = np.random.default_rng(3).standard_normal((2, 40)).astype(np.float32) * 5
    dx = cuda.to_device(x)
    ops.launch_elementwise(ops.softcap_into, dx, np.float32(1.5))
    CPUBackend().softcap(x, np.float32(1.5))
    np.testing.assert_allclose(dx.copy_to_host(), x, rtol=1e-6, atol=1e-6)


def _tiny_model(path, arch="llama"):
    """A 2-layer model with grouped-query heads and Q8_0 matrices, small enough for the
    simulator (a shared fixture takes minutes per token there: each simulated array access is
    Python code)."""
    import gguf
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(0)
    E, F, V, L = 32, 32, 32, 2
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(L)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_context_length(32)
    w.add_layer_norm_rms_eps(1e-5)

    def mat(name, rows, cols):
        data = rng.standard_normal((rows, cols)).astype(np.float32) * 0.3
        w.add_tensor(name, gguf.quantize(data, T.Q8_0), raw_dtype=T.Q8_0)

    def vec(name, n):
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", V, E)
    mat("output.weight", V, E)
    vec("output_norm.weight", E)
    for i in range(L):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", E)
        vec(p + "ffn_norm.weight", E)
        mat(p + "attn_q.weight", E, E)
        mat(p + "attn_k.weight", E // 2, E)
        mat(p + "attn_v.weight", E // 2, E)
        mat(p + "attn_output.weight", E, E)
        mat(p + "ffn_gate.weight", F, E)
        mat(p + "ffn_up.weight", F, E)
        mat(p + "ffn_down.weight", E, F)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _exact_cpu():
    """The CPU on the exact route, the route CUDA runs (the CPU's default is the integer one)."""
    from gguf_engine.backend_cpu import CPUBackend

    return CPUBackend(exact=True)


def _greedy(net, prompts, steps):
    """Greedy decoding of prompts side by side, one slot each: their prefills, then decode
    steps that take one token of every sequence."""
    seqs = list(range(len(prompts)))
    logits = np.stack([net.forward(p, 0, seq=s)[0].copy() for s, p in enumerate(prompts)])
    out, seen = [[] for _ in prompts], [logits]
    for _ in range(steps):
        tokens = [int(np.argmax(row)) for row in logits]
        for o, t in zip(out, tokens, strict=True):
            o.append(t)
        logits = net.decode(tokens, seqs).copy()
        seen.append(logits)
    return out, np.stack(seen)


def test_simulated_greedy_generation_equals_cpu(tmp_path):
    """Two layers with grouped-query heads, two sequences in two slots: the logits after the
    prompts and two decode steps taking both sequences at once, with the KV cache (prefill's
    GEMM is checked per type above)."""
    from gguf_engine.backend_cuda import CudaBackend
    from gguf_engine.gguf_file import GGUFFile
    from gguf_engine.transformer import Transformer

    f = GGUFFile(_tiny_model(tmp_path / "tiny.gguf"))
    prompts = [[3], [5, 7, 2]]
    gpu_tokens, gpu_logits = _greedy(Transformer(f, n_ctx=16, backend=CudaBackend(), n_seq=2),
                                     prompts, 2)
    cpu_tokens, cpu_logits = _greedy(Transformer(f, n_ctx=16, n_seq=2, backend=_exact_cpu()),
                                     prompts, 2)
    assert gpu_tokens == cpu_tokens
    np.testing.assert_allclose(gpu_logits, cpu_logits, atol=1e-4 * np.abs(cpu_logits).max())


def test_cpu_device_does_not_import_numba_cuda(fixtures):
    code = ("import sys, gguf_engine; m = gguf_engine.load(sys.argv[1], n_ctx=16); "
            "m.generate('hi', max_tokens=1); print('numba.cuda' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code,
                          str(fixtures / "synthetic" / "llama-Q8_0.gguf")],
                         capture_output=True, text=True, env=dict(os.environ), check=True)
    assert res.stdout.strip() == "False"


def test_cuda_without_gpu_is_a_clear_error(fixtures):
    code = ("import sys, gguf_engine\n"
            "try:\n    gguf_engine.load(sys.argv[1], device='cuda')\n"
            "except RuntimeError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")
    res = subprocess.run([sys.executable, "-c", code,
                          str(fixtures / "synthetic" / "llama-Q8_0.gguf")],
                         capture_output=True, text=True, env=env)
    assert "ERR" in res.stdout and "device='cpu'" in res.stdout, res.stdout + res.stderr


def test_simulated_greedy_generation_on_a_shared_fixture(fixtures):
    """llama.cpp's synthetic llama (F32, 2 layers, E256): the simulated GPU path's greedy token
    and logits after the prompt equal the CPU path's. One step takes minutes in the simulator
    (every simulated array access is Python); the several-step decode with the KV cache is
    `test_simulated_greedy_generation_equals_cpu` above, on a smaller model."""
    from gguf_engine.backend_cuda import CudaBackend
    from gguf_engine.gguf_file import GGUFFile
    from gguf_engine.transformer import Transformer

    f = GGUFFile(fixtures / "synthetic" / "llama-F32.gguf")
    prompt = [f.get("tokenizer.ggml.bos_token_id")]
    cpu = Transformer(f, n_ctx=4, backend=_exact_cpu()).forward(prompt, 0)[0].copy()
    gpu = Transformer(f, n_ctx=4, backend=CudaBackend()).forward(prompt, 0)[0].copy()
    assert int(np.argmax(gpu)) == int(np.argmax(cpu))
    np.testing.assert_allclose(gpu, cpu, atol=1e-4 * np.abs(cpu).max())


def _tiny_typed_model(path, t):
    """One layer of random blocks with small finite scales (test_quant_kernels.random_weights).
    The matrices that read the embedding width E (one block of t per row: 256 for the
    K-quants, else 32) are of type t: q, k, v, gate, up, output and the embedding table; the
    two that read the 8-wide attention and FFN outputs are F32. Each simulated weight value
    costs ~0.1 ms, so every row count is 8."""
    import gguf
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as T

    rng = np.random.default_rng(int(t))
    E = 256 if GGML_QUANT_SIZES[t][0] == 256 else 32
    H, D, F, V = 1, 8, 8, 8
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(E)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(1)
    w.add_key_length(D)
    w.add_value_length(D)
    w.add_context_length(16)
    w.add_layer_norm_rms_eps(1e-5)

    def mat(name, rows, cols):
        typ = t if cols % GGML_QUANT_SIZES[t][0] == 0 else T.F32
        w.add_tensor(name, random_weights(typ, rows, cols, rng, scale_exp=(-10, -7)),
                     raw_dtype=typ)

    def vec(name, n):
        w.add_tensor(name, (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", V, E)
    mat("output.weight", V, E)
    vec("output_norm.weight", E)
    for name, rows, cols in (("attn_q", H * D, E), ("attn_k", D, E), ("attn_v", D, E),
                             ("attn_output", E, H * D), ("ffn_gate", F, E), ("ffn_up", F, E),
                             ("ffn_down", E, F)):
        mat(f"blk.0.{name}.weight", rows, cols)
    vec("blk.0.attn_norm.weight", E)
    vec("blk.0.ffn_norm.weight", E)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("t", sorted(kernels.SUPPORTED_TYPES, key=int), ids=lambda t: t.name)
def test_simulated_greedy_steps_of_every_type_equal_cpu(tmp_path, t):
    """The one forward pass on both backends: a tiny model of each GGML type, its logits after
    a one-token prompt and two greedy steps (the device GEMM of longer prompts is checked per
    type above; a simulated GEMM over 256 columns takes seconds)."""
    from gguf_engine.backend_cuda import CudaBackend
    from gguf_engine.gguf_file import GGUFFile
    from gguf_engine.transformer import Transformer

    f = GGUFFile(_tiny_typed_model(tmp_path / f"{t.name}.gguf", t))
    cpu_tokens, cpu_logits = _greedy(Transformer(f, n_ctx=8, backend=_exact_cpu()), [[3]], 2)
    gpu_tokens, gpu_logits = _greedy(Transformer(f, n_ctx=8, backend=CudaBackend()), [[3]], 2)
    assert gpu_tokens == cpu_tokens
    np.testing.assert_allclose(gpu_logits, cpu_logits, atol=1e-4 * np.abs(cpu_logits).max())
