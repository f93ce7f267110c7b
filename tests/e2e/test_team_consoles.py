"""Team mode with separate console processes on one real PostgreSQL.

Each console is its own process (tests/e2e/team_console.py: the simulated
cluster, a store, the shared log and an ActionRunner — what ``ventana``
builds, without a screen), so what is shared is only what the database
shares: leases, reservations, rows.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from peers.postgres import PgServer

from ventana.state.actionlog import INTERRUPTED, ActionLog
from ventana.state.derived import PAUSE_CRITICAL_MARGIN

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "team_console.py"
GB = 1024**3

pytestmark = pytest.mark.timeout(300)


class Console:
    """One console process; its JSON lines arrive on a queue."""

    def __init__(self, url: str, vm: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), "--log", url, "--vm", vm, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))

    def wait_for(self, *events: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {events} from the console; saw {self.seen}; "
                                     f"stderr: {self.stderr()}")
            try:
                item = self.lines.get(timeout=min(left, 1))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise AssertionError(f"console exited ({self.proc.returncode}) without "
                                         f"{events}; saw {self.seen}; stderr: {self.stderr()}"
                                         ) from None
                continue
            self.seen.append(item)
            if item["event"] in events:
                return item

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()[-3000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def rows(url: str) -> list[Any]:
    with ActionLog.open(url) as log:
        return log.rows(newest_first=False)


def test_two_consoles_race_to_merge_one_vm_exactly_one_runs(pg_url: str,
                                                             tmp_path: Path) -> None:
    go = tmp_path / "go"
    consoles = [Console(pg_url, "app-06", "--speed", "20000", "--go", str(go))
                for _ in range(2)]
    try:
        for c in consoles:
            c.wait_for("plan")
        go.touch()  # both confirm at once
        ends = [c.wait_for("done", "refused") for c in consoles]
    finally:
        for c in consoles:
            c.close()
    assert sorted(e["event"] for e in ends) == ["done", "refused"]
    done = next(e for e in ends if e["event"] == "done")
    refused = next(e for e in ends if e["event"] == "refused")
    assert done["state"] == "ok"
    assert "already being acted on from another console" in refused["reason"]
    assert "merge since" in refused["reason"] and "@" in refused["reason"]  # who holds it
    assert refused["merges_sent"] == []  # the refused console sent nothing
    found = rows(pg_url)
    assert [(r.action, r.outcome) for r in found] == [("merge", "ok"), ("merge", "refused")] \
        or [(r.action, r.outcome) for r in found] == [("merge", "refused"), ("merge", "ok")]
    assert all(r.operator and r.host for r in found)


def test_two_merges_on_one_csv_the_second_counts_the_firsts_reservation(
        pg_url: str, tmp_path: Path) -> None:
    # app-04 needs ~29.8 GB and app-06 ~14.8 GB on the same CSV; free space is set so
    # that each alone leaves more than 200 MB and both together do not.
    probe = subprocess.run([sys.executable, str(DRIVER), "--describe"], capture_output=True,
                           text=True, timeout=120, check=True)
    vms = {v["name"]: v for v in map(json.loads, probe.stdout.splitlines())}
    a, b = vms["app-04"], vms["app-06"]
    assert a["lun"] == b["lun"]
    need_a, need_b = a["needs"][a["lun"]], b["needs"][b["lun"]]
    free = need_a + PAUSE_CRITICAL_MARGIN + 2 * GB
    assert free - need_b >= PAUSE_CRITICAL_MARGIN and free - need_a - need_b < 0
    shape = ["--lun-free", f"{a['lun']}={free}"]
    first = Console(pg_url, "app-04", "--speed", "3000", *shape)
    try:
        first.wait_for("started")
        second = Console(pg_url, "app-06", "--speed", "3000", *shape)
        try:
            plan = second.wait_for("plan")
            # Its own view sees the whole free space; the shared pre-flight counts the
            # first console's reservation and blocks before anything is typed.
            assert plan["blocking"] == ["NO_SPACE_SHARED"]
            end = second.wait_for("done", "refused")
        finally:
            second.close()
        assert end["event"] == "refused"
        assert "NO_SPACE" in end["reason"] and "reserved by merges running from other " \
            "consoles" in end["reason"] and "app-04" in end["reason"]
        assert end["merges_sent"] == []
    finally:
        first.close()
    refused = [r for r in rows(pg_url) if r.outcome == "refused"]
    assert len(refused) == 1 and refused[0].target_name == "app-06"
    assert "NO_SPACE" in refused[0].error


def test_a_console_killed_mid_merge_loses_its_lease_after_the_timeout(
        pg_url: str) -> None:
    ttl = 3.0
    # The killed console "runs on another machine": only the lease's expiry can tell.
    first = Console(pg_url, "app-06", "--speed", "300", "--ttl", str(ttl),
                    "--as-host", "console-elsewhere")
    first.wait_for("started")
    time.sleep(ttl)  # renewed meanwhile: still held
    assert [r.status for r in rows(pg_url)] == ["running"]
    first.kill()
    killed_at = time.monotonic()
    early = Console(pg_url, "app-06", "--speed", "20000", "--ttl", str(ttl))
    try:
        end = early.wait_for("done", "refused")
    finally:
        early.close()
    if time.monotonic() - killed_at < ttl:  # the lease had not expired yet
        assert end["event"] == "refused" and "console-elsewhere" in end["reason"]
    deadline = time.monotonic() + 3 * ttl
    while time.monotonic() < deadline and rows(pg_url)[0].status != INTERRUPTED:
        time.sleep(0.2)
    first_row = rows(pg_url)[0]
    assert first_row.status == INTERRUPTED and first_row.host == "console-elsewhere"
    assert first_row.outcome == "running"  # never rewritten: verify on the host
    later = Console(pg_url, "app-06", "--speed", "20000", "--ttl", str(ttl))
    try:
        end = later.wait_for("done", "refused")
    finally:
        later.close()
    assert end["event"] == "done" and end["state"] == "ok"


def test_a_dead_console_on_this_host_frees_its_vm_at_once(pg_url: str) -> None:
    first = Console(pg_url, "app-06", "--speed", "300", "--ttl", "600")
    first.wait_for("started")
    first.kill()
    assert rows(pg_url)[0].status == INTERRUPTED  # its pid is gone: no need to wait
    later = Console(pg_url, "app-06", "--speed", "20000")
    try:
        end = later.wait_for("done", "refused")
    finally:
        later.close()
    assert end["event"] == "done"


def test_the_database_killed_mid_action_loses_nothing_and_resends_nothing() -> None:
    with PgServer(fsync=True) as pg:  # durability: fsync on
        pg.psql("create database team")
        url = pg.url("team")
        console = Console(url, "app-06", "--speed", "3000", "--ttl", "3")
        try:
            console.wait_for("started")
            pg.kill()  # kill -9 the postmaster mid-merge
            done = console.wait_for("done", "refused")
            assert done["event"] == "done" and done["state"] == "ok"
            assert "could not log the outcome" in done["error"]
            assert "written as soon as the database is back" in done["error"]
            pg.start()  # back: the console writes the outcome by itself
            flushed = console.wait_for("flushed", "unflushed")
            assert flushed["event"] == "flushed"
            assert len(flushed["merges_sent"]) == 1  # sent once, never resent
            console.wait_for("exit")
        finally:
            console.close()
        found = rows(url)
        assert [(r.action, r.outcome) for r in found] == [("merge", "ok")]
        assert found[0].duration_s is not None and found[0].ended
        with ActionLog.open(url) as log:
            assert log.leases() == []


def test_a_read_only_role_cannot_write_even_bypassing_the_ui(pg_server: PgServer,
                                                              pg_url: str) -> None:
    import psycopg

    ActionLog.open(pg_url).close()  # a read-write console created the schema
    db = pg_url.split("/")[3].split("?")[0]
    pg_server.psql("create role oncall login")
    try:
        pg_server.psql(f"grant connect on database {db} to oncall", db)
        pg_server.psql("grant select on all tables in schema public to oncall", db)
        ro_url = pg_url.replace("ventana@", "oncall@")
        with ActionLog.open(ro_url) as log:
            assert log.writable is False
            with pytest.raises(Exception, match="may only read"):
                log.record(action="merge", target_system="sim", mode="read-only",
                           target_object="vm:x", target_name="x", plan={}, findings=[],
                           override=False, confirmed=False, outcome="refused")
        with psycopg.connect(ro_url, autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into leases (target_object, row_id, action, target_name, "
                         "console, operator, host, pid, acquired, expires) values "
                         "('vm:x', 1, 'merge', 'x', 'c', 'o', 'h', 1, 0, 1e12)")
        # A console on that role: the action is refused, nothing is sent.
        console = Console(ro_url, "app-06", "--speed", "20000")
        try:
            end = console.wait_for("done", "refused")
        finally:
            console.close()
        assert end["event"] == "refused" and "may only read" in end["reason"]
        assert end["merges_sent"] == []
        assert rows(pg_url) == []
    finally:
        pg_server.psql("drop owned by oncall", db)
        pg_server.psql("drop role oncall")


def test_password_in_a_log_url_is_refused(tmp_path: Path) -> None:
    from ventana.state.config import ConfigError, load_config

    cfg = tmp_path / "config.toml"
    cfg.write_text('log = "postgresql://ops:hunter2@db.example/ventana"\n')
    with pytest.raises(ConfigError, match="carries a password") as err:
        load_config(cfg)
    assert "hunter2" not in str(err.value)
    cfg.write_text('log = "postgresql://ops@db.example/ventana"\n')
    assert load_config(cfg).log == "postgresql://ops@db.example/ventana"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "ventana.tui.cli", "log", "--log",
                           "postgresql://ops:hunter2@db.example/ventana"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "carries a password" in done.stderr
    assert "hunter2" not in done.stderr


def test_lease_ttl_is_a_config_key_the_console_holds_its_leases_for(tmp_path: Path,
                                                                     pg_url: str) -> None:
    from ventana.state.config import ConfigError, load_config
    from ventana.state.leases import Claim
    from ventana.tui.cli import session_log

    cfg = tmp_path / "config.toml"
    for bad in ("0", "2", "7200", '"60"', "true"):
        cfg.write_text(f"lease_ttl = {bad}\n")
        with pytest.raises(ConfigError, match="lease_ttl"):
            load_config(cfg)
    assert load_config(_write(cfg, "")).lease_ttl == 60.0  # the default
    config = load_config(_write(cfg, f'log = "{pg_url}"\nlease_ttl = 15\n'))
    assert config.lease_ttl == 15.0
    log, why = session_log(None, config.log, read_only=False,  # type: ignore[arg-type]
                           lease_ttl=config.lease_ttl)
    assert log is not None, why
    with log:
        row = log.begin(action="merge", target_system="sim", mode="read-write",
                        target_object="vm:a", target_name="app-01", plan={}, findings=[],
                        override=False, confirmed=True, claim=Claim(ttl=log.lease_ttl))
        (lease,) = log.leases()
        assert 10 < lease.expires - lease.acquired <= 15.5  # the configured time, not 60 s
        log.finish(row, outcome="ok")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
