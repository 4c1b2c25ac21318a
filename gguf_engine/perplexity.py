"""Perplexity as llama-perplexity defines it, and the KL divergence between two runs.

The text is tokenized whole (with BOS when the vocabulary adds one) and cut into
non-overlapping windows of n_ctx tokens; each window starts from an empty context (its first
token replaced by BOS, as llama.cpp does) and only its second half is scored: the negative
log-likelihood of token j + 1 given the logits at j, for j from n_ctx / 2 to n_ctx - 2, so every
scored token has at least n_ctx / 2 tokens of context. PPL = exp(mean NLL); its standard error
is PPL times the standard error of the mean NLL (llama.cpp's estimate).

With a base file, each scored position's top-k log-probabilities are saved (k = 32: the full
logits of a 262k vocabulary are 1 MiB a token), or, when the file exists, compared: the KL
divergence of this run from the base over the base's top k plus the rest as one bucket (a lower
bound of the full KL), and how often both runs put the same token first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sampling import log_softmax

TOP_K = 32
PIECE = 128  # scored positions evaluated per forward call: bounds the logits buffer


class PerplexityError(ValueError):
    """The text is too short, or a base file does not belong to this text and window."""


@dataclass
class Scores:
    nll: np.ndarray  # (n_scored,) float64: -log p(next token)
    top_ids: np.ndarray  # (n_scored, k) int32: the k likeliest next tokens, best first
    top_logp: np.ndarray  # (n_scored, k) float32: their log-probabilities
    # (n_scored, k) float32: log-probabilities of a base run's top tokens (None: no base)
    at_base: np.ndarray | None = None


def targets(tokens: list[int], n_ctx: int) -> np.ndarray:
    """(n_scored,) int32: the tokens scored, window after window."""
    n_win = len(tokens) // n_ctx
    if n_ctx < 4 or n_ctx % 2:
        raise PerplexityError(f"the window (-c) must be an even number >= 4, not {n_ctx}")
    if n_win == 0:
        raise PerplexityError(f"the text has {len(tokens)} tokens: fewer than one window of "
                              f"{n_ctx} (-c)")
    t = np.asarray(tokens[:n_win * n_ctx], np.int32).reshape(n_win, n_ctx)
    return t[:, n_ctx // 2 + 1:].reshape(-1)


def score(model, tokens: list[int], n_ctx: int, top_k: int = TOP_K,
          base_ids: np.ndarray | None = None, report=None) -> Scores:
    """Scores of every window's second half; with base_ids (n_scored, k), also this run's
    log-probabilities of those tokens. report(window, n_windows, running_ppl)."""
    targets(tokens, n_ctx)  # the window and the text's length checked
    n_win = len(tokens) // n_ctx
    bos = model.tokenizer.bos_id if model.tokenizer.add_bos else None
    first = n_ctx // 2
    top_k = min(top_k, model.n_vocab - 1)
    nll, ids, logp, at_base = [], [], [], []
    hold = model._acquire()
    try:
        net = model.net
        for w in range(n_win):
            win = list(tokens[w * n_ctx:(w + 1) * n_ctx])
            if bos is not None:
                win[0] = bos
            net.forward(win[:first], 0)  # context only: its logits are not needed
            for j in range(first, n_ctx - 1, PIECE):
                end = min(j + PIECE, n_ctx - 1)
                logits = net.forward(win[j:end], j, all_logits=True)  # (end - j, V)
                for r in range(end - j):
                    lp = log_softmax(logits[r])
                    top = np.argpartition(-lp, top_k)[:top_k]
                    top = top[np.lexsort((top, -lp[top]))]
                    nll.append(-lp[win[j + r + 1]])
                    ids.append(top.astype(np.int32))
                    logp.append(lp[top].astype(np.float32))
                    if base_ids is not None:
                        at_base.append(lp[base_ids[len(nll) - 1]].astype(np.float32))
            if report is not None:
                report(w + 1, n_win, math.exp(float(np.mean(nll))))
    finally:
        model._release(hold)
    return Scores(np.array(nll, np.float64), np.array(ids), np.array(logp),
                  np.array(at_base) if base_ids is not None else None)


def summary(s: Scores) -> dict:
    """PPL, its standard error and the number of tokens scored."""
    n = len(s.nll)
    mean = float(s.nll.mean())
    ppl = math.exp(mean)
    var = float((s.nll ** 2).mean()) - mean * mean
    stderr = ppl * math.sqrt(var / (n - 1)) if n > 1 and var > 0 else 0.0
    return {"ppl": ppl, "ppl_stderr": stderr, "n_tokens": n}


def save_base(path: Path, s: Scores, scored: np.ndarray, n_ctx: int) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, top_ids=s.top_ids, top_logp=s.top_logp, targets=scored,
                            n_ctx=np.int64(n_ctx))


def load_base(path: Path, scored: np.ndarray, n_ctx: int,
              n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(top_ids, top_logp) of a base file made over the same scored tokens and window."""
    try:
        with np.load(path) as base:
            ids, logp = base["top_ids"], base["top_logp"]
            b_targets, b_ctx = base["targets"], int(base["n_ctx"])
    except (OSError, KeyError, ValueError) as e:
        raise PerplexityError(f"{path} is not a base file of `gguf-engine perplexity`: "
                              f"{e}") from None
    if b_ctx != n_ctx or not np.array_equal(b_targets, scored):
        raise PerplexityError(f"{path} was made from another text or window (-c {b_ctx}); "
                              "compare runs over the same text, tokenizer and -c")
    if ids.shape != logp.shape or ids.ndim != 2 or len(ids) != len(scored) or (
            ids.size and not 0 <= ids.min() <= ids.max() < n_vocab):
        raise PerplexityError(f"{path}: top_ids and top_logp do not match the scored tokens")
    return ids, logp


def compare(base_ids: np.ndarray, base_logp: np.ndarray, s: Scores) -> dict:
    """KL divergence of this run from the base, over the base's top k plus the rest as one
    bucket (mean and 99th percentile), and top-1 agreement."""
    b = base_logp.astype(np.float64)
    new = s.at_base.astype(np.float64)
    p, q = np.exp(b), np.exp(new)
    p_rest = np.clip(1 - p.sum(1), 1e-12, 1)
    q_rest = np.clip(1 - q.sum(1), 1e-12, 1)
    kl = (p * (b - new)).sum(1) + p_rest * np.log(p_rest / q_rest)
    return {"kl_mean": float(kl.mean()), "kl_p99": float(np.percentile(kl, 99)),
            "top1_agreement": float(np.mean(base_ids[:, 0] == s.top_ids[:, 0]))}
