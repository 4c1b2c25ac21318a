"""The GGUF reader: zero-copy views, and a clear error for every kind of bad file."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
from gguf_bytes import f32_tensor, gguf_bytes

from gguf_engine.gguf_file import GGUFError, GGUFFile


def write(tmp_path, payload, name="m.gguf"):
    path = tmp_path / name
    path.write_bytes(payload)
    return path


def test_reads_metadata_and_tensor_views(tmp_path):
    values = np.arange(8, dtype=np.float32)
    kv = {
        "general.architecture": (8, struct.pack("<Q", 5) + b"llama"),
        "llama.block_count": (4, struct.pack("<I", 2)),
        "tokenizer.ggml.tokens": (
            9,
            struct.pack("<IQ", 8, 2) + struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 2) + b"bc",
        ),
        "tokenizer.ggml.scores": (9, struct.pack("<IQ", 6, 2) + struct.pack("<2f", 1.5, -2)),
    }
    path = write(tmp_path, gguf_bytes([("w", (4, 2), 0, 0, 32)], kv, data=values.tobytes()))
    f = GGUFFile(path)
    assert f.architecture == "llama" and f.get("llama.block_count") == 2
    assert list(f.get("tokenizer.ggml.tokens")) == ["a", "bc"]
    np.testing.assert_array_equal(f.get("tokenizer.ggml.scores"), [1.5, -2])
    t = f.tensor("w")
    assert t.shape == (2, 4) and t.ggml_type.name == "F32"
    np.testing.assert_array_equal(t.data.view(np.float32), values.reshape(2, 4))
    assert not t.data.flags.writeable  # a view into the read-only map, not a copy


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"GGML" + b"\0" * 40, "not a GGUF file"),
        (b"GG", "not a GGUF file"),
        (gguf_bytes([], version=1), "unsupported GGUF version 1"),
        (gguf_bytes([f32_tensor("w", 8, 0)])[:30], "truncated header"),
        (gguf_bytes([f32_tensor("w", 8, 0)])[:-4], "truncated tensor data"),
        (gguf_bytes([f32_tensor("w", 8, 4096)], data=b"\0" * 32), "outside the file"),
        (gguf_bytes([("w", (8,), 99, 0, 32)]), "unknown GGML type 99"),
        (gguf_bytes([f32_tensor("w", 8, 0), f32_tensor("w", 8, 32)]), "duplicate tensor name"),
        (gguf_bytes([("w", (33,), 8, 0, 34)]), "not a multiple of the Q8_0 block size 32"),
        (gguf_bytes([f32_tensor("w", 8, 4)], data=b"\0" * 64), "not a multiple of the alignment"),
        (gguf_bytes([], {"general.alignment": (4, struct.pack("<I", 24))}), "bad alignment 24"),
        (gguf_bytes([], {"x": (8, struct.pack("<Q", 2**60))}), "truncated header"),
        (gguf_bytes([], {"x": (9, struct.pack("<IQ", 6, 2**61))}), "truncated header"),
        (gguf_bytes([], {"x": (77, b"")}), "unknown metadata value type 77"),
        (gguf_bytes([("w", (8, 0), 0, 0, 0)]), "bad shape"),
        (gguf_bytes([("w", (1,) * 5, 0, 0, 4)]), "5 dimensions"),
    ],
    ids=[
        "magic",
        "short",
        "version",
        "header",
        "data",
        "outside",
        "type",
        "duplicate",
        "block",
        "offset-alignment",
        "alignment",
        "huge-string",
        "huge-array",
        "value-type",
        "zero-dim",
        "dims",
    ],
)
def test_bad_files_raise_named_errors(tmp_path, payload, message):
    path = write(tmp_path, payload)
    with pytest.raises(GGUFError, match=message) as err:
        GGUFFile(path)
    assert str(path) in str(err.value)


def test_huge_counts_do_not_allocate(tmp_path):
    payload = b"GGUF" + struct.pack("<IQQ", 3, 2**62, 2**62)
    with pytest.raises(GGUFError, match="cannot fit"):
        GGUFFile(write(tmp_path, payload + b"\0" * 64))


def test_missing_file(tmp_path):
    with pytest.raises(GGUFError, match="cannot open"):
        GGUFFile(tmp_path / "nope.gguf")


def test_missing_tensor_is_named(tmp_path):
    f = GGUFFile(write(tmp_path, gguf_bytes([f32_tensor("w", 8, 0)])))
    with pytest.raises(GGUFError, match="missing tensor 'blk.0.attn_q.weight'"):
        f.tensor("blk.0.attn_q.weight")


OPEN_PROBE = """
import json, sys, time
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096
import numpy, gguf, gguf_engine.gguf_file as g
before = rss(); t = time.perf_counter()
f = g.GGUFFile(sys.argv[1])
print(json.dumps({"s": time.perf_counter() - t, "rss": rss() - before, "n": len(f.tensors),
                  "vocab": len(f.get("tokenizer.ggml.tokens"))}))
"""


def test_open_gemma_is_lean_and_quick(gemma_path):
    """Opening the 253 MB file reads no tensor data: < 50 MB RSS growth (the time it takes is
    reported by `gguf-engine bench` as load_s, not asserted here)."""
    res = subprocess.run(
        [sys.executable, "-c", OPEN_PROBE, str(gemma_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    probe = json.loads(res.stdout)
    assert probe["n"] == 236 and probe["vocab"] == 262144
    assert probe["rss"] < 50e6, probe


def _rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_drop_pages_gives_memory_back_and_keeps_the_data(gemma_path):
    """A packed matrix's file pages leave the process (Gemma's 178 MB token_embd.weight) and
    read the same bytes when touched again; views of anything else are left alone."""
    from gguf_engine.gguf_file import drop_pages

    f = GGUFFile(gemma_path)
    view = f.tensor("token_embd.weight").data
    first = int(view[::4096].astype(np.int64).sum())
    total = int(view.sum(dtype=np.uint64))  # every page touched
    before = _rss_bytes()
    drop_pages(view)
    assert before - _rss_bytes() > view.nbytes // 2
    assert int(view[::4096].astype(np.int64).sum()) == first
    assert int(view.sum(dtype=np.uint64)) == total
    plain = np.arange(10, dtype=np.uint8)
    drop_pages(plain)  # not a mapped file: nothing happens
    assert plain.tolist() == list(range(10))
