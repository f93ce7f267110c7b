"""vSphere plans and pre-flight, from a hand-built store (no server)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from datetime import timedelta

import pytest
from factories import NOW

from ventana.state import plans_vsphere as pv
from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    Lun,
    LunRole,
    Node,
    Platform,
    PowerState,
    Severity,
    Task,
    TaskState,
)
from ventana.state.plans_vsphere import (
    CONSOLIDATE,
    CREATE_SNAPSHOT,
    ESTIMATES,
    REMOVE_ALL,
    REMOVE_SNAPSHOT,
    SETTINGS,
    ServerEstimate,
)
from ventana.state.store import Store

HOSTILE = "o'brien; rm -rf / $(id) `x`"


@pytest.fixture(autouse=True)
def clean_settings() -> Iterator[None]:
    saved = (SETTINGS.backup_window, SETTINGS.stun_budget_ms, dict(SETTINGS.stun_budget_by_vm),
             dict(SETTINGS.guest_hooks))
    ESTIMATES.clear()
    yield
    (SETTINGS.backup_window, SETTINGS.stun_budget_ms, SETTINGS.stun_budget_by_vm,
     SETTINGS.guest_hooks) = saved
    ESTIMATES.clear()


def vcenter(*snapshots: Checkpoint, free_gb: float = 500, name: str = "sql-01",
            consolidation: bool = False, last_stun_ms: float | None = None) -> Store:
    store = Store()
    store.apply_many([
        ConnectionChanged("vc", LinkState.CONNECTED),
        Upsert(Cluster("c1", "DC0_C0", Platform.VSPHERE, nodes=1)),
        Upsert(Node("h1", "esx01", "c1")),
        Upsert(Lun("ds1", "LocalDS_0", "c1", int(2000 * GB), int(free_gb * GB),
                   role=LunRole.DATASTORE)),
        Upsert(VM("vm-1", name, "c1", "h1", PowerState.RUNNING, lun_id="ds1",
                  consolidation_needed=consolidation, last_stun_ms=last_stun_ms,
                  stun_at=NOW - timedelta(hours=1) if last_stun_ms else None)),
        *[Upsert(s) for s in snapshots],
    ])
    return store


def snap(sid: str, name: str, parent: str | None = None, *, gb: float = 10,
         kind: CheckpointKind = CheckpointKind.STANDARD, age: timedelta = timedelta(days=3),
         ) -> Checkpoint:
    return Checkpoint(sid, "vm-1", name, parent, kind, NOW - age, f"[LocalDS_0] {sid}.vmdk",
                      int(gb * GB), quiesced=False, memory=False)


def codes(plan, severity: Severity | None = None) -> set[str]:
    return {f.code for f in plan.findings if severity is None or f.severity is severity}


def test_commands_quote_hostile_names_for_shell_and_powershell() -> None:
    store = vcenter(snap("snapshot-1", HOSTILE), name=HOSTILE)
    plan = pv.plan_remove_snapshot(store, "vm-1", NOW, snapshot="snapshot-1")
    govc, powercli = plan.command.split("\n")
    words = shlex.split(govc.removeprefix("govc: "))
    assert words == ["govc", "snapshot.remove", "-vm", HOSTILE, "snapshot-1"]  # by moref
    assert "'o''brien; rm -rf / $(id) `x`'" in powercli
    assert "-Id 'VirtualMachineSnapshot-snapshot-1'" in powercli  # names need not be unique
    plan = pv.plan_create_snapshot(store, "vm-1", NOW, name=HOSTILE, quiesce=True)
    govc = plan.command.split("\n")[0].removeprefix("govc: ")
    assert shlex.split(govc)[-1] == HOSTILE and "-q=true" in govc


def test_remove_one_with_or_without_children() -> None:
    store = vcenter(snap("s1", "base", gb=10), snap("s2", "child", "s1", gb=20),
                    snap("s3", "grandchild", "s2", gb=30))
    one = pv.plan_remove_snapshot(store, "vm-1", NOW, snapshot="s2")
    assert one.params == {"snapshot": "s2", "children": False}
    assert one.facts["delta_bytes"] == 20 * GB and "re-parented" in one.steps[2]
    tree = pv.plan_remove_snapshot(store, "vm-1", NOW, snapshot="s2", children=True)
    assert tree.facts["delta_bytes"] == 50 * GB and "-RemoveChildren" in tree.command
    with pytest.raises(KeyError):
        pv.plan_remove_snapshot(store, "vm-1", NOW, snapshot="gone")


def test_a_young_backup_snapshot_blocks_an_old_one_warns() -> None:
    young = snap("s1", "VEEAM BACKUP TEMPORARY SNAPSHOT", kind=CheckpointKind.BACKUP,
                 age=timedelta(hours=1))
    old = snap("s2", "Veeam leftover", kind=CheckpointKind.BACKUP, age=timedelta(days=9))
    store = vcenter(young, old)
    assert "BACKUP_IN_PROGRESS" in codes(pv.plan_remove_all(store, "vm-1", NOW),
                                         Severity.BLOCKING)
    plan = pv.plan_remove_snapshot(store, "vm-1", NOW, snapshot="s2")
    assert "BACKUP_IN_PROGRESS" not in codes(plan)
    assert "BACKUP_SNAPSHOT" in codes(plan, Severity.WARNING)
    SETTINGS.backup_window = timedelta(minutes=30)  # configurable
    assert "BACKUP_IN_PROGRESS" not in codes(pv.plan_remove_all(store, "vm-1", NOW))


def test_busy_vm_and_stale_data_block() -> None:
    store = vcenter(snap("s1", "a"))
    store.apply(Upsert(Task("task-9", "VirtualMachine.relocate", "vm:vm-1", "sql-01", 10,
                            TaskState.RUNNING)))
    for plan in (pv.plan_remove_all(store, "vm-1", NOW),
                 pv.plan_remove_snapshot(store, "vm-1", NOW, snapshot="s1"),
                 pv.plan_create_snapshot(store, "vm-1", NOW)):
        assert "VM_BUSY" in codes(plan, Severity.BLOCKING)
    store.apply(ConnectionChanged("vc", LinkState.STALE, "lost"))
    assert "STALE_DATA" in codes(pv.plan_remove_all(store, "vm-1", NOW), Severity.BLOCKING)


def test_space_from_the_servers_estimate_when_it_matches_the_snapshots() -> None:
    store = vcenter(snap("s1", "a", gb=5), free_gb=50)
    assert "NO_SPACE" not in codes(pv.plan_remove_all(store, "vm-1", NOW))
    ESTIMATES["vm-1"] = ServerEstimate({"ds1": int(80 * GB)}, frozenset({"s1"}), NOW)
    plan = pv.plan_remove_all(store, "vm-1", NOW)
    assert "NO_SPACE" in codes(plan, Severity.BLOCKING)
    assert plan.space_needed == 80 * GB and "vCenter" in plan.facts["space_basis"]
    # Another snapshot appeared since: the estimate no longer applies.
    store.apply(Upsert(snap("s2", "b", "s1", gb=1)))
    plan = pv.plan_remove_all(store, "vm-1", NOW)
    assert "NO_SPACE" not in codes(plan) and "layoutEx" in plan.facts["space_basis"]


def test_the_estimate_is_a_lower_bound_never_below_the_delta_files() -> None:
    store = vcenter(snap("s1", "a", gb=40), free_gb=50)
    ESTIMATES["vm-1"] = ServerEstimate({"ds1": int(1 * GB)}, frozenset({"s1"}), NOW)
    plan = pv.plan_remove_all(store, "vm-1", NOW)
    assert plan.space_needed == 40 * GB  # max(estimate, delta), not the smaller estimate
    assert "larger of" in plan.facts["space_basis"]


def test_space_is_checked_on_the_datastore_of_the_delta_files() -> None:
    """The VM's home (ds1) has room; its deltas live on ds2 (another path), which
    has not: NO_SPACE names ds2 — not the VM's first or home datastore."""
    from ventana.state.model import DiskFormat, VirtualDisk

    store = vcenter(free_gb=500)
    delta = snap("s1", "on-other-ds", gb=30)
    delta = Checkpoint(delta.id, delta.vm_id, delta.name, None, delta.kind, delta.created,
                       "[Fast_DS] vm-1/disk-000001.vmdk", delta.size_bytes)
    store.apply_many([
        Upsert(Lun("ds2", "Fast_DS", "c1", int(100 * GB), int(20 * GB),
                   role=LunRole.DATASTORE)),
        Upsert(VirtualDisk("vm-1:[Fast_DS] vm-1/disk-000001.vmdk", "vm-1",
                           "[Fast_DS] vm-1/disk-000001.vmdk", DiskFormat.VMDK, int(30 * GB),
                           int(100 * GB),
                           parent_path="[Fast_DS] vm-1/disk.vmdk", lun_id="ds2")),
        Upsert(delta),
    ])
    plan = pv.plan_remove_all(store, "vm-1", NOW)
    [finding] = [f for f in plan.findings if f.code == "NO_SPACE"]
    assert "Fast_DS" in finding.message
    assert plan.lun_id == "ds2" and plan.space_needed == 30 * GB


