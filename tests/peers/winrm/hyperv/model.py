"""The simulated cluster the Hyper-V handlers answer from: :class:`ClusterModel`.

:class:`ClusterModel` holds a simulated cluster built by
``ventana.backends.sim.build_inventory`` (the same data the built-in
simulator shows) behind a lock; tests change it between polls
(:meth:`ClusterModel.set_power`, :meth:`~ClusterModel.add_checkpoint`,
:meth:`~ClusterModel.remove_checkpoint`, :meth:`~ClusterModel.set_free`).
Per-VM host facts the inventory lacks (drive slots, NICs, firmware) are
derived from the VM's name. Nothing here knows about PowerShell objects.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import uuid
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
    PowerState,
    VirtualDisk,
)

from .backup_state import BackupHost
from .profile import HostProfile

BACKUP_SERVICE = "VentanaTestBackupAgent"

BACKUP_VERSION_KEY = "HKLM:\\SOFTWARE\\VentanaTest\\BackupAgent"

def volume_guid(lun_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ventana-test-volume:{lun_id}"))

class ClusterModel:
    """A simulated cluster that handlers read and tests change (thread-safe)."""

    def __init__(self, config: SimConfig | None = None, epoch: datetime | None = None, *,
                 profile: HostProfile | None = None) -> None:
        config = config or SimConfig(rate=0)
        #: What kind of Windows host every node is (enum numbering, language, spellings).
        self.profile = profile or HostProfile()
        #: SnapshotType names that override the kind's (e.g. "AppConsistentReplica").
        self.snapshot_types: dict[str, str] = {}
        inv = build_inventory(config, epoch or datetime(2025, 1, 6, 9, 0, tzinfo=UTC))
        self.lock = threading.RLock()
        self.config = config
        self.cluster = inv.cluster
        self.nodes = {n.id: n for n in inv.nodes}
        self.luns = {x.id: x for x in inv.luns}
        self.vms = {v.id: v for v in inv.vms}
        # The host's default configuration version: what Get-VMHostSupportedVersion -Default
        # reports and Update-VMVersion raises VMs to ("updates virtual machines to the
        # current version"; "you also update the configuration version to the latest
        # version supported by that Hyper-V host" — MicrosoftDocs windows-server,
        # virtualization/hyper-v/deploy/Upgrade-virtual-machine-version-in-Hyper-V-on-
        # Windows-or-Windows-Server.md, whose table gives Server 2019 up to 9.0 and Server
        # 2016 up to 8.0).
        self.host_version = "8.0" if self.profile.server2016 else "9.0"
        self.disks = {d.id: d for d in inv.disks}
        self.checkpoints = {c.id: c for c in inv.checkpoints}
        self.chains = {k: list(v) for k, v in inv.chains.items()}
        self.files = {k: list(v) for k, v in inv.checkpoint_files.items()}
        self.calls: list[str] = []  # command names served, for tests
        self.merge_step_s = 0.02  # Remove-VMSnapshot: seconds per progress step
        self.merge_fail_after: int | None = None  # fail before removing checkpoint N+1
        #: Remove-VMSnapshot returns, then the disks merge this many more seconds in the
        #: background (0: at once); ``merging``: vm id -> (started, seconds).
        self.background_merge_s = 0.0
        self.merging: dict[str, tuple[float, float]] = {}
        #: Register-CimIndicationEvent accepted (False: refused, as with too few rights).
        self.indications = True
        self.watchers: list[Any] = []  # called with each VM whose state changed
        #: Register-CimIndicationEvent queries received (a real host sends an event for
        #: every modification the query matches: unfiltered, every running VM's
        #: OnTimeInMilliseconds changes each second).
        self.queries: list[str] = []
        #: VMs with a cluster role (Remove-ClusterGroup -VMId removes it).
        self.clustered: set[str] = set(self.vms)
        #: Files Remove-Item cannot delete (casefolded paths): "in use by another process".
        self.locked: set[str] = set()
        #: Optimize-VHD: the file keeps this share of its size (the rest was unused blocks).
        self.compact_keep = 0.6
        #: …and this share when not mounted read-only first (Full falls back to Prezeroed).
        self.compact_keep_prezeroed = 0.9
        #: Files attached to the host (Mount-VHD): casefolded path -> "ReadOnly"/"ReadWrite".
        self.mounted: dict[str, str] = {}
        # -- what the rebuild reads and sets (lazily derived per VM from its name) --
        self.slots: dict[str, list[tuple[str, int, int]]] = {}  # per drive: type, number, loc
        self.system_drive: dict[str, int] = {}  # which drive holds the OS (default 0)
        self.nics: dict[str, list[dict[str, Any]]] = {}
        self.firmware: dict[str, dict[str, Any]] = {}  # Gen2: boot order, Secure Boot
        self.dynamic_memory: set[str] = set()
        #: VMs whose guest Shutdown service does not answer; VMs Stop-VM powered off.
        self.no_shutdown: set[str] = set()
        #: Add-ClusterVirtualMachineRole refused over a session without CredSSP.
        self.role_needs_credssp = False
        self.turned_off: set[str] = set()
        self.auto_start: dict[str, str] = {}
        self.group_names: dict[str, str] = {}  # clustered VM id -> its cluster group's name
        #: SCSI controllers of VMs made by New-VM (one; Add-VMScsiController adds).
        self.scsi_controllers: dict[str, int] = {}
        #: Failure injection: Add-VMHardDiskDrive puts the new drive FIRST in the boot order.
        self.prepend_boot_entries = False
        #: Backup readiness facts the inventory lacks (agent start mode, KVP, pass-through).
        self.backup = BackupHost()
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
