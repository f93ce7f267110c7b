"""The VM rebuild workflow on the simulator: steps, failures, pause/resume,
the campaign's three incidents, read-only.

The runner goes through the guarded path (plan → pre-flight → typed
confirmation → intent row → executor → outcome row); each step writes its
own action-log row and its state in the rebuild tables of the same file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_sim_actions import Session, quiet

from ventana.backends.actions import ActionRefused, ActionRunner
from ventana.backends.base import REBUILD_UNAVAILABLE, ReadOnlyError
from ventana.backends.sim import SimBackend
from ventana.state.actionlog import ActionLog
from ventana.state.model import (
    VM,
    CheckpointKind,
    FinalState,
    PowerState,
    ReplicationState,
    TaskState,
)
from ventana.state.rebuild import STEP_NAMES, RebuildState, RebuildStore, StepState
from ventana.state.store import Store


def runner(s: Session, db: Path) -> ActionRunner:
    return ActionRunner(s.store, s.backend, ActionLog.open(db), clock=s.backend.now)


def candidate(store: Store, want=lambda vm: True,  # type: ignore[no-untyped-def]
              power: PowerState = PowerState.RUNNING) -> VM:
    """A non-replicating VM (running by default) with a chain on a roomy CSV."""
    for vm in sorted(store.vms(), key=lambda v: v.name):
        lun = store.lun(vm.lun_id)
        size = sum(d.size_bytes for d in store.disks_of(vm.id))
        if (vm.power is power and vm.replication is ReplicationState.DISABLED
                and store.checkpoints_of(vm.id) and lun is not None
                and lun.free_bytes > 3 * size + 2 * 1024**3 and want(vm)):
            return vm
    raise AssertionError("no suitable VM")


async def rebuild(s: Session, db: Path, vm: VM, workflow: str | None = None):  # type: ignore[no-untyped-def]
    r = runner(s, db)
    params = {"db": str(db), **({"workflow": workflow} if workflow else {})}
    plan = r.plan("rebuild", vm.id, **params)
    assert not plan.blocking, [f.code for f in plan.blocking]
    result = await r.execute(plan, plan.target_name)
    await s.settle()
    rs = RebuildStore.open(db)
    wf = rs.latest(vm.id)
    rs.close()
    return plan, result, wf


async def test_full_rebuild(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        sim = s.backend.rebuild
        vm = candidate(s.store, lambda v: not (sim.guest(v.id).bound_agents)
                       and v.generation == 2)
        plan, result, wf = await rebuild(s, db, vm)

        codes = {f.code for f in plan.findings}
        assert "WILL_SHUT_DOWN" in codes and "GEN2_BOOT_FROM_CAPTURE" in codes
        assert not plan.blocking
        assert "New-VM" in plan.command and "Set-VMFirmware" in plan.command
        assert result.state is TaskState.OK, result.error
        assert result.final_state is FinalState.OPERATIONAL
        assert wf.state is RebuildState.DONE
        assert [st.state for st in wf.steps] == [StepState.DONE] * len(STEP_NAMES)
        new = s.store.vm(wf.new_vm_id)
        old = s.store.vm(vm.id)
        assert new is not None and new.id != vm.id and new.name == vm.name
        assert new.power is PowerState.RUNNING and new.generation == vm.generation
        assert (new.vcpus, new.memory_mb) == (vm.vcpus, vm.memory_mb)
        assert old.power is PowerState.OFF and old.name == wf.old_vm_name
        assert old.name.startswith(f"{vm.name}-old-")
        assert s.store.checkpoints_of(vm.id) == []
        assert s.backend.world.audit() == []

        log = ActionLog.open(db)
        rows = log.rows(newest_first=False)
        actions = [r.action for r in rows]
        assert actions == ["rebuild", *(f"rebuild.{n}" for n in STEP_NAMES)]
        assert all(r.outcome == "ok" for r in rows)
        capture = rows[1].detail_data()["capture"]
        assert capture["generation"] == 2 and capture["firmware"]["boot_order"]
        assert capture["nics"][0]["mac"].startswith("00155D")
        assert capture["nics"][0]["ipv4"][0]["address"].startswith("10.20.")
        assert capture["disks"][0]["controller_type"] == "SCSI"
        assert capture["services"]


@pytest.mark.parametrize("step", STEP_NAMES)
async def test_failure_in_each_step_stops_with_instructions(tmp_path: Path, step: str) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = candidate(s.store, lambda v: not s.backend.rebuild.guest(v.id).bound_agents)
        s.backend.rebuild.fail_next(step, vm.name)
        _, result, wf = await rebuild(s, db, vm)

        assert result.state is TaskState.FAILED
        assert wf.state is RebuildState.FAILED
        failed = wf.step(step)
        assert failed.state is StepState.FAILED and failed.error and failed.manual
        assert "What to do" in result.error
        idx = STEP_NAMES.index(step)
        assert all(x.state is StepState.DONE for x in wf.steps[:idx])
        assert all(x.state is StepState.PENDING for x in wf.steps[idx + 1:])
        # The known state the instructions describe.
        old = s.store.vm(vm.id)
        if step == "capture":
            assert old.power is PowerState.RUNNING and "Nothing was changed" in failed.manual
        else:
            assert old.power is PowerState.OFF
        if step == "merge":
            assert "Start-VM" in failed.manual and "intact" in failed.manual
        if step == "verify_boot":
            assert s.store.vm(wf.new_vm_id).power is PowerState.OFF
            assert "Set-VMFirmware" in failed.manual
        if step == "keep_old":
            assert old.name == vm.name and "Rename-VM" in failed.manual
        assert s.backend.world.audit() == []  # space, counts and chains still add up
        rows = {r.action: r for r in ActionLog.open(db).rows(newest_first=False)}
        assert rows["rebuild"].outcome == "failed"
        assert rows[f"rebuild.{step}"].outcome == "failed"
        assert "What to do" in rows[f"rebuild.{step}"].error

        # Resuming needs a new plan and confirmation, and finishes the job.
        _, again, wf2 = await rebuild(s, db, vm, workflow=wf.id)
        assert again.state in (TaskState.OK, TaskState.WARNING), again.error
        assert wf2.id == wf.id and wf2.state is RebuildState.DONE


async def test_a_step_waiting_for_the_database_leaves_the_loop_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step's writes to the log's database run in a worker thread: while another
    connection holds the database's write lock for a second (a busy team database, a
    slow disk), the UI loop keeps turning, and the rebuild ends as usual afterwards."""
    from dblock import hold_write_lock
    from loopgaps import loop_gaps

    from ventana.backends.sim.executor import SimExecutor

    db = tmp_path / "actions.db"
    lockers = []
    capture = SimExecutor.capture

    async def capture_then_lock(self: SimExecutor, vm_id: str, task_id: str):  # type: ignore[no-untyped-def]
        result = await capture(self, vm_id, task_id)
        lockers.append(hold_write_lock(db, 1.0))  # taken before the step's writes
        return result

    monkeypatch.setattr(SimExecutor, "capture", capture_then_lock)
    async with Session(quiet()) as s:
        sim = s.backend.rebuild
        vm = candidate(s.store, lambda v: not (sim.guest(v.id).bound_agents))
        async with loop_gaps() as gaps:
            _, result, wf = await rebuild(s, db, vm)
    assert len(lockers) == 1  # the lock was held, and the step's writes waited for it
    lockers[0].join()
    assert result.state is TaskState.OK, result.error
    assert wf.state is RebuildState.DONE and wf.capture
    assert gaps.longest < 0.5, f"the loop stood still for {gaps.longest * 1000:.0f} ms"


