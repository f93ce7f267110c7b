"""Hyper-V changes other than power, as they happen: checkpoints and CSV free space.

Beside the VM power stream (``commands.subscribe_vm_events``), a node's
watch session subscribes to two more CIM indications (WQL event queries
sent with ``Register-CimIndicationEvent``; they live in that session's
runspace and change nothing on the host):

- **checkpoints** (every node): ``__InstanceOperationEvent`` — creation,
  deletion and modification — of ``Msvm_VirtualSystemSettingData`` whose
  ``VirtualSystemType`` is a snapshot (``Microsoft:Hyper-V:Snapshot:…``).
  The event names the VM (``VirtualSystemIdentifier``); Ventana then
  re-reads **that VM only** (:func:`vm_reread`: its settings, checkpoints,
  drives and disk files, one round trip) and replaces what it showed of it;
- **CSV free space** (the first node only: the ``root/MSCluster`` namespace
  is the same cluster from every node): ``__InstanceModificationEvent`` of
  ``MSCluster_DiskPartition`` whose ``FreeSpace`` changed. The event carries
  the partition's new ``FreeSpace``/``TotalSize``; nothing is re-read.

A VM's disk file growing changes its CSV's free space: with a CSV event
that took at least ``GROWTH_STEP`` of space since the last look, the
node re-reads ``Get-VHD`` of the files on that CSV its VMs write to now
(the leaves of the chains, :func:`leaf_paths`; never a full poll).

Every query names its polling interval (``WITHIN``): WMI polls the provider
that often when the provider does not raise the event itself, so the
interval bounds how late an event can be; ``COMMANDS.md`` states what each
costs the host. The full poll goes on at its own interval as the safety
net: an event lost (a dropped session, a refused subscription) waits at
most one poll.

Sources (Microsoft's published documentation):
``learn.microsoft.com/windows/win32/wmisdk/within-clause`` (polling
interval, ``__InstanceOperationEvent`` covering creation, modification and
deletion), ``…/wmisdk/--instancecreationevent``, ``--instancedeletionevent``,
``--instancemodificationevent`` (``TargetInstance``, ``PreviousInstance``),
``…/wmisdk/like-operator``,
``…/hyperv_v2/msvm-virtualsystemsettingdata`` (``VirtualSystemIdentifier``:
the ``Name`` of the VM's ``Msvm_ComputerSystem``, i.e. its Id;
``VirtualSystemType`` values) and
``learn.microsoft.com/previous-versions/windows/desktop/cluswmi/mscluster-diskpartition``
(``FreeSpace``/``TotalSize`` uint32 in megabytes, ``VolumeGuid``, ``Path``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ventana.state.model import MB, VM, Checkpoint, Entity, Finding, Lun, VirtualDisk

from .commands import (
    DRIVE_PROPS,
    SNAPSHOT_PROPS,
    VHD_PROPS,
    VM_EVENT_PROPS,
    VM_EVENTS,
    VM_PROPS,
    WAIT_EVENT_PROPS,
    Cmdlet,
    Command,
    _enums,
)
from .mapping import as_id, as_int, path_key, props, text

#: Seconds: the WQL ``WITHIN`` of both queries. WMI delivers a change at most this
#: late (when it polls); 1 s keeps change → screen under 2 s with the re-read.
WITHIN_S = 1

#: The subscriptions' names in the runspace.
CHECKPOINT_EVENTS = "Ventana.Checkpoints"
CSV_EVENTS = "Ventana.CsvSpace"

#: Creation, deletion and modification of a checkpoint's settings (one query, one poll
#: per interval, where a creation query and a deletion query would poll twice).
#: ``LIKE`` with ``%``: every snapshot type (Realized, Recovery, Planned, Missing,
#: Replica:…), never the VM's own settings (``Microsoft:Hyper-V:System:…``).
CHECKPOINT_QUERY = (
    f"SELECT * FROM __InstanceOperationEvent WITHIN {WITHIN_S} "
    "WHERE TargetInstance ISA 'Msvm_VirtualSystemSettingData' "
    "AND TargetInstance.VirtualSystemType LIKE 'Microsoft:Hyper-V:Snapshot:%'"
)
#: A cluster disk partition whose free space changed (megabytes: a change under 1 MiB
#: raises nothing).
CSV_QUERY = (
    f"SELECT * FROM __InstanceModificationEvent WITHIN {WITHIN_S} "
    "WHERE TargetInstance ISA 'MSCluster_DiskPartition' "
    "AND TargetInstance.FreeSpace <> PreviousInstance.FreeSpace"
)
CHECKPOINT_EVENT_PROPS = ("VirtualSystemIdentifier", "InstanceID", "VirtualSystemType")
CSV_EVENT_PROPS = ("Path", "VolumeGuid", "TotalSize", "FreeSpace")

#: A CSV that lost this much space since its files were last read: the files written
#: now (the chains' leaves) on it are re-read (a VM's disk grew).
GROWTH_STEP = 256 * MB
#: At most this many files per Get-VHD (as the poll's chain reads).
PATH_BATCH = 500


@dataclass(frozen=True, slots=True)
class Source:
    """One subscription: its name, query, namespace and what its events are read as."""

    name: str
    namespace: str
    query: str
    properties: tuple[str, ...]
    label: str


VM_STATE = Source(VM_EVENTS, "root/virtualization/v2", "", VM_EVENT_PROPS, "VM changes")
CHECKPOINTS = Source(CHECKPOINT_EVENTS, "root/virtualization/v2", CHECKPOINT_QUERY,
                     CHECKPOINT_EVENT_PROPS, "checkpoint changes")
CSV_SPACE = Source(CSV_EVENTS, "root/MSCluster", CSV_QUERY, CSV_EVENT_PROPS,
                   "CSV free-space changes")


def subscribe(source: Source) -> Command:
    """Register-CimIndicationEvent for one of the change subscriptions."""
    return Command(
        source.label.replace("changes", "subscription"),
        (Cmdlet("Register-CimIndicationEvent", (
            ("Namespace", source.namespace),
            ("Query", source.query),
            ("SourceIdentifier", source.name),
        )),),
        quiet=True,
    )


def wait_changes(sources: Iterable[Source], timeout_s: int) -> list[Command]:
    """One round trip: wait for an event of ANY subscription (``Wait-Event`` without
    ``-SourceIdentifier`` waits for any event), then per subscription read its queued
    events' target instances and remove them.

    Answers come back as ``[wait, rows₁, removed₁, rows₂, removed₂, …]``; each
    subscription selects its own property set, which tells its rows apart. An event
    queued between a read and its removal is dropped: the next poll still sees it.
    """
    expand = tuple(
        Cmdlet("Select-Object", (("ExpandProperty", name),))
        for name in ("SourceEventArgs", "NewEvent", "TargetInstance")
    )
    commands = [Command("wait for a change", (Cmdlet("Wait-Event", (("Timeout", timeout_s),)),),
                        WAIT_EVENT_PROPS)]
    for source in sources:
        commands += [
            Command(source.label,
                    (Cmdlet("Get-Event", (("SourceIdentifier", source.name),)), *expand),
                    source.properties),
            Command(f"forget the {source.label} read",
                    (Cmdlet("Get-Event", (("SourceIdentifier", source.name),)),
                     Cmdlet("Remove-Event")), quiet=True),
        ]
    return commands


# -- the targeted re-read of one VM ----------------------------------------------------------


def _vm(vm_id: str) -> Cmdlet:
    return Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),))


def vm_reread(vm_id: str) -> list[Command]:
    """One VM's settings, checkpoints, drives and the disk files of its chains (the files
    its drives use now and those its checkpoints froze): the poll's per-node reads,
    for one VM, by its Id. The two Get-VHD statements answer the same shape (merged)."""
    vhd_enums = _enums(VhdFormat="VhdFormat", VhdType="VhdType")
    return [
        Command("the VM", (_vm(vm_id),), VM_PROPS,
                extra=_enums(State="VMState", Heartbeat="VMHeartbeatStatus")),
        Command("the VM's checkpoints", (_vm(vm_id), Cmdlet("Get-VMSnapshot")), SNAPSHOT_PROPS,
                extra=_enums(("CreationTime",), SnapshotType="SnapshotType")),
        Command("the VM's drives", (_vm(vm_id), Cmdlet("Get-VMHardDiskDrive")), DRIVE_PROPS,
                extra=_enums(ControllerType="ControllerType")),
        Command("the VM's disk files (attached)",
                (_vm(vm_id), Cmdlet("Get-VMHardDiskDrive"), Cmdlet("Get-VHD")), VHD_PROPS,
                tolerate_errors=True, extra=vhd_enums),
        Command("the VM's disk files (checkpoints)",
                (_vm(vm_id), Cmdlet("Get-VMSnapshot"), Cmdlet("Get-VMHardDiskDrive"),
                 Cmdlet("Get-VHD")), VHD_PROPS, tolerate_errors=True, extra=vhd_enums),
    ]


def vm_ids(rows: Iterable[object]) -> list[str]:
    """The VMs a batch of checkpoint events names (``VirtualSystemIdentifier``), once each."""
    out: dict[str, None] = {}
    for row in rows:
        vm_id = as_id(props(row).get("VirtualSystemIdentifier"))
        if vm_id:
            out[vm_id] = None
    return list(out)


def belongs_to(entity: Entity, vm_id: str) -> bool:
    """Whether the entity is part of what one VM's re-read replaces."""
    if isinstance(entity, VM):
        return entity.id == vm_id
    if isinstance(entity, VirtualDisk | Checkpoint):
        return entity.vm_id == vm_id
    if isinstance(entity, Finding):
        return entity.target == f"vm:{vm_id}"
    return False


