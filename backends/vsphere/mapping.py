"""vSphere objects → the shared model (pure functions, no network).

- HostSystem → ``Node`` (state from connection state and maintenance mode)
- ComputeResource / ClusterComputeResource → ``Cluster`` (a standalone host
  is a cluster of one, as the vSphere client shows it)
- Datastore → ``Lun`` (role DATASTORE)
- Task (the TaskManager's ``recentTask``) → ``Task`` (target ``vm:<moref>`` etc.)
- VirtualMachine → ``VM`` (+ ``VirtualDisk`` per file of every disk chain in
  ``layoutEx``, + ``Checkpoint`` per snapshot in the tree)

Ids are moref values (disks: ``<vm moref>:<descriptor path>``). A
snapshot's size is the join of the snapshot tree with ``layoutEx`` as the
vSphere Client and govc show it (``_snapshot_size``): its state file
(``.vmsn``), memory file (``.vmem``), the delta disks written between its
parent and it, and for the current snapshot the running delta;
``disk_path`` is the delta created when it was taken (the chain unit just
above the snapshot's own disk chain, in a child snapshot's chain or the VM's
current chain), as a Hyper-V checkpoint's AVHDX.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ventana.state.model import (
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Entity,
    IntegrationState,
    Lun,
    LunRole,
    LunState,
    Node,
    NodeState,
    Platform,
    PowerState,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.vsphere_names import unescape

from ..coerce import EPOCH, aware_utc

Props = dict[str, Any]

# Names/descriptions backup products give the snapshots they create.
BACKUP_MARKERS = re.compile(
    r"veeam|commvault|__gx_backup|netbackup|nbu_snapshot|avamar|\bvdp\b|vdp-|rubrik|cohesity"
    r"|nakivo|vembu|altaro|arcserve|unitrends|networker|data ?protector|backup",
    re.IGNORECASE,
)

POWER = {
    "poweredOn": PowerState.RUNNING,
    "poweredOff": PowerState.OFF,
    "suspended": PowerState.SAVED,
}
TOOLS = {
    "guestToolsRunning": IntegrationState.OK,
    "guestToolsNotRunning": IntegrationState.OFF,
    "guestToolsExecutingScripts": IntegrationState.DEGRADED,
}


def moid(ref: Any) -> str:
    """The moref value of a managed object reference ('' for None)."""
    return "" if ref is None else str(getattr(ref, "_moId", ref))


def node_state(props: Props) -> NodeState:
    conn = str(props.get("runtime.connectionState") or "")
    if conn == "connected":
        return NodeState.PAUSED if props.get("runtime.inMaintenanceMode") else NodeState.UP
    if conn in ("disconnected", "notResponding"):
        return NodeState.DOWN
    return NodeState.UNKNOWN


def is_backup_snapshot(name: str, description: str) -> bool:
    return bool(BACKUP_MARKERS.search(name) or BACKUP_MARKERS.search(description or ""))


def datastore_name(path: str) -> str:
    """``[LocalDS_0] vm/vm.vmdk`` → ``LocalDS_0``."""
    if path.startswith("[") and "]" in path:
        return path[1 : path.index("]")]
    return ""


def as_utc(value: Any) -> datetime:
    """A pyvmomi datetime as aware UTC; anything else (None, a string) is the epoch."""
    return aware_utc(value) if isinstance(value, datetime) else EPOCH


@dataclass(frozen=True, slots=True)
class Lookup:
    """What mapping a VM needs from the rest of the inventory.

    Datastore names are unique only within a datacenter: a path's ``[name]``
    is resolved among the VM's own datastores (all in its datacenter) first;
    ``datastore_by_name`` answers only for a name no other datastore shares.
    """

    datastore_by_name: Callable[[str], str]  # a globally unique name -> moref, else ''
    datastore_name: Callable[[str], str] = lambda _moid: ""  # moref -> name
    # (vm moref, disk file) -> another VM in view whose snapshot froze that file, else ''
    frozen_elsewhere: Callable[[str, str], str] = lambda _vm, _name: ""


def frozen_files(layout: Any) -> frozenset[str]:
    """The disk files a VM's snapshots froze (each snapshot layout's disk chains:
    "Layout of each virtual disk of the virtual machine when the snapshot was
    taken", pyvmomi ``docs/vim/vm/FileLayoutEx/SnapshotLayout.rst``)."""
    lay = _Layout.of(layout)
    return frozenset(lay.path(unit) for s in lay.snapshots.values() for d in s.disk or ()
                     for unit in _chain(d) if lay.path(unit))




