"""The report screen and the final-state dialog, as an operator uses them."""

from __future__ import annotations

import io
from pathlib import Path

from apphelp import make_app, populated, vm_where, wait_for
from rich.console import Console
from test_report import load_log
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, OptionList

from ventana.backends.replay import ReplayBackend
from ventana.state.actionlog import ActionLog
from ventana.state.model import FinalState
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.final_state_screen import FinalStateScreen
from ventana.tui.report_screen import LunChart, ReportScreen
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)
RECORDING = Path(__file__).resolve().parents[1] / "recordings" / "small-cluster.jsonl"


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def merge(pilot: Pilot, app: VentanaApp, vm_id: str) -> None:
    app.query_one(VmTable).select_vm(vm_id)
    await pilot.press("m")
    await pilot.pause(0.1)
    await pilot.press(*app.store.vm(vm_id).name, "enter")
    await wait_for(pilot, lambda: any(r.action == "merge" and r.outcome != "running"
                                      for r in app.action_log.rows()), timeout=20)


async def test_a_merge_shows_in_the_report_with_its_lun_before_and_after(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        vm = app.store.vm(vm_id)
        lun = app.store.lun(vm.lun_id)
        await merge(pilot, app, vm_id)
        (row,) = [r for r in app.action_log.rows() if r.action == "merge"]
        assert row.outcome == "ok", row.error
        plan, detail = row.plan_data(), row.detail_data()
        assert plan["lun_before"] == {"id": lun.id, "name": lun.name, "total": lun.total_bytes,
                                      "free": lun.free_bytes}
        assert sum(d["size"] for d in plan["disks_before"]) == row.size_before
        assert len(plan["disks_before"]) == len(vm.disk_ids)  # .avhdx counted in their disk
        assert detail["lun_after"]["id"] == lun.id
        assert detail["lun_after"]["free"] > plan["lun_before"]["free"]  # the merge freed space
        assert detail["disks_after"]
        await wait_for(pilot, lambda: app.final_state_of(vm_id) == "Operational")
        assert str(app.query_one(CheckpointsPane).border_title).endswith(
            "final state: Operational")
        await wait_for(pilot, lambda: app.screen is app.screen_stack[0])
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen)
                       and app.screen.report is not None)
        screen = app.screen
        assert isinstance(screen, ReportScreen)
        vms = cells(screen.query_one("#report-vms", DataTable))
        assert [r[0] for r in vms] == [vm.name] * len(vm.disk_ids)
        assert vms[0][-1] == "Operational" and vms[0][7] != "-"
        # The simulator's clock runs 1e6 times faster: the wall time is labelled as such (issue 12).
        assert "wall (simulated ×1e+06: " in vms[0][7]
        luns = cells(screen.query_one("#report-lun-table", DataTable))
        assert len(luns) == len(list(app.store.luns()))  # every LUN the console sees
        console = Console(width=160, record=True, file=io.StringIO())
        console.print(screen.query_one(LunChart).chart)
        chart = console.export_text()
        assert lun.name in chart and "before" in chart and "after" in chart
        # Refresh after an edit: the screen reads the log again.
        app.action_log.record(
            action="final-state", target_system="sim", mode="read-write",
            target_object=f"vm:{vm_id}", target_name=vm.name, plan={}, findings=[],
            override=False, confirmed=True, outcome="ok", final_state="Optimized")
        await pilot.press("r")
        await wait_for(pilot, lambda: cells(screen.query_one("#report-vms", DataTable))[0][-1]
                       == "Optimized")
        await pilot.press("escape")
        assert not isinstance(app.screen, ReportScreen)


async def set_state(pilot: Pilot, app: VentanaApp, vm_id: str, downs: int, note: str) -> None:
    app.query_one(VmTable).select_vm(vm_id)
    await pilot.pause(0.05)
    await pilot.press("e")
    await wait_for(pilot, lambda: isinstance(app.screen, FinalStateScreen))
    await pilot.pause(0.05)
    await pilot.press(*(["down"] * downs))
    await pilot.press("tab", *note, "enter")
    await wait_for(pilot, lambda: not isinstance(app.screen, FinalStateScreen))


async def test_final_state_dialog_persists_across_a_restart(tmp_path: Path) -> None:
    note = "[@click=app.quit]agent[/] |x"
    app = make_app(tmp_path, read_only=True)  # nothing is sent: read-only may set it
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = sorted(app.store.vms(), key=lambda v: v.name)[3].id
        name = app.store.vm(vm_id).name
        await set_state(pilot, app, vm_id, 5, note)  # Under monitoring
        await wait_for(pilot, lambda: app.final_state_of(vm_id) is not None)
        assert app.final_state_of(vm_id) == FinalState.MONITORING.value
        (row,) = app.action_log.rows()
        assert (row.action, row.mode, row.final_state, row.target_name) == (
            "final-state", "read-only", "Under monitoring", name)
        assert row.plan_data()["note"] == note and row.plan_data()["previous"] is None
        title = str(app.query_one(CheckpointsPane).border_title)
        assert title.endswith("final state: Under monitoring")
        assert app.is_running  # the note's [@click] ran nothing
    app.action_log.close()

    again = make_app(tmp_path)
    async with again.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await wait_for(pilot, lambda: again.final_state_of(vm_id) == "Under monitoring")
        again.query_one(VmTable).select_vm(vm_id)
        await pilot.pause(0.05)
        assert "Under monitoring" in str(again.query_one(CheckpointsPane).border_title)
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(again.screen, FinalStateScreen))
        options = again.screen.query_one(OptionList)
        assert options.highlighted == list(FinalState).index(FinalState.MONITORING)
        await pilot.press("escape")  # cancel: nothing written
        await pilot.pause(0.1)
        assert len(again.action_log.rows()) == 1
        await set_state(pilot, again, vm_id, -0, "")  # Enter keeps the highlighted one
        await wait_for(pilot, lambda: len(again.action_log.rows()) == 2)
        newest = again.action_log.rows()[0]
        assert newest.final_state == "Under monitoring"
        assert newest.plan_data()["previous"] == "Under monitoring"
    again.action_log.close()
    with ActionLog.open(tmp_path / "actions.db") as log:
        assert log.final_states() == {f"vm:{vm_id}": "Under monitoring"}


async def test_final_state_dialog_hostile_name_and_replay(tmp_path: Path) -> None:
    app = VentanaApp(ReplayBackend(RECORDING, speed=0), log=ActionLog.open(tmp_path / "a.db"),
                     mode="replay", read_only_reason="replaying a recording")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.store.vm("vm-evil") is not None)
        app.query_one(VmTable).select_vm("vm-evil")
        await pilot.pause(0.05)
        await pilot.press("e")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, FinalStateScreen)  # a replay is not live
        assert app.action_log is None  # a replay never touches an action log (issue 12)
        with ActionLog.open(tmp_path / "a.db") as log:
            assert log.rows() == []
        # The dialog itself shows a hostile name literally.
        app.push_screen(FinalStateScreen(app.store.vm("vm-evil").name, None))
        await pilot.pause(0.1)
        title = str(app.screen.query_one("#final-title").render())
        assert "[bold red]evil" in title and "\x1b" not in title
        await pilot.press("escape")


def test_report_screen_snapshot(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    load_log(tmp_path / "actions.db")
    app = make_app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        await populated(pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ReportScreen)
                       and app.screen.report is not None)
        for box in app.screen.query(Input):
            box.cursor_blink = False
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