# -- CSV free space -------------------------------------------------------------------------


def volume_key(row: dict[str, Any]) -> str:
    """A partition row's join key: its volume GUID (as ``mapping`` joins), else its path."""
    return as_id(row.get("VolumeGuid")) or path_key(text(row.get("Path")))


def merge_partitions(partitions: list[Any], changes: dict[str, dict[str, Any]]) -> list[Any]:
    """The partition rows with the streamed ``FreeSpace``/``TotalSize`` applied."""
    out = []
    for obj in partitions:
        row = props(obj)
        change = changes.get(volume_key(row))
        if change is not None:
            row = {**row, "FreeSpace": change.get("FreeSpace", row.get("FreeSpace")),
                   "TotalSize": change.get("TotalSize", row.get("TotalSize"))}
        out.append(row)
    return out


@dataclass(slots=True)
class Growth:
    """Per CSV (LUN id): its free bytes when its files were last read."""

    seen: dict[str, int] = field(default_factory=dict)

    def grown(self, before: dict[str, Lun], after: dict[str, Lun]) -> list[str]:
        """The LUNs that lost at least :data:`GROWTH_STEP` since their files were read."""
        out = []
        for lun_id, lun in after.items():
            base = self.seen.setdefault(lun_id, before.get(lun_id, lun).free_bytes)
            if base - lun.free_bytes >= GROWTH_STEP:
                out.append(lun_id)
                self.seen[lun_id] = lun.free_bytes
            elif lun.free_bytes > base:  # space freed: the new mark to measure from
                self.seen[lun_id] = lun.free_bytes
        return out


