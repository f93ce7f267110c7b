"""The window queue written behind (state/window.py): changes are made at once in
memory and written by one writer thread, on a real SQLite file whose write lock another
connection holds — the change never waits for the lock, a failed write is reported
(not raised) and the next change writes everything again."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from dblock import hold_write_lock, write_lock

from ventana.state.actionlog import ActionLog
from ventana.state.window import MaintenanceWindow, WindowStore


def opened(tmp_path: Path, busy_timeout: float = 10.0) -> tuple[Path, MaintenanceWindow,
                                                                 list[str]]:
    db = tmp_path / "actions.db"
    ActionLog.open(db).close()  # the schema
    window = WindowStore.open(db, busy_timeout=busy_timeout).load("sat-night")
    heard: list[str] = []
    window.write_behind(heard.append)
    return db, window, heard


def stored(db: Path, name: str = "sat-night") -> list[tuple[str, str]]:
    store = WindowStore.open(db)
    try:
        return [(i.vm_name, i.status) for i in store.load(name).items]
    finally:
        store.close()


def test_a_change_never_waits_for_the_database_and_is_written_when_it_can_be(
    tmp_path: Path,
) -> None:
    db, window, heard = opened(tmp_path)
    with write_lock(db):
        began = time.perf_counter()
        window.add("v1", "git-01", "merge")
        window.add("v2", "kms-01", "merge")
        window.move(window.items[1].id, -1)
        took = time.perf_counter() - began
        done = window.flushed()
        time.sleep(0.3)
        assert not done.done()  # the writer waits for the lock, the caller did not
    assert took < 0.1, f"a change waited {took * 1000:.0f} ms"
    assert done.result(timeout=10) == ""
    assert stored(db) == [("kms-01", "queued"), ("git-01", "queued")]
    assert heard and heard[-1] == ""
    window.close()


def test_a_failed_write_is_reported_and_the_next_change_writes_everything(
    tmp_path: Path,
) -> None:
    db, window, heard = opened(tmp_path, busy_timeout=0.2)
    with write_lock(db):
        window.add("v1", "git-01", "merge")
        window.rename("sun-night")  # the old name's rows must go with the next write
        error = window.flushed().result(timeout=10)
    assert error and "lock" in error, error
    assert heard[-1] == error
    assert stored(db) == []  # nothing of it reached the database…
    window.add("v2", "kms-01", "merge")
    assert window.flushed().result(timeout=10) == ""
    assert heard[-1] == ""
    # …and the next change wrote all of it, under the new name only.
    assert stored(db, "sun-night") == [("git-01", "queued"), ("kms-01", "queued")]
    check = sqlite3.connect(db)
    assert [r[0] for r in check.execute("select name from windows")] == ["sun-night"]
    check.close()
    window.close()


def test_closing_writes_what_is_left(tmp_path: Path) -> None:
    db, window, _ = opened(tmp_path)
    holder = hold_write_lock(db, 0.3)
    window.add("v1", "git-01", "merge")
    window.close()  # waits for the writer (up to its limit), then lets go
    holder.join()
    assert stored(db) == [("git-01", "queued")]


def test_a_change_after_closing_is_said_not_saved_never_waited_for(tmp_path: Path) -> None:
    _, window, _ = opened(tmp_path)
    window.close()
    window.add("v1", "git-01", "merge")  # e.g. a runner's last status as the console quits
    assert "not saved" in window.flushed().result(timeout=1)
