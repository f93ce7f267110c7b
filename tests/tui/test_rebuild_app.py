"""The rebuild as an operator runs it in the console (Pilot, simulator).

``b`` on a VM opens the rebuild plan (pre-flight, PowerShell per step, typed
confirmation), then the checklist; ``p`` pauses after the running step, ``r``
resumes through a new confirmation; an unfinished rebuild is announced at
start and survives a restart of the console.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from apphelp import make_app, populated, read_whole_plan, wait_for
from textual.pilot import Pilot
from textual.widgets import Input

from ventana.backends.base import ReadOnlyError
from ventana.state.actionlog import ActionLog
from ventana.state.model import PowerState, ReplicationState
from ventana.state.rebuild import Rebuild, RebuildState, RebuildStore, StepState
from ventana.tui.app import VentanaApp
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.rebuild_screen import RebuildScreen
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)


def pick(app: VentanaApp, min_checkpoints: int = 1) -> str:
    sim = app.backend.rebuild  # type: ignore[attr-defined]
    for vm in sorted(app.store.vms(), key=lambda v: v.name):
        lun = app.store.lun(vm.lun_id)
        size = sum(d.size_bytes for d in app.store.disks_of(vm.id))
        if (vm.power is PowerState.RUNNING and vm.replication is ReplicationState.DISABLED
                and len(app.store.checkpoints_of(vm.id)) >= min_checkpoints
                and lun is not None and lun.free_bytes > 3 * size + 2 * 1024**3
                and not sim.guest(vm.id).bound_agents):
            return vm.id
    raise AssertionError("no suitable VM")


def unfinished(tmp_path: Path) -> list[Rebuild]:
    rs = RebuildStore.open(tmp_path / "actions.db")
    try:
        return rs.unfinished()
    finally:
        rs.close()


def latest(tmp_path: Path, vm_id: str) -> Rebuild | None:
    rs = RebuildStore.open(tmp_path / "actions.db")
    try:
        return rs.latest(vm_id)
    finally:
        rs.close()


async def confirm(pilot: Pilot, name: str) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
    await read_whole_plan(pilot)  # a confirmation needs the whole plan seen
    box = app.screen.query_one("#confirm-name", Input)
    box.value = name
    await pilot.press("enter")


async def test_rebuild_from_the_console(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = pick(app)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        plan = app.screen.plan  # type: ignore[attr-defined]
        assert plan.action == "rebuild" and "New-VM" in plan.command
        await confirm(pilot, name)
        await wait_for(pilot, lambda: isinstance(app.screen, RebuildScreen))
        await wait_for(pilot, lambda: latest(tmp_path, vm_id) is not None
                       and latest(tmp_path, vm_id).state is RebuildState.DONE, timeout=20)
        await pilot.pause(0.7)
        screen = app.screen
        assert isinstance(screen, RebuildScreen) and screen.wf is not None
        assert screen.wf.state is RebuildState.DONE
        wf = latest(tmp_path, vm_id)
        new = app.store.vm(wf.new_vm_id)
        assert new is not None and new.name == name and new.power is PowerState.RUNNING
        assert app.store.vm(vm_id).name == wf.old_vm_name
        await pilot.press("escape")
        # b on the new VM shows the finished checklist
        app.query_one(VmTable).select_vm(wf.new_vm_id)
        await pilot.pause(0.1)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, RebuildScreen))


async def test_the_operator_chooses_how_the_vm_is_stopped(tmp_path: Path) -> None:
    """Issue 14: the plan says what the guest shutdown (Stop-VM -Force) does and offers
    "Turn off … instead of a guest shutdown" (Stop-VM -TurnOff) as an explicit option;
    ticking it re-plans (a WILL_TURN_OFF warning, the step and its command say -TurnOff),
    and the run turns the VM off instead of shutting the guest down."""
    from textual.widgets import Checkbox

    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = pick(app)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        plan = screen.plan
        shutdown = next(f for f in plan.findings if f.code == "WILL_SHUT_DOWN")
        assert "five minutes to save data" in shutdown.message
        assert plan.facts["stop"] == "guest shutdown" and not plan.params.get("turn_off")
        assert "Stop-VM -ComputerName" in plan.command and "-TurnOff" not in plan.command
        await read_whole_plan(pilot)
        box = screen.query_one("#toggle-turn_off", Checkbox)
        assert not box.value
        box.value = True  # the explicit choice
        await wait_for(pilot, lambda: screen.plan.params.get("turn_off") is True)
        plan = screen.plan
        codes = {f.code for f in plan.findings}
        assert "WILL_TURN_OFF" in codes and "WILL_SHUT_DOWN" not in codes
        assert "disconnecting the power" in next(
            f.message for f in plan.findings if f.code == "WILL_TURN_OFF")
        assert any("Stop-VM -TurnOff" in step for step in plan.steps)
        assert "-TurnOff -Force" in plan.command
        await confirm(pilot, name)
        await wait_for(pilot, lambda: isinstance(app.screen, RebuildScreen))
        await wait_for(pilot, lambda: latest(tmp_path, vm_id) is not None
                       and latest(tmp_path, vm_id).step("merge").state is StepState.DONE,
                       timeout=20)
        stopped = [t for t in app.store.tasks() if t.id.endswith("-stop")]
        assert stopped and all("TurnOff" in t.message or t.message == "turned off"
                               for t in stopped), [t.message for t in stopped]


async def test_pause_then_resume_with_a_new_confirmation(tmp_path: Path) -> None:
    app = make_app(tmp_path, speed=2000.0)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = pick(app, min_checkpoints=2)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("b")
        await confirm(pilot, name)
        await wait_for(pilot, lambda: isinstance(app.screen, RebuildScreen))

        def merging() -> bool:
            wf = latest(tmp_path, vm_id)
            return wf is not None and wf.step("merge").state is StepState.RUNNING

        await wait_for(pilot, merging, timeout=20)
        await pilot.pause(0.6)  # the screen has read the running workflow
        await pilot.press("p")
        await wait_for(pilot, lambda: latest(tmp_path, vm_id).state is RebuildState.PAUSED,
                       timeout=60)
        wf = latest(tmp_path, vm_id)
        # Paused between steps: the merge (running when p was pressed) finished.
        assert wf.step("merge").state is StepState.DONE
        assert wf.next_step is not None
        left = wf.steps[wf.steps.index(wf.next_step):]
        assert all(x.state is StepState.PENDING for x in left)
        await pilot.pause(0.6)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        assert "RESUME" in {f.code for f in app.screen.plan.findings}  # type: ignore[attr-defined]
        await confirm(pilot, name)
        await wait_for(pilot, lambda: latest(tmp_path, vm_id).state is RebuildState.DONE,
                       timeout=60)


async def test_failed_rebuild_resumes_after_a_console_restart(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = pick(app)
        name = app.store.vm(vm_id).name
        app.backend.rebuild.fail_next("capture", name)  # type: ignore[attr-defined]
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("b")
        await confirm(pilot, name)
        await wait_for(pilot, lambda: latest(tmp_path, vm_id) is not None
                       and latest(tmp_path, vm_id).state is RebuildState.FAILED)
        await pilot.pause(0.6)
        text = str(app.screen.query_one("#rebuild-failure").render())
        assert "What to do by hand" in text and "Nothing was changed" in text

    # A new console on the same action log.
    app2 = make_app(tmp_path)
    async with app2.run_test(size=SIZE) as pilot:
        await populated(pilot)
        notes = [n.message for n in app2._notifications]
        assert any("1 rebuild(s) unfinished" in m and name in m for m in notes)
        app2.query_one(VmTable).select_vm(vm_id)
        await pilot.pause(0.1)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app2.screen, RebuildScreen))
        await pilot.pause(0.6)
        await pilot.press("r")
        await confirm(pilot, name)
        await wait_for(pilot, lambda: latest(tmp_path, vm_id).state is RebuildState.DONE,
                       timeout=20)
        rows = ActionLog.open(tmp_path / "actions.db").rows(newest_first=False)
        assert [r.action for r in rows].count("rebuild") == 2
        assert [r.action for r in rows].count("rebuild.capture") == 2


async def test_read_only_console_cannot_rebuild(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await pilot.press("b")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, (PlanScreen, RebuildScreen))
        # Called anyway, the runner refuses below the UI.
        vm_id = pick(app)
        plan = app.runner.plan("rebuild", vm_id, db=str(tmp_path / "actions.db"))
        with pytest.raises(ReadOnlyError):
            await app.runner.execute(plan, plan.target_name)
        assert unfinished(tmp_path) == []


async def test_abandon_a_failed_rebuild(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = pick(app)
        name = app.store.vm(vm_id).name
        app.backend.rebuild.fail_next("capture", name)  # type: ignore[attr-defined]
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("b")
        await confirm(pilot, name)
        await wait_for(pilot, lambda: latest(tmp_path, vm_id) is not None
                       and latest(tmp_path, vm_id).state is RebuildState.FAILED)
        await pilot.pause(0.6)
        await pilot.press("x")
        await pilot.pause(0.2)
        await pilot.click("#yes")
        await wait_for(pilot, lambda: latest(tmp_path, vm_id).state is RebuildState.ABANDONED)
        assert unfinished(tmp_path) == []
        row = ActionLog.open(tmp_path / "actions.db").rows()[0]
        assert row.action == "rebuild.abandon" and row.outcome == "cancelled"


async def test_the_checklist_answers_while_its_log_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild's state is read from the action log twice a second, in a worker: a team
    database that takes its time (or does not answer) never stalls the keys."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        vm_id = pick(app)
        rs = RebuildStore.open(tmp_path / "actions.db")
        rs.create(rebuild_id="rb-slow", vm_id=vm_id, vm_name="slow-01", target_system="sim",
                  node="", to_last_parent=False, old_vm_name="slow-01-old")
        rs.close()
        gate = threading.Event()
        answered = threading.Event()
        read = RebuildStore.get

        def slow_get(self: RebuildStore, rebuild_id: str) -> Rebuild | None:
            gate.wait(60)
            answered.set()
            return read(self, rebuild_id)

        monkeypatch.setattr(RebuildStore, "get", slow_get)
        try:
            await app.push_screen(RebuildScreen(tmp_path / "actions.db", vm_id,
                                                workflow="rb-slow"))
            await pilot.pause(0.3)
            screen = app.screen
            assert isinstance(screen, RebuildScreen) and screen.wf is None  # still reading
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, RebuildScreen))
            assert not answered.is_set()  # the key was handled while the read still waited
        finally:
            gate.set()
