"""Another process's hold on a SQLite action log, for tests: its write lock taken by a
second connection (``BEGIN EXCLUSIVE``), as a second console, ``ventana log migrate``
or a backup tool on the same file would."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """The database's write lock, held by another connection for the block."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("begin exclusive")
    try:
        yield
    finally:
        conn.execute("commit")
        conn.close()


def hold_write_lock(db: Path, seconds: float) -> threading.Thread:
    """Take the write lock now (returns once it is held), release it ``seconds`` later
    from a thread; join the thread to know it was released."""
    taken = threading.Event()

    def hold() -> None:
        with write_lock(db):
            taken.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, name="test-write-lock")
    thread.start()
    assert taken.wait(5), "the write lock was not taken"
    return thread
