"""`gguf-engine batch`: a 40-row JSONL job gives, id for id, what single generate calls give; a
local Ray instance with two actors gives identical rows; an interrupted job resumes without a
duplicated, missing or cut line; malformed input lines are named by number."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import gguf_engine
from gguf_engine import batch

N_TOKENS = 8


@pytest.fixture(scope="module")
def model_path(fixtures):
    return fixtures / "synthetic" / "llama3-Q8_0.gguf"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    path = tmp_path_factory.mktemp("job") / "in.jsonl"
    rows = [{"id": i, "prompt": f"Item {i}: the story of {'a ' * (i % 7)}river"} for i in range(36)]
    rows += [{"id": "chat-a", "messages": [{"role": "user", "content": "Hello there"}]},
             {"id": "seeded", "prompt": "Once", "temperature": 0.9, "seed": 5},
             {"id": "short", "prompt": "A", "max_tokens": 3},
             {"id": "sampled", "prompt": "Twice", "temperature": 0.9},
             {"id": "constrained", "prompt": "Code:", "regex": "[a-c]{3}!", "temperature": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


@pytest.fixture(scope="module")
def reference(model_path, job):
    """id -> the tokens of a single generate call for that row."""
    model = gguf_engine.load(model_path, n_ctx=64)
    out = {}
    for r in job[1]:
        kw = {"max_tokens": r.get("max_tokens", N_TOKENS), "temperature": r.get("temperature", 0),
              "seed": r.get("seed", batch.row_seed(None, r["id"])), "regex": r.get("regex")}
        if "messages" in r:
            res = model.chat(r["messages"], chat_template=None, **kw)
        else:
            res = model.generate(r["prompt"], **kw)
        out[r["id"]] = res.tokens
    return out


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gguf_engine", "batch", *map(str, args)],
                          capture_output=True, text=True, timeout=600, **kw)


def read_out(path):
    lines = path.read_text().splitlines()
    rows = [json.loads(line) for line in lines]  # every line whole
    return {r["id"]: r for r in rows}, len(rows)


def test_a_job_gives_what_single_calls_give(tmp_path, model_path, job, reference):
    out = tmp_path / "out.jsonl"
    r = cli("-m", model_path, "-i", job[0], "-o", out, "-n", N_TOKENS, "--temp", 0, "-c", 64)
    assert r.returncode == 0, r.stderr
    got, n = read_out(out)
    assert n == len(job[1]) == len(got)
    assert {k: v["tokens"] for k, v in got.items()} == reference
    row = got[0]
    assert row["usage"]["completion_tokens"] == len(row["tokens"]) and row["finish_reason"]
    assert re.fullmatch(r"[a-c]{3}!", got["constrained"]["text"])
    # run again: nothing to do, nothing written
    before = out.read_bytes()
    r = cli("-m", model_path, "-i", job[0], "-o", out, "-n", N_TOKENS, "--temp", 0, "-c", 64)
    assert r.returncode == 0 and f"{len(job[1])} already done" in r.stderr
    assert out.read_bytes() == before


def test_ray_local_with_two_actors_gives_the_same_rows(tmp_path, model_path, job, reference):
    pytest.importorskip("ray")
    out = tmp_path / "ray.jsonl"
    r = cli("-m", model_path, "-i", job[0], "-o", out, "-n", N_TOKENS, "--temp", 0, "-c", 64,
            "--ray", "local", "--actors", 2, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert r.returncode == 0, r.stderr[-3000:]
    got, n = read_out(out)
    assert n == len(job[1])
    assert {k: v["tokens"] for k, v in got.items()} == reference


def test_an_interrupted_job_resumes(tmp_path, model_path, job):
    long = ["-m", model_path, "-i", job[0], "-n", 64, "--temp", 0, "-c", 96, "--parallel", 1]
    full = tmp_path / "full.jsonl"
    assert cli(*long, "-o", full).returncode == 0
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "gguf_engine", "batch", *long, "-o", out]
    # the child gets SIGINT's default disposition: started from a shell's background job, the
    # test runner inherits SIGINT ignored, and so would the child (Python then installs no
    # KeyboardInterrupt handler and the job runs to its end, exit 0)
    proc = subprocess.Popen(list(map(str, args)), stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not (out.exists() and out.read_text().count("\n") >= 5):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    part, n_part = read_out(out)
    assert 5 <= n_part < len(job[1]) and len(part) == n_part
    # a line cut short by a harder stop is dropped and redone
    with open(out, "a") as fh:
        fh.write('{"id": 99, "text": "cut sh')
    r = cli(*long, "-o", out)
    assert r.returncode == 0, r.stderr
    got, n = read_out(out)
    assert n == len(got) == len(job[1])
    assert got == read_out(full)[0]


def test_bad_lines_are_named(tmp_path, model_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": 1, "prompt": "Hi"}\n{oops\n\n{"id": 2}\n[1, 2]\n'
                   '{"id": 1, "prompt": "again"}\n{"id": 3, "prompt": "x", "top_k": "5"}\n'
                   '{"id": 4, "prompt": "ok"}\n')
    out = tmp_path / "out.jsonl"
    r = cli("-m", model_path, "-i", src, "-o", out, "-n", 2, "-c", 64)
    assert r.returncode == 1
    for n in (2, 4, 5, 6, 7):
        assert f"line {n}:" in r.stderr
    assert "line 1:" not in r.stderr and "line 8:" not in r.stderr
    assert set(read_out(out)[0]) == {1, 4}
    strict = cli("-m", model_path, "-i", src, "-o", tmp_path / "s.jsonl", "-n", 2, "-c", 64,
                 "--strict")
    assert strict.returncode == 2 and "line 2:" in strict.stderr and "--strict" in strict.stderr
    assert not (tmp_path / "s.jsonl").exists()


def test_a_row_that_cannot_run_gets_an_error_line(tmp_path, model_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": "long", "prompt": "word " * 200}) + "\n"
                   + json.dumps({"id": "fine", "prompt": "Hello"}) + "\n")
    out = tmp_path / "out.jsonl"
    counts = batch.run(str(model_path), src, out, n_ctx=64, max_tokens=2, temperature=0)
    assert counts == {"done": 2, "skipped": 0, "failed": 1, "bad_lines": 0}
    got, _ = read_out(out)
    assert "context" in got["long"]["error"] and got["fine"]["tokens"]
