"""The console as an operator uses it, on the simulated cluster (Pilot)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import make_app, populated, vm_where, wait_for

from ventana.backends.actions import ActionRefused
from ventana.backends.base import ReadOnlyError
from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.model import TaskState
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.help_screen import HelpScreen
from ventana.tui.log_screen import LogScreen
from ventana.tui.luns_pane import LunsPane
from ventana.tui.nodes_pane import NodesPane
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)


async def test_panes_fill_and_selection_follows_the_cursor(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        assert len(app.query_one(NodesPane).keys) == 4
        assert len(app.query_one(LunsPane).keys) == 18
        table = app.query_one(VmTable)
        assert table.row_count == 74
        first = table.cursor_vm_id
        await pilot.press("down")
        await pilot.pause(0.1)
        second = table.cursor_vm_id
        assert second != first
        assert app.query_one(CheckpointsPane).vm_id == second
        await pilot.press("tab")
        assert app.focused is not table


async def test_a_cursor_move_handled_while_closing_is_no_crash(tmp_path: Path) -> None:
    """A key held down as the operator quits: the table's last cursor moves may be
    handled after the checkpoints pane is gone (seen in the bench: NoMatches)."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        table = app.query_one(VmTable)
        await app.query_one(CheckpointsPane).remove()
        table.post_message(VmTable.CursorMoved(table, table.cursor_vm_id))
        await pilot.pause(0.1)
        assert app.is_running and app._exception is None


