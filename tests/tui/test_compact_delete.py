"""Compact a VHDX and delete an obsolete VM: plans, refusals, the simulator, the screen."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from apphelp import make_app, populated, wait_for
from rich.console import Console
from test_runner import FaultyBackend
from test_sim import by_name
from test_sim_actions import Session, quiet
from textual.widgets import Static

from ventana.backends.actions import ActionRefused, ActionRunner
from ventana.backends.sim.cleanup import reclaimable_fraction
from ventana.state.actionlog import ActionLog
from ventana.state.model import DiskFormat, PowerState, ReplicationState, TaskState
from ventana.tui.plan_screen import SECOND_WORD, PlanScreen
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)


def runner_for(s: Session, tmp_path: Path) -> tuple[ActionRunner, ActionLog]:
    log = ActionLog.open(tmp_path / "actions.db")
    return ActionRunner(s.store, s.backend, log, clock=s.backend.now), log


async def test_compact_frees_what_the_guest_no_longer_uses(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, log = runner_for(s, tmp_path)
        vm = by_name(s.store, "old-fs-01")
        lun_before = s.store.lun(vm.lun_id).free_bytes  # type: ignore[union-attr]
        plan = runner.plan("compact", vm.id)
        assert not plan.blocking and not plan.destructive
        disks = plan.facts["disks"]
        assert disks and all(f"Optimize-VHD -Path '{d['path']}' -Mode Full" in plan.command
                             for d in disks)
        assert plan.free_after_worst == lun_before < plan.free_after_best  # type: ignore[operator]
        by_path = {d.path: d for d in s.store.disks_of(vm.id)}
        expected = sum(int(by_path[d["path"]].size_bytes
                           * reclaimable_fraction(by_path[d["path"]].id)) for d in disks)
        result = await runner.execute(plan, "old-fs-01")
        await s.settle()
        assert result.state is TaskState.OK and result.final_state is not None
        assert result.final_state.value == "Optimized"
        freed = s.store.lun(vm.lun_id).free_bytes - lun_before  # type: ignore[union-attr]
        assert freed == result.size_before - result.size_after == expected > 0  # type: ignore[operator]
        assert 0 <= freed <= plan.free_after_best - lun_before  # type: ignore[operator]
        assert s.backend.world.audit() == []
        row = log.rows()[0]
        assert row.action == "compact" and row.outcome == "ok"
        assert row.final_state == "Optimized"


async def test_compact_is_refused_while_running_or_with_checkpoints(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, log = runner_for(s, tmp_path)
        running = runner.plan("compact", by_name(s.store, "git-01").id)
        assert {"VM_NOT_OFF", "HAS_CHECKPOINTS"} <= {f.code for f in running.blocking}
        chained = runner.plan("compact", by_name(s.store, "log-01").id)
        assert {f.code for f in chained.blocking} == {"HAS_CHECKPOINTS"}
        with pytest.raises(ActionRefused, match="HAS_CHECKPOINTS"):
            await runner.execute(chained, "log-01")
        assert log.rows()[0].outcome == "refused"


async def test_delete_needs_two_confirmations_and_frees_exactly_the_listed_files(
    tmp_path: Path,
) -> None:
    async with Session(quiet()) as s:
        runner, log = runner_for(s, tmp_path)
        vm = by_name(s.store, "tpl-w2016")
        lun_before = s.store.lun(vm.lun_id).free_bytes  # type: ignore[union-attr]
        plan = runner.plan("delete", vm.id)
        files = plan.facts["files"]
        total = sum(d.size_bytes for d in s.store.disks_of(vm.id))
        assert plan.double_confirm and plan.irreversible and not plan.blocking
        assert {f["path"] for f in files} == {d.path for d in s.store.disks_of(vm.id)}
        assert plan.size_before == total == plan.facts["freed_bytes"]
        assert plan.free_after_worst == lun_before + total
        assert "Remove-VM" in plan.command and "Remove-Item -LiteralPath" in plan.command
        assert all(f["path"] in plan.command for f in files)

        with pytest.raises(ActionRefused, match="second explicit confirmation"):
            await runner.execute(plan, "tpl-w2016")  # the name alone is not enough
        assert s.store.vm(vm.id) is not None
        assert log.rows()[0].outcome == "refused"

        result = await runner.execute(plan, "tpl-w2016", confirmed_twice=True)
        await s.settle()
        assert result.state is TaskState.OK and result.size_before == total
        assert s.store.vm(vm.id) is None and s.store.disks_of(vm.id) == []
        assert s.store.lun(vm.lun_id).free_bytes == lun_before + total  # type: ignore[union-attr]
        assert s.backend.world.audit() == []
        assert log.rows()[0].outcome == "ok"


async def test_delete_is_refused_while_running_or_replicating(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, _log = runner_for(s, tmp_path)
        running = runner.plan("delete", by_name(s.store, "git-01").id)
        assert {f.code for f in running.blocking} == {"VM_NOT_OFF"}
        replica = by_name(s.store, "app-02")
        assert replica.replication is not ReplicationState.DISABLED
        s.backend.world.set_power(replica.id, PowerState.OFF)
        await s.settle()
        plan = runner.plan("delete", replica.id)
        assert {f.code for f in plan.blocking} == {"REPLICATING"}
        with pytest.raises(ActionRefused, match="REPLICATING"):
            await runner.execute(plan, "app-02", confirmed_twice=True)
        assert s.store.vm(replica.id) is not None


async def test_a_backend_without_them_refuses_before_sending(tmp_path: Path) -> None:
    backend = FaultyBackend("ok")
    ex = backend.executor()
    for result in (await ex.compact_vhdx("v", "t", ("a.vhdx",)),
                   await ex.delete_vm("v", "t", ("a.vhdx",))):
        assert result.state is TaskState.FAILED
        assert "not available on faulty://lab; nothing was sent" in result.error
    assert backend.handle.calls == 0


async def test_delete_on_the_plan_screen_needs_the_name_and_the_word(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm = by_name(app.store, "tpl-w2019")
        files = [d.path for d in app.store.disks_of(vm.id)]
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.05)
        app.action_delete_vm()
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, PlanScreen) and screen.plan.double_confirm
        console = Console(width=300, record=True, file=io.StringIO())
        console.print(screen.query_one("#plan-summary", Static).content)
        shown = console.export_text()
        assert all(path in shown for path in files) and "Files deleted" in shown
        await pilot.press(*"tpl-w2019", "enter")
        await pilot.pause(0.1)
        assert app.screen is screen  # the name alone does not run it
        assert SECOND_WORD in str(screen.query_one("#plan-error").render())
        await pilot.press(*SECOND_WORD, "enter")
        await wait_for(pilot, lambda: app.store.vm(vm.id) is None, 20)
        assert not any(d.format is DiskFormat.VHDX for d in app.store.disks_of(vm.id))
    row = ActionLog.open(tmp_path / "actions.db").rows()[0]
    assert row.action == "delete" and row.outcome == "ok"
    assert row.plan_data()["second_confirmation"] is True
    assert {f["path"] for f in row.plan_data()["facts"]["files"]} == set(files)


async def test_palette_actions_are_hidden_read_only(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        assert app.check_action("delete_vm", ()) is None
        assert app.check_action("compact", ()) is None
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert "Delete obsolete VM" not in titles and "Queue merge" in titles
