"""Fuzzing the loader: valid GGUF fixtures mutated (bit flips, truncations, header fields set to
extremes) and loaded and run in long-lived worker processes, restarted when one dies. Every
outcome must be a success or a documented error; a signal, a hang or an undocumented exception
is a finding. Used by tests/test_fuzz.py (a fixed count in CI) and bench/fuzz_files.py (long
runs).

Run as a script, this file is the worker: one file path per line on stdin, one outcome per line
on stdout ("ok", or "error <ExceptionClass> <message>").
"""

from __future__ import annotations

import os
import random
import re
import select
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# What a hostile file may legitimately produce: each names the file and what is wrong in it.
DOCUMENTED = ("GGUFError", "UnsupportedTypeError", "NonFiniteLogitsError", "ContextMemoryError",
              "ContextOverflowError")
SEED_MODELS = ("llama-Q4_K_M", "llama3-Q4_0", "qwen2-Q5_0", "phi3-Q8_0", "gemma3-Q6_K")
WORKER_MEMORY_LIMIT = 6 << 30  # address space of a worker: Numba and its threads reserve ~2 GiB
FILE_TIMEOUT_S = 10.0  # a load and two tokens on a tiny model take ~10 ms; more is a hang
START_TIMEOUT_S = 600.0  # a worker's first run may compile every kernel it uses


