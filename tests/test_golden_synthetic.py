"""Tier 3: every synthetic model and quantization against llama.cpp's golden outputs (exact
route: float math on the dequantized weights), `synthetic/` and `more-archs/` (qwen3, gemma2)
alike."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fixtures_dir

import gguf_engine

DIRS = ("synthetic", "more-archs")
MODELS = sorted(f"{d}/{p.stem}" for d in DIRS for p in (fixtures_dir() / d).glob("*.gguf")) \
    if fixtures_dir() else []
LOGIT_TOL = 5e-3  # max |Δ| / std against exact_logits (fixtures README, exact engine)


@pytest.fixture(scope="module", params=MODELS)
def case(request, fixtures):
    name = request.param
    model = gguf_engine.load(fixtures / f"{name}.gguf")
    golden = np.load(fixtures / f"{name}.npz")
    return name, model, golden


def _exact(golden, kind, i):
    key = f"exact_{kind}_{i}"
    return golden[key] if key in golden else golden[f"{kind}_{i}"]


def _until_eog(tokens, eog):
    out = []
    for t in tokens:
        if int(t) in eog:
            break
        out.append(int(t))
    return out


@pytest.mark.parametrize("i", [0, 1, 2])
def test_logits_match_llama_cpp(case, i):
    name, model, golden = case
    ref = _exact(golden, "logits", i)
    got = model.logits(golden[f"prompt_tokens_{i}"])
    assert got.shape == ref.shape
    err = np.abs(got - ref).max() / ref.std()
    assert err <= LOGIT_TOL, f"{name} prompt {i}: max|Δ|/std = {err:.2e}"


@pytest.mark.parametrize("i", [0, 1, 2])
def test_greedy_matches_llama_cpp(case, i):
    name, model, golden = case
    expected = _until_eog(_exact(golden, "greedy", i), model.tokenizer.eog_ids)
    result = model.generate(golden[f"prompt_tokens_{i}"].tolist(), max_tokens=16, temperature=0)
    assert result.tokens[: len(expected)] == expected
    if len(expected) < 16:
        assert result.finish_reason == "eos"


def test_prefill_equals_token_by_token(case):
    name, model, golden = case
    tokens = golden["prompt_tokens_1"].tolist()  # longer than gemma3's window of 16
    whole = model.logits(tokens)
    net = model.net
    steps = np.stack([net.forward([t], p)[0].copy() for p, t in enumerate(tokens)])
    err = np.abs(steps - whole).max() / whole.std()
    # GELU goes through a half-precision table (as in llama.cpp), so a float32 rounding
    # difference between the batched and the single-token products can move an activation by
    # one half ulp (2^-11 relative); SiLU models have no such step.
    tol = 2e-3 if model.net.config.spec.gelu else 1e-4
    assert err <= tol, f"{name}: {err:.2e}"
