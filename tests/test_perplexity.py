"""`gguf-engine perplexity`: llama-perplexity's definition checked against a float64 NumPy
computation over every position's logits; the KL divergence between two quantizations against
the same formula in float64 from the full logits of both; the CLI's JSON and base files."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

import gguf_engine
from gguf_engine import perplexity as pp

TEXT = ("The river runs past the mill and under the old stone bridge, where children throw "
        "sticks and watch them race to the other side. ") * 12
N_CTX = 32


def reference(model, tokens, n_ctx):
    """(nll per scored token, log-softmax rows) in float64 from whole-window logits."""
    nll, rows = [], []
    for w in range(len(tokens) // n_ctx):
        win = list(tokens[w * n_ctx:(w + 1) * n_ctx])
        if model.tokenizer.add_bos:
            win[0] = model.tokenizer.bos_id
        logits = model.logits(win).astype(np.float64)
        for j in range(n_ctx // 2, n_ctx - 1):
            z = logits[j] - logits[j].max()
            lp = z - np.log(np.exp(z).sum())
            nll.append(-lp[win[j + 1]])
            rows.append(lp)
    return np.array(nll), np.array(rows)


@pytest.fixture(scope="module")
def models(fixtures):
    return [gguf_engine.load(fixtures / "synthetic" / f"llama-{t}.gguf", n_ctx=N_CTX)
            for t in ("Q8_0", "Q4_K_M")]


def test_perplexity_matches_float64(models):
    model = models[0]
    tokens = model.tokenize(TEXT)
    s = pp.score(model, tokens, N_CTX)
    nll, _ = reference(model, tokens, N_CTX)
    assert len(s.nll) == len(nll) == (len(tokens) // N_CTX) * (N_CTX // 2 - 1)
    np.testing.assert_allclose(s.nll, nll, rtol=1e-4, atol=1e-4)
    out = pp.summary(s)
    assert out["ppl"] == pytest.approx(math.exp(nll.mean()), rel=1e-5)
    sd = nll.std(ddof=0) * math.sqrt(1 / (len(nll) - 1))
    assert out["ppl_stderr"] == pytest.approx(out["ppl"] * sd, rel=1e-4)
    assert np.array_equal(pp.targets(tokens, N_CTX),
                          [t for w in range(len(tokens) // N_CTX)
                           for t in tokens[w * N_CTX + N_CTX // 2 + 1:(w + 1) * N_CTX]])


def test_kl_between_two_quantizations_matches_float64(models):
    base_model, other = models
    tokens = base_model.tokenize(TEXT)
    base = pp.score(base_model, tokens, N_CTX, top_k=8)
    run = pp.score(other, tokens, N_CTX, top_k=8, base_ids=base.top_ids)
    got = pp.compare(base.top_ids, base.top_logp, run)
    _, p_rows = reference(base_model, tokens, N_CTX)
    _, q_rows = reference(other, tokens, N_CTX)
    kls = []
    for i, ids in enumerate(base.top_ids):
        p, q = np.exp(p_rows[i][ids]), np.exp(q_rows[i][ids])
        kls.append((p * np.log(p / q)).sum()
                   + (1 - p.sum()) * math.log((1 - p.sum()) / (1 - q.sum())))
    assert got["kl_mean"] == pytest.approx(np.mean(kls), rel=1e-3, abs=1e-6)
    assert got["kl_mean"] > 0
    assert got["top1_agreement"] == pytest.approx(np.mean(
        p_rows.argmax(1) == q_rows.argmax(1)), abs=1e-9)
    same = pp.compare(base.top_ids, base.top_logp,
                      pp.score(base_model, tokens, N_CTX, top_k=8, base_ids=base.top_ids))
    assert abs(same["kl_mean"]) < 1e-6 and same["top1_agreement"] == 1.0


def test_short_text_and_odd_window_are_errors(models):
    with pytest.raises(pp.PerplexityError, match="fewer than one window"):
        pp.targets([1, 2, 3], 32)
    with pytest.raises(pp.PerplexityError, match="even number"):
        pp.targets(list(range(100)), 31)


def test_cli_json_and_base_file(fixtures, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    base = tmp_path / "base.npz"

    def run(model, *extra):
        res = subprocess.run([sys.executable, "-m", "gguf_engine", "perplexity", "-m",
                              fixtures / "synthetic" / f"llama-{model}.gguf", "-f", text, "-c",
                              str(N_CTX), "-o", "json", "--kl-base", base, *extra],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    first = run("Q8_0")
    assert set(first) == {"ppl", "ppl_stderr", "n_tokens", "route"} and base.exists()
    model = gguf_engine.load(fixtures / "synthetic" / "llama-Q8_0.gguf", n_ctx=N_CTX)
    nll, _ = reference(model, model.tokenize(TEXT), N_CTX)
    assert first["ppl"] == pytest.approx(math.exp(nll.mean()), rel=1e-4)
    second = run("Q4_K_M")
    assert second["kl_mean"] > 0 and 0 <= second["top1_agreement"] <= 1
    bad = subprocess.run([sys.executable, "-m", "gguf_engine", "perplexity", "-m",
                          fixtures / "synthetic" / "llama-Q8_0.gguf", "-f", text, "-c", "16",
                          "--kl-base", base], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "another text or window" in bad.stderr
