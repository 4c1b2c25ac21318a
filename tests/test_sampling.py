"""What each sampling filter keeps and the exact probabilities sampling then draws from, on
small hand-made logit vectors (the expectations are computed here in float64 by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_engine.sampling import (
    Sampler,
    SamplingParams,
    apply_penalties,
    distribution,
    min_p,
    top_k,
    top_p,
)

# probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1, in the order 2, 0, 3, 1 of the ids
PROBS = {2: 0.5, 0: 0.3, 3: 0.15, 1: 0.05}
LOGITS = np.array([np.log(PROBS[i]) for i in range(4)], np.float32)


def params(**kw):
    base = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    return SamplingParams(**{**base, **kw})


def test_top_k_keeps_the_k_best_best_first():
    ids, z = top_k(LOGITS, 2)
    assert ids.tolist() == [2, 0]
    np.testing.assert_allclose(z, [np.log(0.5), np.log(0.3)], rtol=1e-6)
    assert top_k(LOGITS, 0)[0].tolist() == [2, 0, 3, 1]  # 0 keeps every token, sorted
    assert top_k(np.zeros(3, np.float32), 2)[0].tolist() == [0, 1]  # ties: lower id first


def test_top_k_distribution():
    ids, p = distribution(LOGITS, [], params(top_k=2))
    assert ids.tolist() == [2, 0]
    np.testing.assert_allclose(p, [0.5 / 0.8, 0.3 / 0.8], rtol=1e-6)


@pytest.mark.parametrize("p, kept", [(0.5, [2]), (0.6, [2, 0]), (0.79, [2, 0]), (0.81, [2, 0, 3]),
                                     (0.99, [2, 0, 3, 1]), (1.0, [2, 0, 3, 1])])
def test_top_p_keeps_the_fewest_tokens_reaching_p(p, kept):
    ids, z = top_p(*top_k(LOGITS, 0), p)
    assert ids.tolist() == kept
    probs = distribution(LOGITS, [], params(top_p=p))[1]
    mass = sum(PROBS[i] for i in kept)
    np.testing.assert_allclose(probs, [PROBS[i] / mass for i in kept], rtol=1e-6)


@pytest.mark.parametrize("p, kept", [(0.0, [2, 0, 3, 1]), (0.09, [2, 0, 3, 1]), (0.2, [2, 0, 3]),
                                     (0.59, [2, 0]), (0.61, [2]), (1.0, [2])])
def test_min_p_keeps_tokens_above_a_fraction_of_the_best(p, kept):
    assert min_p(*top_k(LOGITS, 0), p)[0].tolist() == kept
    probs = distribution(LOGITS, [], params(min_p=p))[1]
    mass = sum(PROBS[i] for i in kept)
    np.testing.assert_allclose(probs, [PROBS[i] / mass for i in kept], rtol=1e-6)


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
def test_temperature_after_the_filters(t):
    ids, probs = distribution(LOGITS, [], params(temperature=t, top_k=3))
    kept = [2, 0, 3]
    w = np.array([PROBS[i] ** (1 / t) for i in kept])
    assert ids.tolist() == kept
    np.testing.assert_allclose(probs, w / w.sum(), rtol=1e-6)


def test_filters_compose_in_llama_cpp_order():
    # top_k 3 -> {0.5, 0.3, 0.15}; top_p 0.85 of those renormalised (0.526, 0.842, 1.0) keeps 2;
    # min_p 0.7 of the best then drops 0.3 (0.6 < 0.7 * 1)
    ids, probs = distribution(LOGITS, [], params(top_k=3, top_p=0.85, min_p=0.7))
    assert ids.tolist() == [2] and probs.tolist() == [1.0]


def test_penalties_as_llama_cpp_applies_them():
    logits = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    history = [0, 1, 0]
    out = apply_penalties(logits, history, params(repeat_penalty=2.0))
    np.testing.assert_array_equal(out, [1.0, -4.0, 1.0, 0.5])  # divide positive, multiply neg
    out = apply_penalties(logits, history, params(frequency_penalty=0.5, presence_penalty=0.25))
    np.testing.assert_allclose(out, [2.0 - 1.0 - 0.25, -2.0 - 0.5 - 0.25, 1.0, 0.5])
    out = apply_penalties(logits, history, params(repeat_penalty=2.0, penalty_last_n=1))
    np.testing.assert_array_equal(out, [1.0, -2.0, 1.0, 0.5])  # only the last token counts
    assert apply_penalties(logits, history, params()) is logits  # nothing on: no copy


def test_greedy_is_the_argmax_after_penalties():
    logits = np.array([2.0, 1.9, 0.0], np.float32)
    assert Sampler(params(temperature=0)).sample(logits, []) == 0
    assert Sampler(params(temperature=0, repeat_penalty=1.1)).sample(logits, [0]) == 1


def test_sampling_follows_the_distribution():
    p = params(temperature=1.0, top_k=3, seed=0)
    s = Sampler(p)
    draws = np.bincount([s.sample(LOGITS, []) for _ in range(4000)], minlength=4)
    ids, probs = distribution(LOGITS, [], p)
    expected = np.zeros(4)
    expected[ids] = probs
    assert draws[1] == 0  # outside top-k: never drawn
    np.testing.assert_allclose(draws / 4000, expected, atol=0.03)
