"""Hyper-V / FailoverClusters handlers of the WinRM test peer, answering from the simulated cluster.

:class:`ClusterModel` holds a simulated cluster built by
``ventana.backends.sim.build_inventory`` (the same data the built-in
simulator shows) behind a lock; tests change it between polls
(:meth:`ClusterModel.set_power`, :meth:`~ClusterModel.add_checkpoint`,
:meth:`~ClusterModel.remove_checkpoint`, :meth:`~ClusterModel.set_free`).
:func:`build_hyperv_registry` serves it as one node would: ``node=None``
answers for every VM of the cluster (one endpoint for the whole cluster),
``node="HV-NODE-01"`` only for the VMs that node hosts (one peer per node).

Objects are shaped like a real server's output: plain type names
(``Microsoft.HyperV.PowerShell.VirtualMachine``…), enums by name, nested
objects flattened to strings, sizes as Int64/UInt64, Guids as Guids,
DateTime as DateTime. ``Select-Object -Property`` projects them into
``Selected.<type>`` objects with note properties, as PowerShell does;
``ConvertTo-Json`` writes what Windows PowerShell 5.1 writes (enums as
numbers, DateTime as ``\\/Date(ms)\\/``). Within a statement, cmdlets pass
light :class:`Row` objects to the next one (``Get-VMSnapshot |
Get-VMHardDiskDrive | Get-VHD`` works as on a host: drives of piped VMs or
checkpoints, ``Get-VHD`` taking ``Path`` from the pipeline); only what
reaches the client is built as psrpcore objects.

Commands: Get-ClusterNode, Get-ClusterSharedVolume,
Get-ClusterSharedVolumeState, Get-CimInstance (Win32_ComputerSystem,
root/MSCluster MSCluster_DiskPartition and MSCluster_ClusterSharedVolume with
its BackupState — :meth:`ClusterModel.set_in_backup`), ConvertTo-Json, Get-VM, Get-VMSnapshot,
Get-VMHardDiskDrive, Get-VHD, Get-VMReplication, Get-VMIntegrationService,
Get-Service, Get-ItemPropertyValue, Select-Object (-Property, -ExpandProperty),
the VM event stream (Register-CimIndicationEvent on Msvm_ComputerSystem,
Wait-Event, Get-Event, Remove-Event, Unregister-Event: events are queued as
:meth:`ClusterModel.set_power` changes a VM of this node; ``model.indications
= False`` refuses the subscription; queues are per endpoint and
SourceIdentifier, not per runspace as on a real server), and the mutating
commands: Remove-VMSnapshot (``Get-VM -Id … | Remove-VMSnapshot -Name *``:
merges newest first with progress records; ``model.merge_fail_after``
makes it fail part-way with a terminating error, ``model.merge_step_s``
sets its pace; ``Get-VMSnapshot -Id … | Remove-VMSnapshot`` merges one),
Update-VMVersion; the clean-up ones — Optimize-VHD (refused while the file's
VM is not Off; the file keeps ``model.compact_keep`` of its size, the CSV
gains the rest), Remove-ClusterGroup -VMId, Remove-VM (Off and no cluster
role; leaves the files), Remove-Item -LiteralPath (one file; ``model.locked``
files are "in use"), Test-Path; and the rebuild's — Get-VMNetworkAdapter(+Vlan),
Get-VMFirmware (BootOrder), Get-VMBios, Stop-VM, Start-VM, Convert-VHD,
New-VM -NoVHD, Set-VMProcessor, Set-VMMemory, Remove-/Add-VMNetworkAdapter,
Set-VMNetworkAdapterVlan, Add-VMHardDiskDrive, Set-VMFirmware,
Add-ClusterVirtualMachineRole, Rename-VM, Set-VM -AutomaticStartAction.
Per-VM host facts the inventory lacks (drive slots, NICs, firmware) are
derived from the VM's name; ``model.system_drive`` puts a VM's OS on another
drive and ``model.prepend_boot_entries`` makes Add-VMHardDiskDrive put the
new drive first in the boot order (the wrong-boot-device incident).

Start it by hand (one endpoint serving the whole cluster)::

    VENTANA_TEST_WINRM_PASSWORD=... .venv/bin/python -m tests.peers.winrm \\
        --port 5986 --commands tests.peers.winrm.hyperv:build_registry
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import functools
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from ventana.backends.sim import SimConfig, build_inventory
from ventana.state.model import (
    MB,
    VM,
    Checkpoint,
    CheckpointKind,
    DiskFormat,
    IntegrationState,
    LunRole,
    LunState,
    PowerState,
    ReplicationState,
    ServiceState,
    VirtualDisk,
)

from .cmdlets import (
    CommandRegistry,
    CommandWriter,
    ErrorCategory,
    PSInt64,
    TerminatingError,
    ps_enum,
    ps_object,
)

try:  # UInt64/UInt32 as a real server sends VHD sizes and CIM sizes
    from psrpcore.types import PSUInt, PSUInt64
except ImportError:  # pragma: no cover
    PSUInt, PSUInt64 = int, PSInt64  # type: ignore[misc, assignment]

from psrpcore.types import PSNoteProperty, PSObject

BACKUP_SERVICE = "VentanaTestBackupAgent"
BACKUP_VERSION_KEY = "HKLM:\\SOFTWARE\\VentanaTest\\BackupAgent"

HV = "Microsoft.HyperV.PowerShell."
FC = "Microsoft.FailoverClusters.PowerShell."


def _vz_error(message: str, error_id: str, category: Any) -> TerminatingError:
    """A terminating VirtualizationException, as the Hyper-V cmdlets raise them."""
    return TerminatingError(message, error_id=error_id, category=category,
                            exception_type=HV + "VirtualizationException")


VMState = ps_enum(
    HV + "VMState",
    {
        "Other": 1,
        "Running": 2,
        "Off": 3,
        "Stopping": 4,
        "Saved": 6,
        "Paused": 9,
        "Starting": 10,
        "Reset": 11,
        "Saving": 32773,
        "Pausing": 32776,
        "Resuming": 32777,
        "PausedCritical": 32785,
    },
)
SnapshotType = ps_enum(
    HV + "SnapshotType",
    {"Standard": 0, "Recovery": 1, "Planned": 2, "Missing": 3, "Replica": 4},
)
VhdFormat = ps_enum(HV + "VhdFormat", {"VHD": 2, "VHDX": 3, "VHDSet": 4})
VhdType = ps_enum(HV + "VhdType", {"Fixed": 2, "Dynamic": 3, "Differencing": 4})
ControllerType = ps_enum(HV + "ControllerType", {"IDE": 0, "SCSI": 1})
ReplState = ps_enum(
    HV + "VMReplicationState",
    {"Disabled": 0, "Replicating": 4, "Suspended": 8, "Error": 9},
)
ReplHealth = ps_enum(
    HV + "VMReplicationHealthState",
    {"NotApplicable": 0, "Normal": 1, "Warning": 2, "Critical": 3},
)
ReplMode = ps_enum(HV + "VMReplicationMode", {"None": 0, "Primary": 1, "Replica": 2})
OpStatus = ps_enum(
    HV + "VMIntegrationComponentOperationalStatus",
    {"Ok": 2, "Degraded": 3, "Error": 6, "NoContact": 12, "LostCommunication": 13},
)
NodeStateEnum = ps_enum(
    FC + "ClusterNodeState", {"Up": 0, "Down": 1, "Paused": 2, "Joining": 3, "Unknown": -1}
)
DrainStatus = ps_enum(
    FC + "NodeDrainStatus", {"NotInitiated": 0, "InProgress": 1, "Completed": 2, "Failed": 3}
)
ResourceState = ps_enum(
    FC + "ClusterResourceState",
    {"Unknown": -1, "Online": 2, "Offline": 3, "Failed": 4, "OnlinePending": 129},
)
CsvStateInfo = ps_enum(
    FC + "ClusterSharedVolumeStateInfo",
    {"Unavailable": 0, "Paused": 1, "Direct": 2, "FileSystemRedirected": 3, "BlockRedirected": 4},
)
VlanMode = ps_enum(HV + "VMNetworkAdapterVlanMode",
                   {"Untagged": 0, "Access": 1, "Trunk": 2, "Private": 3})
OnOff = ps_enum(HV + "OnOffState", {"On": 0, "Off": 1})
BootType = ps_enum(HV + "VMBootSourceType", {"Unknown": 0, "Drive": 1, "Network": 2, "File": 3})
BootDevice = ps_enum(HV + "BootDevice", {"Floppy": 0, "CD": 1, "IDE": 2,
                                         "LegacyNetworkAdapter": 3, "NetworkAdapter": 4,
                                         "VHD": 5})
ServiceStatus = ps_enum(
    "System.ServiceProcess.ServiceControllerStatus",
    {"Stopped": 1, "StartPending": 2, "StopPending": 3, "Running": 4},
)

_POWER = {
    PowerState.RUNNING: "Running",
    PowerState.OFF: "Off",
    PowerState.SAVED: "Saved",
    PowerState.PAUSED: "Paused",
    PowerState.PAUSED_CRITICAL: "PausedCritical",
    PowerState.STARTING: "Starting",
    PowerState.STOPPING: "Stopping",
    PowerState.UNKNOWN: "Other",
}
_SNAP = {
    CheckpointKind.STANDARD: "Standard",
    CheckpointKind.PRODUCTION: "Standard",  # production checkpoints report "Standard" too
    CheckpointKind.BACKUP: "Recovery",
    CheckpointKind.RECOVERY: "Planned",
}
_REPL = {
    ReplicationState.DISABLED: "Disabled",
    ReplicationState.REPLICATING: "Replicating",
    ReplicationState.SUSPENDED: "Suspended",
    ReplicationState.ERROR: "Error",
}
_CSV_STATE = {
    LunState.ONLINE: "Online",
    LunState.REDIRECTED: "Online",
    LunState.OFFLINE: "Offline",
    LunState.FAILED: "Failed",
}


def _enum(enum_type: Any, name: str) -> Any:
    return enum_type[name]


def volume_guid(lun_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ventana-test-volume:{lun_id}"))


class ClusterModel:
    """A simulated cluster that handlers read and tests change (thread-safe)."""

    def __init__(self, config: SimConfig | None = None, epoch: datetime | None = None) -> None:
        config = config or SimConfig(rate=0)
        inv = build_inventory(config, epoch or datetime(2025, 1, 6, 9, 0, tzinfo=UTC))
        self.lock = threading.RLock()
        self.config = config
        self.cluster = inv.cluster
        self.nodes = {n.id: n for n in inv.nodes}
        self.luns = {x.id: x for x in inv.luns}
        self.vms = {v.id: v for v in inv.vms}
        self.host_version = "9.0"  # Update-VMVersion raises VMs to this
        self.disks = {d.id: d for d in inv.disks}
        self.checkpoints = {c.id: c for c in inv.checkpoints}
        self.chains = {k: list(v) for k, v in inv.chains.items()}
        self.files = {k: list(v) for k, v in inv.checkpoint_files.items()}
        self.calls: list[str] = []  # command names served, for tests
        self.merge_step_s = 0.02  # Remove-VMSnapshot: seconds per progress step
        self.merge_fail_after: int | None = None  # fail before removing checkpoint N+1
        #: Register-CimIndicationEvent accepted (False: refused, as with too few rights).
        self.indications = True
        self.watchers: list[Any] = []  # called with each VM whose state changed
        #: VMs with a cluster role (Remove-ClusterGroup -VMId removes it).
        self.clustered: set[str] = set(self.vms)
        #: Files Remove-Item cannot delete (casefolded paths): "in use by another process".
        self.locked: set[str] = set()
        #: Optimize-VHD: the file keeps this share of its size (the rest was unused blocks).
        self.compact_keep = 0.6
        # -- what the rebuild reads and sets (lazily derived per VM from its name) --
        self.slots: dict[str, list[tuple[str, int, int]]] = {}  # per drive: type, number, loc
        self.system_drive: dict[str, int] = {}  # which drive holds the OS (default 0)
        self.nics: dict[str, list[dict[str, Any]]] = {}
        self.firmware: dict[str, dict[str, Any]] = {}  # Gen2: boot order, Secure Boot
        self.dynamic_memory: set[str] = set()
        self.auto_start: dict[str, str] = {}
        self.group_names: dict[str, str] = {}  # clustered VM id -> its cluster group's name
        #: SCSI controllers of VMs made by New-VM (one; Add-VMScsiController adds).
        self.scsi_controllers: dict[str, int] = {}
        #: Failure injection: Add-VMHardDiskDrive puts the new drive FIRST in the boot order.
        self.prepend_boot_entries = False
        self._index_version = -1
        self.version = 0  # bumped by every change (indexes are rebuilt lazily)
        self._by_path: dict[str, VirtualDisk] = {}
        self._children: dict[str, VirtualDisk] = {}  # parent path -> child file
        self._by_node: dict[str | None, list[VM]] = {}
        self._mounts: dict[str, str] = {}

    def _indexes(self) -> None:
        """Path and node indexes: O(1) lookups instead of scans per VM.

        Rebuilt under the lock after a change; read without it (each index is
        replaced whole, never changed in place).
        """
        if self._index_version == self.version:
            return
        with self.lock:
            self._rebuild()

    def _rebuild(self) -> None:
        if self._index_version == self.version:
            return
        self._by_path = {d.path.casefold(): d for d in self.disks.values()}
        self._children = {
            d.parent_path.casefold(): d for d in self.disks.values() if d.parent_path
        }
        by_node: dict[str | None, list[VM]] = {None: list(self.vms.values())}
        for vm in self.vms.values():
            by_node.setdefault(vm.node_id, []).append(vm)
        self._by_node = by_node
        mounts: dict[str, str] = {}
        for d in self.disks.values():
            if d.lun_id not in mounts and d.path.lower().startswith("c:\\clusterstorage\\"):
                mounts[d.lun_id] = "\\".join(d.path.split("\\")[:3])
        self._mounts = mounts
        self._index_version = self.version

    def changed(self) -> None:
        """Call after changing the model directly (not through the methods below)."""
        with self.lock:
            self.version += 1

    # -- what a node sees ----------------------------------------------------------------
    def vms_of(self, node: str | None) -> list[VM]:
        self._indexes()
        return list(self._by_node.get(node, []))

    def drive_chains(self, vm: VM) -> list[list[VirtualDisk]]:
        """Each drive's files, base first (disk_ids are the base disks)."""
        self._indexes()
        children = self._children
        out = []
        for base_id in vm.disk_ids:
            disk = self.disks.get(base_id)
            chain = []
            while disk is not None and len(chain) < 1000:
                chain.append(disk)
                disk = children.get(disk.path.casefold())
                if disk is not None and disk.vm_id != vm.id:
                    disk = None
            out.append(chain)
        return out

    def disk_by_path(self, path: str) -> VirtualDisk | None:
        self._indexes()
        return self._by_path.get(path.casefold())

    def resource_name(self, lun_id: str) -> str:
        """The cluster disk resource's name (unique, unlike volume labels)."""
        with self.lock:
            return f"Cluster Disk {list(self.luns).index(lun_id) + 1}"

    def mount_of(self, lun_id: str) -> str:
        """C:\\ClusterStorage\\VolumeN, from the VM files placed on the LUN."""
        with self.lock:
            self._indexes()
            if lun_id in self._mounts:
                return self._mounts[lun_id]
        n = sorted(self.luns).index(lun_id) + 1 if lun_id in self.luns else 0
        return f"C:\\ClusterStorage\\Spare{n}"

    def vm_folder(self, vm: VM) -> str:
        """The VM's configuration folder: where its first disk file lives."""
        disk = self.disks.get(vm.disk_ids[0]) if vm.disk_ids else None
        if disk is None:
            return f"C:\\ClusterStorage\\Volume1\\{vm.name}"
        return disk.path.rsplit("\\", 1)[0]

    def slot(self, vm: VM, n: int) -> tuple[str, int, int]:
        """Drive ``n``'s controller type, number and location."""
        slots = self.slots.get(vm.id)
        if slots is not None and n < len(slots):
            return slots[n]
        return ("IDE" if vm.generation == 1 else "SCSI", 0, n)

    def nics_of(self, vm: VM) -> list[dict[str, Any]]:
        with self.lock:
            if vm.id not in self.nics:
                rng = random.Random(f"nic:{vm.name}")
                vlan = (10, 20)[rng.randrange(2)]
                self.nics[vm.id] = [{
                    "name": "Network Adapter", "switch": "vSwitch-LAN", "vlan": vlan,
                    "mac": "00155D" + "".join(f"{rng.randrange(256):02X}" for _ in range(3)),
                    "dynamic": True, "ip": f"10.20.{vlan}.{rng.randrange(20, 250)}",
                }]
            return self.nics[vm.id]

    def firmware_of(self, vm: VM) -> dict[str, Any]:
        """Gen2 firmware: boot order entries ("disk", drive index) / ("nic", name)."""
        with self.lock:
            if vm.id not in self.firmware:
                linux = vm.name.startswith(("lnx-", "fw-"))
                order: list[tuple[str, Any]] = []
                if vm.disk_ids:
                    order.append(("disk", self.system_drive.get(vm.id, 0)))
                order += [("nic", n["name"]) for n in self.nics_of(vm)]
                self.firmware[vm.id] = {
                    "order": order, "secure": True,
                    "template": "MicrosoftUEFICertificateAuthority" if linux
                    else "MicrosoftWindows"}
            return self.firmware[vm.id]

    def flat_size(self, disk: VirtualDisk) -> int:
        """A file's chain copied flat (Convert-VHD): every file up to the root, capped."""
        size, seen, d = 0, set(), disk
        while d is not None and d.id not in seen:
            seen.add(d.id)
            size += d.size_bytes
            d = self.disk_by_path(d.parent_path) if d.parent_path else None
        return min(size, disk.max_bytes)

    def owner_of(self, disk: VirtualDisk) -> VM | None:
        """The VM using a file (None: an orphan left behind by Remove-VM)."""
        return self.vms.get(disk.vm_id)

    def free_file(self, disk: VirtualDisk, freed: int) -> None:
        """``freed`` bytes of a file's LUN become free (the caller holds the lock)."""
        lun = self.luns.get(disk.lun_id)
        if lun is not None:
            self.luns[lun.id] = dataclasses.replace(
                lun, free_bytes=min(lun.total_bytes, lun.free_bytes + freed))

    # -- changes tests make -------------------------------------------------------------
    def vm_named(self, name: str) -> VM:
        with self.lock:
            return next(v for v in self.vms.values() if v.name == name)

    def set_power(self, vm_id: str, power: PowerState) -> None:
        with self.lock:
            vm = self.vms[vm_id]
            integration = IntegrationState.OK if power is PowerState.RUNNING else vm.integration
            if power in (PowerState.OFF, PowerState.SAVED):
                integration = IntegrationState.OFF
            vm = self.vms[vm_id] = dataclasses.replace(vm, power=power, integration=integration)
            self.version += 1
            watchers = list(self.watchers)
        for watcher in watchers:  # CIM indications: Msvm_ComputerSystem modified
            watcher(vm)

    def set_free(self, lun_id: str, free_bytes: int) -> None:
        with self.lock:
            self.luns[lun_id] = dataclasses.replace(self.luns[lun_id], free_bytes=free_bytes)
            self.version += 1

    def set_in_backup(self, lun_id: str, value: bool) -> None:
        """A backup of this CSV starts (True) or ends (False): its BackupState."""
        with self.lock:
            self.luns[lun_id] = dataclasses.replace(self.luns[lun_id], in_backup=value)
            self.version += 1

    def add_checkpoint(self, vm_id: str, name: str, kind: CheckpointKind) -> str:
        """A new checkpoint: one new .avhdx on top of every drive's chain."""
        with self.lock:
            vm = self.vms[vm_id]
            chain = self.chains.setdefault(vm_id, [])
            cp_id = str(uuid.uuid4())
            files = []
            first = ""
            for drive in self.drive_chains(vm):
                leaf = drive[-1]
                file_id = str(uuid.uuid4())
                stem = leaf.path.rsplit("\\", 1)[-1].split("_")[0].rsplit(".", 1)[0]
                folder = leaf.path.rsplit("\\", 1)[0]
                path = f"{folder}\\{stem}_{file_id.upper()}.avhdx"
                self.disks[file_id] = VirtualDisk(
                    file_id,
                    vm_id,
                    path,
                    DiskFormat.AVHDX,
                    4 * MB,
                    leaf.max_bytes,
                    leaf.path,
                    leaf.lun_id,
                )
                files.append(file_id)
                first = first or path
            parent = chain[-1] if chain else None
            self.checkpoints[cp_id] = Checkpoint(
                cp_id, vm_id, name, parent, kind, datetime.now(UTC), first, 4 * MB * len(files)
            )
            self.files[cp_id] = files
            chain.append(cp_id)
            self.version += 1
            return cp_id

    def remove_checkpoint(self, cp_id: str) -> None:
        """Remove-VMSnapshot of the newest checkpoint: its files merge into their parents."""
        with self.lock:
            cp = self.checkpoints.pop(cp_id)
            chain = self.chains.get(cp.vm_id, [])
            if cp_id in chain:
                chain.remove(cp_id)
            for file_id in self.files.pop(cp_id, []):
                merged = self.disks.pop(file_id, None)
                if merged is None:
                    continue
                for d_id, d in list(self.disks.items()):  # its blocks go into the parent
                    if merged.parent_path and d.path.casefold() == merged.parent_path.casefold():
                        grown = min(d.max_bytes, d.size_bytes + merged.size_bytes)
                        self.disks[d_id] = dataclasses.replace(d, size_bytes=grown)
                for d_id, d in list(self.disks.items()):  # re-parent a child file
                    if d.parent_path and d.parent_path.casefold() == merged.path.casefold():
                        self.disks[d_id] = dataclasses.replace(d, parent_path=merged.parent_path)
            for other_id, other in list(self.checkpoints.items()):
                if other.parent_id == cp_id:
                    self.checkpoints[other_id] = dataclasses.replace(other, parent_id=cp.parent_id)
            self.version += 1


