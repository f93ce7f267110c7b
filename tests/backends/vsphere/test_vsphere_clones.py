"""Linked and instant clones: a source VM's disks a clone runs on are not the
clone's own (issue 11, risk 6). From a ``layoutEx`` as vCenter reports a
linked clone (``diskMoveType=createNewChildDiskBacking``: the clone's child
disk in its own directory above the source's disks, pyvmomi
``docs/vim/vm/RelocateSpec/DiskMoveOptions.rst``) through the mapping, the
store and the findings engine; then through vcsim, whose patch 0010 makes
``CloneVM_Task`` with ``createNewChildDiskBacking`` a linked clone (vcsim
0.24.2 ignored ``diskMoveType``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

from ventana.backends.vsphere.lean import LeanHardware, LeanVirtualDisk
from ventana.backends.vsphere.mapping import Lookup, vm_entities
from ventana.state import findings as F
from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import GB, Checkpoint, Cluster, Kind, Lun, Platform, VirtualDisk
from ventana.state.store import Store

SRC = "[ds1] gold"
CLONE = "[ds1] web-07"


def f(key: int, name: str, kind: str, size: int, unique: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(key=key, name=name, type=kind, size=size, uniqueSize=unique)


def chain(*units: tuple[int, ...]) -> SimpleNamespace:
    return SimpleNamespace(key=2000, chain=[SimpleNamespace(fileKey=list(u)) for u in units])


def ref(moid: str) -> SimpleNamespace:
    return SimpleNamespace(_moId=moid)


def clone_props(*, snapshot: bool = False, unique: int | None = None) -> dict:
    """web-07: linked from gold's snapshot (gold.vmdk + gold-000001.vmdk, both
    shared), running on its own web-07-000001.vmdk (40 GB written)."""
    files = [
        f(1, f"{CLONE}/web-07.vmx", "config", 3_000),
        f(2, f"{SRC}/gold.vmdk", "diskDescriptor", 500),
        f(3, f"{SRC}/gold-flat.vmdk", "diskExtent", 300 * GB),
        f(4, f"{SRC}/gold-000001.vmdk", "diskDescriptor", 500),
        f(5, f"{SRC}/gold-000001-delta.vmdk", "diskExtent", 20 * GB),
        f(6, f"{CLONE}/web-07-000001.vmdk", "diskDescriptor", 500),
        f(7, f"{CLONE}/web-07-000001-delta.vmdk", "diskExtent", 40 * GB, unique),
    ]
    disk = [chain((2, 3), (4, 5), (6, 7))]
    snaps = []
    tree = None
    if snapshot:  # the clone's own snapshot: it freezes web-07-000001, the clone's own
        files += [f(8, f"{CLONE}/web-07-000002.vmdk", "diskDescriptor", 500),
                  f(9, f"{CLONE}/web-07-000002-delta.vmdk", "diskExtent", 1 * GB),
                  f(10, f"{CLONE}/web-07-Snapshot1.vmsn", "snapshotData", 30_000)]
        disk = [chain((2, 3), (4, 5), (6, 7), (8, 9))]
        snaps = [SimpleNamespace(key=ref("snapshot-1"), dataKey=10, memoryKey=-1,
                                 disk=[chain((2, 3), (4, 5), (6, 7))])]
        tree = SimpleNamespace(
            currentSnapshot=ref("snapshot-1"),
            rootSnapshotList=[SimpleNamespace(
                snapshot=ref("snapshot-1"), name="before patch", description="",
                createTime=None, quiesced=False, childSnapshotList=[])])
    hw = LeanHardware(numCPU=2, numCoresPerSocket=1, memoryMB=4096,
                      device=(LeanVirtualDisk(key=2000, capacityInKB=300 * GB // 1024),))
    return {
        "name": "web-07",
        "runtime.powerState": "poweredOn",
        "config.hardware": hw,
        "layoutEx": SimpleNamespace(file=files, disk=disk, snapshot=snaps),
        "snapshot": tree,
        "datastore": [ref("datastore-1")],
    }


def entities(props: dict) -> list:
    return vm_entities("vm-7", props, "domain-c1", Lookup(lambda name: "datastore-1"))


def test_a_linked_clones_shared_disks_are_not_its_own() -> None:
    disks = {d.path: d for d in entities(clone_props()) if isinstance(d, VirtualDisk)}
    assert disks[f"{SRC}/gold.vmdk"].size_bytes == 0
    assert disks[f"{SRC}/gold-000001.vmdk"].size_bytes == 0
    assert disks[f"{CLONE}/web-07-000001.vmdk"].size_bytes == 500 + 40 * GB
    # The chain itself is kept (parents named), so chain checks still see it whole.
    assert disks[f"{CLONE}/web-07-000001.vmdk"].parent_path == f"{SRC}/gold-000001.vmdk"


def test_the_clones_own_snapshot_keeps_its_disks_its_own() -> None:
    ents = entities(clone_props(snapshot=True))
    disks = {d.path: d for d in ents if isinstance(d, VirtualDisk)}
    assert disks[f"{SRC}/gold.vmdk"].size_bytes == 0
    assert disks[f"{CLONE}/web-07-000001.vmdk"].size_bytes == 500 + 40 * GB
    assert disks[f"{CLONE}/web-07-000002.vmdk"].size_bytes == 500 + 1 * GB
    # The snapshot (current): its state file + the running delta only.
    (cp,) = [e for e in ents if isinstance(e, Checkpoint)]
    assert cp.size_bytes == 30_000 + 500 + 1 * GB


def test_unique_size_is_the_files_own_bytes_where_the_server_sets_it() -> None:
    disks = {d.path: d for d in entities(clone_props(unique=12 * GB))
             if isinstance(d, VirtualDisk)}
    assert disks[f"{CLONE}/web-07-000001.vmdk"].size_bytes == 500 + 12 * GB


def test_a_normal_vm_running_on_a_delta_keeps_its_base() -> None:
    props = clone_props()
    for x in props["layoutEx"].file:  # everything in the VM's own directory
        x.name = x.name.replace(SRC, CLONE)
    disks = {d.path: d for d in entities(props) if isinstance(d, VirtualDisk)}
    assert disks[f"{CLONE}/gold.vmdk"].size_bytes == 500 + 300 * GB


def test_disks_another_vms_snapshot_froze_are_that_vms_wherever_they_lie() -> None:
    """A linked clone placed in its source's own directory: the directory rule cannot
    tell its base from its own disk; the source's snapshot, which froze the base (the
    clone was made from it), can."""
    props = clone_props()
    for x in props["layoutEx"].file:  # the clone's files beside the source's
        x.name = x.name.replace(CLONE, SRC)
    frozen = {f"{SRC}/gold.vmdk", f"{SRC}/gold-000001.vmdk"}  # the source's snapshot's chain
    look = Lookup(lambda name: "datastore-1",
                  frozen_elsewhere=lambda vm, name: "vm-1" if name in frozen else "")
    disks = {d.path: d for d in vm_entities("vm-7", props, "domain-c1", look)
             if isinstance(d, VirtualDisk)}
    assert disks[f"{SRC}/gold.vmdk"].size_bytes == 0
    assert disks[f"{SRC}/gold-000001.vmdk"].size_bytes == 0
    assert disks[f"{SRC}/web-07-000001.vmdk"].size_bytes == 500 + 40 * GB
    # Without that knowledge (the source out of view) the files count as the VM's own.
    disks = {d.path: d for d in entities(props) if isinstance(d, VirtualDisk)}
    assert disks[f"{SRC}/gold.vmdk"].size_bytes == 500 + 300 * GB


def store_with(props: dict) -> Store:
    store = Store()
    store.apply_many([
        ConnectionChanged("test", LinkState.CONNECTED),
        Upsert(Cluster("domain-c1", "C1", Platform.VSPHERE, nodes=1)),
        Upsert(Lun("datastore-1", "ds1", "domain-c1", int(4000 * GB), int(2000 * GB), "")),
        *(Upsert(e) for e in entities(props)),
    ])
    return store


def test_no_backup_over_policy_nor_diff_large_for_the_sources_disk() -> None:
    # Policy 250 GB: the clone's own 40 GB are within it; with the source's
    # 320 GB charged to it, it was "over". Its 40 GB over a 300 GB base it
    # does not own is no "differencing data on the parent" to merge either.
    cfg = FindingsConfig(backup_max_bytes=250 * GB, differencing_pct=10)
    eng = FindingsEngine(store_with(clone_props()), cfg).attach()
    codes = {x.code: x.severity for x in eng.for_target("vm:vm-7")}
    assert F.DIFF_LARGE not in codes
    assert codes.get(F.BACKUP_OVER_POLICY) is not F.Severity.WARNING

    # The same files in the VM's own directory (not a clone): both are raised.
    props = clone_props()
    for x in props["layoutEx"].file:
        x.name = x.name.replace(SRC, CLONE)
    eng = FindingsEngine(store_with(props), cfg).attach()
    codes = {x.code: x.severity for x in eng.for_target("vm:vm-7")}
    assert codes[F.BACKUP_OVER_POLICY] is F.Severity.WARNING
    assert F.DIFF_LARGE in codes


# -- through vcsim --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    if not is_built():
        pytest.skip(f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}")
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, hosts=1, vms=1)
    yield handle
    handle.stop()


@pytest.mark.timeout(60)
async def test_a_linked_clone_through_vcsim(vcsim: VcsimHandle) -> None:
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim
    from test_vsphere_backend import connect, snapshot_via, vm_by_name
    from test_vsphere_vcenter_fidelity import open_stream

    other = connect(vcsim)
    s = await open_stream(vcsim)
    store = s.store
    try:
        gold = vm_by_name(store, "DC0_C0_H0_VM0")
        [disk_file] = vcsim.log_path.parent.glob(f"govcsim-*/{gold.name}/disk1.vmdk")
        disk_file.write_bytes(b"\0" * (1 << 20))  # the source's data: 1 MiB
        snap = await snapshot_via(other, gold.id, "for-clones")
        src = vim.VirtualMachine(gold.id, other._stub)
        spec = vim.vm.CloneSpec(
            location=vim.vm.RelocateSpec(diskMoveType="createNewChildDiskBacking"),
            snapshot=vim.vm.Snapshot(snap, other._stub), powerOn=False)
        await asyncio.to_thread(WaitForTask, src.CloneVM_Task(src.parent, "web-07", spec))
        await s.until(lambda: any(v.name == "web-07" for v in store.all(Kind.VM)), 10,
                      "the clone")
        clone = vm_by_name(store, "web-07")
        await s.until(lambda: len(store.disks_of(clone.id)) == 2, 10, "the clone's chain")
        disks = store.disks_of(clone.id)
        (base,) = [d for d in disks if d.parent_path is None]
        (child,) = [d for d in disks if d.parent_path is not None]
        assert "/web-07" not in base.path and "web-07/" in child.path
        assert child.parent_path == base.path
        # The source's base is the source's: counted on the source, not on the clone.
        await s.backend.refresh_vm_storage(gold.id)
        await s.backend.refresh_vm_storage(clone.id)
        await s.until(lambda: next(d for d in store.disks_of(gold.id)
                                   if d.path == base.path).size_bytes >= 1 << 20, 10,
                      "the source's 1 MiB, on the source")
        assert base.size_bytes == 0  # not on the clone
        # ... because the source's snapshot froze it (the published sign), not only
        # because it lies in another directory.
        assert s.backend._index_frozen(set()).get(base.path) == {gold.id}
        assert clone.disk_ids == (base.id,)  # the chain's base, as for any VM
    finally:
        await s.close()
        Disconnect(other)


@pytest.mark.timeout(60)
async def test_escaped_entity_names_read_as_typed(vcsim: VcsimHandle, tmp_path: Path) -> None:
    """vCenter reports a ManagedEntity's name with / \\ % escaped (%2f %5c %25;
    vcsim patch 0011): the console shows the name its owner typed."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim
    from test_vsphere_backend import connect, vm_by_name
    from test_vsphere_vcenter_fidelity import open_stream

    other = connect(vcsim)
    s = await open_stream(vcsim)
    store = s.store
    vm = vm_by_name(store, "DC0_C0_H0_VM0")
    ref = vim.VirtualMachine(vm.id, other._stub)
    typed = "web/01 \\ 50% %41"
    try:
        await asyncio.to_thread(WaitForTask, ref.Rename_Task(typed))
        assert ref.name == "web%2f01 %5c 50%25 %41"  # as the server reports it
        await s.until(lambda: store.get(Kind.VM, vm.id).name == typed, 10, "the typed name")
        # A snapshot named by the vSphere Client reads back escaped (community.vmware#2083,
        # "VM Snapshot 8%2f23%2f2023, …"): shown as the Client showed it.
        from test_vsphere_backend import snapshot_via

        snap = await snapshot_via(other, vm.id, "VM Snapshot 11%2f13%2f2019, 9:59:56 AM")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap) is not None, 10, "snapshot")
        assert store.get(Kind.CHECKPOINT, snap).name == "VM Snapshot 11/13/2019, 9:59:56 AM"
        await asyncio.to_thread(WaitForTask, ref.RemoveAllSnapshots_Task())
        await s.until(lambda: not store.checkpoints_of(vm.id), 10, "snapshot removed")
        # The typed confirmation takes the name as shown or as vCenter reports it.
        from ventana.backends.actions import ActionRunner
        from ventana.state.actionlog import ActionLog
        from ventana.state.model import TaskState

        with ActionLog.open(tmp_path / "actions.db") as log:
            runner = ActionRunner(store, s.backend, log)
            plan = runner.plan("create-snapshot", vm.id, name="typed-as-reported")
            assert plan.target_name == typed
            result = await asyncio.wait_for(runner.execute(plan, ref.name), 20)
            assert result.state is TaskState.OK, result.error
        await s.until(lambda: [c.name for c in store.checkpoints_of(vm.id)]
                      == ["typed-as-reported"], 10, "the snapshot it made")
        await asyncio.to_thread(WaitForTask, ref.RemoveAllSnapshots_Task())
    finally:
        await asyncio.to_thread(WaitForTask, ref.Rename_Task("DC0_C0_H0_VM0"))
        await s.close()
        Disconnect(other)


