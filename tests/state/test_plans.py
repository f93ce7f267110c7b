"""Pre-flight checks of the merge plan: each seed incident is caught."""

from __future__ import annotations

import dataclasses

from factories import NOW, small_cluster

from ventana.state.events import ConnectionChanged, FindingRaised, LinkState, Remove, Upsert
from ventana.state.model import (
    GB,
    Checkpoint,
    CheckpointKind,
    DiskFormat,
    Finding,
    Kind,
    PowerState,
    ReplicationState,
    Severity,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.plans import plan_merge
from ventana.state.store import ref


def codes(plan, severity=None) -> set[str]:  # type: ignore[no-untyped-def]
    return {f.code for f in plan.findings if severity is None or f.severity is severity}


def test_clean_merge_plan_has_figures_and_command() -> None:
    store = small_cluster()
    plan = plan_merge(store, "a", NOW)
    assert not plan.blocking
    assert plan.target_name == "app-01"
    assert plan.lun_name == "CSV-DATA2"
    assert plan.free_now == 500 * GB
    assert plan.space_needed == 60 * GB
    assert plan.free_after_worst == 500 * GB and plan.free_after_best == 560 * GB
    # Exactly what the Hyper-V backend sends, by the VM's id (names need not be unique).
    assert plan.command == "Get-VM -Id 'a' | Remove-VMSnapshot -Name '*'"
    assert [c["name"] for c in plan.facts["checkpoint_list"]] == [
        "before patch 0", "before patch 1", "before patch 2"]
    assert "keeps running" in plan.steps[2]
    assert plan.estimate and plan.estimate.low_s < plan.estimate.likely_s < plan.estimate.high_s
    assert plan.facts["chain_depth"] == 3 and plan.facts["oldest_checkpoint_days"] == 900.0
    logged = plan.to_log()
    assert logged["space_needed"] == 60 * GB and logged["steps"]


def test_not_enough_space_blocks() -> None:
    store = small_cluster(free_gb=50)  # the chain may need 60 GB
    assert "NO_SPACE" in codes(plan_merge(store, "a", NOW), Severity.BLOCKING)
    # CSV-DATA1 of the campaign: 26 MB free, under the Paused-Critical margin.
    plan = plan_merge(store, "c", NOW)
    assert "NO_SPACE" in codes(plan, Severity.BLOCKING)
    assert "Paused-Critical" in next(f.message for f in plan.findings if f.code == "NO_SPACE")


def test_replicating_vm_blocks_with_the_campaign_lesson() -> None:
    store = small_cluster()
    vm = store.vm("a")
    store.apply(Upsert(dataclasses.replace(
        vm, replication=ReplicationState.REPLICATING, replica_target="Azure Site Recovery")))
    plan = plan_merge(store, "a", NOW)
    finding = next(f for f in plan.findings if f.code == "REPLICATING")
    assert finding.severity is Severity.BLOCKING
    assert "last parent" in finding.message and "fallback" in finding.message


def test_backup_checkpoint_warns_and_running_backup_blocks() -> None:
    store = small_cluster(free_gb=500)
    plan = plan_merge(store, "c", NOW)
    assert "BACKUP_CHECKPOINT" in codes(plan, Severity.WARNING)
    store.apply(Upsert(Task("bk", "backup", ref(Kind.VM, "a"), "app-01", 30.0,
                            TaskState.RUNNING, NOW)))
    assert "BACKUP_RUNNING" in codes(plan_merge(store, "a", NOW), Severity.BLOCKING)


def test_stale_data_and_nothing_to_merge_block() -> None:
    store = small_cluster()
    store.apply(ConnectionChanged("test", LinkState.STALE, "no answer for 30 s"))
    plan = plan_merge(store, "b", NOW)
    assert {"STALE_DATA", "NOTHING_TO_MERGE"} <= codes(plan, Severity.BLOCKING)
    assert plan.findings[0].severity is Severity.BLOCKING  # most severe first


def test_paused_critical_vm_warns() -> None:
    store = small_cluster()
    store.apply(Upsert(dataclasses.replace(store.vm("a"), power=PowerState.PAUSED_CRITICAL)))
    assert "PAUSED_CRITICAL" in codes(plan_merge(store, "a", NOW), Severity.WARNING)


def test_hostile_name_is_quoted_in_the_command() -> None:
    store = small_cluster()
    store.apply(Upsert(dataclasses.replace(store.vm("a"), name="x'; Remove-VM *; '")))
    plan = plan_merge(store, "a", NOW)
    assert plan.command == "Get-VM -Id 'a' | Remove-VMSnapshot -Name '*'"  # no name in it


def test_running_merge_on_the_same_csv_reserves_its_space() -> None:
    store = small_cluster(free_gb=100)  # app-01 may need 60 GB of it
    assert "NO_SPACE" not in codes(plan_merge(store, "a", NOW))
    # db-01 on the same CSV gets a chain and starts merging it...
    store.apply(Upsert(Checkpoint("b-cp", "b", "old", None, CheckpointKind.STANDARD,
                                  NOW, "b.avhdx", 50 * GB)))
    store.apply(Upsert(Task("m1", "merge", ref(Kind.VM, "b"), "db-01", 5.0,
                            TaskState.RUNNING, NOW)))
    # ...so app-01's merge no longer fits.
    plan = plan_merge(store, "a", NOW)
    finding = next(f for f in plan.findings if f.code == "NO_SPACE")
    assert "already reserved" in finding.message
    assert plan.facts["reserved_by_running_merges"] == 50 * GB


def test_low_space_during_merge_warns_and_cluster_findings_are_carried() -> None:
    store = small_cluster(free_gb=150)  # worst point: 90 GB of 2000 = 4.5 %
    plan = plan_merge(store, "a", NOW)
    assert "LOW_SPACE_DURING_MERGE" in codes(plan, Severity.WARNING)
    store.apply(FindingRaised(Finding("x", Severity.CRITICAL, "lun:l1", "CSV_FULL",
                                      "CSV-DATA2 ran out of space at 03:12")))
    plan = plan_merge(store, "a", NOW)
    assert "REPORTED_CSV_FULL" in codes(plan, Severity.WARNING)


def test_offline_vm_merge_is_described_as_offline() -> None:
    store = small_cluster()
    store.apply(Upsert(dataclasses.replace(store.vm("a"), power=PowerState.OFF)))
    assert "offline merge" in plan_merge(store, "a", NOW).steps[2]


def test_disks_on_a_second_csv_are_space_checked_there() -> None:
    store = small_cluster(free_gb=500)  # app-01's own CSV has room
    assert "NO_SPACE" not in codes(plan_merge(store, "a", NOW))
    # A data disk of app-01 lives on CSV-DATA1 (26 MB free) with a differencing disk.
    store.apply(Upsert(VirtualDisk("a-d2", "a", "C:\\CS2\\data.vhdx", DiskFormat.VHDX,
                                   100 * GB, 400 * GB, None, "l2")))
    store.apply(Upsert(VirtualDisk("a-d2-1", "a", "C:\\CS2\\data_1.avhdx", DiskFormat.AVHDX,
                                   3 * GB, 400 * GB, "C:\\CS2\\data.vhdx", "l2")))
    plan = plan_merge(store, "a", NOW)
    finding = next(f for f in plan.findings if f.code == "NO_SPACE")
    assert "CSV-DATA1" in finding.message and finding.severity is Severity.BLOCKING


def test_upgrade_needs_the_vm_off_and_no_saved_state_checkpoints() -> None:
    from ventana.state.plans import plan_upgrade

    store = small_cluster()
    store.apply(Upsert(dataclasses.replace(store.vm("b"), config_version="9.0")))
    store.apply(Upsert(dataclasses.replace(store.vm("a"), config_version="5.0")))
    plan = plan_upgrade(store, "a", NOW)
    assert plan.irreversible and plan.facts["target_version"] == "9.0"
    assert {"VM_NOT_OFF", "SAVED_STATE_CHECKPOINT"} <= codes(plan, Severity.BLOCKING)
    assert plan.command == "Get-VM -Id 'a' | Update-VMVersion -Force"
    for cp in store.checkpoints_of("a"):
        store.apply(Remove(Kind.CHECKPOINT, cp.id))
    store.apply(Upsert(dataclasses.replace(store.vm("a"), power=PowerState.OFF)))
    assert not plan_upgrade(store, "a", NOW).blocking
    # The newest VM cannot go higher than what the cluster already runs.
    assert "ALREADY_CURRENT" in codes(plan_upgrade(store, "b", NOW), Severity.BLOCKING)


def test_upgrade_targets_the_hosts_default_version() -> None:
    """Update-VMVersion has no target parameter: the plan's target is the VM's host's
    default (Node.default_config_version, read with Get-VMHostSupportedVersion -Default),
    not the highest version running on the cluster; only when it was not read is the
    latter assumed, with a warning."""
    from ventana.state.plans import plan_upgrade

    store = small_cluster()
    for vm_id, version in (("a", "9.0"), ("b", "9.0"), ("c", "8.0")):
        store.apply(Upsert(dataclasses.replace(store.vm(vm_id), config_version=version,
                                               power=PowerState.OFF)))
        for cp in store.checkpoints_of(vm_id):
            store.apply(Remove(Kind.CHECKPOINT, cp.id))
    assumed = plan_upgrade(store, "a", NOW)  # no host default known: 9.0 is all we have
    assert assumed.facts["target_version"] == "9.0"
    assert "TARGET_VERSION_ASSUMED" in codes(assumed, Severity.WARNING)
    assert "ALREADY_CURRENT" in codes(assumed, Severity.BLOCKING)
    store.apply(Upsert(dataclasses.replace(store.node("n1"), default_config_version="10.0")))
    plan = plan_upgrade(store, "a", NOW)  # vm a is on n1, whose default is newer
    assert plan.facts["target_version"] == "10.0" and plan.facts["target_basis"] == "host default"
    assert not plan.blocking and "TARGET_VERSION_ASSUMED" not in codes(plan, Severity.WARNING)
    assert plan.steps[0].startswith("Raise the configuration version from 9.0 to 10.0 "
                                    "(the default of host HV-NODE-01")
    # Per node: vm c's host (n2) says 8.0, which vm c already runs.
    store.apply(Upsert(dataclasses.replace(store.node("n2"), default_config_version="8.0")))
    plan = plan_upgrade(store, "c", NOW)
    assert plan.facts["target_version"] == "8.0"
    assert "ALREADY_CURRENT" in codes(plan, Severity.BLOCKING)


def test_broken_chain_blocks_the_merge_with_the_findings_rule() -> None:
    """The same rule as the CHAIN_BROKEN finding (derived.broken_chain): a
    differencing disk whose parent is nowhere blocks; a parent that is another
    VM's disk (a shared base) or the VM's own does not; once the VM reports its
    differencing disks, a checkpoint whose file is not among them blocks too."""
    from ventana.state.derived import broken_chain, path_key
    from ventana.state.findings import CHAIN_BROKEN, FindingsEngine

    store = small_cluster(free_gb=1500)
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    parent = "C:\\CS\\app-01.vhdx"
    chain = []
    for i in range(3):
        path = f"C:\\CS\\app-01_{i}.avhdx"
        chain.append(VirtualDisk(f"a-x{i}", "a", path, DiskFormat.AVHDX, (i + 1) * 10 * GB,
                                 200 * GB, parent, "l1"))
        parent = path
    store.apply_many(Upsert(d) for d in chain)

    def broken() -> bool:
        in_plan = "CHAIN_BROKEN" in codes(plan_merge(store, "a", NOW), Severity.BLOCKING)
        assert in_plan == (CHAIN_BROKEN in {f.code for f in eng.for_target("vm:a")})
        return in_plan

    assert not broken()
    moved = dataclasses.replace(chain[0], parent_path="D:\\Hyper-V\\app-01.vhdx")
    store.apply(Upsert(moved))
    assert broken()
    blocked = next(f for f in plan_merge(store, "a", NOW).blocking if f.code == "CHAIN_BROKEN")
    assert "does not have valid vhd chains" in blocked.message
    assert "app-01_0.avhdx names its parent D:\\Hyper-V\\app-01.vhdx" in blocked.message
    # A shared parent: another VM's disk (case differs: Windows paths).
    store.apply(Upsert(dataclasses.replace(moved, parent_path="c:\\cs\\DB-01.VHDX")))
    assert not broken()
    store.apply(Upsert(chain[0]))
    # The newest checkpoint's file vanished.
    store.apply(Remove(Kind.DISK, "a-x2"))
    assert broken()
    known = {path_key(d.path) for d in store.all(Kind.DISK)}.__contains__  # type: ignore[attr-defined]
    (fault,) = broken_chain(store.disks_of("a"), store.checkpoints_of("a"), known)
    assert "app-01_2.avhdx, which is not among the VM's disks" in fault
    # Without differencing disks reported, checkpoint files are not judged.
    base = [d for d in store.disks_of("a") if not d.parent_path]
    assert broken_chain(base, store.checkpoints_of("a"), known) == []
