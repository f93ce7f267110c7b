"""The source campaign's incidents, one test each: the check that catches it.

Each test reproduces what went wrong in the Hyper-V campaign (DESIGN.md,
shared/lab) on the built-in simulated cluster — or, where the simulator
cannot produce the situation (vSphere, a missing backup agent, exact space
margins), on a store built from factories — and asserts the exact pre-flight
finding, live finding or workflow step outcome that catches it. Where a
guarded action applies, it also asserts that the runner refuses without an
override: a ``refused`` row in the action log and nothing sent to the host.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from factories import NOW, small_cluster
from test_rebuild import candidate, rebuild
from test_sim_actions import Session, quiet, roomy_vm

from ventana.backends.actions import ActionRefused, ActionRunner
from ventana.backends.ssh.stun import budget_for_mirror, parse_stun_lines, stun_findings
from ventana.state import findings as F
from ventana.state import plans_vsphere as PV
from ventana.state.actionlog import ActionLog
from ventana.state.derived import PAUSE_CRITICAL_MARGIN
from ventana.state.estimates import LearnedEstimator
from ventana.state.events import ConnectionChanged, LinkState, TaskProgress, Upsert
from ventana.state.findings import FindingsEngine
from ventana.state.model import (
    GB,
    MB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    FinalState,
    IntegrationState,
    Kind,
    Lun,
    Node,
    Platform,
    PowerState,
    ReplicationState,
    ServiceState,
    Severity,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.plans import heuristic_merge_estimate, plan_merge
from ventana.state.rebuild import StepState
from ventana.state.report import build_report
from ventana.state.store import Store, ref

TB = 1024 * GB


# -- helpers --------------------------------------------------------------------------


def runner(s: Session, tmp_path: Path) -> ActionRunner:
    return ActionRunner(s.store, s.backend, ActionLog.open(tmp_path / "actions.db"),
                        clock=s.backend.now)


def live(s: Session) -> FindingsEngine:
    return FindingsEngine(s.store, clock=s.backend.now).attach()


def found(eng: FindingsEngine, target: str) -> dict[str, F.LiveFinding]:
    return {f.code: f for f in eng.for_target(target)}


def codes(findings: object) -> set[str]:
    return {f.code for f in findings}  # type: ignore[attr-defined]


async def assert_refused_and_nothing_sent(s: Session, r: ActionRunner, vm: VM, code: str
                                          ) -> None:
    """Execute without override: refused, logged as refused, no task on the host."""
    plan = r.plan("merge", vm.id)
    assert code in codes(plan.blocking)
    tasks_before = set(s.backend.world.tasks)
    with pytest.raises(ActionRefused, match=f"blocked by pre-flight: .*{code}"):
        await r.execute(plan, vm.name)
    await s.settle()
    row = r.log.rows()[0]  # type: ignore[union-attr]
    assert row.outcome == "refused" and code in row.error and not row.override
    assert row.target_object == ref(Kind.VM, vm.id)
    assert set(s.backend.world.tasks) == tasks_before  # nothing reached the host
    assert not [t for t in s.store.tasks_for(ref(Kind.VM, vm.id)) if t.kind == "merge"]


def vsphere_store(*, delta_gb: float = 20.0, consolidation_needed: bool = False,
                  last_stun_ms: float | None = None, name: str = "sql-01") -> Store:
    """One vCenter cluster, one host, one datastore, one running VM with a snapshot."""
    store = Store()
    store.apply_many([
        ConnectionChanged("vcsim", LinkState.CONNECTED),
        Upsert(Cluster("vc1", "VC-CLUSTER", Platform.VSPHERE, nodes=1)),
        Upsert(Node("h1", "esx-01", "vc1")),
        Upsert(Lun("ds1", "DS-SQL", "vc1", 4 * TB, 2 * TB, "h1")),
        Upsert(VM("v1", name, "vc1", "h1", PowerState.RUNNING, config_version="vmx-19",
                  disk_ids=("v1-d",), lun_id="ds1", consolidation_needed=consolidation_needed,
                  last_stun_ms=last_stun_ms)),
        Upsert(VirtualDisk("v1-d", "v1", f"[DS-SQL] {name}/{name}.vmdk", DiskFormat.VMDK,
                           300 * GB, 500 * GB, None, "ds1")),
        Upsert(VirtualDisk("v1-d1", "v1", f"[DS-SQL] {name}/{name}-000001.vmdk",
                           DiskFormat.VMDK, int(delta_gb * GB), 500 * GB,
                           f"[DS-SQL] {name}/{name}.vmdk", "ds1")),
        Upsert(Checkpoint("s1", "v1", "before patch", None, CheckpointKind.STANDARD,
                          NOW - timedelta(days=40), f"[DS-SQL] {name}/{name}-000001.vmdk",
                          int(delta_gb * GB))),
    ])
    return store


# -- space ----------------------------------------------------------------------------


async def test_csv_full_of_orphaned_chains_refuses_the_merge(tmp_path: Path) -> None:
    """"Years of orphaned checkpoints had grown AVHDX chains until CSVs were full
    (one 2,367 GB CSV had 26 MB free; another 2 MB)."

    The CSV is flagged critical, and a merge on it is blocked on space: it
    would take the CSV below Hyper-V's pause margin.
    """
    async with Session(quiet()) as s:
        data1 = next(x for x in s.store.luns() if x.name == "CSV-DATA1")
        assert int(data1.total_bytes / GB) == 2367 and data1.free_bytes < 30 * MB
        lun_finding = found(live(s), ref(Kind.LUN, data1.id))[F.LUN_LOW_SPACE]
        assert lun_finding.severity is Severity.CRITICAL
        vm = next(v for v in sorted(s.store.vms(), key=lambda v: v.name)
                  if v.lun_id == data1.id and s.store.checkpoints_of(v.id))
        r = runner(s, tmp_path)
        plan = r.plan("merge", vm.id)
        no_space = next(f for f in plan.blocking if f.code == "NO_SPACE")
        assert "CSV-DATA1" in no_space.message and "Paused-Critical" in no_space.message
        await assert_refused_and_nothing_sent(s, r, vm, "NO_SPACE")


def test_merge_must_leave_the_pause_critical_margin() -> None:
    """"one 2,367 GB CSV had 26 MB free": below about 200 MB free Hyper-V pauses
    every VM on the volume (Paused-Critical), so a merge must leave that much at
    its worst point — enough room for the chain alone is not enough."""
    # app-01's chain may need 60 GB at the merge's peak.
    needed = plan_merge(small_cluster(), "a", NOW).space_needed
    assert needed == 60 * GB
    short = small_cluster(free_gb=60 + 0.1)  # 100 MB would be left: under the margin
    plan = plan_merge(short, "a", NOW)
    assert codes(plan.blocking) == {"NO_SPACE"}
    assert PAUSE_CRITICAL_MARGIN == 200 * MB
    roomy = small_cluster(free_gb=61)  # 1 GB left: allowed, with a warning
    plan = plan_merge(roomy, "a", NOW)
    assert not plan.blocking
    assert "LOW_SPACE_DURING_MERGE" in codes(plan.warnings)


# -- chains ---------------------------------------------------------------------------


async def test_invalid_vhd_chains_block_the_merge_and_a_forced_merge_fails(
    tmp_path: Path
) -> None:
    """"Backups failed with 'Virtual machine does not have valid vhd chains and
    will not be backed up with image level backup'."

    The VM's first .avhdx names a parent that is not there: a critical
    CHAIN_BROKEN finding with the backup's words, a blocking CHAIN_BROKEN on the
    merge, and a merge forced through anyway fails on the host, merging nothing.
    """
    async with Session(quiet()) as s:
        world = s.backend.world
        vm = min((s.store.vm(v) for v in world.broken_chains), key=lambda v: v.name)  # type: ignore[union-attr, return-value]
        assert vm is not None
        finding = found(live(s), ref(Kind.VM, vm.id))[F.CHAIN_BROKEN]
        assert finding.severity is Severity.CRITICAL and finding.remedy is None
        assert "does not have valid vhd chains" in finding.message
        r = runner(s, tmp_path)
        plan = r.plan("merge", vm.id)
        blocked = next(f for f in plan.blocking if f.code == "CHAIN_BROKEN")
        assert "does not have valid vhd chains" in blocked.message
        assert "Set-VHD" in blocked.message
        await assert_refused_and_nothing_sent(s, r, vm, "CHAIN_BROKEN")

        # Forced: the host refuses to merge a chain whose parent it cannot find.
        before = sorted(c.id for c in s.store.checkpoints_of(vm.id))
        disks_before = sorted(d.path for d in s.store.disks_of(vm.id))
        result = await r.execute(plan, vm.name, override=True,
                                 overridden=frozenset(codes(plan.blocking)))
        await s.settle()
        assert result.state is TaskState.FAILED and result.final_state is FinalState.FAILED
        assert "chain of virtual hard disks is broken" in result.error
        assert "0xC03A000D" in result.error
        assert sorted(c.id for c in s.store.checkpoints_of(vm.id)) == before
        assert sorted(d.path for d in s.store.disks_of(vm.id)) == disks_before
        assert world.audit() == []
        forced = r.log.rows()[0]  # type: ignore[union-attr]
        assert forced.outcome == "failed" and forced.override and "0xC03A000D" in forced.error

        # A rebuild merges the same chain first: its plan blocks on it too.
        rebuild = r.plan("rebuild", vm.id, db=str(r.log.path))  # type: ignore[union-attr]
        assert "CHAIN_BROKEN" in codes(rebuild.blocking)


# -- rebuilds -------------------------------------------------------------------------


async def test_gen2_rebuilt_with_the_wrong_boot_order_is_caught_by_verify_boot(
    tmp_path: Path
) -> None:
    """"Gen2 VMs rebuilt with the wrong boot order → 'inaccessible boot device'."

    A Gen2 VM whose system disk is not at SCSI 0:0: a new VM that ignores the
    captured boot order boots the data disk and verify_boot fails with
    INACCESSIBLE_BOOT_DEVICE; the workflow sets the captured boot device and its
    verify_boot step passes.
    """
    async with Session(quiet()) as s:
        sim = s.backend.rebuild
        vm = next(v for v in sorted(s.store.vms(), key=lambda v: v.name)
                  if v.generation == 2 and len(v.disk_ids) >= 2
                  and sim.guest(v.id).layout[0] != ("SCSI", 0, 0))
        ex = s.backend.executor()
        s.backend.world.set_power(vm.id, PowerState.OFF)
        cap = (await ex.capture(vm.id, "cap")).data
        wrong = {**cap, "firmware": {**cap["firmware"], "boot_order": []}}
        made = await ex.create_from_capture(wrong, "create")
        boot = await ex.verify_boot(made.data["vm_id"], cap, "boot")
        assert boot.state is TaskState.FAILED and "INACCESSIBLE_BOOT_DEVICE" in boot.error
        assert s.backend.world.vms[made.data["vm_id"]].power is PowerState.OFF

    async with Session(quiet()) as s:  # the guarded workflow
        vm = s.store.vm(vm.id)  # type: ignore[assignment]
        plan, _, wf = await rebuild(s, tmp_path / "actions.db", vm)
        assert "GEN2_BOOT_FROM_CAPTURE" in codes(plan.findings)
        assert "Set-VMFirmware" in plan.command
        step = wf.step("verify_boot")
        assert step.state is StepState.DONE, step.error
        assert "SCSI 0:1" in step.message


async def test_merging_a_vm_replicating_to_azure_is_refused_and_the_rebuild_keeps_its_identity(
    tmp_path: Path
) -> None:
    """"Merging VMs that replicate to Azure broke their replication identity (fix:
    merge only to the last parent, then rebuild, keep the old VM as a fallback)."

    The merge is blocked (REPLICATING); forced, it breaks the replica exactly as
    in the campaign; the rebuild merges to the last parent and the old VM keeps
    replicating.
    """
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = next(v for v in sorted(s.store.vms(), key=lambda v: v.name)
                  if v.replication is ReplicationState.REPLICATING
                  and s.store.checkpoints_of(v.id))
        r = ActionRunner(s.store, s.backend, ActionLog.open(db), clock=s.backend.now)
        plan = r.plan("merge", vm.id)
        replicating = next(f for f in plan.blocking if f.code == "REPLICATING")
        assert "last parent" in replicating.message and "fallback" in replicating.message
        await assert_refused_and_nothing_sent(s, r, vm, "REPLICATING")
        forced = await r.execute(plan, vm.name, override=True,
                                 overridden=frozenset(codes(plan.blocking)))
        await s.settle()
        assert forced.state is TaskState.WARNING and forced.final_state is FinalState.DEGRADED
        assert s.store.vm(vm.id).replication is ReplicationState.ERROR  # type: ignore[union-attr]
        assert "REPLICATION_BROKEN" in codes(s.store.all(Kind.FINDING))

    async with Session(quiet()) as s:  # the campaign's fix, through the rebuild
        vm = s.store.vm(vm.id)  # type: ignore[assignment]
        s.backend.world.add_checkpoint("cp-extra", [f"f-extra-{j}" for j in vm.disk_ids],
                                       vm.id, "pre-rebuild", CheckpointKind.STANDARD,
                                       [GB for _ in vm.disk_ids])
        await s.settle()
        newest = max(s.store.checkpoints_of(vm.id), key=lambda c: c.created)
        plan, result, wf = await rebuild(s, tmp_path / "rebuild.db", vm)
        assert "MERGE_TO_LAST_PARENT" in codes(plan.findings) and wf.to_last_parent
        assert [c.id for c in s.store.checkpoints_of(vm.id)] == [newest.id]
        assert s.store.vm(vm.id).replication is ReplicationState.REPLICATING  # type: ignore[union-attr]
        old = s.store.vm(vm.id)
        assert old is not None and old.power is PowerState.OFF  # kept as the fallback
        assert old.name == wf.old_vm_name and wf.new_vm_id != vm.id
        assert result.state is TaskState.WARNING and "re-establish" in result.error


async def test_monitoring_agent_lost_in_a_rebuild_is_flagged_and_stays_pending(
    tmp_path: Path
) -> None:
    """"A monitoring agent was lost in a rebuild."

    The services step compares the new VM's running services with the
    capture: the agent bound to the old VM's hardware is missing, the rebuild
    ends With pending tasks, and the campaign report lists it as pending.
    """
    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        sim = s.backend.rebuild
        vm = candidate(s.store, lambda v: bool(sim.guest(v.id).bound_agents))
        agent = next(iter(sim.guest(vm.id).bound_agents))
        _, result, wf = await rebuild(s, db, vm)
        assert result.state is TaskState.WARNING and result.final_state is FinalState.PENDING
        step = wf.step("services")
        assert step.state is StepState.DONE and agent in step.error
        rows = ActionLog.open(db).rows()
        services = next(row for row in rows if row.action == "rebuild.services")
        assert services.outcome == "warning" and services.detail_data()["missing"] == [agent]
        report = build_report(rows)
        line = next(p for p in report.pending if p.vm == vm.name)
        assert line.status == FinalState.PENDING.value and agent in line.detail


# -- consolidation --------------------------------------------------------------------


async def test_consolidation_still_pending_is_a_finding_and_on_the_reports_pending_list(
    tmp_path: Path
) -> None:
    """"Some disk consolidations were still pending when inspected."

    vSphere says so (consolidationNeeded): a MERGE_PENDING finding whose remedy
    is the guarded consolidate. On the Hyper-V side a merge stopped part-way
    leaves the VM Partially consolidated, and the campaign report lists it.
    """
    store = vsphere_store(consolidation_needed=True)
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    pending = found(eng, "vm:v1")[F.MERGE_PENDING]
    assert pending.severity is Severity.WARNING and pending.remedy == PV.CONSOLIDATE
    assert "NOTHING_TO_CONSOLIDATE" not in codes(PV.plan_consolidate(store, "v1", NOW).findings)

    # Hyper-V: an .avhdx the VM still runs on, with no checkpoint left. No
    # guarded action can fix it (a merge has no checkpoint to remove): no
    # remedy offered, the way to do it by hand instead.
    hv = small_cluster()
    eng = FindingsEngine(hv, clock=lambda: NOW).attach()
    hv.apply(Upsert(VirtualDisk("b-x", "b", "C:\\CS\\db-01_A1B2.avhdx", DiskFormat.AVHDX,
                                3 * GB, 200 * GB, "C:\\CS\\db-01.vhdx", "l1")))
    left = found(eng, "vm:b")[F.MERGE_PENDING]
    assert left.remedy is None and "Merge-VHD" in left.message
    assert "NOTHING_TO_MERGE" in codes(plan_merge(hv, "b", NOW).blocking)

    db = tmp_path / "actions.db"
    async with Session(quiet()) as s:
        vm = roomy_vm(s.store)
        world = s.backend.world

        def another_vm_fills_the_csv(event: object) -> None:
            if isinstance(event, TaskProgress) and "(2 of" in event.message:
                lun = world.luns[vm.lun_id]
                world.orphaned_bytes[lun.id] += lun.free_bytes - PAUSE_CRITICAL_MARGIN
                world.adjust_free(lun.id, PAUSE_CRITICAL_MARGIN - lun.free_bytes)
                s.hook = None

        s.hook = another_vm_fills_the_csv
        r = ActionRunner(s.store, s.backend, ActionLog.open(db), clock=s.backend.now)
        result = await r.execute(r.plan("merge", vm.id), vm.name)
        await s.settle()
        assert result.state is TaskState.FAILED and result.final_state is FinalState.PARTIAL
        report = build_report(ActionLog.open(db).rows())
        line = next(p for p in report.pending if p.vm == vm.name)
        assert line.status == FinalState.PARTIAL.value and "intact" in line.detail


# -- backups --------------------------------------------------------------------------


async def test_backup_agent_failures_are_node_findings() -> None:
    """"The backup agent's cluster configuration failed" (agent listening on TCP
    28001, 28002, 29000, 30001-30003, a Windows service per node, upgraded node
    by node): stopped, old or firewalled agents are findings on their node."""
    async with Session(quiet()) as s:
        eng = live(s)
        by_code: dict[str, list[F.LiveFinding]] = {}
        for f in eng.findings():
            if f.target.startswith("node:"):
                by_code.setdefault(f.code, []).append(f)
        assert by_code[F.AGENT_STOPPED][0].severity is Severity.CRITICAL
        assert by_code[F.AGENT_OLD][0].severity is Severity.WARNING
        closed = by_code[F.AGENT_PORTS_CLOSED][0]
        node = s.store.node(closed.target[5:])
        assert node is not None and node.backup_ports_closed
        assert all(str(p) in closed.message for p in node.backup_ports_closed)
        assert set(node.backup_ports_closed) <= set(F.BACKUP_AGENT_PORTS)
        assert F.BACKUP_AGENT_PORTS == (28001, 28002, 29000, 30001, 30002, 30003)

    store = small_cluster()
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    store.apply(Upsert(dataclasses.replace(store.node("n2"),  # type: ignore[type-var]
                                           backup_agent_state=ServiceState.MISSING)))
    assert found(eng, "node:n2")[F.AGENT_MISSING].severity is Severity.CRITICAL


async def test_vms_over_the_2tb_backup_policy() -> None:
    """"Backup policy: at most 2 TB per VM or job" (one data disk of 2.2 TB)."""
    async with Session(quiet()) as s:
        eng = live(s)
        over = [f for f in eng.findings() if f.code == F.BACKUP_OVER_POLICY]
        assert over
        for f in over:
            used = sum(d.size_bytes for d in s.store.disks_of(f.vm_id or ""))
            assert (f.severity is Severity.WARNING) == (used > 2 * TB)
    store = small_cluster()
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    disk = store.get(Kind.DISK, "b-d1")
    store.apply(Upsert(dataclasses.replace(disk, size_bytes=int(2.2 * TB),  # type: ignore[type-var]
                                           max_bytes=3 * TB)))
    policy = found(eng, "vm:b")[F.BACKUP_OVER_POLICY]
    assert policy.severity is Severity.WARNING and "2.0 TB backup policy" in policy.message
    store.apply(Upsert(dataclasses.replace(disk, max_bytes=3 * TB)))  # type: ignore[type-var]
    assert found(eng, "vm:b")[F.BACKUP_OVER_POLICY].severity is Severity.INFO  # can grow past


async def test_backup_created_checkpoints_left_behind(tmp_path: Path) -> None:
    """"Snapshots left behind by backup software": a backup checkpoint with no
    backup running is a finding (remedy: merge) and a merge pre-flight warning;
    while the backup still runs, it is excused and the merge is blocked."""
    async with Session(quiet()) as s:
        eng = live(s)
        leftover = next(f for f in sorted(eng.findings(), key=lambda f: f.target_name)
                        if f.code == F.BACKUP_LEFTOVER)
        assert leftover.remedy == "merge" and "left behind by backup software" in leftover.message
        plan = plan_merge(s.store, leftover.vm_id or "", s.backend.now())
        assert "BACKUP_CHECKPOINT" in codes(plan.warnings)

    store = small_cluster(free_gb=1500)
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    assert F.BACKUP_LEFTOVER in found(eng, "vm:c")
    store.apply(Upsert(Task("bk", "backup", ref(Kind.VM, "c"), "dc-03", 40.0,
                            TaskState.RUNNING, NOW)))
    assert F.BACKUP_LEFTOVER not in found(eng, "vm:c")
    r = ActionRunner(store, quiet(), ActionLog.open(tmp_path / "a.db"), clock=lambda: NOW)
    plan = r.plan("merge", "c")
    assert "BACKUP_RUNNING" in codes(plan.blocking)
    with pytest.raises(ActionRefused, match="BACKUP_RUNNING"):
        await r.execute(plan, "dc-03")
    assert [row.outcome for row in r.log.rows()] == ["refused"]  # type: ignore[union-attr]


async def test_merge_times_not_proportional_to_size_are_learned(tmp_path: Path) -> None:
    """"Merge times from 40 min to 13 h 30 min, not proportional to size" (45.7 GB
    took 8 h 40 min, 401 GB took 12 h): after a few merges on this cluster the
    estimate comes from their history, not from the size formula."""
    # Real time at 30,000 simulated seconds per second: the logged (wall)
    # durations then follow the simulated merges (40 min to several hours,
    # 0.1-1 s here) rather than the test's own overhead, as they would with
    # no sleeping at all (every merge then lasts as long as its ticks take).
    async with Session(quiet(realtime=True, speed=30_000)) as s:
        log = ActionLog.open(tmp_path / "actions.db")
        r = ActionRunner(s.store, s.backend, log, clock=s.backend.now,
                         estimator=LearnedEstimator(log, s.backend.target))
        picked: list[VM] = []
        for vm in sorted(s.store.vms(), key=lambda v: v.name):
            plan = r.plan("merge", vm.id)
            if not plan.blocking and len(s.store.checkpoints_of(vm.id)) >= 2:
                picked.append(vm)
            if len(picked) == 4:
                break
        first = r.plan("merge", picked[-1].id)
        assert first.estimate and first.estimate.basis.startswith("heuristic, no past merges")
        per_gb = []
        for vm in picked[:3]:
            plan = r.plan("merge", vm.id)
            result = await r.execute(plan, vm.name)
            assert result.state is TaskState.OK, result.error
            row = log.rows()[0]
            seconds = row.duration_s * float(row.plan_data().get("clock_rate") or 1.0)
            per_gb.append(seconds / max(plan.facts["chain_bytes"] / GB, 0.1))
        await s.settle()
        # Time per GB of chain is far from constant from one merge to the next
        # (proportional merges would give 1x).
        assert max(per_gb) > 1.25 * min(per_gb)
        learned = r.plan("merge", picked[-1].id)
        assert learned.estimate and learned.estimate.basis.startswith("from 3 ")
        heuristic = heuristic_merge_estimate(learned.facts["checkpoints"],
                                             learned.facts["chain_bytes"])
        ratios = sorted(x.ratio for x in r.estimator.samples())  # type: ignore[union-attr]
        assert len(ratios) == 3
        assert learned.estimate.likely_s == pytest.approx(heuristic.likely_s * ratios[1])
        assert learned.estimate.likely_s != pytest.approx(heuristic.likely_s, rel=0.05)


async def test_vm_put_in_saved_state_for_host_level_backup_is_a_finding() -> None:
    """"Host-level Hyper-V backup is online only when integration services run,
    the guest is VSS-capable, has no dynamic disks … otherwise the VM is put in
    saved state." """
    async with Session(quiet()) as s:
        eng = live(s)
        offline = [f for f in eng.findings() if f.code == F.BACKUP_OFFLINE_ONLY
                   and f.severity is Severity.WARNING]
        messages = " ".join(f.message for f in offline)
        assert "the guest has no working VSS" in messages
        assert "the guest uses dynamic disks" in messages
        assert all("saved state" in f.message for f in offline)
    store = small_cluster()
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    store.apply(Upsert(dataclasses.replace(store.vm("b"),  # type: ignore[type-var]
                                           integration=IntegrationState.OFF)))
    off = found(eng, "vm:b")[F.BACKUP_OFFLINE_ONLY]
    assert off.severity is Severity.WARNING and "integration services are off" in off.message