def test_the_32_snapshot_limit_is_per_chain_not_per_tree() -> None:
    # 40 snapshots side by side (each a root): 40 in the tree, chains of 1.
    wide = vcenter(*[snap(f"w{i}", f"w{i}") for i in range(40)])
    assert "TOO_MANY_SNAPSHOTS" not in codes(pv.plan_create_snapshot(wide, "vm-1", NOW))
    # 31 in one chain: the next one would be the 32nd of that chain.
    deep = vcenter(*[snap(f"d{i}", f"d{i}", f"d{i - 1}" if i else None) for i in range(31)])
    assert "TOO_MANY_SNAPSHOTS" in codes(pv.plan_create_snapshot(deep, "vm-1", NOW),
                                         Severity.BLOCKING)


def test_stun_estimate_and_last_stun_warn_over_the_vms_budget() -> None:
    store = vcenter(snap("s1", "big", gb=400))
    plan = pv.plan_remove_all(store, "vm-1", NOW)
    assert plan.facts["estimated_stun_s"] == pytest.approx(8.2)
    assert "LONG_STUN" in codes(plan, Severity.WARNING)
    SETTINGS.stun_budget_by_vm["sql-01"] = 10_000
    assert "LONG_STUN" not in codes(pv.plan_remove_all(store, "vm-1", NOW))
    store = vcenter(snap("s1", "small", gb=1), last_stun_ms=3_500)
    SETTINGS.stun_budget_by_vm["sql-01"] = 3_000  # e.g. a mirror's QoS timeout / 2
    plan = pv.plan_create_snapshot(store, "vm-1", NOW)
    assert "LAST_STUN_LONG" in codes(plan, Severity.WARNING)