def test_snapshot_sizes_as_the_client_shows_and_what_a_removal_merges() -> None:
    """The size shown follows the vSphere Client / govc count; a removal's plan
    counts what removing that snapshot merges (the delta created when it was
    taken) and deletes (its own files)."""
    from datetime import UTC, datetime

    from ventana.state import plans_vsphere as pv

    d = "[ds1] db-01"
    files = [
        f(1, f"{d}/db-01.vmx", "config", 3_000),
        f(2, f"{d}/db-01.vmdk", "diskDescriptor", 500),
        f(3, f"{d}/db-01-flat.vmdk", "diskExtent", 100 * GB),
        f(4, f"{d}/db-01-000001.vmdk", "diskDescriptor", 500),
        f(5, f"{d}/db-01-000001-delta.vmdk", "diskExtent", 30 * GB),  # written s1 -> s2
        f(6, f"{d}/db-01-000002.vmdk", "diskDescriptor", 500),
        f(7, f"{d}/db-01-000002-delta.vmdk", "diskExtent", 7 * GB),  # written since s2
        f(8, f"{d}/db-01-Snapshot1.vmsn", "snapshotData", 5_000),
        f(9, f"{d}/db-01-Snapshot2.vmsn", "snapshotData", 6_000),
    ]
    props = clone_props()
    props["name"] = "db-01"
    props["layoutEx"] = SimpleNamespace(
        file=files, disk=[chain((2, 3), (4, 5), (6, 7))],
        snapshot=[SimpleNamespace(key=ref("s1"), dataKey=8, memoryKey=-1, disk=[chain((2, 3))]),
                  SimpleNamespace(key=ref("s2"), dataKey=9, memoryKey=9,  # memory in the .vmsn
                                  disk=[chain((2, 3), (4, 5))])])

    def node(moid: str, name: str, kids: list) -> SimpleNamespace:
        return SimpleNamespace(snapshot=ref(moid), name=name, description="", createTime=None,
                               quiesced=False, childSnapshotList=kids)

    props["snapshot"] = SimpleNamespace(
        currentSnapshot=ref("s2"), rootSnapshotList=[node("s1", "base", [node("s2", "x", [])])])
    store = store_with(props)
    s1, s2 = (store.get(Kind.CHECKPOINT, i) for i in ("s1", "s2"))
    assert s1.size_bytes == 5_000  # a root's base disk is not its own
    assert s2.size_bytes == 6_000 + 500 + 30 * GB + 500 + 7 * GB  # the .vmsn once
    assert s1.merge_bytes == 5_000 + 500 + 30 * GB  # removing s1 merges 000001
    assert s2.merge_bytes == 6_000 + 500 + 7 * GB  # removing s2 merges 000002
    plan = pv.plan_remove_snapshot(store, "vm-7", datetime(2026, 1, 1, tzinfo=UTC),
                                   snapshot="s1")
    assert "(30.0 GB of delta)" in plan.steps[0], plan.steps  # not s1's 5 kB shown size
