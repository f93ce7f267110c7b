"""The console on a team's log (PostgreSQL): the same operator session, shared rows.

The app gets the log's URL as its path; acknowledgements, the window queue and
rebuild workflows open the same database. A merge confirmed here is written
with the VM's lease, and another console sees the row (with operator and host).
"""

from __future__ import annotations

import pytest
from apphelp import populated, vm_where, wait_for
from factories import NOW

from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.actionlog import ActionLog
from ventana.tui.app import VentanaApp
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZE = (160, 50)


async def test_a_merge_from_the_console_lands_in_the_teams_log(pg_url: str) -> None:
    log = ActionLog.open(pg_url)
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        assert app.acks is not None, app.acks_error  # the acks live in the same database
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        name = app.store.vm(vm_id).name  # type: ignore[union-attr]
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)
        await pilot.press(*name, "enter")
        with ActionLog.open(pg_url) as other:  # another console's view of the same log
            await wait_for(pilot, lambda: bool(other.rows())
                           and other.rows()[0].outcome != "running", timeout=30)
            (row,) = other.rows()
        assert row.outcome == "ok", row.error
        assert row.target_name == name and row.operator and row.host
        assert log.leases() == []  # released with the outcome
    log.close()


OTHER_CONSOLE = """
import sys, time
from ventana.state.actionlog import ActionLog
log = ActionLog.open(sys.argv[1])
log.begin(action="merge", target_system="sim:other", mode="read-write",
          target_object="vm:elsewhere-01", target_name="elsewhere-01", plan={}, findings=[],
          override=False, confirmed=True, task_id="merge-other0001")
print("begun", flush=True)
sys.stdin.readline()  # holds its row (and lease) running until told to stop
"""


