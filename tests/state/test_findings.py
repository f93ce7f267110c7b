"""The findings engine: every rule, unknown facts, incremental recomputation,
time-based thresholds, backend findings, config; and acknowledgements."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from factories import NOW, small_cluster

from ventana.backends.sim import SimConfig, build_inventory
from ventana.state import findings as F
from ventana.state.acks import (
    AckBook,
    audit,
    follow,
    open_counts,
    open_findings,
    parse_until,
)
from ventana.state.actionlog import ActionLog
from ventana.state.config import ConfigError, load_config
from ventana.state.events import FindingRaised, Remove, Upsert
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import (
    GB,
    MB,
    VM,
    Checkpoint,
    CheckpointKind,
    DiskFormat,
    Finding,
    Health,
    IntegrationState,
    Kind,
    Lun,
    Node,
    PowerState,
    ReplicationState,
    ServiceState,
    Severity,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.store import Store


def engine(store: Store | None = None, **cfg: object) -> FindingsEngine:
    store = store or small_cluster()
    return FindingsEngine(store, FindingsConfig(**cfg), clock=lambda: NOW).attach()  # type: ignore[arg-type]


def codes(eng: FindingsEngine, target: str) -> dict[str, Severity]:
    return {f.code: f.severity for f in eng.for_target(target)}


def vm(store: Store, vm_id: str) -> VM:
    found = store.vm(vm_id)
    assert found is not None
    return found


def test_old_checkpoints_and_remedy() -> None:
    eng = engine()
    found = {f.code: f for f in eng.for_target("vm:a")}
    old = found[F.CHECKPOINT_OLD]
    assert old.severity is Severity.CRITICAL
    assert old.remedy == "merge" and old.vm_id == "a" and old.target_name == "app-01"
    assert "3 checkpoint(s)" in old.message
    assert F.CHAIN_DEEP not in found  # depth 3 is the limit, not over it


def test_checkpoint_age_thresholds_and_tick() -> None:
    store = small_cluster()
    store.apply(Upsert(Checkpoint("b-cp", "b", "fresh", None, CheckpointKind.PRODUCTION,
                                  NOW - timedelta(hours=71), "", 1 * GB)))
    now = [NOW]
    eng = FindingsEngine(store, clock=lambda: now[0]).attach()
    assert F.CHECKPOINT_OLD not in codes(eng, "vm:b")
    now[0] = NOW + timedelta(hours=2)
    eng.tick()
    assert codes(eng, "vm:b")[F.CHECKPOINT_OLD] is Severity.WARNING
    now[0] = NOW + timedelta(days=30)
    eng.tick()
    assert codes(eng, "vm:b")[F.CHECKPOINT_OLD] is Severity.CRITICAL


def test_chain_depth_appears_live() -> None:
    store = small_cluster()
    eng = engine(store)
    seen: list[F.FindingsChange] = []
    eng.subscribe(seen.append)
    store.apply(Upsert(Checkpoint("a-cp3", "a", "one more", "a-cp2", CheckpointKind.STANDARD,
                                  NOW - timedelta(days=1), "", GB)))
    assert codes(eng, "vm:a")[F.CHAIN_DEEP] is Severity.WARNING
    assert [f.code for f in seen[-1].added] == [F.CHAIN_DEEP]
    store.apply(Remove(Kind.CHECKPOINT, "a-cp3"))
    assert F.CHAIN_DEEP not in codes(eng, "vm:a")
    assert [f.code for f in seen[-1].removed] == [F.CHAIN_DEEP]


def test_lun_space_thresholds() -> None:
    store = small_cluster()
    eng = engine(store)
    assert codes(eng, "lun:l2") == {F.LUN_LOW_SPACE: Severity.CRITICAL}
    assert codes(eng, "lun:l1") == {}
    lun = store.lun("l1")
    assert lun is not None
    store.apply(Upsert(dataclasses.replace(lun, free_bytes=int(150 * GB))))  # 7.5 %
    assert codes(eng, "lun:l1") == {F.LUN_LOW_SPACE: Severity.WARNING}
    store.apply(Upsert(dataclasses.replace(lun, free_bytes=int(60 * GB))))  # 3 %
    assert codes(eng, "lun:l1") == {F.LUN_LOW_SPACE: Severity.CRITICAL}
    store.apply(Upsert(dataclasses.replace(lun, free_bytes=int(900 * GB))))
    assert codes(eng, "lun:l1") == {}


def _chain_disks(store: Store, vm_id: str, lun: str, sizes: list[int]) -> None:
    parent = next(d.path for d in store.disks_of(vm_id) if not d.parent_path)
    for i, size in enumerate(sizes):
        path = f"C:\\CS\\{vm_id}_{i}.avhdx"
        store.apply(Upsert(VirtualDisk(f"{vm_id}-x{i}", vm_id, path, DiskFormat.AVHDX, size,
                                       int(200 * GB), parent, lun)))
        parent = path


def test_running_merge_projected_to_run_out() -> None:
    store = small_cluster(free_gb=40.0)
    eng = engine(store)
    _chain_disks(store, "a", "l1", [int(30 * GB), int(30 * GB)])
    assert F.LUN_MERGE_RUNOUT not in codes(eng, "lun:l1")
    task = Task("t1", "merge", "vm:a", "app-01", 0.0, TaskState.RUNNING, started=NOW)
    store.apply(Upsert(task))
    found = {f.code: f for f in eng.for_target("lun:l1")}
    assert found[F.LUN_MERGE_RUNOUT].severity is Severity.CRITICAL
    assert "app-01" in found[F.LUN_MERGE_RUNOUT].message
    store.apply(Upsert(dataclasses.replace(task, state=TaskState.OK, pct=100.0)))
    assert F.LUN_MERGE_RUNOUT not in codes(eng, "lun:l1")


def test_broken_chain_and_missing_checkpoint_disk() -> None:
    store = small_cluster()
    eng = engine(store)
    store.apply(Upsert(VirtualDisk("b-x", "b", "C:\\CS\\db-01_1.avhdx", DiskFormat.AVHDX,
                                   GB, 200 * GB, "D:\\Hyper-V\\db-01.vhdx", "l1")))
    found = {f.code: f for f in eng.for_target("vm:b")}
    assert found[F.CHAIN_BROKEN].severity is Severity.CRITICAL
    assert "does not have valid vhd chains" in found[F.CHAIN_BROKEN].message
    assert found[F.CHAIN_BROKEN].remedy is None
    # The parent shows up (case differs: Windows paths are case-insensitive): mended.
    store.apply(Upsert(VirtualDisk("b-p", "b", "d:\\hyper-v\\DB-01.vhdx", DiskFormat.VHDX,
                                   GB, 200 * GB, None, "l1")))
    assert F.CHAIN_BROKEN not in codes(eng, "vm:b")
    # A checkpoint whose disk is not among the known disks.
    store.apply(Upsert(Checkpoint("b-cp", "b", "x", None, CheckpointKind.PRODUCTION, NOW,
                                  "C:\\CS\\gone.avhdx", GB)))
    assert F.CHAIN_BROKEN in codes(eng, "vm:b")


def test_differencing_share_of_parent() -> None:
    store = small_cluster()
    eng = engine(store)
    _chain_disks(store, "b", "l1", [int(30 * GB), int(15 * GB)])  # 45 % of 100 GB
    assert F.DIFF_LARGE not in codes(eng, "vm:b")
    _chain_disks(store, "b", "l1", [int(30 * GB), int(25 * GB)])  # 55 %
    assert codes(eng, "vm:b")[F.DIFF_LARGE] is Severity.WARNING
    eng2 = engine(store, differencing_pct=60.0)
    assert F.DIFF_LARGE not in codes(eng2, "vm:b")


def test_merge_pending() -> None:
    store = small_cluster()
    eng = engine(store)
    _chain_disks(store, "b", "l1", [int(1 * GB)])  # an .avhdx without a checkpoint
    assert codes(eng, "vm:b")[F.MERGE_PENDING] is Severity.WARNING
    store.apply(Upsert(Task("t", "merge", "vm:b", "db-01", 5.0, TaskState.RUNNING)))
    assert F.MERGE_PENDING not in codes(eng, "vm:b")  # that is the merge running
    store.apply(Upsert(dataclasses.replace(vm(store, "c"), consolidation_needed=True)))
    assert codes(eng, "vm:c")[F.MERGE_PENDING] is Severity.WARNING


def test_merge_pending_on_a_vsphere_vm_gives_no_hyper_v_advice() -> None:
    from ventana.state.model import Cluster, Platform

    store = small_cluster()
    eng = engine(store)
    _chain_disks(store, "b", "l1", [int(1 * GB)])  # a delta without a checkpoint
    [hyperv] = [f for f in eng.for_target("vm:b") if f.code == F.MERGE_PENDING]
    assert "Merge-VHD" in hyperv.message
    store.apply(Upsert(Cluster("c1", "VC-CLUSTER", Platform.VSPHERE, nodes=2)))
    [vsphere] = [f for f in engine(store).for_target("vm:b") if f.code == F.MERGE_PENDING]
    assert "Merge-VHD" not in vsphere.message and "Set-VMHardDiskDrive" not in vsphere.message
    assert "linked clone" in vsphere.message and "consolidate" in vsphere.message


def test_backup_leftover_excused_while_a_backup_runs() -> None:
    store = small_cluster()
    eng = engine(store)
    found = {f.code: f for f in eng.for_target("vm:c")}
    assert found[F.BACKUP_LEFTOVER].severity is Severity.WARNING
    assert found[F.BACKUP_LEFTOVER].remedy == "merge"
    assert F.CHECKPOINT_OLD not in found  # a backup checkpoint has its own rule
    store.apply(Upsert(Task("bk", "backup", "vm:c", "dc-03", 10.0, TaskState.RUNNING)))
    assert F.BACKUP_LEFTOVER not in codes(eng, "vm:c")


def test_backup_policy_used_and_provisioned() -> None:
    store = small_cluster()
    eng = engine(store)
    store.apply(Upsert(VirtualDisk("b-d1", "b", "C:\\CS\\db-01.vhdx", DiskFormat.VHDX,
                                   int(100 * GB), int(2500 * GB), None, "l1")))
    assert codes(eng, "vm:b")[F.BACKUP_OVER_POLICY] is Severity.INFO
    store.apply(Upsert(VirtualDisk("b-d1", "b", "C:\\CS\\db-01.vhdx", DiskFormat.VHDX,
                                   int(2100 * GB), int(2500 * GB), None, "l1")))
    assert codes(eng, "vm:b")[F.BACKUP_OVER_POLICY] is Severity.WARNING


def test_unknown_facts_raise_nothing() -> None:
    store = small_cluster()
    eng = engine(store)
    base = vm(store, "b")
    assert base.vss_capable is None and base.dynamic_disks is None and not base.storage_paths
    assert F.BACKUP_OFFLINE_ONLY not in codes(eng, "vm:b")
    store.apply(Upsert(dataclasses.replace(base, integration=IntegrationState.UNKNOWN,
                                           power=PowerState.UNKNOWN)))
    assert codes(eng, "vm:b") == {}
    node = store.node("n1")
    assert node is not None and node.backup_ports_closed is None
    assert codes(eng, "node:n1") == {}


def test_online_backup_eligibility() -> None:
    store = small_cluster()
    eng = engine(store)
    base = vm(store, "b")
    store.apply(Upsert(dataclasses.replace(base, vss_capable=False)))
    f = {x.code: x for x in eng.for_target("vm:b")}[F.BACKUP_OFFLINE_ONLY]
    assert f.severity is Severity.WARNING and "VSS" in f.message
    store.apply(Upsert(dataclasses.replace(base, vss_capable=True, dynamic_disks=True)))
    assert "dynamic disks" in eng.for_target("vm:b")[0].message
    store.apply(Upsert(dataclasses.replace(base, integration=IntegrationState.OFF)))
    assert "integration services" in eng.for_target("vm:b")[0].message
    store.apply(Upsert(dataclasses.replace(base, power=PowerState.OFF)))
    assert codes(eng, "vm:b") == {F.BACKUP_OFFLINE_ONLY: Severity.INFO}
    store.apply(Upsert(dataclasses.replace(base, vss_capable=True, dynamic_disks=False)))
    assert codes(eng, "vm:b") == {}


def test_smb_spread() -> None:
    store = small_cluster()
    eng = engine(store)
    base = vm(store, "b")
    store.apply(Upsert(dataclasses.replace(base, storage_paths=("\\\\fs1\\vms\\db-01",
                                                                "\\\\FS1\\VMs\\db-01\\disks"))))
    assert F.SMB_SPREAD not in codes(eng, "vm:b")  # one share
    store.apply(Upsert(dataclasses.replace(base, storage_paths=("\\\\fs1\\vms\\db-01",
                                                                "\\\\fs2\\data\\db-01"))))
    assert codes(eng, "vm:b")[F.SMB_SPREAD] is Severity.WARNING
    store.apply(Upsert(dataclasses.replace(base, storage_paths=("C:\\ClusterStorage\\Volume1\\x",
                                                                "C:\\ClusterStorage\\Volume2\\x"))))
    assert F.SMB_SPREAD not in codes(eng, "vm:b")  # no SMB share at all


def test_replication_health() -> None:
    store = small_cluster()
    eng = engine(store)
    base = vm(store, "b")
    store.apply(Upsert(dataclasses.replace(base, replication=ReplicationState.REPLICATING,
                                           replication_health=Health.NORMAL)))
    assert codes(eng, "vm:b") == {}
    store.apply(Upsert(dataclasses.replace(base, replication=ReplicationState.REPLICATING,
                                           replication_health=Health.WARNING)))
    assert codes(eng, "vm:b") == {F.REPLICATION_UNHEALTHY: Severity.WARNING}
    store.apply(Upsert(dataclasses.replace(base, replication=ReplicationState.ERROR,
                                           replication_health=Health.CRITICAL)))
    assert codes(eng, "vm:b") == {F.REPLICATION_UNHEALTHY: Severity.CRITICAL}


def test_backup_agent_rules() -> None:
    store = small_cluster()
    eng = engine(store, backup_agent_min_version="12.1")
    n = store.node("n1")
    assert n is not None
    store.apply(Upsert(dataclasses.replace(n, backup_agent_state=ServiceState.MISSING)))
    assert codes(eng, "node:n1") == {F.AGENT_MISSING: Severity.CRITICAL}
    store.apply(Upsert(dataclasses.replace(n, backup_agent_state=ServiceState.STOPPED,
                                           backup_ports_closed=(28001,))))
    assert codes(eng, "node:n1") == {F.AGENT_STOPPED: Severity.CRITICAL}  # ports: it is stopped
    store.apply(Upsert(dataclasses.replace(n, backup_agent_state=ServiceState.RUNNING,
                                           backup_agent_version="11.0.1.1261",
                                           backup_ports_closed=(29000, 30001))))
    found = {f.code: f for f in eng.for_target("node:n1")}
    assert set(found) == {F.AGENT_OLD, F.AGENT_PORTS_CLOSED}
    assert "29000, 30001" in found[F.AGENT_PORTS_CLOSED].message
    store.apply(Upsert(dataclasses.replace(n, backup_agent_state=ServiceState.RUNNING,
                                           backup_agent_version="12.1.2.172",
                                           backup_ports_closed=())))
    assert codes(eng, "node:n1") == {}


def test_backend_findings_carried_through() -> None:
    store = small_cluster()
    eng = engine(store)
    store.apply(FindingRaised(Finding("sim:csv-full:l1", Severity.CRITICAL, "lun:l1",
                                      "CSV_FULL", "CSV-DATA2 is full")))
    found = [f for f in eng.for_target("lun:l1") if f.code == "CSV_FULL"]
    assert len(found) == 1 and found[0].source == "sim:csv-full:l1"
    assert found[0].target_name == "CSV-DATA2"
    assert eng.get(found[0].key) == found[0]
    store.apply(Remove(Kind.FINDING, "sim:csv-full:l1"))
    assert not [f for f in eng.for_target("lun:l1") if f.code == "CSV_FULL"]


def test_only_touched_targets_are_recomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    store = small_cluster()
    eng = engine(store)
    calls: list[str] = []
    real = eng._vm_rules
    monkeypatch.setattr(eng, "_vm_rules", lambda v, now: calls.append(v.id) or real(v, now))
    store.apply(Upsert(dataclasses.replace(vm(store, "b"), memory_mb=4096)))
    assert calls == ["b"]
    calls.clear()
    store.apply(Upsert(VirtualDisk("c-d1", "c", "C:\\CS\\dc-03.vhdx", DiskFormat.VHDX,
                                   int(101 * GB), int(200 * GB), None, "l2")))
    assert calls == ["c"]
    calls.clear()
    lun = store.lun("l1")
    assert lun is not None
    store.apply(Upsert(dataclasses.replace(lun, free_bytes=lun.free_bytes - MB)))
    assert calls == []


def test_since_is_kept_while_a_finding_persists() -> None:
    store = small_cluster()
    now = [NOW]
    eng = FindingsEngine(store, clock=lambda: now[0]).attach()
    first = {f.code: f for f in eng.for_target("vm:a")}[F.CHECKPOINT_OLD]
    assert first.since == NOW - timedelta(days=900) + timedelta(hours=72)  # from the model
    now[0] = NOW + timedelta(hours=1)
    store.apply(Remove(Kind.CHECKPOINT, "a-cp2"))  # message changes (2 checkpoints)
    again = {f.code: f for f in eng.for_target("vm:a")}[F.CHECKPOINT_OLD]
    assert again.message != first.message and again.since == first.since
    lun = {f.code: f for f in eng.for_target("lun:l2")}[F.LUN_LOW_SPACE]
    assert lun.since == NOW  # first seen by the engine
    store.apply(Upsert(dataclasses.replace(store.lun("l2"), free_bytes=int(0.02 * GB))))  # type: ignore[arg-type]
    assert {f.code: f for f in eng.for_target("lun:l2")}[F.LUN_LOW_SPACE].since == NOW


def test_big_deltas_are_drained_in_slices() -> None:
    inv = build_inventory(SimConfig(vms=600, epoch=NOW))
    store = Store()
    eng = FindingsEngine(store, clock=lambda: NOW).attach(eager=False)
    store.apply_many(Upsert(e) for e in inv.entities())
    assert eng.pending >= 600
    while eng.pending:
        eng.drain(0.005)
    eager = FindingsEngine(store, clock=lambda: NOW).attach()
    assert sorted(f.key for f in eng.findings()) == sorted(f.key for f in eager.findings())
    # The incremental counts stay equal to a recount through changes of every kind.
    for vm in list(store.vms())[:50]:
        store.apply(Upsert(dataclasses.replace(vm, power=PowerState.OFF)))
        for cp in store.checkpoints_of(vm.id):
            store.apply(Remove(Kind.CHECKPOINT, cp.id))
    store.apply(FindingRaised(Finding("x", Severity.WARNING, "lun:none", "X", "x")))
    store.apply(FindingRaised(Finding("x", Severity.CRITICAL, "lun:none", "X", "y")))
    assert eng.counts == F.count_by_severity(eng.findings()) | {Severity.BLOCKING: 0}
    store.apply(Remove(Kind.FINDING, "x"))
    assert eng.counts == F.count_by_severity(eng.findings()) | {Severity.BLOCKING: 0}


def test_deferred_queues_even_small_slices_and_drains_to_the_same_findings() -> None:
    """A bulk load in small slices (each touching a few VMs) computes nothing inline
    while deferred; drained, the findings are those of an eager engine; after it a
    single change is computed inline again."""
    inv = build_inventory(SimConfig(vms=300, epoch=NOW))
    store = Store()
    eng = FindingsEngine(store, clock=lambda: NOW).attach(eager=False)
    events = [Upsert(e) for e in inv.entities()]
    with eng.deferred():
        for start in range(0, len(events), 20):  # ~20 VMs or fewer per slice
            store.apply_many(events[start : start + 20])
            assert not [f for f in eng.findings()  # VMs queued, not computed
                        if f.source == "rules" and f.target.startswith("vm:")]
    assert eng.backlog_after == 256 and eng.pending >= 300
    while eng.pending:
        eng.drain(0.005)
    eager = FindingsEngine(store, clock=lambda: NOW).attach()
    assert sorted(f.key for f in eng.findings()) == sorted(f.key for f in eager.findings())
    vm = next(v for v in store.vms() if store.checkpoints_of(v.id))
    store.apply(Remove(Kind.CHECKPOINT, store.checkpoints_of(vm.id)[0].id))
    assert eng.pending == 0  # one change: computed inline, as always


def test_the_sim_shows_each_bad_case() -> None:
    inv = build_inventory(SimConfig(epoch=NOW))
    store = Store()
    store.apply_many(Upsert(e) for e in inv.entities())
    eng = FindingsEngine(store, clock=lambda: NOW).attach()
    by_code: dict[str, int] = {}
    for f in eng.findings():
        by_code[f.code] = by_code.get(f.code, 0) + 1
    for code in (F.CHECKPOINT_OLD, F.CHAIN_DEEP, F.CHAIN_BROKEN, F.BACKUP_LEFTOVER,
                 F.BACKUP_OFFLINE_ONLY, F.SMB_SPREAD, F.LUN_LOW_SPACE, F.AGENT_STOPPED,
                 F.AGENT_OLD, F.AGENT_PORTS_CLOSED, F.BACKUP_OVER_POLICY, F.DIFF_LARGE):
        assert by_code.get(code), code
    assert by_code[F.CHAIN_BROKEN] == 2 and by_code[F.SMB_SPREAD] == 2
    # The 74-VM lab keeps its shape: the same VMs and LUN figures as before the facts.
    assert len(inv.vms) == 74 and len(inv.luns) == 18


def test_config_findings_table(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[findings]\ncheckpoint_warn_hours = 24\ndifferencing_pct = 30\n"
                    "backup_max_gb = 1024\nbackup_agent_ports = [1, 2]\n")
    cfg = load_config(path).findings
    assert cfg.checkpoint_warn_age == timedelta(hours=24)
    assert cfg.checkpoint_critical_age == timedelta(days=30)
    assert cfg.differencing_pct == 30.0 and cfg.backup_max_bytes == 1024 * GB
    assert cfg.backup_agent_ports == (1, 2)
    path.write_text("[findings]\nchekpoint_warn_hours = 24\n")
    with pytest.raises(ConfigError, match="unknown \\[findings\\] keys"):
        load_config(path)
    path.write_text("[findings]\nlun_warn_pct = 3\n")
    with pytest.raises(ConfigError, match="lun_critical_pct"):
        load_config(path)


# -- acknowledgements ---------------------------------------------------------------

def _finding(eng: FindingsEngine, target: str, code: str) -> F.LiveFinding:
    return {f.code: f for f in eng.for_target(target)}[code]


def test_ack_persists_and_is_audited(tmp_path: Path) -> None:
    eng = engine()
    log = ActionLog.open(tmp_path / "actions.db")
    book = AckBook.open(log.path)
    f = _finding(eng, "vm:a", F.CHECKPOINT_OLD)
    book.acknowledge(f, "owner says after month-end", NOW)
    audit(log, action="acknowledge", finding=f, reason="owner says after month-end",
          target_system="HVCLUSTER01", mode="read-only")
    assert book.covering(f, NOW) is not None
    assert f not in [x for x, _ in open_findings(eng, book, NOW)]
    assert open_counts(eng, book, NOW) == F.count_by_severity(
        x for x, _ in open_findings(eng, book, NOW)) | {Severity.BLOCKING: 0}
    book.close()
    again = AckBook.open(log.path)
    ack = again.covering(f, NOW + timedelta(days=3))
    assert ack is not None and ack.reason == "owner says after month-end"
    row = log.rows(limit=1)[0]
    assert (row.action, row.target_object, row.mode, row.outcome) == (
        "acknowledge", "vm:a", "read-only", "ok")
    assert row.plan_data()["code"] == F.CHECKPOINT_OLD
    with pytest.raises(ValueError):
        again.acknowledge(f, "   ", NOW)


def test_ack_ends_when_the_problem_clears_beyond_the_grace(tmp_path: Path) -> None:
    store = small_cluster()
    now = [NOW]
    eng = FindingsEngine(store, clock=lambda: now[0]).attach()
    book = AckBook.open(tmp_path / "a.db", grace=timedelta(minutes=15))
    follow(eng, book, lambda: now[0])
    lun = store.lun("l2")
    assert lun is not None
    f = _finding(eng, "lun:l2", F.LUN_LOW_SPACE)
    book.acknowledge(f, "known, vendor ticket 123", now[0])
    # Flaps within the grace: still acknowledged.
    store.apply(Upsert(dataclasses.replace(lun, free_bytes=int(1000 * GB))))
    now[0] += timedelta(minutes=5)
    store.apply(Upsert(lun))
    assert book.covering(_finding(eng, "lun:l2", F.LUN_LOW_SPACE), now[0]) is not None
    # Clears for longer than the grace, then comes back: a new problem.
    store.apply(Upsert(dataclasses.replace(lun, free_bytes=int(1000 * GB))))
    now[0] += timedelta(hours=1)
    store.apply(Upsert(lun))
    assert book.covering(_finding(eng, "lun:l2", F.LUN_LOW_SPACE), now[0]) is None
    assert book.get("lun:l2", F.LUN_LOW_SPACE) is None


def test_snooze_expires_by_itself_and_escalation_shows(tmp_path: Path) -> None:
    store = small_cluster()
    eng = engine(store)
    book = AckBook.open(tmp_path / "a.db")
    f = _finding(eng, "vm:c", F.BACKUP_LEFTOVER)
    assert f.severity is Severity.WARNING
    book.snooze(f, NOW + timedelta(hours=4), "backup team on it", NOW)
    assert book.covering(f, NOW + timedelta(hours=3)) is not None
    assert book.covering(f, NOW + timedelta(hours=4)) is None
    worse = dataclasses.replace(f, severity=Severity.CRITICAL)
    assert book.covering(worse, NOW) is None  # more severe than when snoozed
    assert book.expire(NOW + timedelta(hours=5)) == 1
    reopened = AckBook.open(tmp_path / "a.db")
    assert reopened.get(f.target, f.code) is None


def test_parse_until() -> None:
    assert parse_until("4h", NOW) == NOW + timedelta(hours=4)
    assert parse_until("30m", NOW) == NOW + timedelta(minutes=30)
    assert parse_until("2d", NOW) == NOW + timedelta(days=2)
    assert parse_until("2026-11-24T08:00", NOW) == NOW.replace(day=24, hour=8)
    assert parse_until("2026-11-24 08:00+01:00", NOW) == NOW.replace(day=24, hour=7)
    for bad in ("soon", "2020-01-01T00:00", "0h", ""):
        with pytest.raises(ValueError):
            parse_until(bad, NOW)


def test_lun_quorum_is_not_a_space_finding() -> None:
    store = small_cluster()
    store.apply(Upsert(Lun("q", "Quorum", "c1", GB, 10 * MB, role=F.LunRole.QUORUM)))
    store.apply(Upsert(Node("n3", "HV-NODE-03", "c1")))
    eng = engine(store)
    assert codes(eng, "lun:q") == {}


def test_remedies_follow_the_vms_platform() -> None:
    """A vSphere VM's snapshot findings offer vSphere's actions, a Hyper-V VM's
    the merge; the platform is the VM's cluster's, and a cluster arriving (or
    changing platform) after its VMs updates their remedies. The findings name
    console commands; the action registry says what each opens on the platform."""
    from ventana.backends import actionspecs
    from ventana.state.model import Cluster, Platform
    from ventana.state.plans_vsphere import CONSOLIDATE, REMOVE_ALL

    def with_registry(store: Store) -> FindingsEngine:
        return FindingsEngine(store, FindingsConfig(), clock=lambda: NOW,
                              actions=actionspecs.action_for).attach()

    store = small_cluster()
    eng = with_registry(store)
    bare = engine(store)  # no registry: the remedies are the commands themselves
    backup = next(c for c in store.checkpoints_of("c"))
    store.apply(Upsert(dataclasses.replace(backup, created=NOW - timedelta(days=40))))
    store.apply(Upsert(dataclasses.replace(vm(store, "b"), consolidation_needed=True)))

    def remedies(e: FindingsEngine = eng) -> dict[tuple[str, str], str | None]:
        return {(f.target, f.code): f.remedy for f in e.findings() if f.target.startswith("vm:")}

    hyperv = remedies()
    assert hyperv[("vm:a", F.CHECKPOINT_OLD)] == "merge"
    assert hyperv[("vm:c", F.BACKUP_LEFTOVER)] == "merge"
    assert hyperv[("vm:b", F.MERGE_PENDING)] == "merge"

    store.apply(Upsert(Cluster("c1", "VC-CLUSTER", Platform.VSPHERE, nodes=2)))
    vsphere = remedies()
    assert vsphere[("vm:a", F.CHECKPOINT_OLD)] == REMOVE_ALL == "remove-all-snapshots"
    assert vsphere[("vm:c", F.BACKUP_LEFTOVER)] == REMOVE_ALL
    assert vsphere[("vm:b", F.MERGE_PENDING)] == CONSOLIDATE == "consolidate"
    assert remedies(bare)[("vm:a", F.CHECKPOINT_OLD)] == "merge"  # the command
    assert remedies(bare)[("vm:b", F.MERGE_PENDING)] == "consolidate"
    # Each remedy is a guarded action the console can plan and run, on that platform.
    for name in {r for r in vsphere.values() if r}:
        assert Platform.VSPHERE in actionspecs.get(name).platforms
    # The same answer from a fresh engine (the full computation path).
    fresh = {(f.target, f.code): f.remedy for f in with_registry(store).findings()
             if f.target.startswith("vm:")}
    assert fresh == vsphere

    # A VM whose cluster is not known yet: Hyper-V's remedies (the default).
    store.apply(Remove(Kind.CLUSTER, "c1"))
    assert remedies() == hyperv
