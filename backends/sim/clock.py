"""Simulated time: the clock and the discrete-event scheduler.

Owns the one simulated clock (seconds since the epoch, advanced only by the
scheduler, never read from the wall) and the queue of timed callbacks that
churn and actions put on it. Ties break by insertion order, so the same
sequence of ``at``/``after`` calls runs in the same order every time.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


class SimClock:
    def __init__(self, epoch: datetime) -> None:
        self.epoch = epoch
        self.t = 0.0  # simulated seconds since the epoch

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=self.t)


@dataclass(order=True, slots=True)
class Timer:
    due: float
    seq: int
    fn: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def at(self, due: float, fn: Callable[[], None]) -> Timer:
        timer = Timer(max(due, self.clock.t), next(self._seq), fn)
        heapq.heappush(self._heap, timer)
        return timer

    def after(self, delay: float, fn: Callable[[], None]) -> Timer:
        return self.at(self.clock.t + max(0.0, delay), fn)

    def next_due(self) -> float | None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].due if self._heap else None

    def run_next(self) -> None:
        """Advance the clock to the next timer and run it."""
        if self.next_due() is None:
            return
        timer = heapq.heappop(self._heap)
        self.clock.t = max(self.clock.t, timer.due)
        timer.fn()

    def advance(self, seconds: float) -> None:
        """Move the clock forward (never past the next timer)."""
        due = self.next_due()
        target = self.clock.t + max(0.0, seconds)
        self.clock.t = target if due is None else min(target, max(due, self.clock.t))

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)
