"""vSphere objects → the shared model (pure functions, no network).

- HostSystem → ``Node`` (state from connection state and maintenance mode)
- ComputeResource / ClusterComputeResource → ``Cluster`` (a standalone host
  is a cluster of one, as the vSphere client shows it)
- Datastore → ``Lun`` (role DATASTORE)
- Task (the TaskManager's ``recentTask``) → ``Task`` (target ``vm:<moref>`` etc.)
- VirtualMachine → ``VM`` (+ ``VirtualDisk`` per file of every disk chain in
  ``layoutEx``, + ``Checkpoint`` per snapshot in the tree)

Ids are moref values (disks: ``<vm moref>:<descriptor path>``). A
snapshot's size is the join of the snapshot tree with ``layoutEx``: its
state file (``.vmsn``), memory file (``.vmem``) and the delta disks created
when it was taken (the chain unit just above the snapshot's own disk chain,
found in a child snapshot's chain or the VM's current chain) — the delta
the operator gets back when the snapshot is consolidated; ``disk_path`` is
that delta's descriptor (as a Hyper-V checkpoint's AVHDX).
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


def cluster_entity(cr_id: str, props: Props) -> Cluster:
    hosts = props.get("host") or ()
    return Cluster(cr_id, str(props.get("name") or cr_id), Platform.VSPHERE, nodes=len(hosts))


def node_entity(host_id: str, props: Props, cluster_id: str, vm_count: int) -> Node:
    return Node(
        id=host_id,
        name=str(props.get("name") or host_id),
        cluster_id=cluster_id,
        state=node_state(props),
        vm_count=vm_count,
    )


def lun_entity(ds_id: str, props: Props, cluster_id: str) -> Lun:
    accessible = props.get("summary.accessible")
    return Lun(
        id=ds_id,
        name=str(props.get("name") or ds_id),
        cluster_id=cluster_id,
        total_bytes=int(props.get("summary.capacity") or 0),
        free_bytes=int(props.get("summary.freeSpace") or 0),
        role=LunRole.DATASTORE,
        state=LunState.OFFLINE if accessible is False else LunState.ONLINE,
    )


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

    def path(self, unit: tuple[int, ...]) -> str:
        names = [self.files[k] for k in unit if k in self.files]
        for f in names:
            if f.type == "diskDescriptor":
                return str(f.name)
        return str(names[0].name) if names else ""

    def all_chains(self) -> Iterator[tuple[int, tuple[tuple[int, ...], ...]]]:
        yield from self.current.items()
        for snap in self.snapshots.values():
            for d in snap.disk or ():
                yield d.key, _chain(d)

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


def snapshot_size(layout: Any, snap_id: str) -> tuple[int, str]:
    """``(bytes, disk path)`` of one snapshot, from ``layoutEx``."""
    lay = _Layout.of(layout)
    return _snapshot_size(lay, snap_id)


def _snapshot_size(lay: _Layout, snap_id: str) -> tuple[int, str]:
    snap = lay.snapshots.get(snap_id)
    if snap is None:
        return 0, ""
    deltas = lay.snapshot_delta(snap_id)
    keys = [k for unit in deltas for k in unit]
    own = [snap.dataKey]
    # A snapshot with memory may keep it in its .vmsn (memoryKey == dataKey, the
    # state file): counted once.
    if snap.memoryKey is not None and snap.memoryKey >= 0 and snap.memoryKey != snap.dataKey:
        own.append(snap.memoryKey)
    size = lay.size(keys) + lay.size(own)
    path = lay.path(deltas[0]) if deltas else lay.path((snap.dataKey,))
    return size, path


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
                    size_bytes=lay.size(unit),
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
        name=str(props.get("name") or vm_id),
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
    for tree, parent_id in _walk(getattr(info, "rootSnapshotList", None) or (), None):
        snap_id = moid(tree.snapshot)
        name = str(tree.name or "")
        kind = (
            CheckpointKind.BACKUP
            if is_backup_snapshot(name, str(tree.description or ""))
            else CheckpointKind.STANDARD
        )
        size, path = _snapshot_size(lay, snap_id)
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
