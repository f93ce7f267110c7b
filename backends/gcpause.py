"""The cyclic garbage collector paused while long-lived, acyclic data is built — one
pause for the whole process, shared by every thread that asks for it.

``gc.disable()`` and ``gc.enable()`` switch the collector for the whole process, so
two places that each save ``gc.isenabled()``, disable it and later restore what they
saved undo each other when they overlap: the vSphere page reader (a worker thread)
turned the collector back on in the middle of the console's inventory apply (the UI
loop), or an earlier pauser's restore landed inside a later one's pause. Here pauses
are counted: the first one remembers whether the collector ran, the last one to end
restores exactly that. A collector someone turned off outside this module stays off.

Users: the console's first inventory (``core/console.py``), the simulator's world
build (``backends/sim``), a vCenter's inventory pages (``backends/vsphere/session.py``).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["pause", "paused", "pausing", "resume"]

_lock = threading.Lock()
_depth = 0
_restore = False


def pause() -> None:
    """One more pause: the collector is off until every pause has ended (``resume``)."""
    global _depth, _restore
    with _lock:
        if _depth == 0:
            _restore = gc.isenabled()
        gc.disable()  # again too: a collector turned on meanwhile by hand is paused
        _depth += 1


def resume() -> None:
    """End one pause; the last one turns the collector back on if the first found it on.

    Raises RuntimeError when no pause is running (a caller's bookkeeping bug: turning
    the collector on here could end somebody else's pause)."""
    global _depth
    with _lock:
        if _depth == 0:
            raise RuntimeError("gcpause.resume() without a pause")
        _depth -= 1
        if _depth == 0 and _restore:
            gc.enable()


@contextmanager
def paused() -> Iterator[None]:
    """``pause()`` for the block, ``resume()`` after it, whatever happens in it."""
    pause()
    try:
        yield
    finally:
        resume()


def pausing() -> int:
    """How many pauses are running now (0: none of ours)."""
    return _depth