async def test_another_consoles_action_reaches_the_task_strip(pg_url: str) -> None:
    """Live awareness: a row another console process writes shows here within a
    second or so (LISTEN/NOTIFY), with who and where; the console's own rows do not
    come back through the feed twice."""
    import subprocess
    import sys
    import time

    from ventana.state.model import Kind, TaskState

    log = ActionLog.open(pg_url)
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await wait_for(pilot, lambda: app.core.team_feed is not None
                       and app.core.team_feed.state == "live", timeout=10)
        other = subprocess.Popen([sys.executable, "-c", OTHER_CONSOLE, pg_url],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert other.stdout is not None and other.stdout.readline().strip() == "begun"
            seen = time.monotonic()

            def theirs() -> list:
                return [t for t in app.store.all(Kind.TASK) if t.target_name == "elsewhere-01"]

            await wait_for(pilot, lambda: bool(theirs()), timeout=10)
            took = time.monotonic() - seen
            (task,) = theirs()
            assert task.state is TaskState.RUNNING and task.kind == "merge"
            assert "@" in task.message and "elsewhere-01" in task.message  # who, where, what
            assert took < 3.0, f"another console's action took {took:.1f} s to show"
        finally:
            other.kill()
            other.wait()
    log.close()


async def test_a_console_started_while_the_team_log_is_down_recovers_by_itself() -> None:
    """The database is down at start: the console opens (monitoring goes on), shows the
    banner and refuses actions; the database back, the banner goes by itself and an
    action runs, logged."""
    import asyncio

    from peers.postgres import PgServer

    from ventana.core.console import TEAM_LOG_DOWN
    from ventana.state.model import Kind
    from ventana.tui.cli import _open_log
    from ventana.tui.header import StatusHeader

    with PgServer() as pg:
        pg.psql("create database team")
        url = pg.url("team")
        pg.stop()
        log, why = _open_log(url)  # the path the CLI takes: a log anyway, not "no log"
        assert log is not None and why == "" and "unreachable" in log.down
        config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
        app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await populated(pilot)  # monitoring goes on without the database
            header = app.query_one(StatusHeader)
            assert TEAM_LOG_DOWN in header.flags
            assert app.acks is None
            vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
            name = app.store.vm(vm_id).name  # type: ignore[union-attr]
            app.query_one(VmTable).select_vm(vm_id)
            app.clear_notifications()
            await pilot.press("m")
            await pilot.pause(0.1)
            assert not isinstance(app.screen, PlanScreen)  # refused before any plan
            notes = [n.message for n in app._notifications]
            assert any(n.startswith("Refused: the team's action log does not answer")
                       for n in notes), notes

            await asyncio.to_thread(pg.start)
            await wait_for(pilot, lambda: TEAM_LOG_DOWN not in header.flags, timeout=15)
            await wait_for(pilot, lambda: app.acks is not None, timeout=5)  # opened on return
            await wait_for(pilot, lambda: app.core.team_feed is not None, timeout=5)
            await pilot.press("m")
            await pilot.pause(0.1)
            assert isinstance(app.screen, PlanScreen)
            await pilot.press(*name, "enter")
            with ActionLog.open(url) as other:
                await wait_for(pilot, lambda: bool(other.rows())
                               and other.rows()[0].outcome != "running", timeout=30)
                (row,) = other.rows()
            assert row.outcome == "ok", row.error
            assert row.target_name == name
            await asyncio.to_thread(pg.kill)  # gone again mid-session: the banner is back
            await wait_for(pilot, lambda: TEAM_LOG_DOWN in header.flags, timeout=15)
            assert app.store.count(Kind.VM) > 0  # monitoring goes on
        log.close()


async def test_a_read_only_console_says_when_the_team_feed_goes_stale() -> None:
    """On-call staff watch read-only: nothing is refused there, but when the team's log
    stops answering, other consoles' actions stop reaching the task strip. The header
    says so (in red, whole at 80 columns), a warning says why, and both go by themselves
    when the database is back — never the "actions refused" wording, which would be
    false here."""
    import asyncio
    import subprocess
    import sys

    from peers.postgres import PgServer

    from ventana.core.console import TEAM_FEED_STALE, TEAM_LOG_DOWN
    from ventana.state.model import Kind
    from ventana.tui.header import StatusHeader
    from ventana.tui.task_strip import TaskStrip

    with PgServer() as pg:
        pg.psql("create database team")
        url = pg.url("team")
        log = ActionLog.open(url)
        config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, read_only=True)
        app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
        async with app.run_test(size=(80, 24)) as pilot:
            await populated(pilot)
            header = app.query_one(StatusHeader)
            await wait_for(pilot, lambda: app.core.team_feed is not None, timeout=10)
            assert TEAM_FEED_STALE not in header.flags
            other = subprocess.Popen([sys.executable, "-c", OTHER_CONSOLE, url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:  # another console's merge is running, shown here live
                assert other.stdout is not None and other.stdout.readline().strip() == "begun"
                strip = app.query_one(TaskStrip)
                await wait_for(pilot, lambda: "elsewhere-01" in str(strip.content), timeout=10)
                assert "STALE" not in str(strip.content)
            finally:
                other.kill()
                other.wait()
            app.clear_notifications()
            await asyncio.to_thread(pg.kill)
            await wait_for(pilot, lambda: TEAM_FEED_STALE in header.flags, timeout=15)
            assert TEAM_LOG_DOWN not in header.flags
            shown = header.render().plain
            assert TEAM_FEED_STALE in shown, shown  # whole within the 80 cells
            assert shown.index(TEAM_FEED_STALE) + len(TEAM_FEED_STALE) <= 80
            notes = [(n.title, n.message, n.severity) for n in app._notifications]
            assert any(title == "Team feed stale" and severity == "warning"
                       and "other consoles' actions no longer reach this console" in text
                       for title, text, severity in notes), notes
            assert not any("every action is refused" in text for _, text, _ in notes), notes
            assert app.store.count(Kind.VM) > 0  # the cluster is still watched
            # What we last heard of the other console's merge is no longer news: stale.
            line = next(x for x in str(strip.content).splitlines() if "elsewhere-01" in x)
            assert "STALE: team log" in line and "(team log not answering)" in line, line

            await asyncio.to_thread(pg.start)
            await wait_for(pilot, lambda: TEAM_FEED_STALE not in header.flags, timeout=15)
            await wait_for(pilot, lambda: any(  # the notice follows the header's change
                "other consoles' actions reach this console again" in n.message
                for n in app._notifications), timeout=5)
        log.close()


async def test_a_database_that_stops_answering_is_said_down_within_the_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A team database (or the path to it) that holds a query without answering or
    closing — TCP would wait minutes — is said unreachable once the console's check has
    waited ``LOG_CHECK_WAIT_S``: actions are refused, keys work, and all of it goes by
    itself once the bytes flow again."""
    import asyncio

    from peers.postgres import PgServer
    from peers.tcpfreeze import FreezableRelay

    from ventana.core.console import TEAM_LOG_DOWN
    from ventana.tui.header import StatusHeader
    from ventana.tui.help_screen import HelpScreen

    monkeypatch.setattr("ventana.core.console.LOG_CHECK_WAIT_S", 2.0)
    with PgServer(tcp=True) as pg:
        pg.psql("create database team")
        with FreezableRelay("127.0.0.1", pg.port) as relay:
            url = f"postgresql://ventana@127.0.0.1:{relay.port}/team"
            log = ActionLog.open(url)
            config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
            app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
            async with app.run_test(size=SIZE) as pilot:
                await populated(pilot)
                header = app.query_one(StatusHeader)
                await wait_for(pilot, lambda: app.core.team_feed is not None, timeout=10)
                assert TEAM_LOG_DOWN not in header.flags
                relay.freeze()
                await wait_for(pilot, lambda: TEAM_LOG_DOWN in header.flags, timeout=15)
                assert "has not answered for 2 s" in app.core.log_down
                await pilot.press("question_mark")  # the screen answers meanwhile
                await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=5)
                await pilot.press("escape")
                relay.thaw()
                await wait_for(pilot, lambda: TEAM_LOG_DOWN not in header.flags, timeout=30)
            await asyncio.to_thread(log.close)


async def test_a_plan_opens_with_the_last_lease_reading_when_the_database_holds_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the console has called the database down, a plan still opens: it waits
    ``LEASES_WAIT_S`` for the leases, then shows the last reading (the intent row's
    check decides); before, it waited for as long as the database held the query."""
    from peers.postgres import PgServer
    from peers.tcpfreeze import FreezableRelay

    monkeypatch.setattr("ventana.core.console.LOG_CHECK_WAIT_S", 60.0)  # no banner yet
    monkeypatch.setattr("ventana.backends.actions.LEASES_WAIT_S", 1.0)
    with PgServer(tcp=True) as pg:
        pg.psql("create database team")
        with FreezableRelay("127.0.0.1", pg.port) as relay:
            log = ActionLog.open(f"postgresql://ventana@127.0.0.1:{relay.port}/team")
            config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
            app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
            async with app.run_test(size=SIZE) as pilot:
                await populated(pilot)
                await wait_for(pilot, lambda: log.recent_leases()[1] is not None, timeout=10)
                app.query_one(VmTable).select_vm(
                    vm_where(app, lambda blocking, n: not blocking and n > 0))
                relay.freeze()
                await pilot.press("m")
                await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), timeout=5)
                await pilot.press("escape")
                relay.thaw()
            log.close()


