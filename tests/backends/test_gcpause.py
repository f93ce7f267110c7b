"""The collector pause is counted across threads: overlapping pausers never end each
other's pause, and the last one restores what the first one found."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from ventana.backends import gcpause


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_worker_threads_pause_ending_inside_the_consoles_leaves_it_paused(
    collector_on: None,
) -> None:
    """The order that broke before: a worker thread (vSphere pages) pauses first, the
    console pauses, the worker's pause ends — the collector must stay off until the
    console's ends too."""
    in_worker, release, done = threading.Event(), threading.Event(), threading.Event()

    def worker() -> None:
        with gcpause.paused():
            in_worker.set()
            release.wait(5)
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    assert in_worker.wait(5)
    assert not gc.isenabled()
    gcpause.pause()  # the console (the UI loop)
    release.set()
    assert done.wait(5)
    thread.join(5)
    assert not gc.isenabled(), "the worker's end turned the collector on under the console"
    assert gcpause.pausing() == 1
    gcpause.resume()
    assert gc.isenabled() and gcpause.pausing() == 0


def test_the_last_pause_restores_what_the_first_found(collector_on: None) -> None:
    gc.disable()  # somebody turned it off by hand: it stays off after our pauses
    with gcpause.paused(), gcpause.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with gcpause.paused():
        gc.enable()  # turned on by hand in a pause: the next pause turns it off again
        with gcpause.paused():
            assert not gc.isenabled()
    assert gc.isenabled()


def test_an_exception_ends_the_pause_and_a_resume_without_a_pause_is_refused(
    collector_on: None,
) -> None:
    with pytest.raises(KeyError), gcpause.paused():
        raise KeyError("x")
    assert gc.isenabled() and gcpause.pausing() == 0
    with pytest.raises(RuntimeError, match="without a pause"):
        gcpause.resume()
    assert gc.isenabled()