async def test_resume_needs_the_typed_name_again(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = candidate(s.store)
        s.backend.rebuild.fail_next("create", vm.name)
        _, _, wf = await rebuild(s, db, vm)
        r = runner(s, db)
        plan = r.plan("rebuild", vm.id, db=str(db), workflow=wf.id)
        assert "RESUME" in {f.code for f in plan.findings}
        assert "# 3. create" in plan.command and "# 1. capture" not in plan.command
        with pytest.raises(ActionRefused):
            await r.execute(plan, "wrong name")
        # A new rebuild of the same VM is blocked while this one is unfinished.
        fresh = r.plan("rebuild", vm.id, db=str(db))
        assert "REBUILD_IN_PROGRESS" in {f.code for f in fresh.blocking}


async def test_boot_order_incident_is_caught(tmp_path: Path) -> None:
    """A Gen2 VM whose system disk is at SCSI 0:1: without the captured boot
    device the new VM boots the data disk (0x7B); the workflow sets it."""
    async with Session(quiet()) as s:
        sim = s.backend.rebuild
        vm = next(v for v in sorted(s.store.vms(), key=lambda v: v.name)
                  if v.generation == 2 and len(v.disk_ids) >= 2
                  and sim.guest(v.id).layout[0] != ("SCSI", 0, 0))
        ex = s.backend.executor()
        if vm.power is not PowerState.OFF:
            s.backend.world.set_power(vm.id, PowerState.OFF)
        cap = (await ex.capture(vm.id, "cap")).data
        assert cap["firmware"]["boot_order"][0]["controller_location"] == 1
        ignored = {**cap, "firmware": {**cap["firmware"], "boot_order": []}}
        made = await ex.create_from_capture(ignored, "create")
        assert made.state is TaskState.OK
        boot = await ex.verify_boot(made.data["vm_id"], cap, "boot")
        assert boot.state is TaskState.FAILED
        assert "INACCESSIBLE_BOOT_DEVICE" in boot.error
        assert s.backend.world.vms[made.data["vm_id"]].power is PowerState.OFF

    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:  # the workflow itself gets it right
        vm = s.store.vm(vm.id)
        _, _, wf = await rebuild(s, db, vm, None)
        assert wf.step("verify_boot").state is StepState.DONE, wf.step("verify_boot").error
        assert "SCSI 0:1" in wf.step("verify_boot").message


async def test_lost_monitoring_agent_is_flagged(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        sim = s.backend.rebuild
        vm = candidate(s.store, lambda v: bool(sim.guest(v.id).bound_agents))
        agent = next(iter(sim.guest(vm.id).bound_agents))
        _, result, wf = await rebuild(s, db, vm)
        assert result.state is TaskState.WARNING
        assert result.final_state is FinalState.PENDING
        assert agent in result.error
        step = wf.step("services")
        assert step.state is StepState.DONE and agent in step.error
        row = next(r for r in ActionLog.open(db).rows() if r.action == "rebuild.services")
        assert row.outcome == "warning" and row.detail_data()["missing"] == [agent]


async def test_replicating_vm_is_merged_to_the_last_parent(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = next(v for v in sorted(s.store.vms(), key=lambda v: v.name)
                  if v.replication is ReplicationState.REPLICATING
                  and s.store.checkpoints_of(v.id))
        # One more checkpoint, so there is something to merge below the newest.
        s.backend.world.add_checkpoint("cp-extra", [f"f-extra-{j}" for j in vm.disk_ids], vm.id,
                                       "pre-rebuild", CheckpointKind.STANDARD,
                                       [1024**3 for _ in vm.disk_ids])
        await s.settle()
        assert len(s.store.checkpoints_of(vm.id)) >= 2
        newest = max(s.store.checkpoints_of(vm.id), key=lambda c: c.created)
        plan, result, wf = await rebuild(s, db, vm)
        assert "MERGE_TO_LAST_PARENT" in {f.code for f in plan.findings}
        assert "SkipLast 1" in plan.command
        assert wf.to_last_parent
        left = s.store.checkpoints_of(vm.id)
        assert [c.id for c in left] == [newest.id]
        assert s.store.vm(vm.id).replication is ReplicationState.REPLICATING  # identity kept
        assert "re-establish" in result.error
        assert s.store.vm(wf.new_vm_id).replication is ReplicationState.DISABLED


async def test_pause_and_resume_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    backend = quiet()
    async with Session(backend) as s:
        vm = candidate(s.store)
        rs = RebuildStore.open(db)

        def pause_during_merge(event) -> None:  # type: ignore[no-untyped-def]
            for wf in rs.unfinished(vm.id):
                if wf.step("merge").state is StepState.RUNNING:
                    rs.request_pause(wf.id)
                    s.hook = None

        s.hook = pause_during_merge
        _, result, wf = await rebuild(s, db, vm)
        assert result.state is TaskState.OK and "paused" in result.detail
        assert wf.state is RebuildState.PAUSED
        assert [x.state for x in wf.steps[:2]] == [StepState.DONE, StepState.DONE]
        assert wf.step("create").state is StepState.PENDING

        # "Restart": a new log and store on the same file find the paused rebuild.
        rs2 = RebuildStore.open(db)
        (paused,) = rs2.unfinished()
        assert paused.id == wf.id and paused.capture is not None
        _, again, done = await rebuild(s, db, vm, workflow=wf.id)
        assert again.state is TaskState.OK and done.state is RebuildState.DONE


async def test_read_only_refuses(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = candidate(s.store)
        ex = s.backend.executor()
        s.backend.set_read_only(True)
        r = runner(s, db)
        plan = r.plan("rebuild", vm.id, db=str(db))
        with pytest.raises(ReadOnlyError):
            await r.execute(plan, plan.target_name)
        with pytest.raises(ReadOnlyError):
            await ex.capture(vm.id, "x")
        assert RebuildStore.open(db).unfinished() == []
        assert s.store.vm(vm.id).power is PowerState.RUNNING
        assert ActionLog.open(db).rows()[0].outcome == "refused"


async def test_backends_without_rebuild_refuse_before_sending() -> None:
    from ventana.backends.base import Executor

    class Plain(Executor):
        async def merge(self, vm_id, task_id):  # type: ignore[no-untyped-def]
            raise AssertionError

        async def cancel(self, task_id):  # type: ignore[no-untyped-def]
            return False

    result = await Plain(SimBackend()).capture("vm", "t")
    assert result.state is TaskState.FAILED and REBUILD_UNAVAILABLE in result.error


async def test_an_interrupted_step_is_run_again_on_resume(tmp_path: Path) -> None:
    """The console died during a step: the rebuild reads "interrupted —
    verify on the host", can be resumed (after a new confirmation), and the
    step runs again."""
    import sqlite3

    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = candidate(s.store)
        s.backend.rebuild.fail_next("capture", vm.name)
        _, _, wf = await rebuild(s, db, vm)
        rs = RebuildStore.open(db)
        rs.claim(wf.id)
        rs.step_update(wf.id, "capture", state=StepState.RUNNING, error="")
        rs.close()
        with sqlite3.connect(db) as conn:  # the writer: a process that is gone
            conn.execute("update rebuilds set pid = 999999999, proc_start = 1 where id = ?",
                         (wf.id,))
        rs = RebuildStore.open(db)
        stuck = rs.get(wf.id)
        assert stuck is not None and stuck.interrupted
        assert stuck.status == "interrupted — verify on the host"
        r = runner(s, db)
        plan = r.plan("rebuild", vm.id, db=str(db), workflow=wf.id)
        assert not plan.blocking and "interrupted" in next(
            f.message for f in plan.findings if f.code == "RESUME")
        _, result, done = await rebuild(s, db, vm, workflow=wf.id)
        assert result.state is TaskState.OK and done.state is RebuildState.DONE


async def test_off_vm_skips_the_services_comparison(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = candidate(s.store, power=PowerState.OFF)
        plan, result, wf = await rebuild(s, db, vm)
        assert "GUEST_NOT_REACHABLE" in {f.code for f in plan.findings}
        assert wf.step("services").state is StepState.SKIPPED
        assert wf.capture["nics"][0]["ipv4"] is None and wf.capture["services"] is None
        assert result.state is TaskState.WARNING and "not compared" in result.error
        assert s.store.vm(wf.new_vm_id).power is PowerState.RUNNING


async def test_saved_vm_is_blocked(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = next(v for v in s.store.vms() if v.power is PowerState.SAVED)
        plan = runner(s, db).plan("rebuild", vm.id, db=str(db))
        assert "VM_SAVED" in {f.code for f in plan.blocking}
        with pytest.raises(ActionRefused):
            await runner(s, db).execute(plan, plan.target_name)


async def test_no_room_for_the_copy_is_blocked(tmp_path: Path) -> None:
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        data1 = next(x for x in s.store.luns() if x.name == "CSV-DATA1")
        vm = next(v for v in s.store.vms() if v.lun_id == data1.id)
        plan = runner(s, db).plan("rebuild", vm.id, db=str(db))
        finding = next(f for f in plan.blocking if f.code == "NO_SPACE")
        assert "copy of the consolidated disk" in finding.message


async def test_failures_can_be_injected_through_the_config() -> None:
    async with Session(quiet(rebuild_failures=(("capture", "app-01"),))) as s:
        vm = next(v for v in s.store.vms() if v.name == "app-01")
        ex = s.backend.executor()
        first = await ex.capture(vm.id, "c1")
        second = await ex.capture(vm.id, "c2")
        assert first.state is TaskState.FAILED and "timed out" in first.error
        assert second.state is TaskState.OK  # injected once
