"""Linked and instant clones: a source VM's disks a clone runs on are not the
clone's own (issue 11, risk 6). From a ``layoutEx`` as vCenter reports a
linked clone (``diskMoveType=createNewChildDiskBacking``: the clone's child
disk in its own directory above the source's disks, pyvmomi
``docs/vim/vm/RelocateSpec/DiskMoveOptions.rst``) through the mapping, the
store and the findings engine. (vcsim 0.24.2 ignores ``diskMoveType`` —
``simulator/virtual_machine.go``: "TODO: consider
VirtualMachineCloneSpec.DiskMoveType" — so no peer answers this yet.)
"""

from __future__ import annotations

from types import SimpleNamespace

from ventana.backends.vsphere.mapping import Lookup, vm_entities
from ventana.backends.vsphere.session import LeanHardware, LeanVirtualDisk
from ventana.state import findings as F
from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import GB, Checkpoint, Cluster, Lun, Platform, VirtualDisk
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
