"""The action log: round trip, kill -9, two writers, fail-closed opening, export, secrets."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from ventana.state import paths
from ventana.state.actionlog import (
    INTERRUPTED,
    SCHEMA_VERSION,
    UNKNOWN,
    ActionLog,
    ActionLogError,
    redact,
    scrub,
    writer_alive,
)
from ventana.state.model import FinalState

BASE: dict[str, Any] = {
    "action": "merge",
    "target_system": "sim://HVCLUSTER01",
    "mode": "read-write",
    "target_object": "vm:vm-app01",
    "target_name": "APP-01",
    "plan": {"steps": ["merge APP-01_2.avhdx", "merge APP-01_1.avhdx"], "space_needed": 5},
    "findings": [{"severity": "warning", "code": "BACKUP_WINDOW", "message": "backup at 22:00"}],
    "override": False,
    "confirmed": True,
}


def _child(script: str) -> str:
    """Python source for a child process that imports the project like the tests do."""
    return textwrap.dedent(script)


def test_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    with ActionLog.open(db) as log:
        row_id = log.begin(**BASE, task_id="merge-1")
        running = log.get(row_id)
        assert running is not None
        assert running.outcome == "running" and running.status == "running"
        assert running.ended is None and running.duration_s is None
        log.finish(row_id, outcome="ok", size_before=300, size_after=188,
                   final_state=FinalState.OPTIMIZED, detail={"note": "chain merged"})
        refused = log.record(**{**BASE, "confirmed": False}, outcome="refused",
                             error="blocked by pre-flight: LOW_SPACE")

    with ActionLog.open(db) as log:  # a new process would see the same
        rows = log.rows()
        assert [r.id for r in rows] == [refused, row_id]  # newest first
        assert [r.id for r in log.rows(newest_first=False)] == [row_id, refused]
        assert len(log.rows(limit=1)) == 1
        done = rows[1]
        assert done.outcome == done.status == "ok"
        assert done.action == "merge" and done.target_object == "vm:vm-app01"
        assert done.target_name == "APP-01" and done.target_system == "sim://HVCLUSTER01"
        assert done.mode == "read-write" and done.task_id == "merge-1"
        assert done.confirmed is True and done.override is False
        assert done.size_before == 300 and done.size_after == 188
        assert done.final_state == "Optimized"
        assert done.duration_s is not None and 0 <= done.duration_s < 5
        assert done.ended is not None and done.ended >= done.started
        assert done.started.endswith("+00:00")
        assert done.plan_data() == BASE["plan"]
        assert done.findings_data() == BASE["findings"]
        assert done.detail_data() == {"note": "chain merged"}
        assert done.pid == os.getpid() and done.host and done.operator
        one_shot = rows[0]
        assert one_shot.outcome == "refused" and one_shot.confirmed is False
        assert one_shot.started == one_shot.ended and one_shot.duration_s == 0.0
        assert one_shot.error == "blocked by pre-flight: LOW_SPACE"
        conn = log.db.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_finish_rules(tmp_path: Path) -> None:
    with ActionLog.open(tmp_path / "a.db") as log:
        row_id = log.begin(**BASE)
        with pytest.raises(ValueError):
            log.finish(row_id, outcome="running")
        with pytest.raises(ValueError):
            log.finish(row_id, outcome="ok", final_state="Fine, probably")
        log.finish(row_id, outcome="unknown", error="connection reset after the request")
        assert log.rows()[0].status == UNKNOWN
        with pytest.raises(ActionLogError, match="already has outcome"):
            log.finish(row_id, outcome="ok")
        with pytest.raises(ActionLogError, match="no row 999"):
            log.finish(999, outcome="ok")
        with pytest.raises(ValueError):
            log.begin(**{**BASE, "mode": "god-mode"})


def test_default_path_is_xdg_and_private(tmp_path: Path) -> None:
    # conftest points XDG_DATA_HOME into tmp_path
    assert paths.default_log_path() == tmp_path / "xdg-data" / "ventana" / "actions.db"
    with ActionLog.open() as log:
        assert log.path == paths.default_log_path()
        log.begin(**BASE)
        for suffix in ("", "-wal", "-shm"):
            f = log.path.with_name(log.path.name + suffix)
            assert (f.stat().st_mode & 0o777) == 0o600, f
    assert (paths.data_dir().stat().st_mode & 0o777) == 0o700
    assert paths.config_dir() == tmp_path / "xdg-config" / "ventana"


def test_relative_xdg_is_ignored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.data_dir() == tmp_path / "home" / ".local" / "share" / "ventana"


def test_killed_after_intent_reads_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    code = _child(f"""
        import sys, time
        from pathlib import Path
        from ventana.state.actionlog import ActionLog
        log = ActionLog.open(Path({str(db)!r}))
        row = log.begin(action="merge", target_system="sim://HVCLUSTER01", mode="read-write",
                        target_object="vm:vm-app01", target_name="APP-01", plan={{}},
                        findings=[], override=False, confirmed=True, task_id="merge-9")
        print(row, flush=True)
        time.sleep(60)   # "talking to the cluster" when the kill comes
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        row_id = int(child.stdout.readline())
        with ActionLog.open(db) as log:  # while it runs: still running
            assert log.get(row_id).status == "running"  # type: ignore[union-attr]
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    with ActionLog.open(db) as log:
        row = log.get(row_id)
        assert row is not None
        assert row.outcome == "running"  # nothing was invented, nothing replayed
        assert row.status == INTERRUPTED == "interrupted — verify on the host"
        assert row.interrupted
        assert row.ended is None