async def test_vm_files_spread_across_smb_shares() -> None:
    """"VMs stored on SMB 3.0 shares need all their files in one share, with no
    junctions or links." """
    async with Session(quiet()) as s:
        eng = live(s)
        spread = [f for f in eng.findings() if f.code == F.SMB_SPREAD]
        assert len(spread) == 2
        for f in spread:
            vm = s.store.vm(f.vm_id or "")
            assert vm is not None and len({p.split("\\")[2] for p in vm.storage_paths}) > 1
            assert f.severity is Severity.WARNING and "\\\\fs-smb01\\vms" in f.message


# -- vSphere --------------------------------------------------------------------------

#: The lab's vmware.log lines (ESXi 5.0+): a snapshot create, then its removal.
LAB_VMWARE_LOG = """\
2017-01-04T21:30:19.662Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 1091706 us
2017-01-04T22:15:58.846Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 38123 us
2017-01-04T22:15:59.573Z| vcpu-0| I125: Checkpoint_Unstun: vm stopped for 298346 us
"""


def test_stun_longer_than_a_database_mirrors_qos_timeout_is_warned(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """"A stun longer than a database mirror's QoS timeout triggers a failover"
    (an 8 s QoS timeout fails over from ~4 s of stun: the budget is QoS/2)."""
    budget_s = budget_for_mirror(8.0)
    assert budget_s == 4.0
    monkeypatch.setitem(PV.SETTINGS.stun_budget_by_vm, "sql-01", budget_s * 1000)

    # The lab's stuns (1.09 s at most) fit the mirror's budget: no warning.
    normal = parse_stun_lines(LAB_VMWARE_LOG)
    assert max(e.duration_s for e in normal) == pytest.approx(1.091706)
    assert stun_findings("v1", "sql-01", normal, budget_s) == []
    plan = PV.plan_remove_all(vsphere_store(last_stun_ms=1091.706), "v1", NOW)
    assert not {"LONG_STUN", "LAST_STUN_LONG"} & codes(plan.findings)

    # Under heavy writes the removal stunned it 4.6 s: over the budget.
    heavy = parse_stun_lines(
        "2024-11-20T02:10:03.100Z| vcpu-0| I125: CheckpointUnstun: vm stopped for 4600000 us\n")
    (finding,) = stun_findings("v1", "sql-01", heavy, budget_s)
    assert finding.code == "LONG_STUN" and finding.severity is Severity.WARNING
    plan = PV.plan_remove_all(vsphere_store(last_stun_ms=heavy[0].duration_us / 1000), "v1", NOW)
    last = next(f for f in plan.findings if f.code == "LAST_STUN_LONG")
    assert last.severity is Severity.WARNING and "4.6 s" in last.message
    # A 250 GB delta: the estimated stun alone is over the budget.
    plan = PV.plan_remove_all(vsphere_store(delta_gb=250), "v1", NOW)
    assert "LONG_STUN" in codes(plan.warnings)
    assert not plan.blocking
