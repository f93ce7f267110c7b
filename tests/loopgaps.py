"""How long the running asyncio loop stood still, for tests of "never on the UI loop".

``async with loop_gaps() as gaps:`` ticks every 10 ms on the loop while the block runs
(it is ticking before the block starts); ``gaps.longest`` is the longest wall-clock
time between two ticks — a blocking call on the loop shows as a gap that long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class Gaps:
    longest: float = 0.0


@asynccontextmanager
async def loop_gaps() -> AsyncIterator[Gaps]:
    gaps, done = Gaps(), asyncio.Event()
    started = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        started.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.longest, last = max(gaps.longest, now - last), now

    ticker = asyncio.ensure_future(tick())
    await started.wait()
    try:
        yield gaps
    finally:
        done.set()
        await ticker