# -- object builders ---------------------------------------------------------------------


@functools.lru_cache(maxsize=200_000)
def _guid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


def _num(writer: CommandWriter, kind: Any, value: int) -> Any:
    """A sized integer for the wire; a plain int when it only goes to the next command."""
    return value if writer.piped else kind(value)


class Row:
    """An object passed from one command to the next within a statement (never serialized).

    Building psrpcore objects costs ~50 µs each; a cmdlet whose output goes
    to ``Select-Object``/``ConvertTo-Json`` on the same node writes these
    instead. What reaches the client is the same either way.
    """

    __slots__ = ("props", "to_string", "type_names")

    def __init__(self, type_names: list[str], props: dict[str, Any],
                 to_string: str | None = None) -> None:
        self.type_names = type_names
        self.props = props
        self.to_string = to_string


def _obj(writer: CommandWriter, type_names: list[str], props: dict[str, Any], *,
         to_string: str | None = None) -> Any:
    """A :class:`Row` when the output is piped on, else the psrpcore object sent to the client."""
    if writer.piped:
        return Row(type_names, props, to_string)
    return ps_object(type_names, props, to_string=to_string)


def _properties(obj: Any) -> tuple[str, dict[str, Any]] | None:
    """(first type name, properties) of a Row or a psrpcore object; None for a primitive."""
    if isinstance(obj, Row):
        return obj.type_names[0], obj.props
    meta = getattr(obj, "PSObject", None)
    if meta is None:
        return None
    values: dict[str, Any] = {}
    for prop in [*meta.adapted_properties, *meta.extended_properties]:
        values.setdefault(prop.name, prop.get_value(obj))
    return (meta.type_names[0] if meta.type_names else "System.Object"), values


