"""Stepped builds: work that pauses between chunks, so a caller on an event loop can
spread it over many turns.

A stepped build is a generator that yields ``None`` between chunks of work and
returns its result. ``finish`` runs one at once (a plain function call, as
``build_inventory`` is); ``SimBackend`` runs the world's build a few
milliseconds at a time on the loop instead of in a thread, where it held the
GIL against the UI in 5 ms turns (``sys.getswitchinterval``).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

Steps = Generator[None, None, T]

#: Items (VMs) built between two pauses: about 1 ms of work.
STEP_ITEMS = 32


def finish(steps: Steps[T]) -> T:
    """Run a stepped build to its end and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