def test_consolidate_needs_the_flag_and_create_needs_one_mode() -> None:
    store = vcenter()
    assert "NOTHING_TO_CONSOLIDATE" in codes(pv.plan_consolidate(store, "vm-1", NOW),
                                             Severity.BLOCKING)
    assert "NOTHING_TO_REMOVE" in codes(pv.plan_remove_all(store, "vm-1", NOW),
                                        Severity.BLOCKING)
    store = vcenter(consolidation=True)
    plan = pv.plan_consolidate(store, "vm-1", NOW)
    assert not plan.blocking and plan.action == CONSOLIDATE
    plan = pv.plan_create_snapshot(store, "vm-1", NOW, quiesce=True, memory=True)
    assert "QUIESCE_AND_MEMORY" in codes(plan, Severity.BLOCKING)


def test_create_snapshot_shows_the_guest_hooks() -> None:
    SETTINGS.guest_hooks["sql-01"] = {"pre_freeze": "/opt/db/freeze.sh",
                                      "post_thaw": "/opt/db/thaw.sh"}
    plan = pv.plan_create_snapshot(vcenter(), "vm-1", NOW, name="pre-patch")
    assert plan.action == CREATE_SNAPSHOT and not plan.destructive
    assert plan.steps[0].endswith("/opt/db/freeze.sh") and "thaw.sh" in plan.steps[-1]
    assert plan.facts["pre_freeze"] == "/opt/db/freeze.sh"
    assert plan.params == {"name": "pre-patch", "quiesce": False, "memory": False}


