"""The one SQLite opener for the action-log file.

The action log (state/actionlog.py), the acknowledgements (state/acks.py),
the rebuild workflows (state/rebuild.py) and the maintenance-window queue
(state/window.py) all live in the same file and keep the same durability
rules, defined here once:

- WAL (checked: a network share that cannot do it is refused with a reason),
  ``synchronous=FULL`` (a committed row survives kill -9 and power loss),
  ``busy_timeout`` (another console writing waits, then a clear "locked by
  another process" message, never a hang);
- every write in one ``BEGIN IMMEDIATE`` transaction, rolled back on any
  failure;
- every SQLite or OS error becomes the caller's own exception class with an
  operator-readable explanation (``explain``), so the console shows it and
  keeps running.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

DEFAULT_BUSY_TIMEOUT = 10.0


def explain(exc: BaseException, path: Path, timeout: float) -> str:
    """What went wrong with the action-log file, in words an operator can act on."""
    msg = str(exc)
    low = msg.lower()
    if "locked" in low or "busy" in low:
        return (f"the action log {path} is locked by another process "
                f"(waited {timeout:g} s): {msg}")
    if "disk is full" in low or "disk full" in low:
        return f"the disk holding the action log {path} is full: {msg}"
    if "readonly" in low or "read-only" in low:
        return f"the action log {path} is read-only: {msg}"
    if "unable to open" in low:
        return f"cannot create or open the action log {path} (is the directory writable?): {msg}"
    if "not a database" in low or "malformed" in low:
        return f"{path} is not a usable action log: {msg}"
    return f"action log {path}: {msg}"


def connect(path: Path | str, *, busy_timeout: float, error: type[Exception],
            row_factory: type | None = None) -> sqlite3.Connection:
    """A connection to the action-log file with the durability settings above.

    Raises ``error`` (closing what it opened) when the file cannot be opened,
    cannot use WAL, or stays locked past ``busy_timeout`` seconds.
    """
    path = Path(path)
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                               check_same_thread=False)
        if row_factory is not None:
            conn.row_factory = row_factory
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise error(f"the action log {path} cannot use WAL (journal mode {mode!r}); "
                        "it needs a local disk, not a network share")
        conn.execute("PRAGMA synchronous = FULL")
        return conn
    except error:
        if conn is not None:
            conn.close()
        raise
    except (sqlite3.Error, OSError) as exc:
        if conn is not None:
            conn.close()
        raise error(explain(exc, path, busy_timeout)) from exc


@contextmanager
def write(conn: sqlite3.Connection, lock: threading.RLock, path: Path, timeout: float,
          error: type[Exception]) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction under ``lock``; any SQLite failure → ``error``."""
    with lock:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise error(explain(exc, path, timeout)) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise error(explain(exc, path, timeout)) from exc
            raise
