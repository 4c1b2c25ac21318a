"""What a JSON-schema constraint costs: decode tok/s with and without it (medians of R runs of
up to N tokens), and the time of one token mask alone over a constrained generation.

    python bench/constraint_overhead.py [-m MODEL] [-n 64] [-r 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCHEMA = {"type": "object", "properties": {"story": {"type": "string", "maxLength": 4000}},
          "required": ["story"], "additionalProperties": False}
PROMPT = "A long story as JSON: "


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", default=None, help="GGUF file (default: the embedded Gemma)")
    ap.add_argument("-n", "--tokens", type=int, default=64)
    ap.add_argument("-r", "--repeats", type=int, default=5)
    args = ap.parse_args()

    import gguf_engine
    from gguf_engine.constraints import Constraint, grammar_text

    model = gguf_engine.load(args.model, n_ctx=512)
    fmt = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    kw = dict(max_tokens=args.tokens, temperature=0.8)
    model.generate(PROMPT, max_tokens=4)  # compile
    t0 = time.perf_counter()
    Constraint(model.tokenizer, grammar_text(fmt), model.n_vocab)
    first = time.perf_counter() - t0  # the vocabulary for llguidance, built once per model
    rates = {"free": [], "json_schema": []}
    for r in range(args.repeats):
        for name, extra in (("free", {}), ("json_schema", {"response_format": fmt})):
            res = model.generate(PROMPT, seed=r, **kw, **extra)
            rates[name].append(res.timings.generation_tps)
    # the mask alone, token by token over the last constrained output
    c = Constraint(model.tokenizer, grammar_text(fmt), model.n_vocab)
    mask_s = []
    for t in res.tokens:
        t0 = time.perf_counter()
        c.allowed()
        mask_s.append(time.perf_counter() - t0)
        c.consume(t)
    free, constrained = (statistics.median(rates[k]) for k in ("free", "json_schema"))
    print(f"model: {model.file.path.name}, vocabulary {model.tokenizer.n_vocab}, "
          f"{args.tokens} tokens, median of {args.repeats}")
    print(f"free:        {free:.1f} tok/s")
    print(f"json_schema: {constrained:.1f} tok/s ({constrained / free:.3f}x)")
    print(f"mask per token: median {statistics.median(mask_s) * 1e3:.2f} ms, "
          f"max {max(mask_s) * 1e3:.2f} ms; llguidance vocabulary built once in {first:.2f} s")


if __name__ == "__main__":
    main()