async def test_the_ui_answers_while_the_intent_commit_waits_for_the_database(
        pg_url: str) -> None:
    """A shared log's intent row is committed in a worker: while another connection
    holds the lease lock the commit waits, and the console still answers a key; the
    lock released, the row commits and only then the action runs."""
    import asyncio
    import time

    import psycopg

    from ventana.state.schema import LEASE_LOCK_KEY
    from ventana.tui.help_screen import HelpScreen

    def waiting() -> bool:  # our console's commit is queued on the lease lock
        with psycopg.connect(pg_url, autocommit=True) as conn:
            return bool(conn.execute(
                "select 1 from pg_stat_activity where wait_event_type = 'Lock' "
                "and wait_event = 'advisory' and application_name = 'ventana'").fetchall())

    def waits_within(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if waiting():
                return True
            time.sleep(0.05)
        return False

    log = ActionLog.open(pg_url)
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
    holder = psycopg.connect(pg_url, autocommit=True)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await populated(pilot)
            vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
            name = app.store.vm(vm_id).name  # type: ignore[union-attr]
            app.query_one(VmTable).select_vm(vm_id)
            await pilot.press("m")
            await pilot.pause(0.1)
            assert isinstance(app.screen, PlanScreen)
            holder.execute("select pg_advisory_lock(%s)", (LEASE_LOCK_KEY,))
            await pilot.press(*name, "enter")
            assert await asyncio.to_thread(waits_within, 5.0), "the commit never waited"
            await pilot.press("question_mark")  # the loop answers meanwhile
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=2)
            assert await asyncio.to_thread(waiting)  # …while the commit still waits
            with ActionLog.open(pg_url) as other:
                assert other.rows() == []  # nothing committed, so nothing sent yet
                holder.execute("select pg_advisory_unlock(%s)", (LEASE_LOCK_KEY,))
                await wait_for(pilot, lambda: bool(other.rows())
                               and other.rows()[0].outcome != "running", timeout=30)
                (row,) = other.rows()
            assert row.outcome == "ok", row.error
    finally:
        holder.close()
    log.close()


