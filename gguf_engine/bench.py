"""The benchmarks, in one module: `gguf-engine bench` runs llama-bench's tests (pp = prompt
processing, tg = generation from an empty context) with warm-up and repetitions, tokenization
and sampling not timed; `gguf-engine bench --kernels` the GB/s of weight bytes each quantized
matvec reads; both beside the machine's read bandwidth measured in the same run."""

from __future__ import annotations

import csv
import io
import json
import resource
import sys
import threading
import time

import numba
import numpy as np
from gguf import GGML_QUANT_SIZES

from .kernels import SUPPORTED_TYPES, matvec
from .kernels.cpu import simd_int
from .kernels.quantized import block_rows, matvec_scratch
from .progress import bar

GIB = 1 << 30


def read_bandwidth(nbytes: int = GIB, repeats: int = 5) -> dict[str, float]:
    """GB/s of `numpy.sum` over `nbytes` of float32 on one thread, and over two halves on two
    threads at once (NumPy releases the GIL). Medians of `repeats` runs."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    halves = np.array_split(a, 2)

    def one():
        t = time.perf_counter()
        a.sum()
        return time.perf_counter() - t

    def two():
        threads = [threading.Thread(target=h.sum) for h in halves]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    one()
    two()
    t1 = float(np.median([one() for _ in range(repeats)]))
    t2 = float(np.median([two() for _ in range(repeats)]))
    return {"one_thread_gbs": a.nbytes / t1 / 1e9, "two_threads_gbs": a.nbytes / t2 / 1e9}


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _tokens(model, n: int, rng) -> list[int]:
    """Random token ids, BOS first when the file asks for one (as llama-bench does)."""
    tk = model.tokenizer
    ids = rng.integers(0, model.n_vocab, size=n).tolist()
    if tk.add_bos and tk.bos_id is not None and n:
        ids[0] = tk.bos_id
    return ids


def _record(test, n_prompt, n_gen, seconds, n_tokens, extra) -> dict:
    ts = [n_tokens / s for s in seconds]
    return {"test": test, "n_prompt": n_prompt, "n_gen": n_gen, "avg_ts": float(np.mean(ts)),
            "stddev_ts": float(np.std(ts, ddof=1)) if len(ts) > 1 else 0.0,
            "samples_ts": ts, "samples_s": seconds, **extra}


def _bench_decode(net, n_gen: int, n_seq: int, repetitions: int, tokens, common) -> dict:
    """n_seq sequences decoding n_gen tokens together from empty slots (the single-sequence
    case is llama-bench's tg): aggregate tokens per second."""
    seqs = list(range(n_seq))

    def run(steps):
        for s in seqs:
            net.cache.truncate(s, 0)
        for p in range(steps):
            net.decode([tokens[s][p] for s in seqs], seqs)

    run(min(n_gen, 4))  # warm-up
    seconds = []
    for _ in bar(range(repetitions), desc=f"tg{n_gen}" + (f" x{n_seq}" if n_seq > 1 else "")):
        t = time.perf_counter()
        run(n_gen)
        seconds.append(time.perf_counter() - t)
    tg_ts = n_seq * n_gen / float(np.mean(seconds))
    name = f"tg{n_gen}" if n_seq == 1 else f"tg{n_gen} x{n_seq}"
    return _record(name, 0, n_gen, seconds, n_seq * n_gen,
                   {**common, "n_seq": n_seq, "weight_bytes_per_token":
                    net.weights.decode_bytes, "read_gbs": net.weights.decode_bytes * tg_ts / n_seq
                    / 1e9})


def run_bench(model, load_s: float, n_prompt: int, n_gen: int, repetitions: int,
              parallel=(1,)) -> list[dict]:
    """llama-bench's pp and tg; with parallel=(1, 4, ...) tg for that many sequences at once."""
    net = model.net
    rng = np.random.default_rng(0)
    common = {"model": model.file.path.name, "size_bytes": model.file.size,
              "n_params": model.file.n_params, "backend": _backend_name(net.backend),
              "n_threads": getattr(net.backend, "n_threads", None), "route": model.route,
              "load_s": load_s}
    records = []
    if n_prompt:
        if n_prompt > net.n_ctx:
            raise ValueError(f"-p {n_prompt} does not fit the context of {net.n_ctx} (-c)")
        tokens = _tokens(model, n_prompt, rng)
        net.forward(tokens, 0)  # warm-up
        seconds = []
        for _ in bar(range(repetitions), desc=f"pp{n_prompt}"):
            t = time.perf_counter()
            net.forward(tokens, 0)  # from an empty context: position 0 overwrites the cache
            seconds.append(time.perf_counter() - t)
        records.append(_record(f"pp{n_prompt}", n_prompt, 0, seconds, n_prompt,
                               {**common, "ttft_s": float(np.median(seconds))}))
    if n_gen:
        if n_gen > net.n_ctx:
            raise ValueError(f"-n {n_gen} does not fit the context of {net.n_ctx} (-c)")
        for n_seq in parallel:
            records.append(_bench_decode(net, n_gen, n_seq, repetitions,
                                         [_tokens(model, n_gen, rng) for _ in range(n_seq)],
                                         common))
    peak_rss = _peak_rss_bytes()  # before the bandwidth probe allocates its 1 GiB
    bw = read_bandwidth()
    bandwidth = bw["one_thread_gbs"] if common["n_threads"] == 1 else bw["two_threads_gbs"]
    for r in records:
        r["threading_layer"] = numba.threading_layer()  # known once a parallel kernel ran
        r["bandwidth_gbs"] = bandwidth
        r["peak_rss_bytes"] = peak_rss
    return records


def format_records(records: list[dict], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        keys = list(dict.fromkeys(k for r in records for k in r
                                  if k not in ("samples_ts", "samples_s")))  # every row's keys
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(records)
        return buf.getvalue()
    lines = ["| model | size | params | backend | threads | test | t/s |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in records:
        lines.append(f"| {r['model']} | {r['size_bytes'] / 2**20:.2f} MiB | "
                     f"{r['n_params'] / 1e6:.2f} M | {r['backend']} | {r['n_threads']} | "
                     f"{r['test']} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
    return "\n".join(lines)


def _backend_name(backend) -> str:
    return "CPU (Numba)" if backend.name == "cpu" else "CUDA (numba.cuda)"


def route_name(route: str) -> str:
    """The route and, for the integer one, the instructions it runs on."""
    return f"integer ({simd_int.ISA})" if route == "integer" else route


def header(model) -> str:
    threads = getattr(model.net.backend, "n_threads", None)
    return (f"numba {numba.__version__}, threading layer {numba.threading_layer()}, "
            f"{threads} threads, backend {_backend_name(model.net.backend)}, route "
            f"{route_name(model.route)}")


# -- kernels ------------------------------------------------------------------------
WEIGHT_BYTES = 288 << 20  # above 256 MB, so the last-level cache cannot hold the weights
COLS = 4096


def median_seconds(fn, repeats):
    """Median wall time of fn() over `repeats` runs, after one untimed run."""
    fn()  # compile or load from cache, and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_matvec(data: np.ndarray, ggml_type, shape, repeats: int) -> dict:
    """One matrix's matvec on both routes (the integer one where the type has it)."""
    x = np.random.default_rng(0).standard_normal(shape[1]).astype(np.float32)
    out = np.empty(shape[0], dtype=np.float32)
    s = median_seconds(lambda: matvec(data, ggml_type, shape, x, out), repeats)
    si = None
    tk, w = block_rows(data, ggml_type, shape)
    if tk.kernels.integer is not None:
        # the integer route's form of the matrix made once, as a loaded model makes it (the
        # 32-value types pack their rows), not on every call
        ik, scratch = tk.kernels.integer, matvec_scratch(tk, shape[0])
        wi = ik.prepare(w)
        si = median_seconds(lambda: ik.matvec_one(wi, x.reshape(1, -1), out.reshape(1, -1),
                                                  scratch), repeats)
    return {
        "type": ggml_type.name,
        "shape": list(shape),
        "mbytes": data.size / 1e6,
        "ms": s * 1e3,
        "gbs": data.size / s / 1e9,
        "int_ms": None if si is None else si * 1e3,
        "int_gbs": None if si is None else data.size / si / 1e9,
    }


def run_kernel_bench(lm_head=None, repeats: int = 5, types=None, out=sys.stdout) -> dict:
    """Benchmark every supported type on one > 256 MB random weight buffer (fp16 fields kept
    finite and normal), plus `lm_head` (a TensorInfo) if given. Returns the figures."""
    bw = read_bandwidth()
    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, size=WEIGHT_BYTES, dtype=np.uint8)
    buf.view(np.uint16)[:] &= 0x3BFF  # every aligned half finite and below 1
    rows = []
    for t in bar(sorted(types or SUPPORTED_TYPES, key=int), desc="matvec", unit=" types"):
        bs, ts = GGML_QUANT_SIZES[t]
        row_bytes = COLS // bs * ts
        n_rows = WEIGHT_BYTES // row_bytes
        rows.append(bench_matvec(buf[: n_rows * row_bytes], t, (n_rows, COLS), repeats))
    if lm_head is not None:
        r = bench_matvec(lm_head.data, lm_head.ggml_type, lm_head.shape, repeats)
        r["type"] = f"{lm_head.ggml_type.name} ({lm_head.name})"
        rows.append(r)
    two = bw["two_threads_gbs"]
    print(
        f"threads: {numba.get_num_threads()}  threading layer: {numba.threading_layer()}", file=out
    )
    print(
        f"read bandwidth (numpy.sum, 1 GiB): 1 thread {bw['one_thread_gbs']:.1f} GB/s, "
        f"2 threads {two:.1f} GB/s",
        file=out,
    )
    print(f"integer route: {simd_int.ISA}", file=out)
    print("| type | shape | MB | exact ms | exact GB/s | % of bw | integer ms | integer GB/s "
          "| % of bw |", file=out)
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|", file=out)
    for r in rows:
        integer = ("| - | - | - |" if r["int_gbs"] is None else
                   f"| {r['int_ms']:.2f} | {r['int_gbs']:.2f} | {100 * r['int_gbs'] / two:.0f}% |")
        print(
            f"| {r['type']} | {r['shape'][0]}x{r['shape'][1]} | {r['mbytes']:.0f} | "
            f"{r['ms']:.2f} | {r['gbs']:.2f} | {100 * r['gbs'] / two:.0f}% {integer}",
            file=out,
        )
    return {"bandwidth": bw, "matvec": rows}
