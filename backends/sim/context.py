"""What the simulated host's workflows (compact, delete, upgrade, rebuild) may use of the backend.

``SimBackend`` builds one ``SimContext`` and hands it to ``cleanup`` and
``rebuild`` instead of itself. A workflow sees:

- ``world`` (the simulated host's state; its task rows are the world's
  ``start_task``/``progress``/``finish_task``) and ``sched`` (the simulated
  clock's scheduler);
- ``connected`` and ``target`` (a workflow refuses before sending when the
  link is down);
- ``catch_up()`` — move the simulated clock to the wall's now before reading
  the world — and ``wake()`` — let the stream pump flush what changed;
- ``settle(task_id, future)`` — wait for a short operation's outcome; while
  it waits the operation is *in flight*: closing the session or losing the
  link resolves it UNKNOWN, as a real client cannot know its end;
- ``merge(...)`` (the rebuild merges through the backend's merge job) and
  ``forget_vm(vm_id)`` (a deleted VM leaves the churn's plans).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeVar

from ..base import ActionResult
from .clock import Scheduler
from .world import World

R = TypeVar("R")


class MergeFn(Protocol):
    def __call__(self, vm_id: str, task_id: str, *, keep_last: bool = False,
                 force_fail: bool = False) -> Awaitable[ActionResult]: ...


class SimContext:
    """A ``SimBackend`` as its workflows see it (see the module docstring)."""

    def __init__(
        self,
        *,
        target: str,
        world: Callable[[], World],
        sched: Scheduler,
        is_connected: Callable[[], bool],
        catch_up: Callable[[], None],
        wake: Callable[[], None],
        in_flight: MutableMapping[str, asyncio.Future[Any]],
        merge: MergeFn,
        forget_vm: Callable[[str], None],
    ) -> None:
        self.target = target
        self.sched = sched
        self._world = world
        self._is_connected = is_connected
        self._catch_up = catch_up
        self._wake = wake
        self._in_flight = in_flight
        self.merge = merge
        self._forget_vm = forget_vm

    @property
    def world(self) -> World:
        return self._world()

    @property
    def connected(self) -> bool:
        return self._is_connected()

    def catch_up(self) -> None:
        """In real time, move the simulated clock to where the wall says it is now."""
        self._catch_up()

    def wake(self) -> None:
        """Let the stream pump run now (the world changed)."""
        self._wake()

    def forget_vm(self, vm_id: str) -> None:
        self._forget_vm(vm_id)

    async def settle(self, task_id: str, future: asyncio.Future[R]) -> R:
        """Wait for ``future`` (resolved by the scheduler); while it waits, closing the
        session or losing the link resolves it with an UNKNOWN ``ActionResult``."""
        self._in_flight[task_id] = future
        self._wake()
        try:
            return await future
        finally:
            self._in_flight.pop(task_id, None)
