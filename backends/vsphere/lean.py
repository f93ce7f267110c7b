"""The small forms the vSphere backend keeps of a VM's properties.

pyvmomi builds a typed object for every element of every device, every file
and every snapshot of every VM; the mapping reads a few attributes of them.
The backend's property cache (``VSphereBackend._cache``) holds every VM's
last properties for as long as the VM is in view — they are needed to map
the VM again when one property changes (``partialUpdates=False`` brings
whole top-level properties only) — so at a full vCenter's size (45,000 VMs)
what it keeps per VM is most of the client's memory.

This module owns those forms: the ``Lean*`` classes below carry the same
attribute names as pyvmomi's (the mapping, the executor and the stun watcher
read both alike), with only what they read. They are built from the raw XML
(``session._lean_hardware`` / ``_lean_layout``, the first full read) or from
pyvmomi objects (``compact_vm``, every later change), in the session's
worker thread, so the pyvmomi objects are dropped as soon as an answer is
read. Morefs become their moref value (``mapping.moid`` reads both), and the
strings that repeat across VMs (enumerations, device labels, file types,
host and datastore ids) are interned: one copy per distinct value.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyVmomi import vim


@dataclass(frozen=True, slots=True)
class LeanDescription:
    """``vim.Description`` (a device's ``deviceInfo``): its label only."""

    label: str = ""


@dataclass(frozen=True, slots=True)
class LeanDiskBacking:
    """A disk's backing: ``diskMode`` (FlatVer2/SparseVer2/RawDiskMappingVer1 ...
    BackingInfo) and, for an RDM only, ``compatibilityMode`` (pyvmomi
    docs/vim/vm/device/VirtualDisk/RawDiskMappingVer1BackingInfo.rst)."""

    diskMode: str | None = None
    compatibilityMode: str | None = None


@dataclass(frozen=True, slots=True)
class LeanVirtualDisk:
    """A ``vim.vm.device.VirtualDisk`` as the mapping reads it."""

    key: int
    capacityInKB: int = 0
    capacityInBytes: int | None = None
    deviceInfo: LeanDescription | None = None
    backing: LeanDiskBacking | None = None


@dataclass(frozen=True, slots=True)
class LeanVirtualSCSIController:
    """A ``vim.vm.device.VirtualSCSIController`` (any model): ``sharedBus``
    (docs/vim/vm/device/VirtualSCSIController.rst)."""

    key: int
    sharedBus: str
    deviceInfo: LeanDescription | None = None


@dataclass(frozen=True, slots=True)
class LeanVirtualPCIPassthrough:
    """A ``vim.vm.device.VirtualPCIPassthrough`` (DirectPath I/O)."""

    key: int
    deviceInfo: LeanDescription | None = None


LeanDevice = LeanVirtualDisk | LeanVirtualSCSIController | LeanVirtualPCIPassthrough


@dataclass(frozen=True, slots=True)
class LeanHardware:
    """A ``vim.vm.VirtualHardware`` with the devices the mapping reads (disks,
    SCSI controllers, PCI passthrough devices), in the server's order."""

    numCPU: int
    numCoresPerSocket: int
    memoryMB: int
    device: tuple[LeanDevice, ...]


@dataclass(frozen=True, slots=True)
class LeanFileInfo:
    """``vim.vm.FileLayoutEx.FileInfo``."""

    key: int
    name: str
    type: str
    size: int
    uniqueSize: int | None = None
    accessible: bool | None = None


@dataclass(frozen=True, slots=True)
class LeanDiskUnit:
    """``vim.vm.FileLayoutEx.DiskUnit``."""

    fileKey: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LeanDiskLayout:
    """``vim.vm.FileLayoutEx.DiskLayout``."""

    key: int
    chain: tuple[LeanDiskUnit, ...]


@dataclass(frozen=True, slots=True)
class LeanSnapshotLayout:
    """``vim.vm.FileLayoutEx.SnapshotLayout``; ``key`` is the snapshot's moref value."""

    key: str
    dataKey: int
    memoryKey: int | None
    disk: tuple[LeanDiskLayout, ...]


@dataclass(frozen=True, slots=True)
class LeanLayoutEx:
    """``vim.vm.FileLayoutEx``."""

    file: tuple[LeanFileInfo, ...]
    disk: tuple[LeanDiskLayout, ...]
    snapshot: tuple[LeanSnapshotLayout, ...]


@dataclass(frozen=True, slots=True)
class LeanSnapshotTree:
    """``vim.vm.SnapshotTree``: what the mapping and the executor read of one
    snapshot; ``snapshot`` is the snapshot's moref value."""

    snapshot: str
    name: str
    description: str
    createTime: datetime | None
    quiesced: bool
    childSnapshotList: tuple[LeanSnapshotTree, ...]


@dataclass(frozen=True, slots=True)
class LeanSnapshotInfo:
    """``vim.vm.SnapshotInfo``; ``currentSnapshot`` is a moref value (None: unset)."""

    currentSnapshot: str | None
    rootSnapshotList: tuple[LeanSnapshotTree, ...]


LEAN_TYPES = (LeanHardware, LeanLayoutEx, LeanSnapshotInfo)

# layoutEx file types that hold no VM data (FileLayoutEx.FileType, pyvmomi
# docs/vim/vm/FileLayoutEx/FileType.rst): the executor leaves them out of a VM's
# bytes (``executor._files_bytes``).
NOT_DATA = frozenset({"log", "swap", "uwswap", "stat", "screenshot", "nvram", "config",
                      "extendedConfig", "snapshotList"})


def kept_files(files: Iterable[LeanFileInfo], disk: Iterable[LeanDiskLayout],
               snapshot: Iterable[LeanSnapshotLayout]) -> tuple[LeanFileInfo, ...]:
    """The files of a layout that something reads, in the server's order: every
    file a disk chain or a snapshot layout names (the mapping's disks and snapshot
    sizes), every data file (the executor's bytes), the configuration files (the
    mapping's home datastore, the stun watcher's fallback) and the ``vmware.log``
    files (the stun watcher). The others (nvram, swap, stat, screenshot, older
    logs, .vmsd, .vmxf: a third of a VM's files) are dropped."""
    named: set[int] = set()
    for d in (*disk, *(sd for s in snapshot for sd in s.disk)):
        for unit in d.chain:
            named.update(unit.fileKey)
    for s in snapshot:
        named.add(s.dataKey)
        if s.memoryKey is not None:
            named.add(s.memoryKey)
    return tuple(
        f for f in files
        if f.key in named or f.type not in NOT_DATA or f.type == "config"
        or (f.type == "log" and f.name.endswith("/vmware.log"))
    )


def lean_layout_of(files: Iterable[LeanFileInfo], disk: tuple[LeanDiskLayout, ...],
                   snapshot: tuple[LeanSnapshotLayout, ...]) -> LeanLayoutEx:
    """A ``LeanLayoutEx`` with the files something reads (``kept_files``)."""
    return LeanLayoutEx(kept_files(files, disk, snapshot), disk, snapshot)


def intern(value: Any) -> str | None:
    """One shared copy of a string that repeats across VMs (None stays None)."""
    return None if value is None else sys.intern(str(value))


def _ref(value: Any) -> str | None:
    """A moref (or its value) as its interned moref value."""
    if value is None:
        return None
    return sys.intern(str(getattr(value, "_moId", value)))


def _label(dev: Any) -> LeanDescription | None:
    info = getattr(dev, "deviceInfo", None)
    return None if info is None else LeanDescription(intern(info.label) or "")


def lean_hardware(hw: Any) -> Any:
    """A pyvmomi ``VirtualHardware`` as ``LeanHardware`` (the devices the lean
    XML reader keeps: disks, SCSI controllers of every model, PCI passthrough)."""
    if hw is None or isinstance(hw, LeanHardware):
        return hw
    devices: list[LeanDevice] = []
    for dev in hw.device or ():
        if isinstance(dev, vim.vm.device.VirtualDisk):
            backing = dev.backing
            devices.append(LeanVirtualDisk(
                key=int(dev.key or 0),
                capacityInKB=int(dev.capacityInKB or 0),
                capacityInBytes=(None if dev.capacityInBytes is None
                                 else int(dev.capacityInBytes)),
                deviceInfo=_label(dev),
                backing=None if backing is None else LeanDiskBacking(
                    diskMode=intern(getattr(backing, "diskMode", None)),
                    compatibilityMode=intern(getattr(backing, "compatibilityMode", None)),
                ),
            ))
        elif isinstance(dev, vim.vm.device.VirtualSCSIController):
            devices.append(LeanVirtualSCSIController(
                key=int(dev.key or 0), sharedBus=intern(dev.sharedBus) or "",
                deviceInfo=_label(dev)))
        elif isinstance(dev, vim.vm.device.VirtualPCIPassthrough):
            devices.append(LeanVirtualPCIPassthrough(key=int(dev.key or 0),
                                                     deviceInfo=_label(dev)))
    return LeanHardware(
        numCPU=int(hw.numCPU or 0),
        numCoresPerSocket=int(hw.numCoresPerSocket or 0),
        memoryMB=int(hw.memoryMB or 0),
        device=tuple(devices),
    )


def _disk_layouts(disks: Any) -> tuple[LeanDiskLayout, ...]:
    return tuple(
        LeanDiskLayout(
            key=int(d.key or 0),
            chain=tuple(LeanDiskUnit(tuple(int(k) for k in u.fileKey or ()))
                        for u in d.chain or ()),
        )
        for d in disks or ()
    )


def lean_layout(layout: Any) -> Any:
    """A pyvmomi ``FileLayoutEx`` as ``LeanLayoutEx``."""
    if layout is None or isinstance(layout, LeanLayoutEx):
        return layout
    return lean_layout_of(
        files=(
            LeanFileInfo(
                key=int(f.key or 0),
                name=str(f.name or ""),
                type=intern(f.type) or "",
                size=int(f.size or 0),
                uniqueSize=None if f.uniqueSize is None else int(f.uniqueSize),
                accessible=None if f.accessible is None else bool(f.accessible),
            )
            for f in layout.file or ()
        ),
        disk=_disk_layouts(layout.disk),
        snapshot=tuple(
            LeanSnapshotLayout(
                key=_ref(s.key) or "",
                dataKey=int(s.dataKey or 0),
                memoryKey=None if s.memoryKey is None else int(s.memoryKey),
                disk=_disk_layouts(s.disk),
            )
            for s in layout.snapshot or ()
        ),
    )


def _tree(tree: Any) -> LeanSnapshotTree:
    return LeanSnapshotTree(
        snapshot=_ref(tree.snapshot) or "",
        name=str(tree.name or ""),
        description=str(tree.description or ""),
        createTime=tree.createTime,
        quiesced=bool(tree.quiesced),
        childSnapshotList=tuple(_tree(c) for c in tree.childSnapshotList or ()),
    )


def lean_snapshot(info: Any) -> Any:
    """A pyvmomi ``SnapshotInfo`` as ``LeanSnapshotInfo``."""
    if info is None or isinstance(info, LeanSnapshotInfo):
        return info
    return LeanSnapshotInfo(
        currentSnapshot=_ref(info.currentSnapshot),
        rootSnapshotList=tuple(_tree(t) for t in info.rootSnapshotList or ()),
    )


def _refs(value: Any) -> tuple[str, ...]:
    return tuple(r for r in (_ref(v) for v in value or ()) if r)


# What each VM property is kept as (the others as they come: str, bool, int).
_VM_FORMS: dict[str, Any] = {
    "config.hardware": lean_hardware,
    "layoutEx": lean_layout,
    "snapshot": lean_snapshot,
    "runtime.host": _ref,
    "datastore": _refs,
    # Enumerations and versions: a handful of values across the whole inventory.
    "runtime.powerState": intern,
    "runtime.connectionState": intern,
    "config.version": intern,
    "config.firmware": intern,
    "guest.toolsRunningStatus": intern,
    "guest.toolsVersionStatus2": intern,
    "runtime.faultToleranceState": intern,
}


def compact_vm(props: dict[str, Any]) -> dict[str, Any]:
    """A VM's properties (as read or pushed) in the forms above, in place."""
    for name, value in props.items():
        form = _VM_FORMS.get(name)
        if form is not None and value is not None:
            props[name] = form(value)
    return props