def test_registered_on_the_guarded_path() -> None:
    from ventana.backends import actionspecs
    from ventana.state.model import Platform

    for action in (REMOVE_SNAPSHOT, REMOVE_ALL, CONSOLIDATE, CREATE_SNAPSHOT):
        assert actionspecs.get(action).platforms == {Platform.VSPHERE}
    # "merge" on a vSphere VM is the removal of all its snapshots; on Hyper-V, the merge.
    assert actionspecs.action_for("merge", Platform.VSPHERE) == REMOVE_ALL
    assert actionspecs.action_for("merge", Platform.HYPERV) == "merge"


def test_vsphere_is_read_only_unless_asked(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ventana.backends.vsphere.backend import DEFAULT_ENV
    from ventana.state.config import load_config
    from ventana.tui.cli import _vsphere_backend, build_parser, main_with

    monkeypatch.setenv(DEFAULT_ENV, "not-used")
    base = ["--vsphere", "vc01:443", "--user", "ops@vsphere.local"]
    assert _vsphere_backend(build_parser().parse_args(base)).read_only
    assert not _vsphere_backend(build_parser().parse_args([*base, "--read-write"])).read_only
    assert _vsphere_backend(build_parser().parse_args([*base, "--read-write",
                                                       "--read-only"])).read_only
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[target]]\nname = "vc"\nkind = "vsphere"\nhost = "vc01"\n'
                   'user = "ops@vsphere.local"\nread_only = false\n'
                   '[stun]\nbudget_ms = -5\n')
    config = load_config(cfg)
    assert config.sections == {"stun": {"budget_ms": -5}}
    args = build_parser().parse_args(["--target", "vc"])
    # The config's read_only = false reaches the backend; a bad [stun] table stops
    # the console before it starts, with the reason.
    assert main_with(args, config, tmp_path / "a.db") == 2
    assert args.read_write
    assert "[stun] budget_ms must be a positive number" in capsys.readouterr().err


def test_configure_reads_the_tables() -> None:
    pv.configure({"stun": {"budget_ms": 1500, "vm": {"sql-01": 4000}},
                  "vsphere": {"backup_window_h": 2},
                  "guest": {"sql-01": {"pre_freeze": "f", "post_thaw": "t", "address": "x"}}})
    assert SETTINGS.stun_budget_ms == 1500 and SETTINGS.stun_budget_by_vm["sql-01"] == 4000
    assert SETTINGS.backup_window == timedelta(hours=2)
    assert SETTINGS.guest_hooks["sql-01"] == {"pre_freeze": "f", "post_thaw": "t"}
    with pytest.raises(ValueError):
        pv.configure({"vsphere": {"backup_window_h": "4h"}})


def test_vsphere_names_escape_both_ways_and_either_form_confirms() -> None:
    from ventana.state.vsphere_names import escape, typed_matches, unescape

    shown = "VM Snapshot 11/13/2019, 50% \\ done"
    reported = "VM Snapshot 11%2f13%2f2019, 50%25 %5c done"
    assert escape(shown) == reported and unescape(reported) == shown
    assert unescape("a%2Fb%5Cc%2525") == "a/b\\c%25"  # one level only, any case
    assert unescape("100%20off") == "100%20off"  # other %XX stay
    assert typed_matches(shown, shown) and typed_matches(reported, shown)
    assert not typed_matches("", "a") and not typed_matches(reported, reported + "x")
    assert not typed_matches("vm snapshot 11/13/2019, 50% \\ done", shown)  # no case folding
    assert not typed_matches(shown + " ", shown) and not typed_matches(unescape(shown), "x")


def test_only_a_vsphere_plan_takes_the_escaped_form_of_its_name() -> None:
    """vCenter's escaping is vCenter's: a Hyper-V plan is confirmed by the name
    exactly as shown, nothing else."""
    from ventana.state.plans import Plan

    def plan(platform: str) -> Plan:
        return Plan(action="x", target="vm:1", target_name="web/01 50%", steps=(),
                    findings=(), command="", facts={"platform": platform})

    assert plan("vsphere").confirmed_by("web%2f01 50%25")
    assert plan("vsphere").confirmed_by("web/01 50%")
    assert plan("hyperv").confirmed_by("web/01 50%")
    assert not plan("hyperv").confirmed_by("web%2f01 50%25")