def leaf_paths(known: Iterable[Entity], lun_id: str, owned: set[str]) -> list[str]:
    """The files written now (no other file has them as parent) on one LUN, of the VMs in
    ``owned`` (one node's)."""
    disks = [e for e in known if isinstance(e, VirtualDisk) and e.vm_id in owned]
    parents = {path_key(d.parent_path) for d in disks if d.parent_path}
    return [d.path for d in disks if d.lun_id == lun_id and path_key(d.path) not in parents]


def get_vhds(paths: list[str]) -> list[Command]:
    """Get-VHD of these files, at most :data:`PATH_BATCH` per statement (same shape)."""
    return [
        Command("disk files that grew", (Cmdlet("Get-VHD", (("Path", paths[i:i + PATH_BATCH]),)),),
                VHD_PROPS, tolerate_errors=True,
                extra=_enums(VhdFormat="VhdFormat", VhdType="VhdType"))
        for i in range(0, len(paths), PATH_BATCH)
    ]


def resized(disks: dict[str, VirtualDisk], rows: Iterable[object]) -> list[VirtualDisk]:
    """The known disks (by path key) whose ``FileSize`` or ``Size`` the rows change."""
    out = []
    for row in rows:
        p = props(row)
        disk = disks.get(path_key(text(p.get("Path"))))
        if disk is None:
            continue
        size, most = as_int(p.get("FileSize")), as_int(p.get("Size"))
        if (size, most or disk.max_bytes) != (disk.size_bytes, disk.max_bytes):
            out.append(dataclasses.replace(disk, size_bytes=size, max_bytes=most or disk.max_bytes))
    return out
