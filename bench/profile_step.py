"""Where one decode step and one prefill spend their time, per kernel family.

    python bench/profile_step.py [-m MODEL] [-p 512] [-n 20] [--integer] [--batch N]

Wraps the kernels the transformer calls with timers (each call is timed whole, so the parallel
regions' start-up is included), runs a prefill of -p random tokens and -n single-token decode
steps, and prints milliseconds and shares. Python time between kernels is the remainder. With
--batch N the decode steps take the next token of N sequences at once (each prefilled alone).
"""

from __future__ import annotations

import argparse
import collections
import time

# isort: off
import gguf_engine  # first: it configures OpenBLAS before NumPy loads
import numpy as np

# isort: on
from gguf_engine.kernels import quantized, registry

from gguf_engine import backend_cpu as backend_module

totals: dict[str, float] = collections.defaultdict(float)
calls: collections.Counter = collections.Counter()


def timed(label, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        totals[label] += time.perf_counter() - t
        calls[label] += 1
        return result

    return wrapper


def instrument(lm_head_rows: int) -> None:
    for mod, names in ((backend_module.norms, ["rmsnorm", "rmsnorm_kernel", "rmsnorm_serial"]),
                       (backend_module.rope, ["rope", "rope_tables", "rope_rotate",
                                            "rope_tables_kernel", "rope_rotate_kernel",
                                            "rope_rotate_serial"]),
                       (backend_module.activations, ["gated", "gated_kernel", "gated_serial"]),
                       (backend_module.attention, ["attention", "attention_matmul",
                                                 "attention_kernel",
                                                 "attention_matmul_unchecked"])):
        for name in names:
            if hasattr(mod, name):  # older trees lack some kernels: profile what is there
                setattr(mod, name, timed(name, getattr(mod, name)))
    quantized.np = _NumpyWithTimedMatmul()
    for t, tk in registry._REGISTRY.items():
        k = tk.kernels
        k.dequantize_rows = timed(f"dequant tiles {t.name}", k.dequantize_rows)
        for route, ns in (("", k), ("integer ", k.integer)):
            for attr in ("matvec_one", "matvec_tokens"):
                if ns is None:
                    continue
                kernel = getattr(ns, attr)

                def matvec(w, X, out, scratch, mv=kernel, name=f"{route}{t.name}"):
                    label = (f"{name} matvec LM head" if out.shape[1] == lm_head_rows
                             else f"{name} matvec")
                    return timed(label, mv)(w, X, out, scratch)

                setattr(ns, attr, matvec)


class _NumpyWithTimedMatmul:
    """NumPy as `kernels.quantized` sees it, with matmul (the BLAS part of prefill) timed."""

    matmul = staticmethod(timed("BLAS matmul", np.matmul))

    def __getattr__(self, name):
        return getattr(np, name)


def report(title: str, seconds: float, steps: int) -> None:
    print(f"\n{title}: {seconds / steps * 1e3:.2f} ms per step ({steps} steps)")
    print("| kernel family | ms per step | calls per step | share |")
    print("|---|---:|---:|---:|")
    for label, s in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {s / steps * 1e3:.2f} | {calls[label] / steps:.0f} | "
              f"{100 * s / seconds:.1f}% |")
    rest = seconds - sum(totals.values())
    print(f"| Python and NumPy glue | {rest / steps * 1e3:.2f} | | {100 * rest / seconds:.1f}% |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF path (default: the embedded model)")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-steps", type=int, default=20)
    ap.add_argument("--integer", action="store_true", help="the integer route")
    ap.add_argument("--batch", type=int, default=1, help="sequences per decode step")
    args = ap.parse_args()
    m = gguf_engine.load(args.model, n_ctx=args.n_prompt + args.n_steps + 1,
                         exact=not args.integer, n_seq=args.batch)
    net = m.net
    ids = np.random.default_rng(0).integers(0, m.n_vocab, args.n_prompt).tolist()
    steps = np.random.default_rng(1).integers(0, m.n_vocab, args.n_steps).tolist()
    net.forward(ids, 0)  # warm up: load every kernel from the cache
    net.forward(ids[:1], args.n_prompt)
    instrument(net.config.n_vocab)

    t = time.perf_counter()
    net.forward(ids, 0)
    report(f"prefill of {args.n_prompt} tokens", time.perf_counter() - t, 1)
    seqs = list(range(args.batch))
    for seq in seqs[1:]:
        net.forward(ids, 0, seq=seq)
    totals.clear()
    calls.clear()
    t = time.perf_counter()
    for i in range(args.n_steps):
        if args.batch == 1:
            net.forward([steps[i]], args.n_prompt + i)
        else:
            net.decode([steps[i]] * args.batch, seqs)
    report(f"decode step of {args.batch} sequence(s)", time.perf_counter() - t, args.n_steps)


if __name__ == "__main__":
    main()
