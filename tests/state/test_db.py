"""One SQLite opener (state/db.py) for the four users of the action-log file.

The action log, the acknowledgements, the rebuild workflows and the window
queue keep the same durability settings and, when another process holds the
write lock, raise their own error with the same clear message (the console
shows it and keeps running) instead of a raw "database is locked" or a hang.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ventana.state.acks import AckBook, AckError
from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.rebuild import RebuildStore
from ventana.state.window import WindowError, WindowStore

WRITERS: list[tuple[str, Callable[[Path], object], Callable[[object], None], type[Exception]]] = [
    ("actionlog", lambda p: ActionLog.open(p, busy_timeout=0.3),
     lambda log: log.record(action="merge", target_system="sim", mode="read-write",  # type: ignore[attr-defined]
                            target_object="vm:a", target_name="a", plan={}, findings=[],
                            override=False, confirmed=False, outcome="refused"),
     ActionLogError),
    ("rebuild", lambda p: RebuildStore.open(p, busy_timeout=0.3),
     lambda rs: rs.create(rebuild_id="rb-1", vm_id="a", vm_name="a",  # type: ignore[attr-defined]
                          target_system="sim", node="", to_last_parent=False,
                          old_vm_name="a-old"),
     ActionLogError),
    ("window", lambda p: WindowStore.open(p, busy_timeout=0.3),
     lambda ws: ws.load("sat"),  # type: ignore[attr-defined]
     WindowError),
]


def _settings(conn: sqlite3.Connection) -> tuple[str, int, int]:
    return (conn.execute("PRAGMA journal_mode").fetchone()[0],
            conn.execute("PRAGMA synchronous").fetchone()[0],
            conn.execute("PRAGMA busy_timeout").fetchone()[0])


def test_all_four_open_the_file_the_same_way(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    log = ActionLog.open(db, busy_timeout=0.5)
    stores = [log, AckBook.open(db, busy_timeout=0.5), RebuildStore.open(db, busy_timeout=0.5),
              WindowStore.open(db, busy_timeout=0.5)]
    # WAL, synchronous FULL (2), the busy timeout in ms: the same for each connection.
    assert {_settings(s._conn) for s in stores} == {("wal", 2, 500)}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "open_", "write", "error"), WRITERS,
                         ids=[w[0] for w in WRITERS])
def test_a_locked_file_gives_a_clear_error_not_a_hang(
        tmp_path: Path, name: str, open_: Callable[[Path], object],
        write: Callable[[object], None], error: type[Exception]) -> None:
    db = tmp_path / "actions.db"
    store = open_(db)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        with pytest.raises(error, match="locked by another process"):
            write(store)
        assert time.monotonic() - t0 < 5
        with pytest.raises(error, match="locked by another process"):
            open_(tmp_path / "actions.db")  # opening creates tables: a write too
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    write(store)  # the lock is gone: the same handle works again


def test_acks_on_a_locked_file(tmp_path: Path) -> None:
    """Opening the book writes (its table): refused with the same message."""
    db = tmp_path / "actions.db"
    AckBook.open(db).close()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(AckError, match="locked by another process"):
            AckBook.open(db, busy_timeout=0.3)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_rebuild_whose_state_file_cannot_be_opened_sends_nothing(
        tmp_path: Path) -> None:
    """The rebuild opens the file again for its workflow: unusable, it is a plain failure
    with nothing sent — not an "unknown outcome, verify on the host"."""
    from test_sim_actions import quiet

    from ventana.backends.rebuild_runner import execute_rebuild
    from ventana.state.model import TaskState
    from ventana.state.plans import Plan

    db = tmp_path / "actions.db"
    db.write_bytes(b"this is not a database" * 100)
    sim = quiet()
    plan = Plan("rebuild", "vm:VM-001", "app-01", (), (), "", params={"db": str(db)})
    result = await execute_rebuild(sim.executor(), "VM-001", "rebuild-1", plan)
    assert result.state is TaskState.FAILED and "nothing was sent" in result.error
    assert "not a usable action log" in result.error
    await sim.close()