async def test_filter_narrows_the_vm_list_and_escape_clears(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        table = app.query_one(VmTable)
        await pilot.press("slash", *"db-0")
        await pilot.pause(0.1)
        names = [app.store.vm(i).name for i in table.visible_ids]
        assert names and all("db-0" in n for n in names)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert table.row_count == 74 and app.focused is table


async def test_merge_cancel_sends_nothing_and_logs_cancelled(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        app.query_one(VmTable).select_vm(vm_id)
        before = len(app.store.checkpoints_of(vm_id))
        await pilot.press("m")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, PlanScreen)
        assert len(app.store.checkpoints_of(vm_id)) == before
        assert not list(app.store.tasks_for(f"vm:{vm_id}"))
        (row,) = app.action_log.rows()
        assert row.outcome == "cancelled" and row.target_name == app.store.vm(vm_id).name


async def test_wrong_name_is_refused_then_right_name_merges(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await pilot.pause(0.1)
        await pilot.press(*"wrong-vm", "enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)  # still open, nothing sent
        assert "does not match" in str(app.screen.query_one("#plan-error").render())
        await wait_for(pilot, lambda: bool(app.action_log.rows()))
        (refused,) = app.action_log.rows()  # evidence: refused (name mismatch), not cancelled
        assert refused.outcome == "refused" and "name mismatch" in (refused.error or "")
        assert "'wrong-vm'" in (refused.error or "")
        app.screen.query_one("#confirm-name").value = ""
        await pilot.press(*name, "enter")
        await wait_for(pilot, lambda: len(app.action_log.rows()) == 2
                       and app.action_log.rows()[0].outcome != "running", timeout=20)
        row = app.action_log.rows()[0]
        assert row.outcome == "ok", row.error
        assert row.confirmed and row.size_before and row.size_after
        assert row.final_state == "Operational"
        assert row.duration_s is not None
        await wait_for(pilot, lambda: app.store.checkpoints_of(vm_id) == [])
        tasks = app.store.tasks_for(f"vm:{vm_id}")
        assert tasks and tasks[0].state is TaskState.OK and tasks[0].pct == 100.0


async def test_blocking_finding_needs_override(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: "NO_SPACE" in blocking)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await pilot.pause(0.1)
        screen = app.screen
        assert isinstance(screen, PlanScreen) and screen.plan.blocking
        await pilot.press(*name, "enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)
        assert "override" in str(screen.query_one("#plan-error").render()).lower()
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert app.action_log.rows()[0].outcome == "cancelled"


async def test_read_only_hides_merge_and_backend_refuses(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        assert app.query_one("#read-only-banner")
        for action, key in (("merge", "m"), ("upgrade", "u")):
            assert app.check_action(action, ()) is None
            await pilot.press(key)
            await pilot.pause(0.1)
            assert not isinstance(app.screen, PlanScreen)
            assert not await app.run_action(action)
        # Bypass the UI entirely: the runner and the backend refuse, and log it.
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        plan = app.runner.plan("merge", vm_id)
        with pytest.raises(ReadOnlyError):
            await app.runner.execute(plan, plan.target_name)
        with pytest.raises(ReadOnlyError):
            await app.runner.execute(app.runner.plan("upgrade", vm_id), plan.target_name,
                                     override=True)
        with pytest.raises(ReadOnlyError):
            app.backend.executor()
        row, _ = app.action_log.rows()
        assert row.outcome == "refused" and row.mode == "read-only"
        assert app.store.checkpoints_of(vm_id)  # nothing changed


async def test_stale_link_blocks_actions_and_dims_panes(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        app.store.apply(ConnectionChanged("sim", LinkState.STALE, "HV-NODE-02 not answering"))
        await pilot.pause(0.1)
        assert app.query_one(VmTable).stale
        header = app.query_one("#header")
        assert "HV-NODE-02" in str(header.render())
        vm_id = vm_where(app, lambda blocking, n: blocking == {"STALE_DATA"})
        plan = app.runner.plan("merge", vm_id)
        with pytest.raises(ActionRefused):
            await app.runner.execute(plan, plan.target_name)
        assert app.action_log.rows()[0].outcome == "refused"


async def test_hostile_vm_name_is_shown_literally(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        table = app.query_one(VmTable)
        vm = app.store.vm(table.cursor_vm_id)
        import dataclasses

        evil = "[bold red]x[/] [@click=app.quit]y[/] a[/]b [/ \x1b]52;c;aGk=\x07\x1b[2J"
        app.store.apply(Upsert(dataclasses.replace(vm, name=evil)))
        await pilot.pause(0.3)
        shown = table.cell_text(vm.id, "name")
        assert shown.startswith("[bold red]x[/] [@click=app.quit]y[/]")
        assert "\x1b" not in shown and "\\x1b" in shown
        for y in range(table.size.height):
            assert "\x1b" not in table.render_line(y).text
        app.query_one(CheckpointsPane).show_vm(app.store, vm.id, force=True)
        await pilot.press("m")
        await pilot.pause(0.2)
        assert isinstance(app.screen, PlanScreen)
        await pilot.press("escape")
        assert app.is_running


async def test_help_and_log_screens_open(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await pilot.press("l")
        await pilot.pause(0.1)
        assert isinstance(app.screen, LogScreen)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, LogScreen)



_RAW = ("\x1b", "\x9b", "\x07", "\t", "\u202e", "\u2028", "\u200b")


async def test_hostile_cluster_reaches_no_screen_as_control_bytes(tmp_path: Path) -> None:
    """The simulator's hostile names (ESC, OSC 52, bidi, markup) in every pane."""
    app = make_app(tmp_path, hostile_names=True)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        table = app.query_one(VmTable)
        table.set_filter("[")
        await pilot.pause(0.1)
        assert table.visible_ids, "the simulator should have hostile names"
        evil = table.visible_ids[0]
        table.select_vm(evil)
        await pilot.pause(0.1)
        screens = [app.export_screenshot()]
        await pilot.press("m")
        await pilot.pause(0.2)
        assert isinstance(app.screen, PlanScreen)
        screens.append(app.export_screenshot())
        # Clicking on a name that looks like an action link runs nothing.
        await pilot.click("#plan-title", offset=(30, 0))
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert app.is_running and app.action_log.rows()[0].outcome == "cancelled"
        for y in range(table.size.height):
            line = table.render_line(y).text
            assert not any(ch in line for ch in _RAW), repr(line)
        for svg in screens:
            assert not any(ch in svg for ch in _RAW)


async def test_upgrade_an_off_vm_and_refuse_a_running_one(tmp_path: Path) -> None:
    from ventana.state.derived import version_key
    from ventana.state.model import PowerState
    from ventana.state.plans import cluster_max_version

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        store = app.store
        top = cluster_max_version(store, next(iter(store.vms())).cluster_id)
        older = [v for v in sorted(store.vms(), key=lambda v: v.name)
                 if version_key(v.config_version) < version_key(top)]
        running = next(v for v in older if v.power is PowerState.RUNNING)
        ready = next(v for v in older if not app.runner.plan("upgrade", v.id).blocking)
        table = app.query_one(VmTable)
        table.select_vm(running.id)
        await pilot.press("u")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)
        assert "VM_NOT_OFF" in {f.code for f in app.screen.plan.blocking}
        await pilot.press("escape")
        table.select_vm(ready.id)
        await pilot.press("u")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen) and app.screen.plan.irreversible
        await pilot.press(*ready.name, "enter")
        await wait_for(pilot, lambda: app.action_log.rows()[0].outcome not in
                       ("running", "cancelled"), timeout=20)
        row = app.action_log.rows()[0]
        assert row.action == "upgrade" and row.outcome == "ok", row.error
        await wait_for(pilot, lambda: store.vm(ready.id).config_version == top)
