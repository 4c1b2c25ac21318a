"""Choosing the next token from logits: penalties, top-k, top-p, min-p, temperature."""

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


class Sampler:
    """Built once per generation from its parameters; `sample` picks one token."""

    def __init__(self, params: SamplingParams):
        self.p = params
        self.rng = np.random.default_rng(params.seed)

    def apply_penalties(self, logits: np.ndarray, history: list[int]) -> np.ndarray:
        p = self.p
        if not history or (p.repeat_penalty == 1.0 and p.presence_penalty == 0.0
                           and p.frequency_penalty == 0.0):
            return logits
        logits = logits.copy()
        counts = Counter(history[-p.penalty_last_n :] if p.penalty_last_n > 0 else history)
        ids = np.fromiter(counts.keys(), dtype=np.int64)
        n = np.fromiter(counts.values(), dtype=np.float64)
        v = logits[ids]
        # llama.cpp: divide positive logits by the penalty, multiply negative ones
        v = np.where(v > 0, v / p.repeat_penalty, v * p.repeat_penalty)
        v = v - n * p.frequency_penalty - p.presence_penalty
        logits[ids] = v
        return logits

    def sample(self, logits: np.ndarray, history: list[int]) -> int:
        """logits (n_vocab,) float32 -> a token id."""
        p = self.p
        logits = self.apply_penalties(logits, history)
        if p.temperature == 0:
            return int(np.argmax(logits))
        n = logits.shape[0]
        if 0 < p.top_k < n:
            cand = np.argpartition(-logits, p.top_k - 1)[: p.top_k]
        else:
            cand = np.arange(n)
        cand = cand[np.argsort(-logits[cand], kind="stable")]  # best first
        z = logits[cand].astype(np.float64)
        probs = np.exp(z - z[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            cand, z, probs = cand[:keep], z[:keep], probs[:keep]
        if p.min_p > 0.0:
            keep = max(1, int(np.count_nonzero(probs >= p.min_p * probs[0])))
            cand, z = cand[:keep], z[:keep]
        z = (z - z[0]) / p.temperature
        w = np.exp(z)
        return int(cand[self.rng.choice(len(cand), p=w / w.sum())])
