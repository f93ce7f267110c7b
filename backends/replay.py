"""The replay backend: plays a recording back, read-only, at any speed.

It owns the timing of a replay and what the UI is told about it. The whole
recording is read when the backend is built, so a file that is not a
recording, or one from a newer Ventana, fails *before* the UI starts (the
CLI prints the message and exits 2). Damage inside the file does not fail:
the replay plays up to the damaged line and then says where it stopped.

Stream: ``ConnectionChanged("replay", CONNECTING)``, then ``CONNECTED`` with
what is being replayed, then every recorded event at its offset divided by
``speed`` (0 or infinity: as fast as the consumer takes them), recorded
``ConnectionChanged`` events passing through unchanged, and finally
``ConnectionChanged("replay", DISCONNECTED, reason)``: the data on screen is
historical from then on, and the reason says whether the replay finished or
stopped at damage. Operator actions in the recording are not events; they
are exposed as ``actions`` (all) and ``actions_so_far()`` (up to
``position``). A replay never has a mutating handle.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ventana.state.events import ConnectionChanged, Event, LinkState, Upsert
from ventana.state.model import Cluster
from ventana.state.recording import ActionRecord, Recording, read_recording
from ventana.state.sanitize import clean

from .base import Backend, Executor, ReadOnlyError

Sleep = Callable[[float], Awaitable[object]]
SOURCE = "replay"
YIELD_EVERY = 500  # let the event loop breathe during an instant replay


class ReplayBackend(Backend):
    name = "replay"

    def __init__(self, path: Path | str, speed: float = 1.0, *, sleep: Sleep | None = None
                 ) -> None:
        """Read the recording at ``path``.

        Raises ``RecordingVersionError`` / ``RecordingError`` (not a usable
        recording) or ``OSError`` (cannot be read), and ``ValueError`` for a
        negative or NaN speed. With ``sleep`` injected, time is virtual: the
        replay's clock advances by exactly what was asked of ``sleep``.
        """
        if math.isnan(speed) or speed < 0:
            raise ValueError(f"replay speed must be 0 (instant) or positive, not {speed}")
        self.path = Path(path)
        self.recording: Recording = read_recording(self.path)
        super().__init__(f"replay://{clean(self.path.name)}", read_only=True)
        self.speed = speed
        self._sleep: Sleep = sleep or asyncio.sleep
        self._virtual = sleep is not None
        self._virtual_now = 0.0
        self._closed = False
        self.position = 0.0  # recording time of the last item played
        self.finished = False
        for _, item in self.recording.items:
            if isinstance(item, Upsert) and isinstance(item.entity, Cluster):
                self.platform = item.entity.platform
                break

    # -- what the UI can show ------------------------------------------------------
    @property
    def stopped(self) -> str | None:
        """Where and why the recording's damage ended the replay, or None."""
        return self.recording.stopped

    @property
    def actions(self) -> list[ActionRecord]:
        """Every operator action in the recording (action, target, outcome…)."""
        return self.recording.actions

    def actions_so_far(self) -> list[ActionRecord]:
        return [a for a in self.recording.actions if a.t <= self.position]

    @property
    def read_only(self) -> bool:
        return True

    def _make_executor(self) -> Executor:
        raise ReadOnlyError(f"{self.target} is a replay: it cannot change anything")

    # -- the stream ------------------------------------------------------------------
    def _elapsed(self, start: float) -> float:
        if self._virtual:
            return self._virtual_now
        return time.monotonic() - start

    async def _wait(self, delay: float) -> None:
        await self._sleep(delay)
        if self._virtual:
            self._virtual_now += delay

    async def events(self) -> AsyncIterator[Event]:
        rec = self.recording
        name = clean(self.path.name)
        yield ConnectionChanged(SOURCE, LinkState.CONNECTING, f"opening {name}")
        if self._closed:
            yield ConnectionChanged(SOURCE, LinkState.DISCONNECTED, "replay closed")
            return
        pace = "as fast as possible" if self.speed in (0, math.inf) else f"×{self.speed:g}"
        yield ConnectionChanged(
            SOURCE,
            LinkState.CONNECTED,
            f"replaying {name}: {rec.header.target or 'unknown target'}, "
            f"recorded {rec.header.started or 'at an unknown time'}, {pace}",
        )
        instant = self.speed == 0 or math.isinf(self.speed)
        start = time.monotonic()
        self._virtual_now = 0.0
        since_pause = 0
        for t, item in rec.items:
            if not instant:
                delay = t / self.speed - self._elapsed(start)
                if delay > 0:
                    await self._wait(delay)
                    since_pause = 0
            if self._closed:
                yield ConnectionChanged(
                    SOURCE, LinkState.DISCONNECTED, f"replay closed at {self.position:.1f} s"
                )
                return
            self.position = t
            if not isinstance(item, ActionRecord):
                yield item
            since_pause += 1
            if since_pause >= YIELD_EVERY:
                await asyncio.sleep(0)
                since_pause = 0
        self.finished = True
        if rec.stopped:
            reason = (f"replay stopped at {rec.stopped} (after {self.position:.1f} s); "
                      "the rest of the recording is unreadable — data shown is historical")
        else:
            reason = f"replay finished at {self.position:.1f} s — data shown is historical"
        yield ConnectionChanged(SOURCE, LinkState.DISCONNECTED, reason)

    def now(self) -> datetime:
        """The source's time at the replay's position (ages read as they did then).

        A recording made from a faster clock (the simulator) keeps its start
        and rate in the header's meta (``clock_start``, ``clock_rate``).
        """
        meta = self.recording.header.meta
        try:
            started = datetime.fromisoformat(
                str(meta.get("clock_start") or self.recording.header.started)
            )
            rate = float(meta.get("clock_rate", 1.0))
        except (TypeError, ValueError):
            return super().now()
        if started.tzinfo is None:
            started = started.replace(tzinfo=UTC)
        return started + timedelta(seconds=self.position * rate)

    async def close(self) -> None:
        self._closed = True