def entity_name(props: Props, fallback: str) -> str:
    """A ManagedEntity's name as its owner typed it. vCenter reports it escaped:
    "Any / (slash), \\ (backslash), character used in this name element will be
    escaped. Similarly, any % (percent) character … unless it is used to start an
    escape sequence. A slash is escaped as %2F or %2f. A backslash is escaped as
    %5C or %5c, and a percent is escaped as %25." (pyvmomi
    ``docs/vim/ManagedEntity.rst``, name). Other ``%XX`` stay as they are."""
    raw = str(props.get("name") or "")
    if not raw:
        return fallback
    return unescape(raw)


def cluster_entity(cr_id: str, props: Props) -> Cluster:
    hosts = props.get("host") or ()
    return Cluster(cr_id, entity_name(props, cr_id), Platform.VSPHERE, nodes=len(hosts))


def node_entity(host_id: str, props: Props, cluster_id: str, vm_count: int) -> Node:
    return Node(
        id=host_id,
        name=entity_name(props, host_id),
        cluster_id=cluster_id,
        state=node_state(props),
        vm_count=vm_count,
    )


def lun_entity(ds_id: str, props: Props, cluster_id: str) -> Lun:
    accessible = props.get("summary.accessible")
    return Lun(
        id=ds_id,
        name=entity_name(props, ds_id),
        cluster_id=cluster_id,
        total_bytes=int(props.get("summary.capacity") or 0),
        free_bytes=int(props.get("summary.freeSpace") or 0),
        role=LunRole.DATASTORE,
        state=LunState.OFFLINE if accessible is False else LunState.ONLINE,
    )


