"""`gguf-engine batch`: a JSONL file of prompts through the model, on this machine (batched
decoding) or on a Ray cluster (Ray Data, one model per actor).

Rows are read and checked on the driver: a malformed line is reported with its number; a row
whose id the output file already holds is skipped, so a rerun resumes an interrupted job.
Results are appended as they finish, one whole line at a time, flushed: an interrupted job
leaves every finished row intact and the file valid. A row without a seed gets one derived
from the job's seed and its id, so its result does not depend on where or with what it ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# per-row fields that set sampling (the rest of generate's keywords are the job's)
ROW_SAMPLING = {"max_tokens": int, "temperature": (int, float), "top_k": int,
                "top_p": (int, float), "min_p": (int, float), "repeat_penalty": (int, float),
                "presence_penalty": (int, float), "frequency_penalty": (int, float),
                "seed": int, "stop": (str, list), "response_format": dict, "grammar": str,
                "regex": str}
CHAT_ROW_FIELDS = {"tools": list, "tool_choice": (str, dict)}  # chat rows only


class BatchInputError(ValueError):
    """The input file cannot be used at all (unreadable, or a bad line under strict)."""


@dataclass
class Row:
    line: int  # 1-based line number in the input
    id: str | int
    prompt: str | None
    messages: list | None
    sampling: dict

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "id": self.id, "prompt": self.prompt,
                           "messages": self.messages, "sampling": self.sampling})

    @staticmethod
    def from_json(text: str) -> Row:
        return Row(**json.loads(text))


def row_seed(job_seed: int | None, row_id) -> int:
    """A row's seed when it gives none: from the job's seed and the row's id alone."""
    h = hashlib.sha256(f"{job_seed or 0}\0{json.dumps(row_id)}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def parse_line(text: str, line: int, chat: bool) -> Row:
    """One input line as a Row; ValueError saying what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise ValueError("'id' must be a string or an integer")
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of 'prompt' (a string) or 'messages' (a list)")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise ValueError("'prompt' must be a non-empty string")
    if messages is not None and (not isinstance(messages, list) or not messages):
        raise ValueError("'messages' must be a non-empty list")
    if chat and prompt is not None:
        messages, prompt = [{"role": "user", "content": prompt}], None
    fields = {**ROW_SAMPLING, **CHAT_ROW_FIELDS} if messages is not None else ROW_SAMPLING
    sampling = {}
    for key, kind in fields.items():
        if obj.get(key) is None:
            continue
        value = obj[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"'{key}' has the wrong type ({type(value).__name__})")
        sampling[key] = value
    unknown = set(obj) - {"id", "prompt", "messages"} - set(fields)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    return Row(line, rid, prompt, messages, sampling)


def done_ids(output: Path) -> set:
    """Ids the output file holds a complete line for; a last line cut short (an interrupted
    write) is removed from the file."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    keep = data.rfind(b"\n") + 1  # what follows the last newline is an unfinished line
    if keep < len(data):
        with open(output, "r+b") as fh:
            fh.truncate(keep)
    done = set()
    for n, raw in enumerate(data[:keep].splitlines(), 1):
        try:
            obj = json.loads(raw)
            done.add(json.dumps(obj["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise BatchInputError(f"{output}: line {n} is not a result line; refusing to "
                                  "append to a file this job did not write") from None
    return done


def read_rows(path: Path, chat: bool, strict: bool, skip: set, report) -> tuple[list[Row], int]:
    """(rows to run, number of bad lines)."""
    rows, bad, seen = [], 0, set()
    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise BatchInputError(f"cannot read {path}: {e.strerror}") from None
    with fh:
        for n, text in enumerate(fh, 1):
            if not text.strip():
                continue
            try:
                row = parse_line(text, n, chat)
                key = json.dumps(row.id)
                if key in seen:
                    raise ValueError(f"id {row.id!r} already appears on an earlier line")
                seen.add(key)
            except (ValueError, UnicodeDecodeError) as e:
                bad += 1
                report(f"{path}: line {n}: {e}")
                if strict:
                    raise BatchInputError(f"{path}: line {n}: {e} (--strict)") from None
                continue
            if key not in skip:
                rows.append(row)
    return rows, bad


def result_line(row: Row, res=None, error: str | None = None) -> str:
    if error is not None:
        return json.dumps({"id": row.id, "error": error}, ensure_ascii=False)
    out = {"id": row.id, "text": res.text, "tokens": res.tokens,
           "finish_reason": res.finish_reason,
           "usage": {"prompt_tokens": len(res.prompt_tokens),
                     "completion_tokens": len(res.tokens),
                     "total_tokens": len(res.prompt_tokens) + len(res.tokens)}}
    if res.reasoning is not None:
        out["reasoning"] = res.reasoning
    if res.tool_calls is not None:
        out["tool_calls"] = res.tool_calls
    return json.dumps(out, ensure_ascii=False)


def run_rows(model, rows: list[Row], sampling: dict, job_seed, emit) -> None:
    """Every row through the model's scheduler, n_seq at a time; emit(row, line) as each
    finishes. A row that cannot run (prompt too long, bad template) gets an error line."""
    from .scheduler import Scheduler

    sched = Scheduler(model.net, admit_per_step=model.net.cache.n_seq)
    pending = {}
    for row in rows:
        kw = {**sampling, **row.sampling}
        kw.setdefault("seed", row_seed(job_seed, row.id))
        try:
            turn = None  # chat rows: how to read the reply
            if row.messages is not None:
                seq, turn = model.chat_sequence(row.messages, **kw)
            else:
                seq = model.sequence(row.prompt, **kw)
        except Exception as e:  # the row's own fault: say so in its line
            emit(row, result_line(row, error=f"{type(e).__name__}: {e}"))
            continue
        pending[id(seq)] = (row, turn)
        sched.add(seq)
    hold = model._acquire()
    try:
        while sched.busy:
            for seq in sched.step():
                row, turn = pending.pop(id(seq))
                emit(row, _line_of(row, seq, turn))
    finally:
        model._release(hold)


def _line_of(row: Row, seq, turn) -> str:
    if seq.error is not None:
        return result_line(row, error=f"{type(seq.error).__name__}: {seq.error}")
    res = seq.result()
    return result_line(row, res if turn is None else turn.reply(res))


# -- the job ------------------------------------------------------------------------------------

def run(model, input_path, output_path, *, chat: bool = False, strict: bool = False,
        ray: str | None = None, actors: int = 2, n_ctx: int | None = None, n_seq: int = 8,
        n_threads: int | None = None, seed: int | None = None, progress: bool | None = None,
        report=None, **sampling) -> dict:
    """Run a JSONL job (see the module's docstring): `model` a loaded Model, or a path or
    reference (loaded here, or by each Ray actor). Returns counts: rows done now, skipped
    (already in the output), failed (error lines), bad input lines."""
    report = report or (lambda msg: print(f"gguf-engine: {msg}", file=sys.stderr))
    input_path, output_path = Path(input_path), Path(output_path)
    skip = done_ids(output_path)
    rows, bad = read_rows(input_path, chat, strict, skip, report)
    counts = {"done": 0, "skipped": len(skip), "failed": 0, "bad_lines": bad}
    if progress is None:
        progress = sys.stderr.isatty()
    if not rows:
        return counts
    from tqdm import tqdm

    bar = tqdm(total=len(rows), unit=" rows", disable=not progress, dynamic_ncols=True)
    t0, n_tokens = time.perf_counter(), 0
    with open(output_path, "a", encoding="utf-8") as out:
        def emit(line: str) -> None:
            nonlocal n_tokens
            out.write(line + "\n")  # one whole line per write, flushed: never half a row
            out.flush()
            obj = json.loads(line)
            counts["done"] += 1
            counts["failed"] += "error" in obj
            n_tokens += obj.get("usage", {}).get("completion_tokens", 0)
            bar.set_postfix_str(f"{n_tokens / (time.perf_counter() - t0):.1f} tok/s")
            bar.update(1)

        try:
            if ray is None:
                if not hasattr(model, "generate"):
                    from . import load

                    model = load(model, n_ctx=n_ctx, n_seq=n_seq, n_threads=n_threads)
                run_rows(model, rows, sampling, seed, lambda row, line: emit(line))
            else:
                _run_ray(model if isinstance(model, (str, os.PathLike)) else model.file.path,
                         rows, ray, actors, n_ctx, n_seq, sampling, seed, emit)
        finally:
            bar.close()
    return counts


class BatchWorker:
    """A Ray Data actor: the model loaded once, batches of rows through its scheduler."""

    def __init__(self, model_path: str, n_ctx, n_seq, n_threads, sampling, seed):
        from . import load

        self.model = load(model_path, n_ctx=n_ctx, n_seq=n_seq, n_threads=n_threads)
        self.sampling, self.seed = sampling, seed

    def __call__(self, batch: dict) -> dict:
        rows = [Row.from_json(r) for r in batch["row"]]
        lines = {}
        run_rows(self.model, rows, self.sampling, self.seed,
                 lambda row, line: lines.__setitem__(row.line, line))
        return {"line": [lines[r.line] for r in rows]}


def ray_init(address: str):
    """ray.init for an address, 'auto', or 'local' (a new instance on this machine: 127.0.0.1
    only, no dashboard, no usage statistics)."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--ray needs Ray: pip install 'gguf-engine[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=address, log_to_driver=False)
    return ray


def _run_ray(model_path, rows, address, actors, n_ctx, n_seq, sampling, seed, emit) -> None:
    ray = ray_init(address)
    import logging

    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False  # the job has its own bar
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // actors)
    ds = ray.data.from_items([{"row": r.to_json()} for r in rows])
    out = ds.map_batches(
        BatchWorker, batch_size=max(1, n_seq), compute=ActorPoolStrategy(size=actors),
        num_cpus=cpus, fn_constructor_kwargs={
            "model_path": str(model_path), "n_ctx": n_ctx, "n_seq": n_seq, "n_threads": cpus,
            "sampling": sampling, "seed": seed})
    for rec in out.iter_rows():
        emit(rec["line"])
