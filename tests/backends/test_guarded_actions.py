"""Every registered action, on every kind of read-only target, refuses below the UI.

Table-driven over ``backends/actionspecs.names()``: the runner refuses
with a "refused" row and no "started" intent row, the executor's own call
refuses (ReadOnlyError) when reached directly, the queue and the rebuild
refuse too — on a read-only simulator, Hyper-V and vSphere session, and on a
composite where one target is read-only next to a writable one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_sim_actions import Session, quiet

from ventana.backends import actionspecs
from ventana.backends.actions import ActionRunner
from ventana.backends.base import Backend, ReadOnlyError
from ventana.backends.credentials import Credential
from ventana.backends.hyperv import HyperVBackend, HyperVConfig
from ventana.backends.multi import MultiBackend
from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.backends.window_runner import WindowRunner
from ventana.state.actionlog import ActionLog
from ventana.state.plans import Plan
from ventana.state.rebuild import RebuildStore
from ventana.state.window import WindowStore

ACTIONS = sorted(actionspecs.names())


async def both_targets_in(s: Session) -> None:
    """Both simulators' VMs are in the store (each builds its world in a worker
    thread, so one settle of the pump is not enough on a busy machine)."""
    for _ in range(500):
        await s.settle()
        ids = [v.id for v in s.store.vms()]
        if any(i.startswith("lab/") for i in ids) and any(i.startswith("prod/") for i in ids):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the composite's inventory never arrived")


def hyperv() -> Backend:
    return HyperVBackend(HyperVConfig("HVCLUSTER01", "ops", read_only=True),
                         Credential("ops", "not-used", "given"))


def vsphere() -> Backend:
    return VSphereBackend(VSphereConfig("vc01", user="ops"), password="not-used")


def sim_ro() -> Backend:
    return quiet(read_only=True)


def multi() -> Backend:
    return MultiBackend([("lab", quiet()), ("prod", quiet(read_only=True))])


#: (name, backend factory, the VM id the action aims at)
TARGETS: list[tuple[str, Callable[[], Backend], str]] = [
    ("sim", sim_ro, "VM-001"),
    ("hyperv", hyperv, "vm-1"),
    ("vsphere", vsphere, "vm-42"),
    ("multi", multi, "prod/VM-001"),
]


def a_plan(action: str, vm_id: str, db: Path) -> Plan:
    """What a planner hands the runner (the runner refuses before re-planning)."""
    return Plan(action, f"vm:{vm_id}", "app-01", ("step",), (), "cmd",
                facts={"disks": [{"path": "C:\\CS\\a.vhdx"}], "files": [{"path": "C:\\CS\\a"}],
                       "target_version": "9.0", "to_last_parent": False},
                params={"db": str(db), "snapshot": "snapshot-1", "name": "pre-patch"})


def test_the_registry_holds_every_action_the_console_offers() -> None:
    assert set(ACTIONS) == {"merge", "upgrade", "compact", "delete", "rebuild",
                            "remove-snapshot", "remove-all-snapshots", "consolidate",
                            "create-snapshot"}
    for a in ACTIONS:  # each with its planner, executor entry, platforms and command
        spec = actionspecs.get(a)
        assert spec.name == a and spec.planner and spec.execute and spec.platforms
        assert spec.commands


def test_a_plain_runner_sees_the_same_actions_as_the_console(tmp_path: Path) -> None:
    from ventana.state.store import Store

    runner = ActionRunner(Store(), sim_ro(), None)
    for action in ACTIONS:  # an unknown action raises ValueError; these plan (or KeyError)
        try:
            runner.plan(action, "nowhere")
        except ValueError:
            pytest.fail(f"{action} is not registered for a plain ActionRunner")
        except Exception:
            pass


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(("kind", "make", "vm_id"), TARGETS, ids=[t[0] for t in TARGETS])
async def test_the_runner_refuses_on_read_only(tmp_path: Path, kind: str,
                                               make: Callable[[], Backend], vm_id: str,
                                               action: str) -> None:
    backend = make()
    db = tmp_path / "actions.db"
    log = ActionLog.open(db)
    from ventana.state.store import Store

    runner = ActionRunner(Store(), backend, log)
    with pytest.raises(ReadOnlyError, match="read-only"):
        await runner.execute(a_plan(action, vm_id, db), "app-01", override=True,
                             confirmed_twice=True)
    rows = log.rows()
    assert [(r.action, r.outcome, r.confirmed) for r in rows] == [(action, "refused", False)]
    assert RebuildStore.open(db).unfinished() == []
    if isinstance(backend, MultiBackend):  # the writable sibling got nothing either
        assert not backend._own_tasks
    await backend.close()


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize(("kind", "make", "vm_id"), TARGETS, ids=[t[0] for t in TARGETS])
async def test_the_executor_itself_refuses_on_read_only(tmp_path: Path, kind: str,
                                                        make: Callable[[], Backend],
                                                        vm_id: str, action: str) -> None:
    backend = make()
    # A handle obtained while writable, or built by hand, still refuses.
    if isinstance(backend, MultiBackend):
        executor = backend.executor()
    else:
        with pytest.raises(ReadOnlyError):
            backend.executor()
        executor = backend._make_executor()
    db = tmp_path / "actions.db"
    with pytest.raises(ReadOnlyError):
        await actionspecs.get(action).execute(executor, vm_id, f"{action}-t1",
                                              a_plan(action, vm_id, db))
    assert not db.exists()  # not even a rebuild workflow or a step row
    if isinstance(backend, MultiBackend):
        assert not backend._own_tasks
    await backend.close()


async def test_a_queue_on_a_read_only_target_of_a_composite_runs_nothing(tmp_path: Path) -> None:
    backend = MultiBackend([("lab", quiet()), ("prod", quiet(read_only=True))])
    async with Session(backend) as s:  # type: ignore[arg-type]
        await both_targets_in(s)
        log = ActionLog.open(tmp_path / "actions.db")
        runner = ActionRunner(s.store, backend, log, clock=backend.now)
        window = WindowStore.open(log.path).load("sat", default_name="sat")
        prod = [vm for vm in s.store.vms() if vm.id.startswith("prod/")
                and s.store.checkpoints_of(vm.id)]
        assert prod
        item = window.add(prod[0].id, prod[0].name, "merge")
        wr = WindowRunner(runner, window)
        wr.confirm("sat")  # the composite is writable: the queue itself may run
        await wr.start()
        got = window.item(item.id)
        assert got is not None and got.status == "skipped" and "read-only" in got.reason
        assert all(r.outcome != "started" and not r.confirmed for r in log.rows())
        assert not backend._own_tasks


async def test_rebuild_resume_on_a_read_only_target_of_a_composite(tmp_path: Path) -> None:
    backend = MultiBackend([("lab", quiet()), ("prod", quiet(read_only=True))])
    db = tmp_path / "actions.db"
    async with Session(backend) as s:  # type: ignore[arg-type]
        await both_targets_in(s)
        log = ActionLog.open(db)
        runner = ActionRunner(s.store, backend, log, clock=backend.now)
        vm = next(v for v in s.store.vms() if v.id.startswith("prod/"))
        rs = RebuildStore.open(db)
        wf = rs.create(rebuild_id="rb-1", vm_id=vm.id, vm_name=vm.name, target_system="prod",
                       node="", to_last_parent=False, old_vm_name=f"{vm.name}-old")
        params: dict[str, Any] = {"db": str(db), "workflow": wf.id}
        try:
            plan = runner.plan("rebuild", vm.id, **params)
        except KeyError:
            pytest.skip("no rebuild candidate")
        with pytest.raises(ReadOnlyError):
            await runner.execute(plan, plan.target_name, override=True)
        assert [r.outcome for r in log.rows()] == ["refused"]
        assert rs.get(wf.id).steps[0].state.value == "pending"  # type: ignore[union-attr]


async def test_compact_and_rebuild_run_on_the_writable_target_of_a_composite(
        tmp_path: Path) -> None:
    """The base executor's optional steps are routed to the owning child, not
    answered "not available" by the composite."""
    from test_rebuild import candidate

    from ventana.backends.base import REBUILD_UNAVAILABLE
    from ventana.state.model import TaskState
    from ventana.state.rebuild import RebuildState

    backend = MultiBackend([("lab", quiet()), ("prod", quiet(read_only=True))])
    db = tmp_path / "actions.db"
    async with Session(backend) as s:  # type: ignore[arg-type]
        await both_targets_in(s)
        log = ActionLog.open(db)
        runner = ActionRunner(s.store, backend, log, clock=backend.now)
        old_fs = next(v for v in s.store.vms() if v.id.startswith("lab/")
                      and v.name == "old-fs-01")
        plan = runner.plan("compact", old_fs.id)
        result = await runner.execute(plan, plan.target_name)
        assert result.state is TaskState.OK, result.error
        assert result.final_state is not None and result.final_state.value == "Optimized"

        vm = candidate(s.store, lambda v: v.id.startswith("lab/"))
        plan = runner.plan("rebuild", vm.id, db=str(db))
        assert not plan.blocking, [f.code for f in plan.blocking]
        result = await runner.execute(plan, plan.target_name)
        await s.settle()
        assert REBUILD_UNAVAILABLE not in result.error
        assert result.state in (TaskState.OK, TaskState.WARNING), result.error
        wf = RebuildStore.open(db).latest(vm.id)
        assert wf is not None and wf.state is RebuildState.DONE
        assert wf.new_vm_id.startswith("lab/") and s.store.vm(wf.new_vm_id) is not None


async def test_a_merge_waiting_for_a_locked_log_file_leaves_the_loop_free(
        tmp_path: Path) -> None:
    """The intent and outcome rows (and a refused row) are committed in a worker on a
    local SQLite log too: while another process holds the file's write lock for a
    second, the loop keeps turning; the merge runs once the intent is committed."""
    import time

    from dblock import hold_write_lock
    from loopgaps import loop_gaps
    from test_sim_actions import roomy_vm

    from ventana.backends.actions import ActionRefused
    from ventana.state.model import TaskState

    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        runner = ActionRunner(s.store, s.backend, ActionLog.open(db), clock=s.backend.now)
        vm = roomy_vm(s.store)
        plan = runner.plan("merge", vm.id)
        async with loop_gaps() as gaps:
            holder = hold_write_lock(db, 1.0)
            began = time.perf_counter()
            with pytest.raises(ActionRefused, match="typed name does not match"):
                await runner.execute(plan, "not-the-name")  # its refused row waits too
            holder.join()
            holder = hold_write_lock(db, 1.0)
            result = await runner.execute(plan, vm.name)
            holder.join()
            waited = time.perf_counter() - began
        assert result.state is TaskState.OK, result.error
        assert waited >= 1.9  # both rows did wait for the lock…
        assert gaps.longest < 0.5, f"the loop stood still for {gaps.longest * 1000:.0f} ms"
        rows = runner.log.rows()  # type: ignore[union-attr]
        assert [r.outcome for r in rows] == ["ok", "refused"]
