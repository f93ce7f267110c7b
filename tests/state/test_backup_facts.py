"""Backup facts (issue 15) in the findings rules and the vSphere snapshot plans,
from hand-built stores: each rule raised, cleared, and silent while the fact is
not reported (None) — the same rules whatever the backend."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from factories import NOW, small_cluster

from ventana.state import findings as F
from ventana.state.config import ConfigError, load_config
from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    IntegrationState,
    Lun,
    LunRole,
    Node,
    Platform,
    PowerState,
    Severity,
)
from ventana.state.plans_vsphere import plan_consolidate, plan_create_snapshot, plan_remove_all
from ventana.state.store import Store


def engine(store: Store, **cfg: object) -> FindingsEngine:
    return FindingsEngine(store, FindingsConfig(**cfg), clock=lambda: NOW).attach()  # type: ignore[arg-type]


def found(eng: FindingsEngine, vm_id: str) -> dict[str, F.LiveFinding]:
    return {f.code: f for f in eng.for_target(f"vm:{vm_id}")}


def put(store: Store, vm_id: str, **facts: object) -> VM:
    vm = store.vm(vm_id)
    assert vm is not None
    new = dataclasses.replace(vm, **facts)  # type: ignore[arg-type]
    store.apply(Upsert(new))
    return new


NEW_CODES = {F.SNAPSHOT_SKIPS_DISKS, F.TOOLS_NOT_READY, F.CBT_OFF}


def test_unreported_facts_raise_nothing() -> None:
    store = small_cluster()
    eng = engine(store)
    vm = store.vm("b")
    assert vm is not None
    assert (vm.tools_version_status, vm.independent_disks, vm.physical_rdms,
            vm.cbt_enabled) == (None, None, None, None)
    # Integration services off on a Hyper-V VM: no VMware Tools finding.
    put(store, "b", integration=IntegrationState.OFF)
    assert not NEW_CODES & set(found(eng, "b"))


def test_disks_a_snapshot_leaves_out() -> None:
    store = small_cluster()
    eng = engine(store)
    put(store, "b", independent_disks=("Hard disk 2",), physical_rdms=("Hard disk 3",))
    f = found(eng, "b")[F.SNAPSHOT_SKIPS_DISKS]
    assert f.severity is Severity.WARNING and f.remedy is None
    assert "Hard disk 2" in f.message and "Hard disk 3 (physical RDM)" in f.message
    assert "silently" in f.message
    put(store, "b", independent_disks=(), physical_rdms=("Hard disk 3",))
    assert "Hard disk 2" not in found(eng, "b")[F.SNAPSHOT_SKIPS_DISKS].message
    put(store, "b", independent_disks=(), physical_rdms=())
    assert F.SNAPSHOT_SKIPS_DISKS not in found(eng, "b")
    put(store, "b", independent_disks=None, physical_rdms=None)
    assert F.SNAPSHOT_SKIPS_DISKS not in found(eng, "b")


@pytest.mark.parametrize(("power", "integration", "version", "expect"), [
    (PowerState.RUNNING, IntegrationState.OFF, "guestToolsCurrent", Severity.WARNING),
    (PowerState.RUNNING, IntegrationState.OK, "guestToolsNotInstalled", Severity.WARNING),
    (PowerState.OFF, IntegrationState.OFF, "guestToolsNotInstalled", Severity.WARNING),
    (PowerState.RUNNING, IntegrationState.OK, "guestToolsNeedUpgrade", Severity.INFO),
    (PowerState.RUNNING, IntegrationState.OFF, "guestToolsTooOld", Severity.WARNING),
    (PowerState.RUNNING, IntegrationState.OK, "guestToolsCurrent", None),
    (PowerState.RUNNING, IntegrationState.OK, "guestToolsUnmanaged", None),  # open-vm-tools
    (PowerState.OFF, IntegrationState.OFF, "guestToolsCurrent", None),  # off: nothing runs
    (PowerState.RUNNING, IntegrationState.UNKNOWN, "guestToolsCurrent", None),
    (PowerState.RUNNING, IntegrationState.OFF, None, None),  # not reported
])
def test_tools_for_a_quiesced_snapshot(power: PowerState, integration: IntegrationState,
                                       version: str | None, expect: Severity | None) -> None:
    store = small_cluster()
    eng = engine(store)
    put(store, "b", power=power, integration=integration, tools_version_status=version)
    f = found(eng, "b").get(F.TOOLS_NOT_READY)
    if expect is None:
        assert f is None
        return
    assert f is not None and f.severity is expect
    assert "quiesced" in f.message and f.message[0].isupper()


def test_cbt_off_on_a_vm_a_backup_policy_covers() -> None:
    store = small_cluster()
    eng = engine(store)
    name = put(store, "b", cbt_enabled=False).name
    f = found(eng, "b")[F.CBT_OFF]
    assert f.severity is Severity.INFO and "Changed-block tracking is off" in f.message
    put(store, "b", cbt_enabled=True)
    assert F.CBT_OFF not in found(eng, "b")
    put(store, "b", cbt_enabled=None)
    assert F.CBT_OFF not in found(eng, "b")
    # Only the VMs the policy names (case-insensitive patterns).
    store2 = small_cluster()
    covered = engine(store2, backup_policy_vms=(name.upper()[:2] + "*",))
    put(store2, "b", cbt_enabled=False)
    assert F.CBT_OFF in found(covered, "b")
    store3 = small_cluster()
    none_covered = engine(store3, backup_policy_vms=("no-such-vm-*",))
    put(store3, "b", cbt_enabled=False)
    assert F.CBT_OFF not in found(none_covered, "b")
    store4 = small_cluster()
    empty = engine(store4, backup_policy_vms=())
    put(store4, "b", cbt_enabled=False)
    assert F.CBT_OFF not in found(empty, "b")


def test_backup_policy_vms_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[findings]\nbackup_policy_vms = ["sql-*", "web-0?"]\n')
    assert load_config(path).findings.backup_policy_vms == ("sql-*", "web-0?")
    path.write_text('[findings]\nbackup_policy_vms = "sql-*"\n')
    with pytest.raises(ConfigError, match="backup_policy_vms"):
        load_config(path)
    assert FindingsConfig().backup_policy_vms == ("*",)


# -- plans ------------------------------------------------------------------------------
def vcenter(**facts: object) -> Store:
    store = Store()
    snap = Checkpoint("snap-1", "vm-1", "before patch", None, CheckpointKind.STANDARD,
                      NOW - timedelta(days=1), size_bytes=int(1 * GB))
    store.apply_many([
        ConnectionChanged("vc", LinkState.CONNECTED),
        Upsert(Cluster("c1", "DC0_C0", Platform.VSPHERE, nodes=1)),
        Upsert(Node("h1", "esx01", "c1")),
        Upsert(Lun("ds1", "LocalDS_0", "c1", int(2000 * GB), int(500 * GB),
                   role=LunRole.DATASTORE)),
        Upsert(VM("vm-1", "sql-01", "c1", "h1", lun_id="ds1",
                  **({"power": PowerState.RUNNING} | facts))),  # type: ignore[arg-type]
        Upsert(snap),
    ])
    return store


def pre(plan: object) -> dict[str, tuple[Severity, str]]:
    return {f.code: (f.severity, f.message) for f in plan.findings}  # type: ignore[attr-defined]


KNOWN_CLEAN = {"template": False, "fault_tolerance": "notConfigured", "independent_disks": (),
               "physical_rdms": (), "shared_buses": (), "passthrough_devices": ()}


@pytest.mark.parametrize(("facts", "needle"), [
    ({"template": True}, "the VM is a template"),
    ({"fault_tolerance": "running"}, "Fault Tolerance is configured (running)"),
    ({"physical_rdms": ("Hard disk 3",)}, "Hard disk 3 is a physical-mode RDM"),
    ({"shared_buses": ("SCSI controller 1 (physicalSharing)",)}, "shares its SCSI bus"),
    ({"passthrough_devices": ("PCI device 0",)}, "DirectPath I/O device on a running VM"),
])
def test_create_plan_blocks_where_the_executor_refuses(facts: dict[str, object],
                                                       needle: str) -> None:
    clean = pre(plan_create_snapshot(vcenter(**KNOWN_CLEAN), "vm-1", NOW))
    assert "SNAPSHOT_UNSUPPORTED" not in clean and "INDEPENDENT_DISKS" not in clean
    plan = plan_create_snapshot(vcenter(**(KNOWN_CLEAN | facts)), "vm-1", NOW)
    severity, message = pre(plan)["SNAPSHOT_UNSUPPORTED"]
    assert severity is Severity.BLOCKING and needle in message
    assert plan.blocking  # type: ignore[attr-defined]


def test_passthrough_blocks_only_a_running_vm() -> None:
    store = vcenter(passthrough_devices=("PCI device 0",), power=PowerState.OFF)
    assert "SNAPSHOT_UNSUPPORTED" not in pre(plan_create_snapshot(store, "vm-1", NOW))


def test_independent_disks_warn_or_block_a_memory_snapshot() -> None:
    store = vcenter(independent_disks=("Hard disk 2",))
    severity, message = pre(plan_create_snapshot(store, "vm-1", NOW))["INDEPENDENT_DISKS"]
    assert severity is Severity.WARNING and "Hard disk 2" in message
    severity, message = pre(plan_create_snapshot(store, "vm-1", NOW, memory=True))[
        "INDEPENDENT_DISKS"]
    assert severity is Severity.BLOCKING and "memory snapshot" in message
    off = vcenter(independent_disks=("Hard disk 2",), power=PowerState.OFF)
    assert pre(plan_create_snapshot(off, "vm-1", NOW, memory=True))["INDEPENDENT_DISKS"][0] \
        is Severity.WARNING
    severity, message = pre(plan_remove_all(store, "vm-1", NOW))["INDEPENDENT_DISKS"]
    assert severity is Severity.WARNING and "Hard disk 2" in message
    rdm = vcenter(physical_rdms=("Hard disk 3",))
    assert "Hard disk 3 (physical RDM)" in pre(plan_remove_all(rdm, "vm-1", NOW))[
        "INDEPENDENT_DISKS"][1]


def test_unknown_facts_add_no_preflight() -> None:
    store = vcenter()  # nothing reported
    codes = set(pre(plan_create_snapshot(store, "vm-1", NOW, memory=True)))
    codes |= set(pre(plan_create_snapshot(store, "vm-1", NOW, quiesce=True)))
    codes |= set(pre(plan_remove_all(store, "vm-1", NOW)))
    codes |= set(pre(plan_consolidate(store, "vm-1", NOW)))
    assert not {"SNAPSHOT_UNSUPPORTED", "INDEPENDENT_DISKS", "QUIESCE_NEEDS_TOOLS"} & codes


def test_quiesce_without_running_tools_warns() -> None:
    store = vcenter(integration=IntegrationState.OFF, tools_version_status="guestToolsCurrent")
    assert "QUIESCE_NEEDS_TOOLS" not in pre(plan_create_snapshot(store, "vm-1", NOW))
    severity, _ = pre(plan_create_snapshot(store, "vm-1", NOW, quiesce=True))[
        "QUIESCE_NEEDS_TOOLS"]
    assert severity is Severity.WARNING
    fine = vcenter(integration=IntegrationState.OK, tools_version_status="guestToolsCurrent")
    assert "QUIESCE_NEEDS_TOOLS" not in pre(plan_create_snapshot(fine, "vm-1", NOW,
                                                                quiesce=True))
