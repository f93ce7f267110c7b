"""The findings screen in the console, on the simulator (Pilot)."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from pathlib import Path

from apphelp import make_app, populated, wait_for
from factories import NOW
from textual.pilot import Pilot
from textual.widgets import Input

from ventana.backends.sim import SimBackend, SimConfig
from ventana.state import findings as F
from ventana.state.actionlog import ActionLog
from ventana.state.events import Upsert
from ventana.state.model import Severity
from ventana.tui.app import VentanaApp
from ventana.tui.findings_screen import FindingsList, FindingsScreen, SilenceDialog
from ventana.tui.header import StatusHeader
from ventana.tui.plan_screen import PlanScreen

SIZE = (180, 50)


async def ready(pilot: Pilot) -> VentanaApp:
    app = pilot.app
    assert isinstance(app, VentanaApp)
    await populated(pilot)
    await wait_for(pilot, lambda: app.findings.pending == 0)
    await pilot.pause(0.2)
    return app


async def open_findings(pilot: Pilot) -> FindingsScreen:
    await pilot.press("f")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, FindingsScreen))
    screen = pilot.app.screen
    assert isinstance(screen, FindingsScreen)
    return screen


def row_keys(screen: FindingsScreen) -> list[str]:
    return [f.key for f, _ in screen._rows]


async def select(pilot: Pilot, screen: FindingsScreen, key: str) -> None:
    screen.query_one(FindingsList).move_to(row_keys(screen).index(key))
    await pilot.pause(0.05)


def key_of(app: VentanaApp, code: str, name: str | None = None) -> str:
    for f in sorted(app.findings.findings(), key=lambda f: f.target_name):
        if f.code == code and (name is None or f.target_name == name):
            return f.key
    raise AssertionError(f"no {code} finding")


async def test_findings_appear_on_the_sim_and_header_counts(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        header = app.query_one(StatusHeader)
        critical, warning, _info = header.findings
        assert critical > 0 and warning > 0
        screen = await open_findings(pilot)
        codes = {f.code for f, _ in screen._rows}
        assert {F.CHAIN_BROKEN, F.CHECKPOINT_OLD, F.LUN_LOW_SPACE, F.AGENT_STOPPED,
                F.SMB_SPREAD} <= codes
        # Sorted by severity: criticals first.
        assert screen._rows[0][0].severity is Severity.CRITICAL
        # Minimum severity and the text filter narrow the table.
        await pilot.press("v", "v")
        assert {f.severity for f, _ in screen._rows} == {Severity.CRITICAL}
        await pilot.press("v")
        await pilot.press("slash")
        screen.query_one("#findings-filter", Input).value = "HV-NODE"
        await pilot.pause(0.1)
        assert {f.target for f, _ in screen._rows} == {
            f.target for f in app.findings.findings() if f.target.startswith("node:")}
        await pilot.press("escape")  # clears the filter, back to the table
        assert screen.text == ""
        await pilot.press("s")
        assert screen.sort == "object"
        names = [f.target_name.casefold() for f, _ in screen._rows]
        assert names == sorted(names)
        await pilot.press("escape")
        assert not isinstance(app.screen, FindingsScreen)


async def test_a_change_makes_a_finding_appear_and_disappear_live(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        lun = next(x for x in app.store.luns() if x.name == "CSV-DATA2")
        target = f"lun:{lun.id}"
        assert not app.findings.for_target(target)
        screen = await open_findings(pilot)
        before = app.query_one(StatusHeader).findings
        app.store.apply(Upsert(dataclasses.replace(lun, free_bytes=int(lun.total_bytes * 0.03))))
        key = f"{target}|{F.LUN_LOW_SPACE}"
        await wait_for(pilot, lambda: key in row_keys(screen))
        # the header is recounted on the pump's turn, the list on the findings' own
        await wait_for(pilot, lambda: app.query_one(StatusHeader).findings[0] == before[0] + 1)
        app.store.apply(Upsert(lun))
        await wait_for(pilot, lambda: key not in row_keys(screen))
        await wait_for(pilot, lambda: app.query_one(StatusHeader).findings == before)


async def _silence(pilot: Pilot, key: str, keystroke: str, reason: str,
                   until: str | None = None) -> None:
    screen = pilot.app.screen
    assert isinstance(screen, FindingsScreen)
    await select(pilot, screen, key)
    await pilot.press(keystroke)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, SilenceDialog))
    dialog = pilot.app.screen
    dialog.query_one("#silence-reason", Input).value = reason
    if until is not None:
        dialog.query_one("#silence-until", Input).value = until
    await pilot.click("#silence-ok")
    await wait_for(pilot, lambda: pilot.app.screen is screen)
    # written on the console's writer thread, then the list hides it
    await wait_for(pilot, lambda: key not in row_keys(screen))


async def test_ack_and_snooze_survive_a_restart(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)  # on-call staff may acknowledge
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        broken = key_of(app, F.CHAIN_BROKEN)
        stopped = key_of(app, F.AGENT_STOPPED)
        screen = await open_findings(pilot)
        await _silence(pilot, broken, "a", "ticket INC-4711, storage team")
        await _silence(pilot, stopped, "z", "agent being reinstalled", "2d")
        assert broken not in row_keys(screen) and stopped not in row_keys(screen)
        await pilot.press("h")  # show the silenced ones
        shown = {f.key: a for f, a in screen._rows}
        assert shown[broken] is not None and shown[broken].kind == "ack"
        assert shown[stopped] is not None and shown[stopped].kind == "snooze"
        log = app.action_log
        assert log is not None
        rows = log.rows(limit=2)
        assert [r.action for r in rows] == ["snooze", "acknowledge"]
        assert {r.mode for r in rows} == {"read-only"}
        assert rows[1].plan_data()["reason"] == "ticket INC-4711, storage team"
    app2 = make_app(tmp_path)
    async with app2.run_test(size=SIZE) as pilot:
        await ready(pilot)
        screen = await open_findings(pilot)
        assert broken not in row_keys(screen) and stopped not in row_keys(screen)
        await pilot.press("h")
        await select(pilot, screen, broken)
        await pilot.press("x")  # lift the acknowledgement: it is open again
        await pilot.press("h")
        await wait_for(pilot, lambda: broken in row_keys(screen))
        assert stopped not in row_keys(screen)
        log = app2.action_log
        assert log is not None
        assert log.rows(limit=1)[0].action == "unacknowledge"


async def test_enter_opens_the_remedy_plan(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        key = key_of(app, F.CHAIN_DEEP, "db-03")
        screen = await open_findings(pilot)
        await select(pilot, screen, key)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        plan = app.screen.plan  # type: ignore[attr-defined]
        assert plan.action == "merge" and plan.target_name == "db-03"
        await pilot.press("escape")  # cancel: back on the findings
        await wait_for(pilot, lambda: app.screen is screen)


def test_findings_screen(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def show(pilot: Pilot) -> None:
        await ready(pilot)
        await open_findings(pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=show)


async def test_a_snooze_ends_by_itself(tmp_path: Path) -> None:
    now = [NOW]
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, merge_failure_rate=0.0)
    app = VentanaApp(SimBackend(config), log=ActionLog.open(tmp_path / "actions.db"),
                     clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        key = key_of(app, F.AGENT_OLD)
        before = app.query_one(StatusHeader).findings
        screen = await open_findings(pilot)
        await _silence(pilot, key, "z", "upgrade booked for Thursday", "1h")
        assert key not in row_keys(screen)
        assert app.query_one(StatusHeader).findings[1] == before[1] - 1
        now[0] = NOW + timedelta(minutes=61)
        app._tick_findings()  # the snooze ends on the writer thread; the screen follows
        await wait_for(pilot, lambda: key in row_keys(screen))
        await wait_for(pilot, lambda: app.query_one(StatusHeader).findings == before)
        assert app.acks is not None and app.acks.get(*key.split("|")) is None


async def test_the_screen_answers_while_an_acknowledgement_waits_for_the_log(
        tmp_path: Path) -> None:
    """A log that takes its time (a team database's round trip, a file another console
    holds locked) delays the acknowledgement, never the keys."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        key = key_of(app, F.CHAIN_BROKEN)
        screen = await open_findings(pilot)
        book = app.acks
        assert book is not None
        gate = threading.Event()
        write = book._write

        def slow_write():  # type: ignore[no-untyped-def]
            gate.wait(20)
            return write()

        book._write = slow_write  # type: ignore[method-assign]
        try:
            await select(pilot, screen, key)
            await pilot.press("a")
            await wait_for(pilot, lambda: isinstance(pilot.app.screen, SilenceDialog))
            pilot.app.screen.query_one("#silence-reason", Input).value = "INC-4711"
            await pilot.click("#silence-ok")
            await wait_for(pilot, lambda: pilot.app.screen is screen)
            listing = screen.query_one(FindingsList)
            at = listing.cursor
            started = time.monotonic()
            await pilot.press("home", "down")  # the loop answers while the write waits
            assert listing.cursor == 1 and time.monotonic() - started < 2.0
            assert key in row_keys(screen) and book.get(*key.split("|")) is None
            listing.move_to(at)
        finally:
            gate.set()
        await wait_for(pilot, lambda: key not in row_keys(screen))
        ack = book.get(*key.split("|"))
        assert ack is not None and ack.reason == "INC-4711"