async def test_the_window_a_rebuild_and_a_plan_wait_for_the_database_without_freezing_the_ui(
        pg_url: str) -> None:
    """The window queue, a VM's rebuild state and the leases a plan shows are read from
    the team's database in a worker thread: while another connection holds their tables,
    the keys still work (help opens and closes); released, the screens open by
    themselves."""
    import psycopg

    from ventana.tui.help_screen import HelpScreen
    from ventana.tui.window_screen import WindowScreen

    log = ActionLog.open(pg_url)
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
    holder = psycopg.connect(pg_url)  # a transaction holds the locks until rollback
    try:
        async with app.run_test(size=SIZE) as pilot:
            await populated(pilot)

            async def keys_work_meanwhile() -> None:
                await pilot.press("question_mark")
                await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), timeout=5)
                await pilot.press("escape")
                await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))

            async def opens_once_released(table: str, key: str, screen: type) -> None:
                """``key`` waits for ``table`` (held by ``holder``) without freezing the
                keys; released, ``screen`` opens by itself."""
                holder.execute(f"lock table {table} in access exclusive mode")
                await pilot.press(key)
                await pilot.pause(0.3)
                assert not isinstance(app.screen, screen)  # still waiting for the table
                await keys_work_meanwhile()
                holder.rollback()
                await wait_for(pilot, lambda: isinstance(app.screen, screen), timeout=10)

            await opens_once_released("windows", "w", WindowScreen)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, WindowScreen))

            app.query_one(VmTable).select_vm(vm_where(app, lambda blocking, n: not blocking))
            await opens_once_released("rebuilds", "b", PlanScreen)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, PlanScreen))

            # A merge's plan shows what other consoles hold: read first, in a worker.
            app.query_one(VmTable).select_vm(
                vm_where(app, lambda blocking, n: not blocking and n > 0))
            await opens_once_released("leases", "m", PlanScreen)
            shown = app.screen.plan  # type: ignore[attr-defined]
            assert "TEAM_VIEW_OLD" not in {f.code for f in shown.findings}  # read just now
    finally:
        holder.close()
    log.close()


