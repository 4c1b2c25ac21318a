"""`gguf-engine bench`: llama-bench's tests (pp = prompt processing, tg = generation from an
empty context) with warm-up and repetitions; tokenization and sampling are not timed."""

from __future__ import annotations

import csv
import io
import json
import resource
import time

import numba
import numpy as np

from .bandwidth import read_bandwidth
from .progress import bar


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
    return {"test": test, "n_prompt": n_prompt, "n_gen": n_gen,
            "n_threads": numba.get_num_threads(), "avg_ts": float(np.mean(ts)),
            "stddev_ts": float(np.std(ts, ddof=1)) if len(ts) > 1 else 0.0,
            "samples_ts": ts, "samples_s": seconds, **extra}


def run_bench(model, load_s: float, n_prompt: int, n_gen: int, repetitions: int) -> list[dict]:
    net = model.net
    rng = np.random.default_rng(0)
    common = {"model": model.file.path.name, "size_bytes": model.file.size,
              "n_params": model.file.n_params, "backend": "CPU (Numba)",
              "threading_layer": numba.threading_layer(), "load_s": load_s}
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
        tokens = _tokens(model, n_gen, rng)
        for p in range(min(n_gen, 8)):  # warm-up
            net.forward([tokens[p]], p)
        seconds, first = [], []
        for _ in bar(range(repetitions), desc=f"tg{n_gen}"):
            t = time.perf_counter()
            for p, tok in enumerate(tokens):
                net.forward([tok], p)
                if p == 0:
                    first.append(time.perf_counter() - t)
            seconds.append(time.perf_counter() - t)
        tg_ts = n_gen / float(np.mean(seconds))
        records.append(_record(f"tg{n_gen}", 0, n_gen, seconds, n_gen,
                               {**common, "ttft_s": float(np.median(first)),
                                "weight_bytes_per_token": net.weights.decode_bytes,
                                "read_gbs": net.weights.decode_bytes * tg_ts / 1e9}))
    peak_rss = _peak_rss_bytes()  # before the bandwidth probe allocates its 1 GiB
    bw = read_bandwidth()
    bandwidth = bw["one_thread_gbs"] if numba.get_num_threads() == 1 else bw["two_threads_gbs"]
    for r in records:
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


def header() -> str:
    return (f"numba {numba.__version__}, threading layer {numba.threading_layer()}, "
            f"{numba.get_num_threads()} threads")

