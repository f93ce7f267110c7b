"""One schema on two engines: every store round-trips the same on SQLite and PostgreSQL.

Also: leases (one action per VM, shared LUN space), the live feed
(LISTEN/NOTIFY), the database going away and coming back, and
``ventana log migrate`` from SQLite to PostgreSQL.
"""

from __future__ import annotations

import io
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from peers.postgres import PgServer

from ventana.state.acks import AckBook
from ventana.state.actionlog import SCHEMA_VERSION, ActionLog, ActionLogError, LogRow
from ventana.state.derived import PAUSE_CRITICAL_MARGIN
from ventana.state.findings import LiveFinding
from ventana.state.leases import ActionBusy, Claim
from ventana.state.live import TeamFeed, describe
from ventana.state.model import Severity
from ventana.state.rebuild import RebuildState, RebuildStore, StepState
from ventana.state.schema import RETRY_S, VERSION
from ventana.state.window import WindowStore

GB = 1024**3
BASE = dict(action="merge", target_system="sim://HVCLUSTER01", mode="read-write",
            target_object="vm:a", target_name="app-01", plan={"steps": ["x"]},
            findings=[{"code": "LOW_SPACE"}], override=False, confirmed=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "actions.db"
    return request.getfixturevalue("pg_url")


def _finding(target: str = "vm:a", code: str = "CHECKPOINT_OLD",
             severity: Severity = Severity.WARNING) -> LiveFinding:
    return LiveFinding(target=target, code=code, severity=severity, message="old checkpoint",
                       target_name="app-01")


def test_every_store_round_trips_on_both_engines(loc: str | Path) -> None:
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    with ActionLog.open(loc) as log:
        log.account = "CORP\\ops"  # who did it: the cluster account on every row
        row = log.begin(**BASE)
        log.finish(row, outcome="ok", size_before=300, size_after=188,
                   final_state="Optimized", detail={"note": "merged", "password": "x"})
        log.record(**BASE, outcome="refused", error="blocked: token=abc")
        running = log.begin(**{**BASE, "target_object": "vm:b", "target_name": "db-01"})
        rows = log.rows(newest_first=False)
        assert [(r.id, r.outcome, r.status) for r in rows] == [
            (row, "ok", "ok"), (row + 1, "refused", "refused"),
            (running, "running", "running")]
        assert rows[0].size_after == 188 and rows[0].final_state == "Optimized"
        assert rows[0].detail_data() == {"note": "merged"}  # the secret-named key dropped
        assert rows[1].error == "blocked: token=[redacted]"
        assert {r.cluster_account for r in rows} == {"CORP\\ops"}
        assert all(r.operator and r.host for r in rows)
        assert rows[0].override is False and rows[0].confirmed is True
        assert log.final_states() == {"vm:a": "Optimized"}
        assert log.newest_id() == running
        assert [r.id for r in log.rows_after(row)] == [row + 1, running]
        buf = io.StringIO()
        assert log.to_csv(buf) == 3 and "cluster_account" in buf.getvalue().splitlines()[0]
    book = AckBook.open(loc)
    try:
        book.acknowledge(_finding(), "known, merge planned", now)
        book.snooze(_finding(code="LUN_LOW"), now + timedelta(hours=4), "after backup", now)
        book.lift("vm:a", "LUN_LOW", now)
    finally:
        book.close()
    again = AckBook.open(loc)
    try:
        assert [(a.code, a.kind) for a in again.all_open()] == [("CHECKPOINT_OLD", "ack")]
    finally:
        again.close()
    ws = WindowStore.open(loc)
    try:
        window = ws.load("saturday")
        window.add("VM-1", "app-01", "merge")
        window.add("VM-2", "db-01", "upgrade", target_version="9.0")
        window.set_parallel(2)
        loaded = ws.load("saturday")
        assert [(i.vm_name, i.action, i.params) for i in loaded.items] == [
            ("app-01", "merge", {}), ("db-01", "upgrade", {"target_version": "9.0"})]
        assert loaded.parallel == 2
    finally:
        ws.close()
    rs = RebuildStore.open(loc)
    try:
        rs.create(rebuild_id="rb-1", vm_id="a", vm_name="app-01", target_system="sim",
                  node="hv01", to_last_parent=True, old_vm_name="app-01-old")
        rs.step_update("rb-1", "capture", state=StepState.DONE, pct=100.0, log_row=row)
        rs.set_state("rb-1", RebuildState.PAUSED, capture={"generation": 2})
        wf = rs.get("rb-1")
        assert wf is not None and wf.state is RebuildState.PAUSED and wf.to_last_parent
        assert wf.capture == {"generation": 2} and wf.steps[0].log_row == row
        assert [r.id for r in rs.unfinished("a")] == ["rb-1"]
    finally:
        rs.close()


def test_postgres_schema_is_versioned_and_a_newer_one_refused(pg_url: str) -> None:
    ActionLog.open(pg_url).close()
    ActionLog.open(pg_url).close()  # idempotent
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("select version from ventana_schema").fetchall() == [(VERSION,)]
        conn.execute("insert into ventana_schema values (%s)", (VERSION + 1,))
    with pytest.raises(ActionLogError, match="newer than this Ventana supports"):
        ActionLog.open(pg_url)


def test_an_old_sqlite_log_is_upgraded_in_place(tmp_path: Path) -> None:
    """A version-1 file (the actions table only, as written before team mode)."""
    db = tmp_path / "actions.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE [actions] ([id] INTEGER PRIMARY KEY, [started] TEXT NOT NULL, [ended] TEXT,"
        " [operator] TEXT NOT NULL, [host] TEXT NOT NULL, [pid] INTEGER NOT NULL, [boot_id] TEXT,"
        " [proc_start] INTEGER, [target_system] TEXT NOT NULL, [mode] TEXT NOT NULL,"
        " [action] TEXT NOT NULL, [target_object] TEXT NOT NULL, [target_name] TEXT NOT NULL,"
        " [plan] TEXT NOT NULL, [findings] TEXT NOT NULL, [override] INTEGER NOT NULL,"
        " [confirmed] INTEGER NOT NULL, [outcome] TEXT NOT NULL, [error] TEXT NOT NULL,"
        " [duration_s] FLOAT, [size_before] INTEGER, [size_after] INTEGER, [final_state] TEXT,"
        " [detail] TEXT, [task_id] TEXT NOT NULL);"
        "INSERT INTO actions VALUES (1, '2024-11-14T22:00:00.000+00:00', NULL, 'ops', 'gone',"
        " 1, NULL, NULL, 'sim', 'read-write', 'merge', 'vm:a', 'app-01', '{}', '[]', 0, 1,"
        " 'running', '', NULL, NULL, NULL, NULL, NULL, 't');"
        "PRAGMA user_version = 1;")
    conn.close()
    with ActionLog.open(db) as log:
        (old,) = log.rows()
        assert old.status == "interrupted — verify on the host" and old.cluster_account == ""
        assert log.db is not None
        assert log.db.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_leases_one_action_per_vm_and_shared_lun_space(loc: str | Path) -> None:
    free = 40 * GB
    claim_a = Claim(ttl=30, cluster_account="CORP\\ops", space={"lun-1": 30 * GB},
                    free={"lun-1": free}, lun_names={"lun-1": "CSV-01"})
    with ActionLog.open(loc) as a, ActionLog.open(loc) as b:
        row = a.begin(**BASE, claim=claim_a)
        with pytest.raises(ActionBusy, match="already being acted on") as busy:
            b.begin(**BASE, claim=Claim(ttl=30))
        assert "merge since" in str(busy.value)
        other = {**BASE, "target_object": "vm:b", "target_name": "db-01"}
        tight = Claim(ttl=30, space={"lun-1": 10 * GB}, free={"lun-1": free},
                      lun_names={"lun-1": "CSV-01"})
        with pytest.raises(ActionBusy, match="NO_SPACE") as space:
            b.begin(**other, claim=tight)
        assert space.value.code == "NO_SPACE" and "app-01" in str(space.value)
        # The console's own view already counts that merge: not counted twice.
        counted = Claim(ttl=30, space={"lun-1": 5 * GB}, free={"lun-1": free},
                        counted={"lun-1": 30 * GB}, counted_targets=frozenset({"vm:a"}))
        assert free - 35 * GB >= PAUSE_CRITICAL_MARGIN
        row_b = b.begin(**other, claim=counted)
        assert {le.target_object for le in b.leases()} == {"vm:a", "vm:b"}
        assert a.get(row).cluster_account == "CORP\\ops"  # type: ignore[union-attr]
        a.finish(row, outcome="ok")
        b.finish(row_b, outcome="ok")
        assert b.leases() == []
        b.finish(b.begin(**BASE, claim=tight), outcome="ok")  # free again
        assert len(b.rows()) == 3  # refusals write nothing here (the runner logs them)