async def test_the_window_queue_edited_while_the_database_is_down_is_saved_when_back(
) -> None:
    """Queue edits are written behind: with the team's database gone, moving an item
    still answers at once, the screen and a notice say the queue is not saved (before,
    the write's error was raised into the key's handler), and once the database is back
    the next change writes the whole queue."""
    import asyncio

    from peers.postgres import PgServer

    from ventana.state.window import WindowStore
    from ventana.tui.window_screen import WindowScreen

    with PgServer() as pg:
        pg.psql("create database team")
        url = pg.url("team")
        log = ActionLog.open(url)
        config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
        app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
        async with app.run_test(size=SIZE) as pilot:
            await populated(pilot)
            picked = [v for v in sorted(app.store.vms(), key=lambda v: v.name)
                      if app.store.checkpoints_of(v.id)][:2]
            for vm in picked:
                app.query_one(VmTable).select_vm(vm.id)
                await pilot.pause(0.05)
                await pilot.press("p")
            await pilot.press("w")
            await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen), timeout=10)
            wr = app.core.open_window
            assert wr is not None
            await wait_for(pilot, lambda: len(wr.window.items) == 2)
            first = [i.vm_name for i in wr.window.items]
            await asyncio.to_thread(wr.window.flushed().result, 10)
            app.clear_notifications()

            await asyncio.to_thread(pg.kill)
            await pilot.press("shift+down")  # answered at once; the write fails behind
            assert [i.vm_name for i in wr.window.items] == first[::-1]
            await wait_for(pilot, lambda: bool(wr.save_error), timeout=15)
            assert isinstance(app.screen, WindowScreen)  # no crash, the screen is up
            notes = [(n.title, n.severity) for n in app._notifications]
            assert ("Queue not saved", "error") in notes, notes

            await asyncio.to_thread(pg.start)
            await pilot.press("shift+up")  # the next change writes the whole queue
            await wait_for(pilot, lambda: not wr.save_error, timeout=15)
            assert "Queue saved" in [n.title for n in app._notifications]
            store = await asyncio.to_thread(WindowStore.open, url)
            try:
                again = await asyncio.to_thread(store.load, wr.window.name)
            finally:
                store.close()
            assert [i.vm_name for i in again.items] == first
        log.close()


async def test_the_log_screen_follows_other_consoles_rows(pg_url: str) -> None:
    """Open on a team's log, the log screen shows another console's row as it is
    written, with its operator and host."""
    import getpass
    import socket
    import subprocess
    import sys

    from textual.widgets import DataTable

    from ventana.tui.log_screen import LogScreen

    log = ActionLog.open(pg_url)
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await wait_for(pilot, lambda: app.core.team_feed is not None
                       and app.core.team_feed.state == "live", timeout=10)
        log.record(action="merge", target_system="sim", mode="read-write",
                   target_object="vm:x", target_name="before-01", plan={}, findings=[],
                   override=False, confirmed=False, outcome="refused")
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen))
        table = app.screen.query_one("#log-table", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1, timeout=5)  # read in a worker
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[1:3] == ["Operator", "Host"]
        other = subprocess.Popen([sys.executable, "-c", OTHER_CONSOLE, pg_url],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert other.stdout is not None and other.stdout.readline().strip() == "begun"
            await wait_for(pilot, lambda: table.row_count == 2, timeout=5)
            cells = [str(c) for c in table.get_row_at(0)]
            assert cells[5:8] == ["merge", "elsewhere-01", "running"], cells
            assert cells[2] == socket.gethostname()[:30] and cells[1]
            assert getpass.getuser() in cells[1]
        finally:
            other.kill()
            other.wait()
        # Closing the screen drops its watcher.
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, LogScreen))
        assert app.core.team_watchers == []
    log.close()


async def test_the_unreachable_banner_stays_whole_at_80_columns(tmp_path: object) -> None:
    """The header gives the banner room before anything else at 80x24 (the target is
    cut first): an operator on a small terminal still reads that actions are refused."""
    from ventana.core.console import TEAM_LOG_DOWN
    from ventana.tui.cli import _open_log
    from ventana.tui.header import StatusHeader

    # No server listens on this socket: the log opens lazily, unreachable.
    log, why = _open_log(f"postgresql://ops@/team?host=%2F{str(tmp_path).strip('/')}"
                         "&port=5999")
    assert log is not None and "unreachable" in log.down, why
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=log, clock=lambda: NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await populated(pilot)
        header = app.query_one(StatusHeader)
        shown = header.render().plain
        assert TEAM_LOG_DOWN in shown, shown  # whole, within the 80 cells on screen:
        assert shown.index(TEAM_LOG_DOWN) + len(TEAM_LOG_DOWN) <= header.size.width == 80
    log.close()