def test_liveness_rule() -> None:
    from ventana.state.actionlog import _BOOT, _HOST, _proc_start

    me = os.getpid()
    assert writer_alive(_HOST, _BOOT, me, _proc_start(me))
    assert not writer_alive("some-other-host", _BOOT, me, _proc_start(me))
    if _BOOT:
        assert not writer_alive(_HOST, "another-boot", me, _proc_start(me))
    start = _proc_start(me)
    if start is not None:  # the same pid, another process (pid reused)
        assert not writer_alive(_HOST, _BOOT, me, start + 1)
    assert not writer_alive(_HOST, _BOOT, 2**22 + 12345, None)  # beyond pid_max


def test_two_writers_exact_count(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    ActionLog.open(db).close()
    n = 200
    code = _child(f"""
        import sys, time
        from pathlib import Path
        from ventana.state.actionlog import ActionLog
        who = sys.argv[1]
        log = ActionLog.open(Path({str(db)!r}))
        print("ready", flush=True)
        sys.stdin.readline()  # both start together
        t0 = time.monotonic()
        for i in range({n}):
            row = log.begin(action="merge", target_system="sim://X", mode="read-write",
                            target_object=f"vm:{{who}}-{{i}}", target_name=who, plan={{"i": i}},
                            findings=[], override=False, confirmed=True)
            log.finish(row, outcome="ok")
        print(t0, time.monotonic(), flush=True)
        log.close()
    """)
    procs = [
        subprocess.Popen([sys.executable, "-c", code, who], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for who in ("a", "b")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline() == "ready\n"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = [err for _, err in outs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert not any("locked" in e for e in errors)
    windows = [tuple(map(float, out.split())) for out, _ in outs]
    assert max(w[0] for w in windows) < min(w[1] for w in windows)  # they did overlap
    with ActionLog.open(db) as log:
        rows = log.rows()
    assert len(rows) == 2 * n
    assert all(r.outcome == "ok" for r in rows)
    for who in ("a", "b"):
        assert sorted(r.plan_data()["i"] for r in rows if r.target_name == who) == list(range(n))


def test_unwritable_parent_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(ActionLogError, match="cannot create the action log directory"):
        ActionLog.open(blocker / "ventana" / "actions.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ActionLogError, match="action log"):
            ActionLog.open(ro / "actions.db")
    finally:
        ro.chmod(0o700)


def test_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "actions.db"
    bad.write_bytes(b"this is a spreadsheet, honest\n" * 200)
    with pytest.raises(ActionLogError, match="not a usable action log"):
        ActionLog.open(bad)
    with pytest.raises(ActionLogError, match="not a regular file"):
        ActionLog.open(tmp_path)


def test_newer_schema_refused(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    ActionLog.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ActionLogError, match="newer than this Ventana supports"):
        ActionLog.open(db)


def _hold_write_lock(db: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_lock_held_at_open(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    ActionLog.open(db).close()
    holder = _hold_write_lock(db)
    try:
        t0 = time.monotonic()
        with pytest.raises(ActionLogError, match="locked by another process"):
            ActionLog.open(db, busy_timeout=0.3)
        assert time.monotonic() - t0 < 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_lock_held_past_timeout_refuses_begin(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    with ActionLog.open(db, busy_timeout=0.3) as log:
        holder = _hold_write_lock(db)
        try:
            t0 = time.monotonic()
            with pytest.raises(ActionLogError, match="locked"):
                log.begin(**BASE)
            assert 0.2 < time.monotonic() - t0 < 3
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # The lock is gone: the log works again, and nothing half-written stayed.
        assert log.rows() == []
        log.begin(**BASE)
        assert len(log.rows()) == 1


def test_disk_full_refuses(tmp_path: Path) -> None:
    with ActionLog.open(tmp_path / "actions.db") as log:
        log.begin(**BASE)
        pages = log.db.conn.execute("PRAGMA page_count").fetchone()[0]
        log.db.conn.execute(f"PRAGMA max_page_count = {pages}")  # nothing more fits
        huge = {**BASE, "plan": {"blob": "x" * 200_000}}
        with pytest.raises(ActionLogError, match="full"):
            log.begin(**huge)
        assert len(log.rows()) == 1


def test_csv_export(tmp_path: Path) -> None:
    with ActionLog.open(tmp_path / "actions.db") as log:
        a = log.begin(**BASE)
        log.finish(a, outcome="warning", error="consolidationNeeded still set")
        log.record(**{**BASE, "target_name": "=HYPERLINK(\"http://x\")"}, outcome="cancelled")
        log.begin(**{**BASE, "target_name": "DB-01"})
        buf = io.StringIO()
        assert log.to_csv(buf) == 3
        out = tmp_path / "export.csv"
        assert log.to_csv(out) == 3
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert out.read_text(encoding="utf-8") == buf.getvalue()
    assert [r["id"] for r in rows] == ["1", "2", "3"]  # oldest first
    assert rows[0]["outcome"] == "warning" and rows[0]["error"] == "consolidationNeeded still set"
    assert rows[1]["target_name"] == "'=HYPERLINK(\"http://x\")"  # not a formula
    assert rows[2]["status"] == "running"
    assert {"operator", "host", "plan", "findings", "override", "final_state", "status"} <= set(
        rows[0]
    )
    assert json.loads(rows[0]["plan"]) == BASE["plan"]


def test_secrets_never_stored(tmp_path: Path) -> None:
    password = "Tr0ub4dor&3-secret-value"
    plan = {
        "steps": ["merge"],
        "password": password,
        "creds": {"username": "svc-ventana", "Password": password, "api_key": password},
        "headers": [{"Authorization": f"Negotiate {password}"}],
        "note": f"connect with password={password}",
    }
    db = tmp_path / "actions.db"
    with ActionLog.open(db) as log:
        row_id = log.begin(**{**BASE, "plan": plan})
        log.finish(row_id, outcome="failed",
                   error=f"401 from WinRM; Authorization: Basic {password}",
                   detail={"token": password, "kept": "yes"})
        row = log.get(row_id)
    assert row is not None
    stored = row.plan_data()
    assert "password" not in stored and stored["creds"] == {"username": "svc-ventana"}
    assert stored["headers"] == [{}]
    assert stored["note"] == "connect with password=[redacted]"
    assert row.detail_data() == {"kept": "yes"}
    assert row.error == "401 from WinRM; Authorization: [redacted]"
    for name in os.listdir(tmp_path):  # not in the db, the WAL or anywhere else
        assert password.encode() not in (tmp_path / name).read_bytes()


def test_redact_and_scrub_units() -> None:
    assert redact({"a": {"client_secret": 1, "b": [{"token": 2, "c": 3}]}}) == {
        "a": {"b": [{"c": 3}]}
    }
    assert redact({"bypass": True, "x": float("nan")}) == {"bypass": True, "x": "nan"}
    assert scrub("token: abc123, next") == "token: [redacted], next"
    assert scrub("no secrets here") == "no secrets here"


def test_control_chars_cleaned(tmp_path: Path) -> None:
    with ActionLog.open(tmp_path / "actions.db") as log:
        row_id = log.begin(**{**BASE, "target_name": "[bold red]evil\x1b[2J",
                              "plan": {"vm": "evil\x1b]52;c;ZWNobyBoaQ==\x07"}})
        log.finish(row_id, outcome="failed", error="boom\x1b[31m\r\x9b1m \u202eexe.txt")
        row = log.get(row_id)
    assert row is not None
    assert row.target_name == "[bold red]evil\\x1b[2J"
    assert row.error == "boom\\x1b[31m\\x0d\\x9b1m \\u202eexe.txt"
    assert "\x1b" not in row.plan and "\x07" not in row.plan
    for field in (row.target_name, row.error, row.plan, row.findings):
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in field)