_DOTNET_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_PLAIN = (type(None), bool, str, float, int)


def _json_value(value: Any) -> Any:
    """A value as Windows PowerShell 5.1's ConvertTo-Json writes it."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is uuid.UUID:
        return str(value)
    if kind is datetime:
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"/Date({int((when - _DOTNET_EPOCH).total_seconds() * 1000)})/"
    if kind is list or kind is tuple:
        return [_json_value(v) for v in value]
    if kind is Row:
        return _flat(value)
    number = _ENUM_NUMBERS.get(kind, {}).get(str(value)) if issubclass(kind, enum.Enum) else None
    if number is not None:  # enums as their number (5.1 has no -EnumsAsStrings)
        return number
    if isinstance(value, enum.Enum):
        number = int(value.value)
        _ENUM_NUMBERS.setdefault(kind, {})[str(value)] = number
        return number
    if isinstance(value, int):  # psrpcore's sized integers
        return int(value)
    return str(value)


_ENUM_NUMBERS: dict[type, dict[str, int]] = {}


def _convert_to_json(params: dict[str, Any], writer: CommandWriter) -> None:
    """ConvertTo-Json [-Compress]: every piped object as ONE JSON string (5.1 rules).

    No input: no output. One object: the object, not an array. Properties
    in order; enums as numbers, DateTime as "/Date(ms)/", Guid as a string.
    """
    rows: list[Any] = []
    for obj in writer.input:
        found = _properties(obj)
        if found is None:
            rows.append(_json_value(obj))
        else:
            rows.append({name: _json_value(v) for name, v in found[1].items()})
    if not rows:
        return
    compress = bool(params.get("Compress"))
    writer.write_output(json.dumps(
        rows[0] if len(rows) == 1 else rows,
        separators=(",", ":") if compress else (", ", ": "),
        indent=None if compress else 4,
    ))


def _vm_object(vm: VM, writer: CommandWriter, model: ClusterModel) -> Any:
    return _obj(
        writer,
        [HV + "VirtualMachine", HV + "VirtualMachineBase", HV + "VirtualizationObject"],
        {
            "Name": vm.name,
            "Id": _guid(vm.id),
            "VMId": _guid(vm.id),
            "State": _enum(VMState, _POWER.get(vm.power, "Other")),
            "Generation": vm.generation,
            "Version": vm.config_version,
            "ProcessorCount": _num(writer, PSInt64, vm.vcpus),
            "MemoryStartup": _num(writer, PSInt64, vm.memory_mb * MB),
            "DynamicMemoryEnabled": vm.id in model.dynamic_memory,
            "ComputerName": vm.node_id,
            "IsClustered": vm.id in model.clustered,
            "Path": model.vm_folder(vm),
            "ReplicationState": _enum(ReplState, _REPL[vm.replication]),
            "HardDrives": "Microsoft.HyperV.PowerShell.HardDiskDrive[]",  # nested: a string
        },
        to_string=f"VirtualMachine (Name = '{vm.name}') [Id = '{vm.id}']",
    )


#: Msvm_ComputerSystem.EnabledState of each power state (2 Enabled, 3 Disabled,
#: 6 Enabled but Offline = saved, 9 Quiesce = paused, 10 Starting, 4 Shutting Down).
_ENABLED_STATE = {
    PowerState.RUNNING: 2,
    PowerState.OFF: 3,
    PowerState.SAVED: 6,
    PowerState.PAUSED: 9,
    PowerState.PAUSED_CRITICAL: 9,
    PowerState.STARTING: 10,
    PowerState.STOPPING: 4,
}


def _wire(row: Row) -> Any:
    """A Row sent to the client: a psrpcore object, nested objects flattened to strings."""
    return ps_object(row.type_names, {k: _flat(v) for k, v in row.props.items()},
                     to_string=row.to_string)


def _piped_vm_ids(writer: CommandWriter) -> Iterator[str]:
    """The Ids of the VM objects piped in (``Get-VM -Id … | <cmdlet>``)."""
    for obj in writer.input:
        found = _properties(obj)
        if found is not None:
            yield str(found[1].get("Id", ""))


def _flat(value: Any) -> Any:
    """A nested object sent at the default depth: its ToString (type name for a Row)."""
    if isinstance(value, Row):
        return value.to_string or value.type_names[0]
    return value


def _select(params: dict[str, Any], writer: CommandWriter) -> None:
    wanted = [str(p) for p in _as_list(params.get("Property"))]
    expand = params.get("ExpandProperty")
    if expand is not None:  # -ExpandProperty NAME: the property's value itself
        for obj in writer.input:
            found = _properties(obj)
            if found is None:
                continue
            folded = {k.casefold(): v for k, v in found[1].items()}
            value = folded.get(str(expand).casefold())
            if value is None:
                writer.write_error(
                    f"Property \"{expand}\" cannot be found.",
                    error_id="ExpandPropertyNotFound,Microsoft.PowerShell.Commands.SelectObjectCommand",
                    category=ErrorCategory.InvalidArgument,
                )
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Row) and not writer.piped:
                    item = ps_object(item.type_names,
                                     {k: _flat(v) for k, v in item.props.items()},
                                     to_string=item.to_string)
                writer.write_output(item)
        return
    for obj in writer.input:
        found = _properties(obj)
        if found is None:
            writer.write_output(obj)
            continue
        first, props = found
        folded = {name.casefold(): value for name, value in reversed(list(props.items()))}
        values = {name: folded.get(name.casefold()) for name in wanted}
        types = [f"Selected.{first}", "System.Management.Automation.PSCustomObject",
                 "System.Object"]
        if writer.piped:
            writer.write_output(Row(types, values))
            continue
        out = PSObject()
        out.PSObject.type_names = types
        out.PSObject.extended_properties = [
            PSNoteProperty(n, _flat(v)) for n, v in values.items()
        ]
        writer.write_output(out)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _vm_filter(params: dict[str, Any]) -> list[str]:
    return [str(p).casefold() for p in _as_list(params.get("VMName"))] or ["*"]


def _match(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name.casefold(), p) for p in patterns)


def build_hyperv_registry(model: ClusterModel, node: str | None = None) -> CommandRegistry:
    """The Hyper-V/FailoverClusters commands of one node (None: of the whole cluster)."""

    def log(name: str) -> None:
        with model.lock:
            model.calls.append(name)

    def get_cluster_node(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-ClusterNode")
        with model.lock:
            nodes = list(model.nodes.values())
        for n in nodes:
            state = {"up": "Up", "down": "Down", "paused": "Paused", "joining": "Joining"}
            writer.write_output(
                _obj(
                    writer,
                    [FC + "ClusterNode", FC + "ClusterObject"],
                    {
                        "Name": n.name,
                        "Id": str(nodes.index(n) + 1),
                        "State": _enum(NodeStateEnum, state.get(n.state.value, "Unknown")),
                        "DrainStatus": _enum(
                            DrainStatus,
                            "InProgress" if n.state.value == "draining" else "NotInitiated",
                        ),
                        "Cluster": model.cluster.name,
                    },
                    to_string=n.name,
                )
            )

    def get_csvs(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-ClusterSharedVolume")
        with model.lock:
            luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
        for lun in luns:
            writer.write_output(
                _obj(
                    writer,
                    [FC + "ClusterSharedVolume", FC + "ClusterObject"],
                    {
                        "Name": model.resource_name(lun.id),
                        "Id": lun.id,
                        "OwnerNode": lun.owner_node_id,  # a ClusterNode, flattened to its name
                        "State": _enum(ResourceState, _CSV_STATE[lun.state]),
                        "SharedVolumeInfo": "{" + model.mount_of(lun.id) + "}",
                    },
                    to_string=model.resource_name(lun.id),
                )
            )

    def get_csv_state(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-ClusterSharedVolumeState")
        with model.lock:
            luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
            nodes = list(model.nodes)
        for lun in luns:
            for n in nodes:
                info = "Direct"
                if lun.state is LunState.REDIRECTED:
                    info = "FileSystemRedirected"
                writer.write_output(
                    _obj(
                        writer,
                        [FC + "ClusterSharedVolumeState"],
                        {
                            "Name": model.resource_name(lun.id),
                            "Node": n,
                            "StateInfo": _enum(CsvStateInfo, info),
                            "VolumeName": f"\\\\?\\Volume{{{volume_guid(lun.id)}}}\\",
                            "VolumeFriendlyName": model.mount_of(lun.id).rsplit("\\", 1)[-1],
                        },
                    )
                )

    def get_cim(params: dict[str, Any], writer: CommandWriter) -> None:
        cls = str(params.get("ClassName", "")).casefold()
        log(f"Get-CimInstance {cls}")
        if cls == "win32_computersystem":
            writer.write_output(
                _obj(
                    writer,
                    [
                        "Microsoft.Management.Infrastructure.CimInstance#root/cimv2/Win32_ComputerSystem"
                    ],
                    {"Name": node or next(iter(model.nodes)), "Domain": "lab.example"},
                )
            )
            return
        if cls == "mscluster_clustersharedvolume":
            with model.lock:
                luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
            for lun in luns:
                writer.write_output(_obj(
                    writer,
                    ["Microsoft.Management.Infrastructure.CimInstance#root/MSCluster/"
                     "MSCluster_ClusterSharedVolume"],
                    {
                        "Name": model.mount_of(lun.id),
                        "VolumeName": f"\\\\?\\Volume{{{volume_guid(lun.id)}}}\\",
                        "BackupState": _num(writer, PSUInt, 1 if lun.in_backup else 0),
                        "FaultState": _num(writer, PSUInt, 0),
                    },
                ))
            return
        if cls == "msvm_guestnetworkadapterconfiguration":  # KVP: what the guests report
            for vm in model.vms_of(node):
                if vm.power is not PowerState.RUNNING or vm.integration is not \
                        IntegrationState.OK:
                    continue
                for nic in model.nics_of(vm):
                    if not nic.get("ip"):
                        continue
                    writer.write_output(_obj(writer, [
                        "Microsoft.Management.Infrastructure.CimInstance#root/virtualization/"
                        "v2/Msvm_GuestNetworkAdapterConfiguration"], {
                        "InstanceID": f"Microsoft:GuestNetwork\\{vm.id.upper()}\\"
                                      f"{_nic_guid(vm, nic)}",
                        "IPAddresses": [nic["ip"], "fe80::215:5dff:fe00:1"],
                        "Subnets": ["255.255.255.0", "64"],
                        "DefaultGateways": [f"10.20.{nic['vlan']}.1"],
                        "DNSServers": ["10.20.10.11", "10.20.10.12"],
                        "DHCPEnabled": False}))
            return
        if cls != "mscluster_diskpartition":
            writer.write_error(
                f"Invalid class {params.get('ClassName')}", category=ErrorCategory.ObjectNotFound
            )
            return
        with model.lock:
            luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
        for lun in luns:
            mount = model.mount_of(lun.id)
            writer.write_output(
                _obj(
                    writer,
                    [
                        "Microsoft.Management.Infrastructure.CimInstance#root/MSCluster/"
                        "MSCluster_DiskPartition"
                    ],
                    {
                        "Path": mount,
                        "VolumeLabel": lun.name,
                        "VolumeGuid": volume_guid(lun.id),
                        "TotalSize": PSUInt(lun.total_bytes // MB),
                        "FreeSpace": PSUInt(lun.free_bytes // MB),
                        "MountPoints": [mount],
                    },
                )
            )

    def get_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VM")
        patterns = [str(p).casefold() for p in _as_list(params.get("Name"))] or ["*"]
        ids = {str(i).casefold() for i in _as_list(params.get("Id"))}
        for vm in model.vms_of(node):
            if ids and vm.id.casefold() not in ids:
                continue
            if _match(vm.name, patterns):
                writer.write_output(_vm_object(vm, writer, model))
        if (
            ids
            and not writer.stopping
            and not any(v.id.casefold() in ids for v in model.vms_of(node))
        ):
            writer.write_error(
                "Hyper-V was unable to find a virtual machine with the given id.",
                error_id="InvalidParameter",
                category=ErrorCategory.InvalidArgument,
                exception_type=HV + "VirtualizationException",
            )

    def remove_snapshot(params: dict[str, Any], writer: CommandWriter) -> None:
        """Remove-VMSnapshot -Name * for the piped VMs: merges newest first, with progress."""
        log("Remove-VMSnapshot")
        names = [str(n).casefold() for n in _as_list(params.get("Name"))] or ["*"]
        snaps = [p for t, p in (f for f in map(_properties, writer.input) if f is not None)
                 if t.endswith("VMSnapshot")]
        if snaps:  # Get-VMSnapshot -Id … | Remove-VMSnapshot: exactly these
            for snap in snaps:
                for pct in (0, 50):
                    writer.write_progress("Remove-VMSnapshot", f"Merging {snap['Name']}",
                                          percent=pct)
                    if writer.wait(model.merge_step_s):
                        return
                with model.lock:
                    if str(snap["Id"]) in model.checkpoints:
                        model.remove_checkpoint(str(snap["Id"]))
            writer.write_progress("Remove-VMSnapshot", "Completed", percent=100, completed=True)
            return
        for vm_id in _piped_vm_ids(writer):
            with model.lock:
                vm = model.vms.get(vm_id)
                chain = [model.checkpoints[c] for c in model.chains.get(vm_id, [])]
            if vm is None:
                continue
            todo = [cp for cp in reversed(chain) if _match(cp.name, names)]
            steps = 4
            for i, cp in enumerate(todo):
                for step in range(steps):
                    pct = int((i * steps + step) * 100 / (len(todo) * steps))
                    writer.write_progress(
                        "Remove-VMSnapshot",
                        f"Merging disks of {vm.name}: checkpoint {i + 1} of {len(todo)}",
                        percent=pct,
                    )
                    if writer.wait(model.merge_step_s):
                        return
                if model.merge_fail_after is not None and i >= model.merge_fail_after:
                    raise _vz_error(
                        f"'{vm.name}' failed to remove checkpoint '{cp.name}': "
                        "The process cannot access the file because it is being used by "
                        "another process. (0x80070020)",
                        "OperationFailed", ErrorCategory.ResourceBusy)
                model.remove_checkpoint(cp.id)
            writer.write_progress("Remove-VMSnapshot", "Completed", percent=100, completed=True)

    def update_version(params: dict[str, Any], writer: CommandWriter) -> None:
        """Update-VMVersion -Force for the piped VMs: refused unless the VM is off."""
        log("Update-VMVersion")
        for vm_id in _piped_vm_ids(writer):
            with model.lock:
                vm = model.vms.get(vm_id)
                if vm is None:
                    continue
                if vm.power is not PowerState.OFF:
                    raise _vz_error(
                        f"Update-VMVersion: Failed to update the configuration version of "
                        f"'{vm.name}': The operation cannot be performed while the virtual "
                        "machine is in its current state.",
                        "InvalidState", ErrorCategory.InvalidOperation)
                model.vms[vm_id] = dataclasses.replace(vm, config_version=model.host_version)
                model.version += 1

    def get_snapshot(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMSnapshot")
        patterns = _vm_filter(params)
        piped = set(_piped_vm_ids(writer))
        wanted_id = str(params.get("Id", "")).casefold()
        for vm in model.vms_of(node):
            if piped and vm.id not in piped:
                continue
            if not piped and not _match(vm.name, patterns):
                continue
            with model.lock:
                cps = [model.checkpoints[c] for c in model.chains.get(vm.id, [])]
            for cp in cps:
                if wanted_id and cp.id.casefold() != wanted_id:
                    continue
                writer.write_output(
                    _obj(
                        writer,
                        [HV + "VMSnapshot", HV + "VirtualMachineBase"],
                        {
                            "Id": _guid(cp.id),
                            "VMId": _guid(vm.id),
                            "VMName": vm.name,
                            "Name": cp.name,
                            "ParentSnapshotId": _guid(cp.parent_id) if cp.parent_id else None,
                            "SnapshotType": _enum(SnapshotType, _SNAP[cp.kind]),
                            "CreationTime": cp.created,
                            "HardDrives": "Microsoft.HyperV.PowerShell.HardDiskDrive[]",
                        },
                    )
                )

    def get_drive(params: dict[str, Any], writer: CommandWriter) -> None:
        """Get-VMHardDiskDrive -VMName …, or of piped VMs, or of piped checkpoints."""
        log("Get-VMHardDiskDrive")
        patterns = _vm_filter(params)
        piped = [found for found in map(_properties, writer.input) if found is not None]
        snapshots = [p for t, p in piped if t.endswith("VMSnapshot")]
        if snapshots:
            for snap in snapshots:
                with model.lock:
                    vm = model.vms.get(str(snap.get("VMId", "")))
                    files = [model.disks.get(f) for f in model.files.get(str(snap["Id"]), [])]
                if vm is None:
                    continue
                for n, child in enumerate(files):
                    if child is None or not child.parent_path:
                        continue
                    writer.write_output(_obj(writer, [HV + "HardDiskDrive", HV + "Drive"], {
                        "VMId": _guid(vm.id),
                        "VMName": vm.name,
                        "Path": child.parent_path,  # the file this checkpoint froze
                        "ControllerType": _enum(
                            ControllerType, "IDE" if vm.generation == 1 else "SCSI"
                        ),
                        "ControllerNumber": 0,
                        "ControllerLocation": n,
                    }))
            return
        wanted = {str(p.get("Id", "")) for _, p in piped}
        for vm in model.vms_of(node):
            if wanted and vm.id not in wanted:
                continue
            if not wanted and not _match(vm.name, patterns):
                continue
            for n, chain in enumerate(model.drive_chains(vm)):
                if not chain:
                    continue
                writer.write_output(
                    _obj(
                        writer,
                        [HV + "HardDiskDrive", HV + "Drive"],
                        {
                            "VMId": _guid(vm.id),
                            "VMName": vm.name,
                            "Path": chain[-1].path,
                            "ControllerType": _enum(ControllerType, model.slot(vm, n)[0]),
                            "ControllerNumber": model.slot(vm, n)[1],
                            "ControllerLocation": model.slot(vm, n)[2],
                        },
                    )
                )

    def get_vhd(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VHD")
        paths = [str(p) for p in _as_list(params.get("Path"))]
        for found in map(_properties, writer.input):  # -Path by property name, piped
            if found is not None and found[1].get("Path"):
                paths.append(str(found[1]["Path"]))
        for path in paths:
            disk = model.disk_by_path(path)
            if disk is None:
                writer.write_error(
                    f"Getting the mounted storage instance for the path '{path}' failed.",
                    error_id="ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.GetVHD",
                    category=ErrorCategory.ObjectNotFound,
                    exception_type=HV + "VirtualizationException",
                    target=path,
                )
                continue
            fmt = "VHD" if disk.format is DiskFormat.VHD else "VHDX"
            kind = "Differencing" if disk.parent_path else "Dynamic"
            writer.write_output(
                _obj(
                    writer,
                    ["Microsoft.Vhd.PowerShell.VirtualHardDisk"],
                    {
                        "Path": disk.path,
                        "VhdFormat": _enum(VhdFormat, fmt),
                        "VhdType": _enum(VhdType, kind),
                        "FileSize": _num(writer, PSUInt64, disk.size_bytes),
                        "Size": _num(writer, PSUInt64, disk.max_bytes),
                        "ParentPath": disk.parent_path or "",
                        "DiskIdentifier": disk.id.upper(),
                        "Attached": True,
                    },
                )
            )

    def get_replication(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMReplication")
        for vm in model.vms_of(node):
            if vm.replication is ReplicationState.DISABLED:
                continue
            writer.write_output(
                _obj(
                    writer,
                    [HV + "VMReplication", HV + "VirtualizationObject"],
                    {
                        "VMId": _guid(vm.id),
                        "VMName": vm.name,
                        "State": _enum(ReplState, _REPL[vm.replication]),
                        "Health": _enum(
                            ReplHealth,
                            {"normal": "Normal", "warning": "Warning", "critical": "Critical"}.get(
                                vm.replication_health.value, "NotApplicable"
                            ),
                        ),
                        "Mode": _enum(ReplMode, "Primary"),
                        "ReplicaServer": vm.replica_target,
                    },
                )
            )

    def get_integration(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMIntegrationService")
        patterns = _vm_filter(params)
        names = [str(n).casefold() for n in _as_list(params.get("Name"))] or ["*"]
        piped = set(_piped_vm_ids(writer))
        if piped and _match("Key-Value Pair Exchange", names):
            for vm in model.vms_of(node):
                if vm.id in piped:
                    writer.write_output(_obj(writer, [HV + "VMIntegrationComponent"], {
                        "VMId": _guid(vm.id), "VMName": vm.name,
                        "Name": "Key-Value Pair Exchange", "Enabled": True,
                        "PrimaryOperationalStatus": _enum(OpStatus, "Ok")
                        if vm.power is PowerState.RUNNING else None}))
        if not _match("Heartbeat", names):
            return
        for vm in model.vms_of(node):
            if piped and vm.id not in piped:
                continue
            if not piped and not _match(vm.name, patterns):
                continue
            status = None
            if vm.power is PowerState.RUNNING:
                status = _enum(
                    OpStatus, "Degraded" if vm.integration is IntegrationState.DEGRADED else "Ok"
                )
            writer.write_output(
                _obj(
                    writer,
                    [HV + "VMIntegrationComponent", HV + "VirtualMachineComponent"],
                    {
                        "VMId": _guid(vm.id),
                        "VMName": vm.name,
                        "Name": "Heartbeat",
                        "Enabled": True,
                        "PrimaryOperationalStatus": status,
                    },
                )
            )

    def _node_entity() -> Any:
        with model.lock:
            return model.nodes.get(node or next(iter(model.nodes)))

    def get_service(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-Service")
        n = _node_entity()
        for name in [str(p) for p in _as_list(params.get("Name"))]:
            if name.casefold() != BACKUP_SERVICE.casefold() or n.backup_agent_state in (
                ServiceState.MISSING,
                ServiceState.UNKNOWN,
            ):
                writer.write_error(
                    f"Cannot find any service with service name '{name}'.",
                    error_id="NoServiceFoundForGivenName,Microsoft.PowerShell.Commands.GetServiceCommand",
                    category=ErrorCategory.ObjectNotFound,
                    exception_type="Microsoft.PowerShell.Commands.ServiceCommandException",
                    target=name,
                )
                continue
            running = n.backup_agent_state is ServiceState.RUNNING
            writer.write_output(
                _obj(
                    writer,
                    ["System.ServiceProcess.ServiceController", "System.ComponentModel.Component"],
                    {
                        "Name": BACKUP_SERVICE,
                        "Status": _enum(ServiceStatus, "Running" if running else "Stopped"),
                        "DisplayName": "Ventana test backup agent",
                    },
                    to_string="System.ServiceProcess.ServiceController",
                )
            )

    def get_item_property_value(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-ItemPropertyValue")
        n = _node_entity()
        path = str(params.get("Path", ""))
        if path.casefold() != BACKUP_VERSION_KEY.casefold() or not n.backup_agent_version:
            writer.write_error(
                f"Cannot find path '{path}' because it does not exist.",
                error_id="PathNotFound,Microsoft.PowerShell.Commands.GetItemPropertyValueCommand",
                category=ErrorCategory.ObjectNotFound,
                target=path,
            )
            return
        writer.write_output(n.backup_agent_version)

    # -- CIM indications: VM state changes as they happen --------------------------------
    # One queue per SourceIdentifier for this endpoint (a real server keeps them per
    # runspace and drops them with it; here a re-register replaces the old one).
    events_cond = threading.Condition()
    queues: dict[str, list[Row]] = {}
    subscriptions: dict[str, Any] = {}
    counter = iter(range(1, 1 << 62))

    def _event(source: str, vm: VM) -> Row:
        target = Row(
            ["Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/"
             "Msvm_ComputerSystem"],
            {"Name": vm.id.upper(), "ElementName": vm.name, "Caption": "Virtual Machine",
             "EnabledState": _ENABLED_STATE.get(vm.power, 0)},
            to_string=f"Msvm_ComputerSystem (Name = \"{vm.id.upper()}\")",
        )
        new = Row(["Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/"
                   "__InstanceModificationEvent"], {"TargetInstance": target})
        args = Row(["Microsoft.Management.Infrastructure.CimCmdlets."
                    "CimIndicationEventInstanceEventArgs"], {"NewEvent": new})
        return Row(["System.Management.Automation.PSEventArgs"], {
            "EventIdentifier": next(counter), "SourceIdentifier": source,
            "TimeGenerated": datetime.now(UTC), "SourceEventArgs": args,
        })

    def register_cim_indication(params: dict[str, Any], writer: CommandWriter) -> None:
        """Register-CimIndicationEvent -Namespace root/virtualization/v2 -Query … -Source…"""
        log("Register-CimIndicationEvent")
        namespace = str(params.get("Namespace", "")).casefold().replace("\\", "/")
        query = str(params.get("Query", ""))
        source = str(params.get("SourceIdentifier", "")) or str(uuid.uuid4())
        if not model.indications:
            raise TerminatingError(
                "Access denied", error_id="HRESULT 0x80041003,"
                "Microsoft.Management.Infrastructure.CimCmdlets.RegisterCimIndicationCommand",
                category=ErrorCategory.PermissionDenied,
                exception_type="Microsoft.Management.Infrastructure.CimException",
            )
        if namespace != "root/virtualization/v2" or "msvm_computersystem" not in query.casefold():
            raise TerminatingError(
                f"Invalid query: {query}", error_id="HRESULT 0x80041017",
                category=ErrorCategory.InvalidArgument,
                exception_type="Microsoft.Management.Infrastructure.CimException",
            )

        def watcher(vm: VM) -> None:
            if node is not None and vm.node_id != node:
                return
            with events_cond:
                queue = queues.setdefault(source, [])
                queue.append(_event(source, vm))
                del queue[:-10_000]
                events_cond.notify_all()

        with model.lock:
            old = subscriptions.pop(source, None)
            if old in model.watchers:
                model.watchers.remove(old)
            subscriptions[source] = watcher
            model.watchers.append(watcher)
        with events_cond:
            queues[source] = []

    def wait_event(params: dict[str, Any], writer: CommandWriter) -> None:
        """Wait-Event -SourceIdentifier S -Timeout N: the oldest queued event (kept queued)."""
        log("Wait-Event")
        source = str(params.get("SourceIdentifier", ""))
        timeout = float(params.get("Timeout", -1))
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while True:
            with events_cond:
                queue = queues.get(source, [])
                if queue:
                    event = queue[0]
                    break
                left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if left <= 0:
                    return
                events_cond.wait(left)
            writer.check_stop()
        writer.write_output(event if writer.piped else _wire(event))

    def get_event(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-Event")
        source = str(params.get("SourceIdentifier", ""))
        with events_cond:
            queued = list(queues.get(source, []))
        for event in queued:
            writer.write_output(event if writer.piped else _wire(event))

    def remove_event(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Remove-Event")
        ids = {found[1].get("EventIdentifier") for found in map(_properties, writer.input)
               if found is not None}
        source = params.get("SourceIdentifier")
        with events_cond:
            for name, queue in queues.items():
                if source is not None and name == str(source):
                    queue.clear()
                elif ids:
                    queue[:] = [e for e in queue if e.props["EventIdentifier"] not in ids]

    def unregister_event(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Unregister-Event")
        source = str(params.get("SourceIdentifier", ""))
        with model.lock:
            old = subscriptions.pop(source, None)
            if old in model.watchers:
                model.watchers.remove(old)
        with events_cond:
            queues.pop(source, None)

    # -- clean-up: Optimize-VHD, Remove-ClusterGroup, Remove-VM, Remove-Item, Test-Path ----
    def optimize_vhd(params: dict[str, Any], writer: CommandWriter) -> None:
        """Optimize-VHD -Path P -Mode Full: refused while the file's VM is not Off."""
        log("Optimize-VHD")
        for path in [str(p) for p in _as_list(params.get("Path"))]:
            with model.lock:
                disk = model.disk_by_path(path)
                owner = model.owner_of(disk) if disk is not None else None
            if disk is None:
                raise _vz_error(f"Optimize-VHD: The system cannot find the file specified: "
                                f"'{path}'.", "ObjectNotFound", ErrorCategory.ObjectNotFound)
            with model.lock:
                model._indexes()
                parent = disk.path.casefold() in model._children
            if parent:
                raise _vz_error(
                    f"Optimize-VHD: The virtual disk '{path}' is the parent of a differencing "
                    "disk and cannot be compacted. (0xC03A0017)", "InvalidOperation",
                    ErrorCategory.InvalidOperation)
            if owner is not None and owner.power is not PowerState.OFF:
                raise _vz_error(
                    f"Optimize-VHD: Failed to compact the virtual disk '{path}': The process "
                    "cannot access the file because it is being used by another process. "
                    "(0x80070020)", "InvalidOperation", ErrorCategory.ResourceBusy)
            for pct in (0, 25, 50, 75):
                writer.write_progress("Optimize-VHD", f"Compacting {path}", percent=pct)
                if writer.wait(model.merge_step_s):
                    return
            with model.lock:
                disk = model.disks[disk.id]
                after = max(4 * MB, int(disk.size_bytes * model.compact_keep))
                after = min(after, disk.size_bytes)
                model.disks[disk.id] = dataclasses.replace(disk, size_bytes=after)
                model.free_file(disk, disk.size_bytes - after)
                model.version += 1
            writer.write_progress("Optimize-VHD", "Completed", percent=100, completed=True)

    def remove_cluster_group(params: dict[str, Any], writer: CommandWriter) -> None:
        """Remove-ClusterGroup -VMId G -RemoveResources -Force: the VM's role goes."""
        log("Remove-ClusterGroup")
        vm_id = str(params.get("VMId", "")).casefold()
        if not params.get("RemoveResources"):
            raise TerminatingError("The group still has resources; use -RemoveResources.",
                                   error_id="InvalidOperation",
                                   category=ErrorCategory.InvalidOperation)
        with model.lock:
            if vm_id not in model.clustered:
                raise TerminatingError(
                    f"No clustered role was found for the virtual machine with id '{vm_id}'.",
                    error_id="ClusterObjectNotFound", category=ErrorCategory.ObjectNotFound,
                    exception_type=FC + "ClusterCmdletException")
            model.clustered.discard(vm_id)
            model.version += 1

    def remove_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        """Get-VM -Id … | Remove-VM -Force: configuration and checkpoints go, files stay."""
        log("Remove-VM")
        for vm_id in _piped_vm_ids(writer):
            with model.lock:
                vm = model.vms.get(vm_id)
                if vm is None:
                    continue
                if vm.power is not PowerState.OFF:
                    raise _vz_error(
                        f"Remove-VM: '{vm.name}' failed to delete: The operation cannot be "
                        "performed while the virtual machine is in its current state.",
                        "InvalidState", ErrorCategory.InvalidOperation)
                if vm.id in model.clustered:
                    raise _vz_error(
                        f"Remove-VM: '{vm.name}' is a clustered virtual machine: remove its "
                        "cluster role first (Remove-ClusterGroup).", "InvalidOperation",
                        ErrorCategory.InvalidOperation)
                del model.vms[vm_id]
                for cp_id in model.chains.pop(vm_id, []):
                    model.checkpoints.pop(cp_id, None)
                    model.files.pop(cp_id, None)
                model.version += 1

    def remove_item(params: dict[str, Any], writer: CommandWriter) -> None:
        """Remove-Item -LiteralPath P: one file; a folder or a wildcard is refused."""
        log("Remove-Item")
        if params.get("Recurse") or ("Path" in params and "LiteralPath" not in params):
            raise TerminatingError("this peer accepts -LiteralPath only, without -Recurse",
                                   error_id="InvalidArgument",
                                   category=ErrorCategory.InvalidArgument)
        for path in [str(p) for p in _as_list(params.get("LiteralPath"))]:
            with model.lock:
                disk = model.disk_by_path(path)
                busy = disk is not None and (path.casefold() in model.locked
                                             or model.owner_of(disk) is not None)
                if disk is not None and not busy:
                    del model.disks[disk.id]
                    model.free_file(disk, disk.size_bytes)
                    model.version += 1
            if disk is None:
                writer.write_error(
                    f"Cannot find path '{path}' because it does not exist.",
                    error_id="PathNotFound,Microsoft.PowerShell.Commands.RemoveItemCommand",
                    category=ErrorCategory.ObjectNotFound, target=path)
            elif busy:
                writer.write_error(
                    f"Cannot remove item {path}: The process cannot access the file '{path}' "
                    "because it is being used by another process.",
                    error_id="RemoveFileSystemItemIOError,"
                             "Microsoft.PowerShell.Commands.RemoveItemCommand",
                    category=ErrorCategory.WriteError, exception_type="System.IO.IOException",
                    target=path)

    def test_path(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Test-Path")
        for path in [str(p) for p in _as_list(params.get("LiteralPath"))]:
            writer.write_output(model.disk_by_path(path) is not None)

    # -- rebuild: NICs, firmware, power, Convert-VHD, New-VM and its settings -----------------
    def _piped_vms(writer: CommandWriter) -> list[VM]:
        with model.lock:
            return [model.vms[i] for i in _piped_vm_ids(writer) if i in model.vms]

    def _nic_row(vm: VM, nic: dict[str, Any]) -> Any:
        up = vm.power is PowerState.RUNNING and vm.integration is IntegrationState.OK
        return _obj(writer_dummy, [HV + "VMNetworkAdapter", HV + "VirtualMachineComponent"], {
            "VMId": _guid(vm.id), "VMName": vm.name, "Name": nic["name"],
            "Id": f"Microsoft:{vm.id.upper()}\\{_nic_guid(vm, nic)}",
            "SwitchName": nic["switch"], "MacAddress": nic["mac"],
            "DynamicMacAddressEnabled": nic["dynamic"],
            "IPAddresses": [nic["ip"], "fe80::215:5dff:fe00:1"] if up and nic.get("ip") else [],
        }, to_string=f"VMNetworkAdapter (Name = '{nic['name']}', VMName = '{vm.name}') "
                     f"[Id = 'Microsoft:{vm.id.upper()}']")

    def _nic_guid(vm: VM, nic: dict[str, Any]) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nic:{vm.id}:{nic['name']}")).upper()

    class _Piped:
        piped = True

    writer_dummy: Any = _Piped()  # Rows only: the next command (or Select-Object) reads them

    def _adapters(params: dict[str, Any], writer: CommandWriter) -> list[tuple[VM, dict]]:
        """(VM, NIC) pairs: of piped adapters, or of piped VMs filtered by -Name."""
        out = []
        names = [str(n).casefold() for n in _as_list(params.get("Name"))
                 or _as_list(params.get("VMNetworkAdapterName"))] or ["*"]
        for found in map(_properties, writer.input):
            if found is None:
                continue
            kind, p = found
            with model.lock:
                vm = model.vms.get(str(p.get("VMId") or p.get("Id") or ""))
            if vm is None:
                continue
            for nic in model.nics_of(vm):
                if kind.endswith("VMNetworkAdapter"):
                    if nic["name"] == p.get("Name"):
                        out.append((vm, nic))
                elif _match(nic["name"], names):
                    out.append((vm, nic))
        return out

    def get_nic(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMNetworkAdapter")
        for vm, nic in _adapters(params, writer):
            row = _nic_row(vm, nic)
            writer.write_output(row if writer.piped else _wire(row))

    def get_nic_vlan(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMNetworkAdapterVlan")
        for vm, nic in _adapters(params, writer):
            writer.write_output(_obj(writer, [HV + "VMNetworkAdapterVlanSetting"], {
                "VMName": vm.name, "ParentAdapter": _nic_row(vm, nic).to_string,
                "OperationMode": _enum(VlanMode, "Access" if nic["vlan"] else "Untagged"),
                "AccessVlanId": nic["vlan"]}))

    def set_nic_vlan(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Set-VMNetworkAdapterVlan")
        for _vm, nic in _adapters(params, writer):
            with model.lock:
                nic["vlan"] = int(params.get("VlanId", 0)) if params.get("Access") else 0
                model.version += 1

    def remove_nic(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Remove-VMNetworkAdapter")
        for vm, nic in _adapters(params, writer):
            with model.lock:
                model.nics_of(vm).remove(nic)
                fw = model.firmware.get(vm.id)
                if fw is not None:
                    fw["order"] = [e for e in fw["order"] if e != ("nic", nic["name"])]
                model.version += 1

    def add_nic(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Add-VMNetworkAdapter")
        for vm in _piped_vms(writer):
            mac = str(params.get("StaticMacAddress", "")).replace("-", "").upper()
            nic = {"name": str(params.get("Name", "Network Adapter")),
                   "switch": str(params.get("SwitchName", "")), "vlan": 0,
                   "mac": mac or "000000000000", "dynamic": not mac, "ip": None}
            with model.lock:
                model.nics_of(vm).append(nic)
                if vm.generation == 2:
                    model.firmware_of(vm)["order"].append(("nic", nic["name"]))
                model.version += 1

    def _boot_rows(vm: VM) -> list[Row]:
        rows = []
        for kind, key in model.firmware_of(vm)["order"]:
            if kind == "disk":
                ctype, number, loc = model.slot(vm, key)
                device = Row([HV + "HardDiskDrive"], {}, to_string=(
                    f"HardDiskDrive (Name = 'Hard Drive on {ctype} controller number {number} "
                    f"at location {loc}', VMName = '{vm.name}') [Id = 'Microsoft:{vm.id}']"))
                rows.append(Row([HV + "VMBootSource"], {
                    "BootType": _enum(BootType, "Drive"), "Description": "EFI SCSI Device",
                    "FirmwarePath": f"\\AcpiEx(VMBus,0,0)\\Scsi({number},{loc})",
                    "Device": device}))
            else:
                device = Row([HV + "VMNetworkAdapter"], {}, to_string=(
                    f"VMNetworkAdapter (Name = '{key}', VMName = '{vm.name}') "
                    f"[Id = 'Microsoft:{vm.id}']"))
                rows.append(Row([HV + "VMBootSource"], {
                    "BootType": _enum(BootType, "Network"), "Description": "EFI Network",
                    "FirmwarePath": "\\AcpiEx(VMBus,0,0)\\MAC()", "Device": device}))
        return rows

    def get_firmware(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMFirmware")
        for vm in _piped_vms(writer):
            if vm.generation != 2:
                raise _vz_error(f"Get-VMFirmware: '{vm.name}' is a generation 1 virtual "
                                "machine; firmware settings apply to generation 2 only.",
                                "InvalidParameter", ErrorCategory.InvalidArgument)
            fw = model.firmware_of(vm)
            row = Row([HV + "VMFirmware"], {
                "VMName": vm.name, "SecureBoot": _enum(OnOff, "On" if fw["secure"] else "Off"),
                "SecureBootTemplate": fw["template"], "BootOrder": _boot_rows(vm)})
            writer.write_output(row if writer.piped else _wire(row))

    def get_bios(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Get-VMBios")
        for vm in _piped_vms(writer):
            if vm.generation != 1:
                raise _vz_error(f"Get-VMBios: '{vm.name}' is a generation 2 virtual machine.",
                                "InvalidParameter", ErrorCategory.InvalidArgument)
            writer.write_output(_obj(writer, [HV + "VMBios"], {
                "VMName": vm.name, "StartupOrder": [
                    _enum(BootDevice, n) for n in ("IDE", "CD", "LegacyNetworkAdapter",
                                                   "Floppy")]}))

    def set_firmware(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Set-VMFirmware")
        for vm in _piped_vms(writer):
            with model.lock:
                fw = model.firmware_of(vm)
                if "SecureBootTemplate" in params:
                    fw["template"] = str(params["SecureBootTemplate"])
                if "EnableSecureBoot" in params:
                    fw["secure"] = str(params["EnableSecureBoot"]) == "On"
                model.version += 1

    def stop_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Stop-VM")
        for vm in _piped_vms(writer):
            if vm.power is not PowerState.OFF:
                writer.write_progress("Stop-VM", f"Shutting down {vm.name}", percent=50)
                writer.wait(model.merge_step_s)
                model.set_power(vm.id, PowerState.OFF)

    def start_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Start-VM")
        for vm in _piped_vms(writer):
            if vm.power is not PowerState.RUNNING:
                model.set_power(vm.id, PowerState.RUNNING)

    def convert_vhd(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Convert-VHD")
        source, dest = str(params.get("Path", "")), str(params.get("DestinationPath", ""))
        with model.lock:
            disk = model.disk_by_path(source)
            owner = model.owner_of(disk) if disk is not None else None
            if disk is None:
                raise _vz_error(f"Convert-VHD: The system cannot find the file '{source}'.",
                                "ObjectNotFound", ErrorCategory.ObjectNotFound)
            if owner is not None and owner.power is not PowerState.OFF:
                raise _vz_error(f"Convert-VHD: '{source}' is in use by '{owner.name}' "
                                "(0x80070020).", "InvalidOperation", ErrorCategory.ResourceBusy)
            if model.disk_by_path(dest) is not None:
                raise _vz_error(f"Convert-VHD: The file '{dest}' already exists.",
                                "InvalidParameter", ErrorCategory.ResourceExists)
            size = model.flat_size(disk)
            lun = model.luns.get(disk.lun_id)
            if lun is not None and lun.free_bytes < size:
                raise _vz_error("Convert-VHD: There is not enough space on the disk.",
                                "OperationFailed", ErrorCategory.WriteError)
        for pct in (0, 50):
            writer.write_progress("Convert-VHD", f"Converting {source}", percent=pct)
            if writer.wait(model.merge_step_s):
                return
        with model.lock:
            copy = VirtualDisk(str(uuid.uuid4()), "", dest, DiskFormat.VHDX, size,
                               disk.max_bytes, None, disk.lun_id)
            model.disks[copy.id] = copy
            model.free_file(copy, -size)
            model.version += 1
        writer.write_progress("Convert-VHD", "Completed", percent=100, completed=True)

    def new_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        log("New-VM")
        name = str(params.get("Name", ""))
        gen = int(params.get("Generation", 1))
        if not params.get("NoVHD"):
            raise TerminatingError("this peer creates VMs with -NoVHD only",
                                   error_id="InvalidArgument",
                                   category=ErrorCategory.InvalidArgument)
        with model.lock:
            here = node or next(iter(model.nodes))
            vm = VM(id=str(uuid.uuid4()), name=name, cluster_id=model.cluster.id, node_id=here,
                    power=PowerState.OFF, generation=gen, config_version=model.host_version,
                    vcpus=1, memory_mb=int(params.get("MemoryStartupBytes", 512 * MB)) // MB,
                    integration=IntegrationState.OFF)
            model.vms[vm.id] = vm
            model.chains[vm.id] = []
            model.slots[vm.id] = []
            model.scsi_controllers[vm.id] = 1
            model.nics[vm.id] = [{"name": "Network Adapter", "switch": "", "vlan": 0,
                                  "mac": "000000000000", "dynamic": True, "ip": None}]
            if gen == 2:
                model.firmware[vm.id] = {"order": [("nic", "Network Adapter")], "secure": True,
                                         "template": "MicrosoftWindows"}
            model.version += 1
        writer.write_output(_vm_object(vm, writer, model))

    def _update(vm_id: str, **changes: Any) -> None:
        with model.lock:
            model.vms[vm_id] = dataclasses.replace(model.vms[vm_id], **changes)
            model.version += 1

    def set_processor(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Set-VMProcessor")
        for vm in _piped_vms(writer):
            _update(vm.id, vcpus=int(params.get("Count", vm.vcpus)))

    def set_memory(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Set-VMMemory")
        for vm in _piped_vms(writer):
            _update(vm.id, memory_mb=int(params.get("StartupBytes", vm.memory_mb * MB)) // MB)
            with model.lock:
                if params.get("DynamicMemoryEnabled"):
                    model.dynamic_memory.add(vm.id)
                else:
                    model.dynamic_memory.discard(vm.id)

    def add_drive(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Add-VMHardDiskDrive")
        path = str(params.get("Path", ""))
        slot = (str(params.get("ControllerType", "SCSI")).upper(),
                int(params.get("ControllerNumber", 0)), int(params.get("ControllerLocation", 0)))
        for vm in _piped_vms(writer):
            with model.lock:
                disk = model.disk_by_path(path)
                if disk is None:
                    raise _vz_error(f"Add-VMHardDiskDrive: cannot find '{path}'.",
                                    "ObjectNotFound", ErrorCategory.ObjectNotFound)
                owner = model.owner_of(disk)
                if owner is not None and owner.id != vm.id:
                    raise _vz_error(f"Add-VMHardDiskDrive: '{path}' is attached to "
                                    f"'{owner.name}'.", "InvalidOperation",
                                    ErrorCategory.ResourceBusy)
                slots = model.slots.setdefault(vm.id, [model.slot(vm, n)
                                                       for n in range(len(vm.disk_ids))])
                if slot in slots:
                    raise _vz_error(f"Add-VMHardDiskDrive: the slot {slot} is in use.",
                                    "InvalidOperation", ErrorCategory.ResourceExists)
                if slot[0] == "SCSI" and slot[1] >= model.scsi_controllers.get(vm.id, 4):
                    raise _vz_error(f"Add-VMHardDiskDrive: '{vm.name}' has no SCSI controller "
                                    f"number {slot[1]}.", "ObjectNotFound",
                                    ErrorCategory.ObjectNotFound)
                model.disks[disk.id] = dataclasses.replace(disk, vm_id=vm.id)
                slots.append(slot)
                index = len(vm.disk_ids)
                model.vms[vm.id] = dataclasses.replace(
                    vm, disk_ids=(*vm.disk_ids, disk.id), lun_id=vm.lun_id or disk.lun_id)
                if vm.generation == 2:
                    order = model.firmware_of(vm)["order"]
                    if model.prepend_boot_entries:
                        order.insert(0, ("disk", index))
                    else:
                        order.append(("disk", index))
                model.version += 1

    def add_scsi_controller(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Add-VMScsiController")
        for vm in _piped_vms(writer):
            with model.lock:
                count = model.scsi_controllers.get(vm.id, 1)
                if count >= 4:
                    raise _vz_error("Add-VMScsiController: a VM has at most 4 SCSI "
                                    "controllers.", "InvalidOperation",
                                    ErrorCategory.InvalidOperation)
                model.scsi_controllers[vm.id] = count + 1
                model.version += 1

    def add_cluster_role(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Add-ClusterVirtualMachineRole")
        vm_id = str(params.get("VMId", "")).casefold()
        name = str(params.get("Name", ""))
        with model.lock:
            vm = model.vms.get(vm_id)
            if vm is None:
                raise TerminatingError(f"No virtual machine with id {vm_id}.",
                                       error_id="ObjectNotFound",
                                       category=ErrorCategory.ObjectNotFound)
            taken = {model.group_names.get(v, model.vms[v].name).casefold()
                     for v in model.clustered if v in model.vms}
            if (name or vm.name).casefold() in taken:
                raise TerminatingError(
                    f"A cluster group named '{name or vm.name}' already exists.",
                    error_id="ClusterGroupExists", category=ErrorCategory.ResourceExists,
                    exception_type=FC + "ClusterCmdletException")
            model.clustered.add(vm_id)
            model.group_names[vm_id] = name or vm.name
            model.version += 1

    def rename_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Rename-VM")
        for vm in _piped_vms(writer):
            _update(vm.id, name=str(params.get("NewName", vm.name)))

    def set_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        log("Set-VM")
        for vm in _piped_vms(writer):
            with model.lock:
                if "AutomaticStartAction" in params:
                    model.auto_start[vm.id] = str(params["AutomaticStartAction"])
                model.version += 1

    return CommandRegistry(
        {
            "Get-VMNetworkAdapter": get_nic,
            "Get-VMNetworkAdapterVlan": get_nic_vlan,
            "Set-VMNetworkAdapterVlan": set_nic_vlan,
            "Remove-VMNetworkAdapter": remove_nic,
            "Add-VMNetworkAdapter": add_nic,
            "Get-VMFirmware": get_firmware,
            "Get-VMBios": get_bios,
            "Set-VMFirmware": set_firmware,
            "Stop-VM": stop_vm,
            "Start-VM": start_vm,
            "Convert-VHD": convert_vhd,
            "New-VM": new_vm,
            "Set-VMProcessor": set_processor,
            "Set-VMMemory": set_memory,
            "Add-VMHardDiskDrive": add_drive,
            "Add-VMScsiController": add_scsi_controller,
            "Add-ClusterVirtualMachineRole": add_cluster_role,
            "Rename-VM": rename_vm,
            "Set-VM": set_vm,
            "Optimize-VHD": optimize_vhd,
            "Remove-ClusterGroup": remove_cluster_group,
            "Remove-VM": remove_vm,
            "Remove-Item": remove_item,
            "Test-Path": test_path,
            "Register-CimIndicationEvent": register_cim_indication,
            "Wait-Event": wait_event,
            "Get-Event": get_event,
            "Remove-Event": remove_event,
            "Unregister-Event": unregister_event,
            "Get-ClusterNode": get_cluster_node,
            "Get-ClusterSharedVolume": get_csvs,
            "Get-ClusterSharedVolumeState": get_csv_state,
            "Get-CimInstance": get_cim,
            "Get-VM": get_vm,
            "Get-VMSnapshot": get_snapshot,
            "Get-VMHardDiskDrive": get_drive,
            "Get-VHD": get_vhd,
            "Get-VMReplication": get_replication,
            "Get-VMIntegrationService": get_integration,
            "Get-Service": get_service,
            "Get-ItemPropertyValue": get_item_property_value,
            "Select-Object": _select,
            "ConvertTo-Json": _convert_to_json,
            "Remove-VMSnapshot": remove_snapshot,
            "Update-VMVersion": update_version,
        }
    )


def build_registry() -> CommandRegistry:
    """For ``--commands``: the default simulated cluster (74 VMs) on one endpoint."""
    return build_hyperv_registry(ClusterModel())