def test_another_consoles_action_arrives_within_a_second(pg_url: str) -> None:
    got: list[LogRow] = []
    arrived = threading.Event()

    def on_rows(rows: list[LogRow]) -> None:
        got.extend(rows)
        if any(r.outcome == "ok" for r in got):
            arrived.set()

    with ActionLog.open(pg_url) as mine, ActionLog.open(pg_url) as theirs:
        feed = TeamFeed.start(mine, on_rows)
        try:
            deadline = time.monotonic() + 10
            while feed.state != "live" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert feed.state == "live"
            t0 = time.monotonic()
            row = theirs.begin(**BASE, claim=Claim(ttl=30, cluster_account="CORP\\alice"))
            while not got and time.monotonic() - t0 < 2:
                time.sleep(0.01)
            assert got and time.monotonic() - t0 < 1.0
            first = got[0]
            assert first.id == row and first.status == "running"
            assert first.operator and first.host and first.cluster_account == "CORP\\alice"
            assert describe(first) == (f"{first.operator}@{first.host} as CORP\\alice: merge "
                                       "app-01 — running")
            theirs.finish(row, outcome="ok")
            assert arrived.wait(1.0)
        finally:
            feed.stop()


def _answers_within(log: ActionLog, seconds: float) -> bool:
    """The log answers again (a failed connection is retried after RETRY_S)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if log.check() == "":
            return True
        time.sleep(0.1)
    return False


def test_database_unreachable_refuses_then_recovers_by_itself() -> None:
    with PgServer() as pg:
        pg.psql("create database team")
        url = pg.url("team")
        with ActionLog.open(url) as log:
            log.record(**BASE, outcome="refused")
            pg.kill()
            with pytest.raises(ActionLogError, match="unreachable"):
                log.begin(**BASE, claim=Claim(ttl=30))
            time.sleep(RETRY_S)  # the next call tries the server again (however slow the
            with pytest.raises(ActionLogError, match="unreachable"):  # machine) and fails:
                log.rows()  # the failure is fresh
            t0 = time.monotonic()
            with pytest.raises(ActionLogError, match="unreachable"):
                log.begin(**BASE)  # just failed: refused at once, no stall per call
            assert time.monotonic() - t0 < 0.5
            pg.start()
            assert _answers_within(log, 10)  # reconnected by itself, no restart needed
            row = log.begin(**BASE, claim=Claim(ttl=30))
            log.finish(row, outcome="ok")
            assert [r.outcome for r in log.rows()] == ["ok", "refused"]
        # A console started while the database is down: refuses, then recovers by itself.
        pg.kill()
        with pytest.raises(ActionLogError, match="unreachable"):
            ActionLog.open(url)
        with ActionLog.open(url, lazy=True) as log:
            assert "unreachable" in log.check()
            with pytest.raises(ActionLogError, match="unreachable"):
                log.begin(**BASE, claim=Claim(ttl=30))
            pg.start()
            assert _answers_within(log, 10)
            log.finish(log.begin(**BASE, claim=Claim(ttl=30)), outcome="ok")
            assert [r.outcome for r in log.rows()] == ["ok", "ok", "refused"]


def test_log_migrate_copies_every_row_kind_idempotently(tmp_path: Path, pg_url: str,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    from ventana.tui.cli import main

    src = tmp_path / "actions.db"
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    with ActionLog.open(src) as log:
        done = log.begin(**BASE)
        log.finish(done, outcome="ok", final_state="Optimized", size_before=3, size_after=2)
        log.record(**BASE, outcome="cancelled")
        running = log.begin(**{**BASE, "target_object": "vm:b", "target_name": "db-01"})
    book = AckBook.open(src)
    book.acknowledge(_finding(), "known", now)
    book.snooze(_finding(code="LUN_LOW"), now + timedelta(hours=2), "later", now)
    book.close()
    ws = WindowStore.open(src)
    ws.load("saturday").add("VM-1", "app-01", "merge")
    ws.close()
    rs = RebuildStore.open(src)
    rs.create(rebuild_id="rb-1", vm_id="a", vm_name="app-01", target_system="sim", node="",
              to_last_parent=False, old_vm_name="app-01-old")
    rs.step_update("rb-1", "capture", state=StepState.DONE, log_row=done)
    rs.close()

    assert main(["log", "migrate", "--to", pg_url, "--log", str(src)]) == 0
    out = capsys.readouterr().out
    assert "actions: 3 copied" in out and "finding_acks: 2 copied" in out
    assert "window_items: 1 copied" in out and "rebuild_steps: 6 copied" in out
    with ActionLog.open(pg_url) as dst, ActionLog.open(src) as orig:
        theirs = [(r.action, r.outcome, r.target_name, r.started, r.plan, r.final_state)
                  for r in dst.rows(newest_first=False)]
        ours = [(r.action, r.outcome, r.target_name, r.started, r.plan, r.final_state)
                for r in orig.rows(newest_first=False)]
        assert theirs == ours
        assert dst.final_states() == orig.final_states()
    book = AckBook.open(pg_url)
    assert sorted(a.code for a in book.all_open()) == ["CHECKPOINT_OLD", "LUN_LOW"]
    book.close()
    ws = WindowStore.open(pg_url)
    assert [i.vm_name for i in ws.load("saturday").items] == ["app-01"]
    ws.close()
    rs = RebuildStore.open(pg_url)
    wf = rs.get("rb-1")
    rs.close()
    assert wf is not None and wf.steps[0].state is StepState.DONE
    with ActionLog.open(pg_url) as dst:
        first_id = dst.rows(newest_first=False)[0].id
    assert wf.steps[0].log_row == first_id  # the reference follows the new id

    # Again: nothing new; then the running row's outcome arrives in the source.
    assert main(["log", "migrate", "--to", pg_url, "--log", str(src)]) == 0
    assert "actions: 0 copied, 0 updated, 3 already there" in capsys.readouterr().out
    with ActionLog.open(src) as log:
        log.finish(running, outcome="failed", error="chain corrupted")
    assert main(["log", "migrate", "--to", pg_url, "--log", str(src)]) == 0
    assert "actions: 0 copied, 1 updated" in capsys.readouterr().out
    # `ventana log` and `ventana report` read the team's log.
    assert main(["log", "--log", pg_url]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split("\t")[:3] == ["started (UTC, wall clock)", "operator",
                                                      "host"]
    assert len(listing.splitlines()) == 4
    assert main(["report", "--db", pg_url, "--format", "csv"]) == 0
    assert "app-01" in capsys.readouterr().out
    with ActionLog.open(pg_url) as dst:
        assert [r.outcome for r in dst.rows(newest_first=False)] == ["ok", "cancelled",
                                                                      "failed"]


def test_password_comes_from_the_environment_or_pgpass_never_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cret-Team-pw"
    with PgServer(tcp=True, password=secret) as pg:
        url = pg.tcp_url("postgres")
        monkeypatch.delenv("PGPASSWORD", raising=False)
        monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
        with pytest.raises(ActionLogError, match=r"unreachable|password"):
            ActionLog.open(url)  # no password anywhere: refused by the server
        monkeypatch.setenv("PGPASSWORD", secret)
        with ActionLog.open(url) as log:
            log.record(**BASE, outcome="refused", error="nothing sent")
        monkeypatch.delenv("PGPASSWORD")
        pgpass = tmp_path / "pgpass"
        pgpass.write_text(f"127.0.0.1:{pg.port}:*:ventana:{secret}\n")
        pgpass.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(pgpass))  # what libpq reads (~/.pgpass)
        with ActionLog.open(url) as log:
            buf = io.StringIO()
            log.to_csv(buf)
            assert secret not in buf.getvalue() and secret not in log.where
        with pytest.raises(ActionLogError, match="carries a password") as err:
            ActionLog.open(url.replace("ventana@", f"ventana:{secret}@"))
        assert secret not in str(err.value)


def test_the_dba_recipe_works() -> None:
    """docs/team-mode.md's SQL, as written: rw creates and writes, ro only reads."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "team-mode.md").read_text()
    sql = re.search(r"## For the DBA.*?```sql\n(.*?)```", doc, re.S)
    assert sql is not None
    before, _, after = sql.group(1).partition("\\c ventana\n")
    with PgServer() as pg:
        for statement in filter(str.strip, before.split(";")):
            pg.psql(statement.strip())
        pg.psql(after, "ventana")  # in the new database, one session
        rw, ro = pg.url("ventana", "ventana_rw"), pg.url("ventana", "ventana_ro")
        with ActionLog.open(rw) as log:
            assert log.writable
            log.record(**BASE, outcome="refused")
        with ActionLog.open(ro) as log:
            assert not log.writable
            assert [r.outcome for r in log.rows()] == ["refused"]
            with pytest.raises(ActionLogError, match="may only read"):
                log.begin(**BASE)
        with psycopg.connect(ro, autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update actions set outcome = 'ok'")


def test_rows_of_a_console_on_another_host_follow_its_leases(loc: str | Path) -> None:
    """Another machine's pid cannot be checked here: its leases tell whether it lives.
    A row without a lease of its own (a rebuild's step) lives while its console holds one."""
    with ActionLog.open(loc) as log:
        leased = log.begin(**BASE, claim=Claim(ttl=30))
        step = log.begin(**{**BASE, "action": "rebuild.capture"})
        # As a console on ws-02 would have written them.
        log._store.execute("update actions set host = 'ws-02', pid = 4242, proc_start = 7")
        log._store.execute("update leases set host = 'ws-02', pid = 4242, proc_start = 7, "
                           "console = 'ws-02:4242:7'")
        assert {r.id: r.status for r in log.rows()} == {leased: "running", step: "running"}
        # It stopped renewing. This console's own keeper renews the row it began by
        # row id (at once when begun, then every ttl/3); under load that first
        # renewal can land after the update below, so the keeper is stopped first.
        log._keeper.stop()
        log._store.execute("update leases set expires = 0")
        assert {r.status for r in log.rows()} == {"interrupted — verify on the host"}
        assert log.leases() == []


def test_shared_preflight_shows_other_consoles_before_confirming(loc: str | Path) -> None:
    import os

    from factories import NOW, small_cluster

    from ventana.state import actionlog
    from ventana.state.plans import Plan, plan_merge
    from ventana.state.team import claim_for, shared_preflight

    store = small_cluster(free_gb=100)
    plan = plan_merge(store, "a", NOW)
    assert not plan.blocking
    need = claim_for(store, plan).space["l1"]
    assert need > 10 * GB + PAUSE_CRITICAL_MARGIN
    free = store.lun("l1").free_bytes  # type: ignore[union-attr]
    with ActionLog.open(loc) as mine, ActionLog.open(loc) as other:
        # "other" is another live console on this host (the parent process).
        other._pid, other._proc_start = os.getppid(), actionlog._proc_start(os.getppid())

        def shown_now() -> Plan:
            """As a console plans: on a team's database, the leases read first (in a
            worker there; the pre-flight itself only reads the latest reading)."""
            if mine.shared:
                mine.leases()
            return shared_preflight(plan, store, mine)

        if mine.shared:  # never read yet: said on the plan, never waited for
            codes = [f.code for f in shared_preflight(plan, store, mine).findings
                     if f.code == "TEAM_VIEW_OLD"]
            assert codes == ["TEAM_VIEW_OLD"]
        assert shown_now() == plan  # nobody else holds anything
        mine.begin(**{**BASE, "target_object": "vm:c", "target_name": "dc-03"},
                   claim=Claim(space={"l1": 10 * GB}, free={"l1": free}))
        assert shown_now() == plan  # its own lease is its business
        other.begin(**{**BASE, "target_object": "vm:b", "target_name": "db-01"},
                    claim=Claim(space={"l1": free - need}, free={"l1": free}))
        shown = shown_now()
        assert [f.code for f in shown.blocking] == ["NO_SPACE_SHARED"]
        assert "db-01" in shown.blocking[0].message
        other.begin(**BASE, claim=Claim())  # and now it holds app-01 itself
        codes = {f.code for f in shown_now().blocking}
        assert codes == {"NO_SPACE_SHARED", "VM_LEASED"}
        if mine.shared:  # a reading gone old: still shown, and said to be old
            found, _ = mine.recent_leases()
            mine._leases_read = (found, time.monotonic() - 60)
            aged = shared_preflight(plan, store, mine)
            assert {f.code for f in aged.blocking} == {"NO_SPACE_SHARED", "VM_LEASED"}
            old = [f for f in aged.findings if f.code == "TEAM_VIEW_OLD"]
            assert len(old) == 1 and "last read 60 s ago" in old[0].message


def test_a_window_item_another_console_runs_stays_running(loc: str | Path) -> None:
    import os

    from ventana.state import actionlog
    from ventana.state.window import RUNNING

    ws = WindowStore.open(loc)
    try:
        window = ws.load("saturday")
        mine = window.add("VM-1", "app-01", "merge")
        theirs = window.add("VM-2", "db-01", "merge")
        window.update(mine.id, status=RUNNING)
        window.update(theirs.id, status=RUNNING)
        with ActionLog.open(loc) as other:  # another live console on this host runs VM-2
            other._pid, other._proc_start = os.getppid(), actionlog._proc_start(os.getppid())
            other.begin(**{**BASE, "target_object": "vm:VM-2", "target_name": "db-01"},
                        claim=Claim())
            loaded = ws.load("saturday")
        assert [(i.vm_name, i.status) for i in loaded.items] == [
            ("app-01", "unknown"), ("db-01", RUNNING)]
    finally:
        ws.close()


def test_password_from_the_os_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No PGPASSWORD, no pgpass: the keyring's entry for user@host:port/db is used.

    A headless machine has no OS keyring, so a minimal in-memory backend stands in
    for it through keyring's own plug-in API (``keyring.set_keyring``)."""
    import keyring
    from keyring.backend import KeyringBackend

    from ventana.state.schema import KEYRING_SERVICE

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.store: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.store.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.store[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            self.store.pop((service, username), None)

    secret = "kr-Team-pw"
    previous = keyring.get_keyring()
    memory = Memory()
    keyring.set_keyring(memory)
    try:
        with PgServer(tcp=True, password=secret) as pg:
            url = pg.tcp_url("postgres")
            monkeypatch.delenv("PGPASSWORD", raising=False)
            monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
            with pytest.raises(ActionLogError):
                ActionLog.open(url)  # not stored yet
            key = f"ventana@127.0.0.1:{pg.port}/postgres"
            memory.set_password(KEYRING_SERVICE, key, "an-old-pw")
            with pytest.raises(ActionLogError, match="authentication failed"):
                ActionLog.open(url)  # refused: the kept password is forgotten…
            memory.set_password(KEYRING_SERVICE, key, secret)
            with ActionLog.open(url) as log:  # …so the new one is read
                log.record(**BASE, outcome="refused")
                assert secret not in log.where
    finally:
        keyring.set_keyring(previous)


def test_the_live_feed_reconnects_and_catches_up_after_an_outage() -> None:
    got: list[LogRow] = []
    with PgServer() as pg:
        pg.psql("create database team")
        url = pg.url("team")
        with ActionLog.open(url) as mine:
            feed = TeamFeed.start(mine, got.extend)
            try:
                deadline = time.monotonic() + 10
                while feed.state != "live" and time.monotonic() < deadline:
                    time.sleep(0.02)
                pg.kill()
                while not feed.state.startswith("reconnecting") and \
                        time.monotonic() < deadline + 10:
                    time.sleep(0.05)
                assert feed.state.startswith("reconnecting")
                pg.start()
                with ActionLog.open(url) as theirs:
                    row = theirs.record(**BASE, outcome="cancelled")
                deadline = time.monotonic() + 20
                while not got and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert [r.id for r in got] == [row] and feed.state == "live"
            finally:
                feed.stop()


def test_team_connections_carry_keepalives_and_a_tcp_user_timeout() -> None:
    """Every connection to a team's database asks the kernel for keepalives and a TCP
    user timeout (read back from the connection's own socket): a path that dies is
    found in seconds, not after TCP's own minutes. The live feed connects with the same
    settings (a parameter libpq did not know would fail its connection)."""
    import os
    import socket

    from ventana.state.live import TeamFeed
    from ventana.state.schema import TCP_SETTINGS

    def settings(fd: int) -> tuple[int, int, int, int]:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))
        finally:
            sock.close()

    want = (1, TCP_SETTINGS["keepalives_idle"], TCP_SETTINGS["keepalives_count"],
            TCP_SETTINGS["tcp_user_timeout"])
    with PgServer(tcp=True) as pg, ActionLog.open(pg.tcp_url("postgres")) as log:
        assert settings(log._store.conn.pgconn.socket) == want
        feed = TeamFeed.start(log, lambda rows: None)
        try:
            deadline = time.monotonic() + 10
            while feed.state != "live" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert feed.state == "live"
            with psycopg.connect(pg.tcp_url("postgres"), autocommit=True) as admin:
                feeds = admin.execute("select count(*) from pg_stat_activity "
                                      "where application_name = 'ventana-feed'").fetchone()
            assert feeds == (1,)
        finally:
            feed.stop()