def _directory(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else path.split("]", 1)[0]


def _walk(trees: Iterable[Any], parent: str | None) -> Iterator[tuple[Any, str | None]]:
    for tree in trees or ():
        yield tree, parent
        yield from _walk(tree.childSnapshotList, moid(tree.snapshot))


def _chain(disk_layout: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(unit.fileKey or ()) for unit in disk_layout.chain or ())


@dataclass(slots=True)
class _Layout:
    files: dict[int, Any]  # key -> FileInfo (name, type, size)
    current: dict[int, tuple[tuple[int, ...], ...]]  # disk key -> chain of file-key units
    snapshots: dict[str, Any]  # snapshot moref -> SnapshotLayout

    @classmethod
    def of(cls, layout: Any) -> _Layout:
        if layout is None:
            return cls({}, {}, {})
        return cls(
            {f.key: f for f in layout.file or ()},
            {d.key: _chain(d) for d in layout.disk or ()},
            {moid(s.key): s for s in layout.snapshot or ()},
        )

    def size(self, keys: Iterable[int]) -> int:
        return sum(int(self.files[k].size or 0) for k in keys if k in self.files)

    def own_size(self, keys: Iterable[int]) -> int:
        """The bytes these files hold for this VM alone: ``uniqueSize`` where the
        server sets it ("the file blocks that were allocated only in context of
        this file … does not include shared blocks", pyvmomi
        ``docs/vim/vm/FileLayoutEx/FileInfo.rst``; unset when the storage cannot
        tell), else ``size``."""
        total = 0
        for k in keys:
            f = self.files.get(k)
            if f is not None:
                unique = getattr(f, "uniqueSize", None)
                total += int(f.size or 0) if unique is None else int(unique)
        return total

    def shared_bases(self, elsewhere: Callable[[str], str] = lambda _n: ""
                     ) -> set[tuple[int, ...]]:
        """Leading units of the current chains that belong to another VM.

        The published sign first: a linked clone is made "from a snapshot" of its
        source and shares the disks that snapshot froze (``createNewChildDiskBacking``:
        "the original virtual machine's disks are now all being shared",
        ``docs/vim/vm/RelocateSpec/DiskMoveOptions.rst``; the snapshot's layout holds
        them, ``docs/vim/vm/FileLayoutEx/SnapshotLayout.rst``). So a unit another VM
        in view froze with a snapshot is that VM's (``elsewhere(path)`` names it),
        wherever it lies. Where no VM in view froze it (an instant clone's source,
        frozen without a snapshot; a source outside this view), the directory rule
        below decides.

        A linked clone (``CloneVM_Task`` with ``diskMoveType``
        ``createNewChildDiskBacking``: "the original virtual machine's disks are
        now all being shared", only valid "when cloning from a snapshot";
        ``moveChildMostDiskBacking``: "the parent disks will now be shared",
        pyvmomi ``docs/vim/vm/RelocateSpec/DiskMoveOptions.rst``) and an instant
        clone run on a child disk of their own above their source's disks.
        Read here as the units, from the base up, that sit in another
        directory than the chain's child-most unit (the running point, placed
        with the VM) and that no snapshot of this VM froze (its own snapshots'
        chains end on its own disks)."""
        frozen = {_chain(d)[-1] for s in self.snapshots.values() for d in s.disk or ()
                  if _chain(d)}
        out: set[tuple[int, ...]] = set()
        for chain in self.current.values():
            if len(chain) < 2:
                continue
            home = _directory(self.path(chain[-1]))
            for unit in chain[:-1]:
                where = self.path(unit)
                if unit in frozen or not where:
                    break
                if not elsewhere(where) and _directory(where) == home:
                    break
                out.add(unit)
        return out

    def path(self, unit: tuple[int, ...]) -> str:
        names = [self.files[k] for k in unit if k in self.files]
        for f in names:
            if f.type == "diskDescriptor":
                return str(f.name)
        return str(names[0].name) if names else ""

    def all_chains(self) -> Iterator[tuple[int, tuple[tuple[int, ...], ...]]]:
        # The snapshots' chains first: after a revert, the delta above a
        # snapshot's chain in a child's layout was created when it was taken;
        # the running one above it, by the revert.
        for snap in self.snapshots.values():
            for d in snap.disk or ():
                yield d.key, _chain(d)
        yield from self.current.items()

    def snapshot_delta(self, snap_id: str) -> list[tuple[int, ...]]:
        """The delta units created when ``snap_id`` was taken (one per disk)."""
        snap = self.snapshots.get(snap_id)
        if snap is None:
            return []
        out = []
        for d in snap.disk or ():
            own = _chain(d)
            for key, chain in self.all_chains():
                if key == d.key and len(chain) > len(own) and chain[: len(own)] == own:
                    out.append(chain[len(own)])
                    break
        return out


def snapshot_size(
    layout: Any, snap_id: str, *, parent: str | None = None, current: bool = False
) -> tuple[int, str]:
    """``(bytes, disk path)`` of one snapshot, from ``layoutEx`` (see ``_snapshot_size``)."""
    return _snapshot_size(_Layout.of(layout), snap_id, parent, current)


def _snapshot_size(
    lay: _Layout, snap_id: str, parent: str | None, current: bool
) -> tuple[int, str]:
    """A snapshot's size as ``govc snapshot.tree -s`` and the vSphere Client
    show it (PowerCLI's ``Get-Snapshot`` reference documents SizeMB/SizeGB,
    not how they are summed): its state file
    (``dataKey``, the .vmsn), its memory file (``memoryKey``, the .vmem), and
    the disk files of its own layout's chains that its parent snapshot's do
    not hold — the data written between the parent and this snapshot (a root
    snapshot's base disks are not its own); the current snapshot also gets the
    running delta (current chain files that no snapshot holds). After a
    revert, the running delta thus goes to the snapshot reverted to, and each
    older branch keeps its own delta. (govmomi ``object.SnapshotSize``,
    "logic taken from the govc implementation" / "almost the same logic as
    how VC UI calculates the snapshot size" in vmware-tanzu/vm-operator's
    ``GetSnapshotSize``, which adds the .vmem as done here.)

    ``memoryKey`` is -1 without memory and "in some cases the memory component
    is combined with the data component" (``memoryKey == dataKey``, pyvmomi
    ``docs/vim/vm/FileLayoutEx/SnapshotLayout.rst``): that file counts once.
    The disk path stays the delta created when the snapshot was taken (its
    child's, else the running one), as a Hyper-V checkpoint's AVHDX.
    """
    snap = lay.snapshots.get(snap_id)
    if snap is None:
        return 0, ""
    keys = {snap.dataKey}
    if snap.memoryKey is not None and snap.memoryKey >= 0:
        keys.add(snap.memoryKey)  # a set: memoryKey == dataKey counts once
    up = lay.snapshots.get(parent) if parent is not None else None
    if up is not None:
        keys |= _chain_keys(snap) - _chain_keys(up)
    if current:
        held = set().union(*(_chain_keys(s) for s in lay.snapshots.values()))
        keys |= {k for chain in lay.current.values() for unit in chain for k in unit} - held
    deltas = lay.snapshot_delta(snap_id)
    path = lay.path(deltas[0]) if deltas else lay.path((snap.dataKey,))
    return lay.size(keys), path


def _merge_size(lay: _Layout, snap_id: str) -> int:
    """What removing this snapshot alone consolidates or deletes: the delta
    disks created when it was taken (merged into its parent's) and its own
    state and memory files (deleted)."""
    snap = lay.snapshots.get(snap_id)
    if snap is None:
        return 0
    keys = {snap.dataKey} | {k for unit in lay.snapshot_delta(snap_id) for k in unit}
    if snap.memoryKey is not None and snap.memoryKey >= 0:
        keys.add(snap.memoryKey)
    return lay.size(keys)


def _chain_keys(snap: Any) -> set[int]:
    return {k for d in snap.disk or () for unit in _chain(d) for k in unit}


def _has_memory(lay: _Layout, snap_id: str) -> bool | None:
    """Whether the snapshot holds the VM's memory (a ``.vmem``: memoryKey >= 0)."""
    snap = lay.snapshots.get(snap_id)
    if snap is None:
        return None
    return snap.memoryKey is not None and snap.memoryKey >= 0


# -- backup and snapshot-limitation facts (issue 15) ------------------------------------
@dataclass(frozen=True, slots=True)
class DeviceFacts:
    """What ``config.hardware.device`` says about backups and snapshot limits.

    Read alike from pyvmomi objects and the lean ones (attribute names, not
    types): an independent disk's backing ``diskMode`` is ``independent_*``
    (pyvmomi docs/vim/vm/device/VirtualDiskOption/DiskMode.rst); a physical
    RDM's backing has ``compatibilityMode == "physicalMode"``
    (docs/vim/vm/device/VirtualDisk/RawDiskMappingVer1BackingInfo.rst; no other
    backing has that attribute); a SCSI controller's ``sharedBus`` other than
    ``noSharing`` (docs/vim/vm/device/VirtualSCSIController/Sharing.rst); a
    ``VirtualPCIPassthrough`` is DirectPath I/O.
    """

    independent_disks: tuple[str, ...]
    physical_rdms: tuple[str, ...]
    shared_buses: tuple[str, ...]
    passthrough_devices: tuple[str, ...]


def _label(dev: Any) -> str:
    label = getattr(getattr(dev, "deviceInfo", None), "label", None)
    return str(label or f"device {getattr(dev, 'key', '?')}")


def device_facts(devices: Iterable[Any] | None) -> DeviceFacts | None:
    """The facts above from ``config.hardware.device``; None when it was not read."""
    if devices is None:
        return None
    independent: list[str] = []
    rdms: list[str] = []
    shared: list[str] = []
    passthrough: list[str] = []
    for dev in devices:
        kind = type(dev).__name__
        bus = getattr(dev, "sharedBus", None)
        if kind.endswith("VirtualDisk"):
            backing = getattr(dev, "backing", None)
            if str(getattr(backing, "compatibilityMode", None) or "") == "physicalMode":
                rdms.append(_label(dev))
            elif str(getattr(backing, "diskMode", None) or "").startswith("independent"):
                independent.append(_label(dev))
        elif bus is not None:
            if str(bus) != "noSharing":
                shared.append(f"{_label(dev)} ({bus})")
        elif kind.endswith("VirtualPCIPassthrough"):
            passthrough.append(_label(dev))
    return DeviceFacts(tuple(independent), tuple(rdms), tuple(shared), tuple(passthrough))


def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def vm_entities(vm_id: str, props: Props, cluster_id: str, look: Lookup) -> list[Entity]:
    """The VM, its disk files and its snapshots."""
    lay = _Layout.of(props.get("layoutEx"))
    hardware = props.get("config.hardware")
    capacity: dict[int, int] = {}
    for dev in getattr(hardware, "device", None) or ():
        if type(dev).__name__.endswith("VirtualDisk"):
            size = getattr(dev, "capacityInBytes", 0) or 0
            capacity[dev.key] = int(size or (getattr(dev, "capacityInKB", 0) or 0) * 1024)

    # VM.datastore is an unordered subset (an ISO's datastore may come first):
    # the VM's datastore is its home's, and each file's is named in its path.
    datastores = [moid(d) for d in props.get("datastore") or ()]
    own = {look.datastore_name(d): d for d in datastores}
    own.pop("", None)

    def lun_of(path: str) -> str:
        name = datastore_name(path)
        return own.get(name) or look.datastore_by_name(name)

    lun_id = ""
    for f in getattr(props.get("layoutEx"), "file", None) or ():
        if str(f.type) == "config":  # the .vmx: the VM's home
            lun_id = lun_of(str(f.name))
            break
    if not lun_id:
        base = [lay.path(chain[0]) for chain in lay.current.values() if chain]
        lun_id = next((lun_of(p) for p in base if lun_of(p)), "")
    if not lun_id and len(datastores) == 1:
        lun_id = datastores[0]

    # A disk's size is the bytes this VM alone holds (uniqueSize; a linked or
    # instant clone's shared base counts 0): BACKUP_OVER_POLICY and DIFF_LARGE
    # must not charge a clone with its source's disk.
    shared = lay.shared_bases(lambda name: look.frozen_elsewhere(vm_id, name))
    disks: dict[str, VirtualDisk] = {}
    for disk_key, chain in lay.all_chains():
        parent: str | None = None
        for unit in chain:
            path = lay.path(unit)
            if not path:
                continue
            disk_id = f"{vm_id}:{path}"
            if disk_id not in disks:
                disks[disk_id] = VirtualDisk(
                    id=disk_id,
                    vm_id=vm_id,
                    path=path,
                    format=DiskFormat.VMDK,
                    size_bytes=0 if unit in shared else lay.own_size(unit),
                    max_bytes=capacity.get(disk_key, 0),
                    parent_path=parent,
                    lun_id=lun_of(path) or lun_id,
                )
            parent = path
    base_ids = tuple(f"{vm_id}:{lay.path(chain[0])}" for chain in lay.current.values() if chain)

    conn = str(props.get("runtime.connectionState") or "connected")
    power = POWER.get(str(props.get("runtime.powerState") or ""), PowerState.UNKNOWN)
    if conn != "connected":
        power = PowerState.UNKNOWN
    firmware = str(props.get("config.firmware") or "")
    facts = device_facts(None if hardware is None else getattr(hardware, "device", None) or ())
    vm = VM(
        id=vm_id,
        name=entity_name(props, vm_id),
        cluster_id=cluster_id,
        node_id=moid(props.get("runtime.host")),
        power=power,
        generation=2 if firmware == "efi" else 1,
        config_version=str(props.get("config.version") or ""),
        vcpus=int(getattr(hardware, "numCPU", 0) or 0),
        memory_mb=int(getattr(hardware, "memoryMB", 0) or 0),
        integration=TOOLS.get(
            str(props.get("guest.toolsRunningStatus") or ""), IntegrationState.UNKNOWN
        ),
        disk_ids=base_ids,
        lun_id=lun_id,
        consolidation_needed=bool(props.get("runtime.consolidationNeeded")),
        # Backup and snapshot-limitation facts (issue 15): unset stays None.
        tools_version_status=_opt_str(props.get("guest.toolsVersionStatus2")),
        independent_disks=facts.independent_disks if facts else None,
        physical_rdms=facts.physical_rdms if facts else None,
        cbt_enabled=_opt_bool(props.get("config.changeTrackingEnabled")),
        shared_buses=facts.shared_buses if facts else None,
        passthrough_devices=facts.passthrough_devices if facts else None,
        template=_opt_bool(props.get("config.template")),
        fault_tolerance=_opt_str(props.get("runtime.faultToleranceState")),
    )

    checkpoints: list[Entity] = []
    info = props.get("snapshot")
    current_id = moid(getattr(info, "currentSnapshot", None)) if info is not None else ""
    for tree, parent_id in _walk(getattr(info, "rootSnapshotList", None) or (), None):
        snap_id = moid(tree.snapshot)
        # Shown as typed: a vSphere-Client-made name arrives escaped (state.vsphere_names).
        name = unescape(str(tree.name or ""))
        kind = (
            CheckpointKind.BACKUP
            if is_backup_snapshot(name, str(tree.description or ""))
            else CheckpointKind.STANDARD
        )
        size, path = _snapshot_size(lay, snap_id, parent_id, snap_id == current_id)
        merge = _merge_size(lay, snap_id)
        checkpoints.append(
            Checkpoint(
                id=snap_id,
                vm_id=vm_id,
                name=name,
                parent_id=parent_id,
                kind=kind,
                created=as_utc(tree.createTime),
                disk_path=path,
                size_bytes=size,
                quiesced=bool(tree.quiesced),
                memory=_has_memory(lay, snap_id),
                merge_bytes=merge if merge != size else None,
            )
        )
    return [vm, *disks.values(), *checkpoints]


TASK_STATES = {
    "queued": TaskState.QUEUED,
    "running": TaskState.RUNNING,
    "success": TaskState.OK,
    "error": TaskState.FAILED,
}
TARGET_KINDS = {
    "VirtualMachine": "vm",
    "HostSystem": "node",
    "Datastore": "lun",
    "ClusterComputeResource": "cluster",
    "ComputeResource": "cluster",
}


def fault_message(fault: Any) -> str:
    """The text of a task's fault (pyvmomi unwraps LocalizedMethodFault)."""
    if fault is None:
        return ""
    inner = getattr(fault, "fault", None) or fault  # a LocalizedMethodFault, if kept
    for source in (fault, inner):
        for attr in ("localizedMessage", "msg", "reason"):
            text = getattr(source, attr, None)
            if text:
                return str(text)
    messages = [m.message for m in getattr(inner, "faultMessage", None) or () if m.message]
    return "; ".join(messages) or type(inner).__name__.rsplit(".", 1)[-1]


def task_entity(task_id: str, info: Any) -> Task | None:
    """A vSphere task (``TaskInfo``) as a model task; None without info."""
    if info is None:
        return None
    method = getattr(getattr(info, "name", None), "info", None)
    kind = str(info.descriptionId or getattr(method, "wsdlName", "") or "task")
    entity = info.entity
    target_kind = TARGET_KINDS.get(type(entity).__name__.rsplit(".", 1)[-1], "object")
    state = TASK_STATES.get(str(info.state), TaskState.UNKNOWN)
    error = fault_message(info.error)
    fault = getattr(info.error, "fault", None) or info.error
    if state is TaskState.FAILED and type(fault).__name__.endswith("RequestCanceled"):
        state = TaskState.CANCELLED
    description = getattr(info, "description", None)
    return Task(
        id=task_id,
        kind=kind,
        target=f"{target_kind}:{moid(entity)}" if entity is not None else "",
        target_name=str(info.entityName or ""),
        pct=100.0 if state is TaskState.OK else float(info.progress or 0),
        state=state,
        started=as_utc(info.startTime) if info.startTime else None,
        ended=as_utc(info.completeTime) if info.completeTime else None,
        message=str(getattr(description, "message", "") or ""),
        error=error,
    )
