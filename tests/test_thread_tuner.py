"""The decode thread count adapts to a busy machine: driven with step times of a simulated
machine, the tuner settles on the faster count, backs off when trials lose, and returns when the
load goes away; the count never changes the tokens."""

from __future__ import annotations

import gguf_engine
from gguf_engine import thread_tuner
from gguf_engine.thread_tuner import ThreadTuner


def drive(tuner, seconds_at, steps):
    """Run `steps` steps whose time depends on the thread count; the counts used."""
    used = []
    for _ in range(steps):
        c = tuner.pick()
        used.append(c)
        tuner.record(seconds_at(c))
    return used


def test_a_busy_core_moves_decode_to_fewer_threads_and_back():
    tuner = ThreadTuner(2)
    busy = {1: 0.032, 2: 0.084}  # one CPU-bound neighbour: 2 threads wait on time slices
    used = drive(tuner, busy.get, 200)
    assert tuner.count == 1
    # it moved after its first trial, and later trials of 2 threads were few
    first = used.index(1)
    assert first == thread_tuner.FIRST_TRIAL
    assert used[first + thread_tuner.WINDOW:].count(2) <= 3 * thread_tuner.WINDOW
    idle = {1: 0.032, 2: 0.019}  # the neighbour left
    drive(tuner, idle.get, 2 * thread_tuner.MAX_WAIT)
    assert tuner.count == 2


def test_an_idle_machine_keeps_every_thread_and_tries_less_often():
    tuner = ThreadTuner(4)
    cost = {1: 0.06, 2: 0.035, 3: 0.025, 4: 0.02}
    used = drive(tuner, cost.get, 4000)
    assert tuner.count == 4
    # trials back off: after the first few, under 2% of the steps run on another count
    assert sum(c != 4 for c in used[2000:]) <= 0.02 * 2000
    assert tuner.wait == thread_tuner.MAX_WAIT


def test_noise_within_the_margin_changes_nothing():
    tuner = ThreadTuner(2)
    used = drive(tuner, {1: 0.0195, 2: 0.02}.get, 500)  # 2.5% apart: not a win
    assert tuner.count == 2 and used.count(1) <= 5 * thread_tuner.WINDOW


def test_tokens_do_not_depend_on_the_thread_count(fixtures):
    path = fixtures / "synthetic" / "llama-Q4_K_M.gguf"
    one = gguf_engine.load(path, n_ctx=64, n_threads=1)
    adaptive = gguf_engine.load(path, n_ctx=64)
    kw = dict(max_tokens=40, temperature=0.8, seed=3, ignore_eos=True)
    a = one.generate("The river", **kw)
    b = adaptive.generate("The river", **kw)
    assert a.tokens == b.tokens
    assert one.logits([1, 5, 9]).tobytes() == adaptive.logits([1, 5, 9]).tobytes()