# -- mutations -----------------------------------------------------------------------------
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def header_fields(data: bytes) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(offset, size) of every integer field of a valid GGUF header: counts, types, scalar
    values, array headers, tensor dims, types and offsets; and apart, every string length
    (most of them the vocabulary's, whose changes mostly end in a truncated header)."""
    fields = [(8, 8), (16, 8)]  # tensor count, metadata count
    lengths = []
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string(pos):
        lengths.append((pos, 8))
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]

    def value(pos, vtype):
        if vtype in _SCALAR_SIZES:
            fields.append((pos, _SCALAR_SIZES[vtype]))
            return pos + _SCALAR_SIZES[vtype]
        if vtype == 8:
            return string(pos)
        itype, count = struct.unpack_from("<IQ", data, pos)
        fields.extend([(pos, 4), (pos + 4, 8)])
        pos += 12
        if itype in _SCALAR_SIZES:  # sample a few items, not a 262k-entry array
            size = _SCALAR_SIZES[itype]
            fields.extend((pos + i * size, size) for i in (0, count // 2, count - 1) if count)
            return pos + count * size
        for _ in range(count):
            pos = value(pos, itype)
        return pos

    for _ in range(n_kv):
        pos = string(pos)
        vtype = struct.unpack_from("<I", data, pos)[0]
        fields.append((pos, 4))
        pos = value(pos + 4, vtype)
    for _ in range(n_tensors):
        pos = string(pos)
        n_dims = struct.unpack_from("<I", data, pos)[0]
        fields.append((pos, 4))
        pos += 4
        fields.extend((pos + 8 * i, 8) for i in range(n_dims))
        pos += 8 * n_dims
        fields.extend([(pos, 4), (pos + 4, 8)])
        pos += 12
    return fields, lengths


def _extreme(rng: random.Random, size: int, old: int) -> int:
    top = (1 << (8 * size)) - 1
    return rng.choice([0, 1, 2, 3, top, top >> 1, (top >> 1) + 1, old + 1, max(old - 1, 0),
                       old * 2, old // 2, rng.randrange(top + 1), 1 << rng.randrange(8 * size),
                       7, 64, 1000]) & top


def mutate(data: bytes, fields, rng: random.Random) -> tuple[bytes, str]:
    """One mutated copy of `data` (whose `header_fields` are `fields`) and what was done."""
    numbers, lengths = fields
    kind = rng.choices(["field", "flip", "truncate", "fields"], weights=[5, 3, 1, 1])[0]
    buf = bytearray(data)
    header_end = max(o + s for o, s in numbers + lengths)
    if kind in ("field", "fields"):
        done = []
        for _ in range(1 if kind == "field" else rng.randint(2, 4)):
            off, size = rng.choice(numbers if rng.random() < 0.8 else lengths)
            old = int.from_bytes(buf[off:off + size], "little")
            new = _extreme(rng, size, old)
            buf[off:off + size] = new.to_bytes(size, "little")
            done.append(f"{off}:{old}->{new}")
        return bytes(buf), f"{kind} " + ",".join(done)
    if kind == "flip":
        done = []
        for _ in range(rng.randint(1, 8)):
            # mostly the header, sometimes the tensor data (NaN and inf weights)
            off = rng.randrange(header_end) if rng.random() < 0.8 else rng.randrange(len(buf))
            bit = rng.randrange(8)
            buf[off] ^= 1 << bit
            done.append(f"{off}.{bit}")
        return bytes(buf), "flip " + ",".join(done)
    cut = rng.randrange(len(buf))
    return bytes(buf[:cut]), f"truncate {cut}"


# -- the worker side -----------------------------------------------------------------------
def _run_one(path: str) -> str:
    from gguf_engine.model import Model

    try:
        model = Model(path, n_ctx=64)
        # one prompt token, then one decoded: the one-token kernels only (a few prompt tokens
        # would compile the batched kernel of every type a mutation names, minutes in CI)
        ids = model.tokenize("Hello world")[:1] or [0]
        model.generate(ids, max_tokens=2, temperature=0)
        return "ok"
    except Exception as e:  # classified by the parent: documented or not
        msg = " ".join(str(e).split())[:300]
        return f"error {type(e).__name__} {msg}"


def _worker() -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    from numba.core import event

    class SayCompiling(event.Listener):
        def on_start(self, ev):
            sys.stdout.write("compiling\n")
            sys.stdout.flush()

        def on_end(self, ev):
            pass

    event.register("numba:compile", SayCompiling())
    for line in sys.stdin:
        sys.stdout.write(_run_one(line.rstrip("\n")) + "\n")
        sys.stdout.flush()


# -- the parent side -----------------------------------------------------------------------
class Worker:
    def __init__(self, env: dict):
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.warm = False

    def start(self, warmup: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=self.env, text=True)
        for path in warmup:  # load the kernels before files are timed
            out = self.ask(path, START_TIMEOUT_S)
            if out != "ok":
                raise RuntimeError(f"a valid seed file failed in a fresh worker: {path}: {out}")

    def send(self, path: str) -> bool:
        try:
            self.proc.stdin.write(path + "\n")
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def receive(self, deadline: float) -> str | None:
        """The outcome line, or None if the worker died or missed the deadline. A file whose
        types need kernels not compiled yet gets the compile time on top (the worker says
        "compiling" first): compiling is not a hang."""
        while True:
            try:
                ready, _, _ = select.select([self.proc.stdout], [], [],
                                            max(0.0, deadline - time.perf_counter()))
                line = self.proc.stdout.readline() if ready else None
            except OSError:
                line = ""
            if line == "compiling\n":
                deadline = max(deadline, time.perf_counter() + START_TIMEOUT_S)
                continue
            return line.rstrip("\n") if line else None

    def ask(self, path: str, timeout: float) -> str | None:
        if not self.send(path):
            return None
        return self.receive(time.perf_counter() + timeout)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self.proc = None
        return code


def run(seeds: list[Path], n_files: int, workdir: Path, seed: int = 0, n_workers: int = 2,
        progress=None) -> dict:
    """Mutate and run `n_files` files; returns counts by outcome and the findings."""
    rng = random.Random(seed)
    originals = [(p.read_bytes(), p) for p in seeds]
    fields = [header_fields(d) for d, _ in originals]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent)] + sys.path))
    workers = [Worker(env) for _ in range(n_workers)]
    warm = [str(p) for p in seeds]
    for w in workers:
        w.start(warm)
    outcomes: Counter = Counter()
    kinds: Counter = Counter()  # error messages with names and numbers taken out
    findings: list[str] = []
    t0 = time.perf_counter()
    done = 0
    try:
        while done < n_files:
            batch = []  # one file per worker, all running at once
            for j, w in enumerate(workers[:n_files - done]):
                k = rng.randrange(len(originals))
                data, mutation = mutate(originals[k][0], fields[k], rng)
                path = workdir / f"fuzz-{j}.gguf"
                path.write_bytes(data)
                batch.append((w, f"{originals[k][1].name} {mutation}", w.send(str(path))))
            deadline = time.perf_counter() + FILE_TIMEOUT_S
            for w, what, sent in batch:
                out = w.receive(deadline) if sent else None
                done += 1
                if out is None:
                    hung = w.proc.poll() is None
                    code = w.stop()
                    outcomes["hang" if hung else "crash"] += 1
                    findings.append(f"{'hang' if hung else f'crash (exit {code})'}: {what}")
                    w.start(warm[:1])
                elif out == "ok":
                    outcomes["ok"] += 1
                else:
                    _, cls, *msg = out.split(" ", 2)
                    outcomes[cls] += 1
                    kinds[_kind(msg[0] if msg else "")] += 1
                    if cls not in DOCUMENTED:
                        findings.append(f"undocumented {cls}: {what}: {msg[0] if msg else ''}")
            if progress:
                progress(done)
    finally:
        for w in workers:
            w.stop()
    return {"files": n_files, "seconds": time.perf_counter() - t0, "outcomes": dict(outcomes),
            "error_kinds": dict(kinds.most_common()), "findings": findings}


def _kind(message: str) -> str:
    """An error message without its file name, quoted names and numbers."""
    message = message.split(": ", 1)[-1]
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    message = re.sub(r"\d+", "N", message)
    return message[:90]


if __name__ == "__main__":
    _worker()
