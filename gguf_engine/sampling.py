"""Choosing the next token from logits: a constraint's mask, penalties, top-k, top-p, min-p,
temperature."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from .defaults import SAMPLING


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = SAMPLING["temperature"]  # 0: greedy (argmax)
    top_k: int = SAMPLING["top_k"]  # 0: all tokens
    top_p: float = SAMPLING["top_p"]  # in (0, 1]
    min_p: float = SAMPLING["min_p"]  # in [0, 1]
    repeat_penalty: float = SAMPLING["repeat_penalty"]  # > 0; 1: off
    presence_penalty: float = SAMPLING["presence_penalty"]
    frequency_penalty: float = SAMPLING["frequency_penalty"]
    penalty_last_n: int = SAMPLING["penalty_last_n"]  # how many recent tokens the penalties see
    seed: int | None = None

    def __post_init__(self):
        def bad(name, value, rule):
            raise ValueError(f"invalid {name}={value!r}: {rule}")

        for name in ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty",
                     "frequency_penalty"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(name, v, "must be a finite number")
        if self.temperature < 0:
            bad("temperature", self.temperature, "must be >= 0 (0 is greedy)")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            bad("top_k", self.top_k, "must be an integer >= 0 (0 keeps every token)")
        if not 0 < self.top_p <= 1:
            bad("top_p", self.top_p, "must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            bad("min_p", self.min_p, "must be in [0, 1]")
        if self.repeat_penalty <= 0:
            bad("repeat_penalty", self.repeat_penalty, "must be > 0 (1 is off)")
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            bad("seed", self.seed, "must be an integer or None")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - float(np.max(logits))
    return z - math.log(float(np.exp(z).sum()))


def apply_penalties(logits: np.ndarray, history: list[int], p: SamplingParams) -> np.ndarray:
    """llama.cpp's penalties over the last penalty_last_n tokens of `history`: positive logits
    divided by repeat_penalty, negative ones multiplied; then minus count * frequency_penalty
    and presence_penalty. A copy; `logits` itself when no penalty is on."""
    if not history or (p.repeat_penalty == 1.0 and p.presence_penalty == 0.0
                       and p.frequency_penalty == 0.0):
        return logits
    logits = logits.copy()
    counts = Counter(history[-p.penalty_last_n :] if p.penalty_last_n > 0 else history)
    ids = np.fromiter(counts.keys(), dtype=np.int64)
    n = np.fromiter(counts.values(), dtype=np.float64)
    v = logits[ids]
    v = np.where(v > 0, v / p.repeat_penalty, v * p.repeat_penalty)
    v = v - n * p.frequency_penalty - p.presence_penalty
    logits[ids] = v
    return logits


# The filters take candidates best first: ids (n,) and their logits z (n,) float64, and return
# the ones they keep, in the same order. Probabilities are softmax(z) at temperature 1, as
# llama.cpp's chain applies top-k, top-p and min-p before the temperature.
def top_k(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best tokens of the whole vocabulary (all with k = 0), best first (ties: lower id)."""
    n = logits.shape[0]
    ids = np.argpartition(-logits, k - 1)[:k] if 0 < k < n else np.arange(n)
    ids = ids[np.lexsort((ids, -logits[ids]))]
    return ids, logits[ids].astype(np.float64)


def _probs(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z[0])
    return e / e.sum()


def top_p(ids, z, p: float):
    """The fewest best tokens whose probabilities sum to at least p."""
    if p >= 1.0:
        return ids, z
    keep = int(np.searchsorted(np.cumsum(_probs(z)), p) + 1)
    return ids[:keep], z[:keep]


def min_p(ids, z, p: float):
    """The tokens whose probability is at least p times the best one's."""
    if p <= 0.0:
        return ids, z
    keep = max(1, int(np.count_nonzero(_probs(z) >= p * _probs(z)[0])))
    return ids[:keep], z[:keep]


def distribution(logits: np.ndarray, history: list[int], p: SamplingParams):
    """(ids, probabilities) that sampling draws from: penalties, top-k, top-p, min-p, then
    the temperature (> 0)."""
    ids, z = top_k(apply_penalties(logits, history, p), p.top_k)
    ids, z = min_p(*top_p(ids, z, p.top_p), p.min_p)
    return ids, _probs(z / p.temperature)


class Sampler:
    """Built once per generation from its parameters; `sample` picks one token."""

    def __init__(self, params: SamplingParams):
        self.p = params
        self.rng = np.random.default_rng(params.seed)

    def sample(self, logits: np.ndarray, history: list[int],
               allowed: np.ndarray | None = None) -> int:
        """logits (n_vocab,) float32 -> a token id. `allowed` (n_vocab,) bool, if given, masks
        the others out before anything else (a constraint's mask)."""
        if allowed is not None:
            logits = np.where(allowed, logits, np.float32(-np.inf))
        if self.p.temperature == 0:
            return int(np.argmax(apply_penalties(logits, history, self.p)))
        ids, probs = distribution(logits, history, self.p)
        return int(ids[self.rng.choice(len(ids), p=probs)])
