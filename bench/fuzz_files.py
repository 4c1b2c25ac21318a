"""Long fuzz run of the loader: `python bench/fuzz_files.py [N] [--seed S]` mutates the shared
fixtures N times (default 100,000) and prints the outcome counts, error kinds and findings as
JSON. tests/test_fuzz.py runs 5,000 of the same in CI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzzing  # noqa: E402
from tqdm import tqdm  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("n", nargs="?", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--fixtures", default=os.environ.get("GGUF_ENGINE_FIXTURES",
                                                        "../shared/fixtures"))
    args = p.parse_args()
    seeds = [Path(args.fixtures) / "synthetic" / f"{m}.gguf" for m in fuzzing.SEED_MODELS]
    bar = tqdm(total=args.n, unit=" files", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        result = fuzzing.run(seeds, args.n, Path(tmp), seed=args.seed, n_workers=args.workers,
                             progress=lambda done: bar.update(done - bar.n))
    bar.close()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
