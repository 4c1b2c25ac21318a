"""Every tensor of the shared fixtures and of Gemma 3 270M dequantizes bit-exactly."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from conftest import fixtures_dir
from gguf_engine.kernels import dequantize

from gguf_engine.gguf_file import GGUFFile

FIXTURE_FILES = sorted((fixtures_dir() / "synthetic").glob("*.gguf")) if fixtures_dir() else []


def assert_file_bit_exact(path):
    f = GGUFFile(path)
    for t in f.tensors.values():
        shape = (t.data.shape[0], t.shape[-1])  # any tensor as (rows, row length)
        ref = gguf.dequantize(t.data, t.ggml_type).reshape(shape).astype(np.float32)
        got = dequantize(t.data, t.ggml_type, shape)
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (path.name, t.name)


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.name)
def test_fixture_tensors_bit_exact(path):
    assert_file_bit_exact(path)


def test_fixture_files_found(fixtures):
    assert len(FIXTURE_FILES) >= 30


def test_gemma_tensors_bit_exact(gemma_path):
    assert_file_bit_exact(gemma_path)
