"""vSphere snapshot actions in the console, end to end against vcsim (Pilot).

An operator's session: select a VM, pick a snapshot in the Checkpoints pane,
press the key, read the plan (vSphere wording, govc/PowerCLI command,
pre-flight), type the VM's name, and see the outcome in the task strip and
the action log. vcsim runs tasks synchronously (no intermediate progress,
nothing to cancel), so "progress" here is the action row going from its
first step to 100 %.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from apphelp import placed, wait_for
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
                allow_module_level=True)

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from ventana.backends.actions import ActionRefused, ActionRunner
from ventana.backends.base import ReadOnlyError
from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.state.actionlog import ActionLog
from ventana.state.events import Upsert
from ventana.state.model import VM, Kind, Task, TaskState
from ventana.state.plans_vsphere import CONSOLIDATE, REMOVE_ALL, REMOVE_SNAPSHOT
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(60)
SIZE = (180, 50)
INVENTORY = {"clusters": 1, "hosts": 2, "vms": 3, "datastores": 1}  # 6 VMs


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, **INVENTORY)
    yield handle
    handle.stop()


def connect(handle: VcsimHandle):
    ctx = ssl.create_default_context(cafile=str(handle.ca_path))
    return SmartConnect(host=handle.host, port=handle.port, user=handle.user,
                        pwd=handle.password, sslContext=ctx, httpConnectionTimeout=20)


def make_app(handle: VcsimHandle, tmp_path: Path, *, read_only: bool = False) -> VentanaApp:
    config = VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                           ca_file=handle.ca_path, wait_s=30, read_only=read_only)
    backend = VSphereBackend(config, password=handle.password)
    return VentanaApp(backend, log=ActionLog.open(tmp_path / "actions.db"),
                      read_only_reason="read-only" if read_only else "")


async def loaded(pilot, vms: int = 6) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.store.count(Kind.VM) >= vms and placed(app), 30)
    await pilot.pause(0.2)


def vm_named(app: VentanaApp, name: str) -> VM:
    [vm] = [v for v in app.store.vms() if v.name == name]
    return vm


async def on_server(handle: VcsimHandle, fn) -> object:
    """Run ``fn(si)`` with a second client (another operator, a backup product)."""
    def run() -> object:
        si = connect(handle)
        try:
            return fn(si)
        finally:
            Disconnect(si)

    return await asyncio.to_thread(run)


def snapshot(vm_id: str, name: str, description: str = ""):
    def fn(si) -> str:
        task = vim.VirtualMachine(vm_id, si._stub).CreateSnapshot_Task(name, description, False,
                                                                       False)
        WaitForTask(task)
        return task.info.result._moId

    return fn


def reconfig(vm_id: str, key: str, value: str):
    def fn(si) -> None:
        spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=key, value=value)])
        WaitForTask(vim.VirtualMachine(vm_id, si._stub).ReconfigVM_Task(spec))

    return fn


def recent_tasks(si) -> int:
    return len(si.content.taskManager.recentTask)


async def confirm(pilot, app: VentanaApp, name: str, action: str | None = None) -> None:
    """Type the name, confirm, and wait for the action's outcome row.

    With ``action``, wait for that action's row (the SSH watcher may log
    ``stun`` rows while it runs); else for the newest row.
    """
    await pilot.press(*name, "enter")

    def finished() -> bool:
        rows = [r for r in app.action_log.rows() if action is None or r.action == action]
        return bool(rows) and rows[0].outcome not in ("running", None)

    try:
        await wait_for(pilot, finished, 20)
    except AssertionError:
        raise AssertionError(f"no outcome: {app.action_log.rows()} {app.screen} "
                             f"{app.screen.query_one('#confirm-name').value!r} "
                             f"{app.focused!r}") from None


async def open_plan(pilot, app: VentanaApp, key: str) -> PlanScreen:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), 15)
    assert isinstance(app.screen, PlanScreen)
    await wait_for(pilot, lambda: getattr(app.focused, "id", None) == "confirm-name")
    return app.screen


async def test_remove_one_snapshot_from_the_checkpoints_pane(
    vcsim: VcsimHandle, tmp_path: Path
) -> None:
    app = make_app(vcsim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        vm = vm_named(app, "DC0_C0_H0_VM0")
        first = await on_server(vcsim, snapshot(vm.id, "before patch"))
        second = await on_server(vcsim, snapshot(vm.id, "after patch"))
        await wait_for(pilot, lambda: len(app.store.checkpoints_of(vm.id)) == 2)
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.2)
        pane = app.query_one(CheckpointsPane)
        pane.focus()
        [node] = [n for n in pane.root.children if n.data == first]
        pane.move_cursor(node)
        await pilot.pause(0.1)

        screen = await open_plan(pilot, app, "x")
        plan = screen.plan
        assert plan.action == REMOVE_SNAPSHOT
        assert plan.params == {"snapshot": first, "children": False}
        # By moref (names need not be unique and may hold "/"; govc resolves either).
        assert f"govc snapshot.remove -vm 'DC0_C0_H0_VM0' '{first}'" in plan.command
        assert "Remove-Snapshot -Confirm:$false" in plan.command
        assert not plan.blocking, plan.findings
        shown = app.export_screenshot()
        assert "Datastore" in shown and "LocalDS_0" in shown and "Estimated&#160;stun" in shown

        await confirm(pilot, app, vm.name)
        (row,) = app.action_log.rows()
        assert row.outcome == "ok", row.error
        assert row.size_before is not None and row.size_after is not None
        assert "disk and snapshot files" in (row.detail or "")
        await wait_for(pilot, lambda: [c.id for c in app.store.checkpoints_of(vm.id)]
                       == [second]
                       and all(t.state.finished for t in app.store.tasks_for(f"vm:{vm.id}")))
        # One row in the task strip for the action, not one more for the vSphere task.
        tasks = app.store.tasks_for(f"vm:{vm.id}")
        assert [t.kind for t in tasks if "emove" in t.kind] == [REMOVE_SNAPSHOT], tasks
        [ours] = [t for t in tasks if t.kind == REMOVE_SNAPSHOT]
        assert ours.state is TaskState.OK and ours.pct == 100.0
        assert REMOVE_SNAPSHOT in app.export_screenshot()


async def test_remove_snapshot_with_children_key(vcsim: VcsimHandle, tmp_path: Path) -> None:
    app = make_app(vcsim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        vm = vm_named(app, "DC0_C0_H0_VM1")
        root = await on_server(vcsim, snapshot(vm.id, "root"))
        await on_server(vcsim, snapshot(vm.id, "child"))
        await wait_for(pilot, lambda: len(app.store.checkpoints_of(vm.id)) == 2)
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.2)
        pane = app.query_one(CheckpointsPane)
        pane.focus()
        [node] = [n for n in pane.root.children if n.data == root]
        pane.move_cursor(node)
        await pilot.pause(0.1)
        screen = await open_plan(pilot, app, "X")
        assert screen.plan.params == {"snapshot": root, "children": True}
        assert "govc snapshot.remove -r" in screen.plan.command
        assert "-RemoveChildren" in screen.plan.command
        await confirm(pilot, app, vm.name)
        assert app.action_log.rows()[0].outcome == "ok"
        await wait_for(pilot, lambda: app.store.checkpoints_of(vm.id) == [])


async def test_consolidate_uses_the_servers_estimate(vcsim: VcsimHandle, tmp_path: Path) -> None:
    app = make_app(vcsim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        vm = vm_named(app, "DC0_C0_H1_VM0")
        await on_server(vcsim, reconfig(vm.id, "vcsim.consolidationNeeded", "true"))
        await wait_for(pilot, lambda: app.store.vm(vm.id).consolidation_needed)
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.2)
        screen = await open_plan(pilot, app, "c")
        plan = screen.plan
        assert plan.action == CONSOLIDATE and not plan.blocking, plan.findings
        assert "EstimateStorageForConsolidateSnapshots" in plan.facts["space_basis"]
        assert "ConsolidateVMDisks_Task()" in plan.command
        # The estimate's own server task is not a row of its own.
        assert not [t for t in app.store.tasks() if "stimate" in t.kind]
        await confirm(pilot, app, vm.name)
        row = app.action_log.rows()[0]
        assert row.outcome == "ok", row.error
        await wait_for(pilot, lambda: not app.store.vm(vm.id).consolidation_needed)


async def test_a_task_fault_is_a_failed_row_with_its_message(
    vcsim: VcsimHandle, tmp_path: Path
) -> None:
    app = make_app(vcsim, tmp_path)
    message = "msg.snapshot.error-DISKLOCKED: a backup proxy holds the disk"
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        vm = vm_named(app, "DC0_C0_H1_VM1")
        snap = await on_server(vcsim, snapshot(vm.id, "nightly"))
        await on_server(vcsim, reconfig(vm.id, "vcsim.fail.RemoveAllSnapshots_Task", message))
        try:
            await wait_for(pilot, lambda: app.store.get(Kind.CHECKPOINT, snap) is not None)
            app.query_one(VmTable).select_vm(vm.id)
            await pilot.pause(0.2)
            screen = await open_plan(pilot, app, "m")  # on vSphere: remove all snapshots
            assert screen.plan.action == REMOVE_ALL
            assert "govc snapshot.remove -vm 'DC0_C0_H1_VM1' '*'" in screen.plan.command
            await confirm(pilot, app, vm.name)
        finally:
            await on_server(vcsim, reconfig(vm.id, "vcsim.fail.RemoveAllSnapshots_Task", ""))
        row = app.action_log.rows()[0]
        assert row.outcome == "failed" and message in row.error
        def ours() -> Task:
            [task] = [t for t in app.store.tasks_for(f"vm:{vm.id}") if t.kind == REMOVE_ALL]
            return task

        await wait_for(pilot, lambda: ours().state.finished)
        assert ours().state is TaskState.FAILED and message in ours().error
        assert app.store.get(Kind.CHECKPOINT, snap) is not None  # nothing was removed


async def test_a_busy_vm_is_blocked(vcsim: VcsimHandle, tmp_path: Path) -> None:
    app = make_app(vcsim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        vm = vm_named(app, "DC0_C0_H0_VM2")
        await on_server(vcsim, snapshot(vm.id, "pre-upgrade"))
        await wait_for(pilot, lambda: bool(app.store.checkpoints_of(vm.id)))
        # vcsim's tasks end at once: another client's long task arrives on the
        # stream as it would from vCenter's recentTask.
        app.backend.emit(Upsert(Task("task-999", "VirtualMachine.clone", f"vm:{vm.id}", vm.name,
                                     35.0, TaskState.RUNNING, message="Clone virtual machine")))
        await wait_for(pilot, lambda: bool(app.store.running_tasks_for(f"vm:{vm.id}")))
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.2)
        screen = await open_plan(pilot, app, "m")
        assert "VM_BUSY" in {f.code for f in screen.plan.blocking}
        await pilot.press(*vm.name, "enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)  # refused on screen: needs the override
        plan = screen.plan
        await pilot.press("escape")
        await pilot.pause(0.1)
        with pytest.raises(ActionRefused, match="VM_BUSY"):
            await app.runner.execute(plan, vm.name)  # and below the UI
        assert [r.outcome for r in app.action_log.rows()] == ["refused", "cancelled"]
        assert app.store.checkpoints_of(vm.id)


async def test_read_only_target_cannot_start_a_task(vcsim: VcsimHandle, tmp_path: Path) -> None:
    si = await asyncio.to_thread(connect, vcsim)
    try:
        app = make_app(vcsim, tmp_path, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            vm = vm_named(app, "DC0_C0_H0_VM0")
            snap = await on_server(vcsim, snapshot(vm.id, "ro-check"))
            await wait_for(pilot, lambda: app.store.get(Kind.CHECKPOINT, snap) is not None)
            before = await asyncio.to_thread(recent_tasks, si)
            app.query_one(VmTable).select_vm(vm.id)
            await pilot.pause(0.2)
            for key in ("m", "c", "n", "x", "X", "k"):
                await pilot.press(key)
                await pilot.pause(0.1)
                assert not isinstance(app.screen, PlanScreen)
            for action in ("remove_snapshot", "consolidate", "create_snapshot", "merge"):
                await app.run_action(action)
                await pilot.pause(0.1)
                if isinstance(app.screen, PlanScreen):  # if shown at all, it cannot run
                    assert app.screen.query_one("#run").disabled
                    await pilot.press("escape")
                    await pilot.pause(0.1)
            # The runner, bypassing the UI:
            runner = app.runner
            for action, params in ((REMOVE_SNAPSHOT, {"snapshot": snap}), (REMOVE_ALL, {}),
                                   (CONSOLIDATE, {})):
                plan = runner.plan(action, vm.id, **params)
                with pytest.raises(ReadOnlyError):
                    await runner.execute(plan, plan.target_name, override=True)
            assert {r.outcome for r in app.action_log.rows()} <= {"refused", "cancelled"}
            assert [r for r in app.action_log.rows() if r.outcome == "refused"]
            with pytest.raises(ReadOnlyError):
                app.backend.executor()
            assert await asyncio.to_thread(recent_tasks, si) == before
    finally:
        await asyncio.to_thread(Disconnect, si)


async def test_an_executor_handed_out_before_read_only_refuses(
    vcsim: VcsimHandle, tmp_path: Path
) -> None:
    app = make_app(vcsim, tmp_path)
    si = await asyncio.to_thread(connect, vcsim)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            vm = vm_named(app, "DC0_C0_H1_VM2")
            executor = app.backend.executor()
            app.backend.set_read_only(True)
            before = await asyncio.to_thread(recent_tasks, si)
            for call in (
                executor.remove_all_snapshots(vm.id, "t1"),
                executor.remove_snapshot_of(vm.id, "snapshot-1", "t2"),
                executor.consolidate(vm.id, "t3"),
                executor.create_snapshot(vm.id, "t4", "x"),
                executor.estimate_consolidation(vm.id),
            ):
                with pytest.raises(ReadOnlyError):
                    await call
            assert await asyncio.to_thread(recent_tasks, si) == before
            runner = ActionRunner(app.store, app.backend, app.action_log)
            plan = runner.plan(CONSOLIDATE, vm.id)
            with pytest.raises(ReadOnlyError):
                await runner.execute(plan, plan.target_name, override=True)
    finally:
        await asyncio.to_thread(Disconnect, si)


async def test_cancel_key_asks_the_executor_and_says_when_it_cannot(
    vcsim: VcsimHandle, tmp_path: Path
) -> None:
    app = make_app(vcsim, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        vm = vm_named(app, "DC0_C0_H1_VM2")
        app.query_one(VmTable).select_vm(vm.id)
        await pilot.pause(0.1)
        await pilot.press("k")
        await pilot.pause(0.1)
        assert "No action of this console" in str(list(app._notifications)[-1].message)
        # A running row of ours whose vSphere task is not (or no longer) cancellable.
        app.backend.emit(Upsert(Task("consolidate-0123456789ab", "consolidate", f"vm:{vm.id}",
                                     vm.name, 10.0, TaskState.RUNNING)))
        await wait_for(pilot, lambda: bool(app.store.running_tasks_for(f"vm:{vm.id}")))
        await pilot.press("k")
        await wait_for(pilot, lambda: "cannot be cancelled" in str(
            list(app._notifications)[-1].message))
