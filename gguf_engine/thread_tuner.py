"""The thread count of decode steps on a machine that other processes share.

Each token runs a few hundred parallel regions, and OpenMP's fork-join ends each one when every
thread has checked in. A thread that shares its core with another busy process runs only in
its time slices, so one CPU-bound neighbour on a 2-core machine took Gemma 3 270M's decode from
52.6 to 11.9 tok/s here, where one thread alone gave 31.0 (dynamic scheduling of the loops did
not help: 11.8). The count itself has to adapt: steps are timed, and now and then a short
window of steps runs with one thread fewer or more; the faster count is kept, and a trial that
loses waits twice as long for the next. The row-parallel kernels give the same numbers at any
thread count, so this changes speed only, never tokens.
"""

from __future__ import annotations

import statistics
from collections import deque

WINDOW = 8  # steps timed per trial, and the recent steps it is judged against
FIRST_TRIAL = 16  # steps before the first trial
MAX_WAIT = 1024  # the longest wait between trials
MARGIN = 0.9  # a trial wins when its median step time is below this fraction of the current


class ThreadTuner:
    """The thread count for the next step of one kind (steps of the same number of rows),
    from 1 to n_max: `pick` it, run the step, `record` its time."""

    def __init__(self, n_max: int):
        self.n_max = n_max
        self.count = n_max
        self.wait = FIRST_TRIAL  # steps between trials
        self.since = 0  # steps at `count` since the last trial
        self.recent: deque[float] = deque(maxlen=WINDOW)  # seconds per step at `count`
        self.trial: int | None = None  # the count on trial
        self.trial_times: list[float] = []
        self.down = True  # the next trial's direction

    def pick(self) -> int:
        return self.trial if self.trial is not None else self.count

    def record(self, seconds: float) -> None:
        if self.trial is not None:
            self.trial_times.append(seconds)
            if len(self.trial_times) == WINDOW:
                self._judge()
            return
        self.recent.append(seconds)
        self.since += 1
        if self.since >= self.wait and len(self.recent) == WINDOW:
            options = [c for c in ((self.count - 1, self.count + 1) if self.down
                                   else (self.count + 1, self.count - 1)) if 1 <= c <= self.n_max]
            self.down = not self.down
            if options:
                self.trial, self.trial_times = options[0], []

    def _judge(self) -> None:
        if statistics.median(self.trial_times) < MARGIN * statistics.median(self.recent):
            self.count, self.wait = self.trial, FIRST_TRIAL
            self.recent = deque(self.trial_times, maxlen=WINDOW)
        else:
            self.wait = min(2 * self.wait, MAX_WAIT)
        self.trial, self.since = None, 0
