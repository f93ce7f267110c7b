"""The maintenance window as an operator uses it (Pilot, simulated cluster)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apphelp import make_app, populated, wait_for
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static

from ventana.state.actionlog import ActionLog
from ventana.state.events import Upsert
from ventana.tui.app import VentanaApp
from ventana.tui.vm_table import VmTable
from ventana.tui.window_screen import WindowConfirmScreen, WindowScreen

SIZE = (180, 50)


def vm_id(app: VentanaApp, name: str) -> str:
    return next(v.id for v in app.store.vms() if v.name == name)


async def queue(pilot: Pilot, app: VentanaApp, *names: str) -> None:
    for name in names:
        app.query_one(VmTable).select_vm(vm_id(app, name))
        await pilot.pause(0.05)
        await pilot.press("p")
    await pilot.pause(0.1)


def rows(app: VentanaApp) -> list[list[str]]:
    table = app.screen.query_one("#window-table", DataTable)
    return [[str(c) for c in table.get_row(key)] for key in table.rows]


async def test_queue_from_the_vm_list_then_run_two_in_parallel(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await queue(pilot, app, "git-01", "intranet-01", "av-01", "git-01")  # git-01 once
        await pilot.press("w")
        await pilot.pause(0.2)
        assert isinstance(app.screen, WindowScreen)
        shown = rows(app)
        assert [r[1] for r in shown] == ["git-01", "intranet-01", "av-01"]
        assert all(r[2] == "merge" and r[9].startswith("queued") for r in shown)
        assert shown[0][3] == shown[1][3] != shown[2][3]  # two LUNs
        # Move av-01 to the top.
        await pilot.press("down", "down", "shift+up", "shift+up")
        await pilot.pause(0.1)
        assert [r[1] for r in rows(app)] == ["av-01", "git-01", "intranet-01"]

        await pilot.press("r")
        await pilot.pause(0.2)
        assert isinstance(app.screen, WindowConfirmScreen)
        name = app._window.window.name  # type: ignore[union-attr]
        parallel = app.screen.query_one("#parallel", Input)
        parallel.value = "2"
        await pilot.click("#confirm-name")
        await pilot.press(*"wrong", "enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, WindowConfirmScreen)  # refused: not the name
        app.screen.query_one("#confirm-name", Input).value = ""
        await pilot.press(*name, "enter")
        await wait_for(pilot, lambda: all(r[9].startswith("ok") for r in rows(app)), 30)
        assert isinstance(app.screen, WindowScreen)
        assert app._window.window.parallel == 2  # type: ignore[union-attr]

    log = ActionLog.open(tmp_path / "actions.db")
    merges = [r for r in log.rows() if r.action == "merge"]
    assert {r.target_name for r in merges} == {"git-01", "intranet-01", "av-01"}
    assert all(r.outcome == "ok" and r.plan_data()["params"]["queue_window"] == name
               for r in merges)


async def test_read_only_can_plan_a_window_but_not_run_it(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await queue(pilot, app, "git-01")
        await pilot.press("w")
        await pilot.pause(0.2)
        assert [r[1] for r in rows(app)] == ["git-01"]
        await pilot.press("r")
        await pilot.pause(0.2)
        assert isinstance(app.screen, WindowScreen)  # run is disabled
        assert app.screen.check_action("run", ()) is None


async def test_end_time_says_whether_the_queue_fits(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await queue(pilot, app, "git-01", "av-01")
        await pilot.press("w")
        await pilot.pause(0.2)
        summary = app.screen.query_one("#window-summary", Static)
        assert "no end time" in str(summary.render())
        detail = str(app.screen.query_one("#window-detail", Static).render())
        assert "merge git-01: estimate" in detail and "no past merges on this cluster" in detail
        assert "Remove-VMSnapshot" in detail
        await pilot.press("e", *"+1h", "enter")  # git-01 alone is ~3 h
        await pilot.pause(0.2)
        assert [r[8] for r in rows(app)] == ["NO", "NO"]
        assert "does NOT fit" in str(summary.render())
        await pilot.press("e", *"+48h", "enter")
        await pilot.pause(0.2)
        assert [r[8] for r in rows(app)] == ["yes", "yes"]
        assert "fits, even in the worst case" in str(summary.render())


async def test_the_queue_survives_a_restart(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await queue(pilot, app, "git-01", "kms-01", "av-01")
        await pilot.press("w")
        await pilot.pause(0.2)
        await pilot.press("n")
        app.screen.query_one("#window-input", Input).value = ""
        await pilot.press(*"sat-night", "enter")
        await pilot.press("down", "delete")  # kms-01 goes
        await pilot.pause(0.2)
        assert [r[1] for r in rows(app)] == ["git-01", "av-01"]
    again = make_app(tmp_path)
    async with again.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await pilot.press("w")
        await pilot.pause(0.2)
        assert again._window.window.name == "sat-night"  # type: ignore[union-attr]
        assert [r[1] for r in rows(again)] == ["git-01", "av-01"]


def test_window_screen_snapshot(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def open_window(pilot: Pilot) -> None:
        await populated(pilot)
        await queue(pilot, app, "git-01", "intranet-01", "av-01", "dba-01")
        await pilot.press("w")
        await pilot.pause(0.2)
        await pilot.press("e", *"+6h", "enter")
        app.clear_notifications()
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_window)


async def test_pause_and_skip_from_the_screen_while_it_runs(tmp_path: Path) -> None:
    app = make_app(tmp_path, speed=3000)  # a ~3 h merge takes a few real seconds
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await queue(pilot, app, "git-01", "intranet-01", "kms-01")  # one LUN
        await pilot.press("w")
        await pilot.pause(0.2)
        await pilot.press("r")
        await pilot.pause(0.2)
        name = app._window.window.name  # type: ignore[union-attr]
        await pilot.press(*name, "enter")
        await wait_for(pilot, lambda: rows(app)[0][9].startswith("running"), 10)
        await pilot.press("z", "down", "down", "k")
        await pilot.pause(0.2)
        assert "paused" in str(app.screen.query_one("#window-summary", Static).render())
        await wait_for(pilot, lambda: not app._window.active, 30)  # type: ignore[union-attr]
        statuses = [r[9].split()[0] for r in rows(app)]
        assert statuses == ["ok", "queued", "skipped"]
    log = ActionLog.open(tmp_path / "actions.db")
    outcomes = {r.target_name: r.outcome for r in log.rows()}
    assert outcomes == {"git-01": "ok", "kms-01": "cancelled"}


async def test_hostile_vm_name_is_shown_literally_in_the_window(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm = app.store.vm(vm_id(app, "git-01"))
        assert vm is not None
        evil = "[bold red]x[/] [@click=app.quit]y[/] \x1b]52;c;aGk=\x07\x1b[2J"
        app.store.apply(Upsert(dataclasses.replace(vm, name=evil)))
        await pilot.pause(0.2)
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.05)
        await pilot.press("p", "w")
        await pilot.pause(0.3)
        shown = rows(app)[0][1]
        # Literal markup, control characters made visible, cut in the middle (60 cells).
        assert shown == "[bold red]x[/] [@click=app.qui…[/] \\x1b]52;c;aGk=\\x07\\x1b[2J"
        assert "\x1b" not in shown
        table = app.screen.query_one("#window-table", DataTable)
        for y in range(table.size.height):
            assert "\x1b" not in table.render_line(y).text
        assert app.is_running
