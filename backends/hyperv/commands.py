"""The written contract with a Hyper-V failover cluster, as code.

Every pipeline Ventana sends to a node is built here and nowhere else: the
cmdlets, their parameters (sent with ``add_command``/``add_parameter``, never
as script text) and the top-level properties read from what comes back.
Each read ends in ``Select-Object -Property …`` so the node serializes only
the properties Ventana reads (the client parses every property of every
object, ~1-2 ms per object). ``COMMANDS.md`` beside this file documents the
same contract for a Windows operator; keep the two in step.

All of these only read except ``remove_all_snapshots`` (the merge), which
is marked ``mutating``: a read-only session refuses to send it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

#: A parameter sent as a switch (``-Force``): pypsrp's ``add_parameter(name)``.
SWITCH = object()


@dataclass(frozen=True, slots=True)
class Cmdlet:
    name: str
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Command:
    """One pipeline: cmdlets in order, then ``Select-Object -Property`` of ``properties``."""

    label: str
    cmdlets: tuple[Cmdlet, ...]
    properties: tuple[str, ...] = ()
    #: Non-terminating errors that are a normal answer (e.g. "not found").
    tolerate_errors: bool = False
    mutating: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def pipeline(self) -> tuple[Cmdlet, ...]:
        if not self.properties:
            return self.cmdlets
        return (*self.cmdlets, Cmdlet("Select-Object", (("Property", list(self.properties)),)))

    def as_powershell(self) -> str:
        """The same pipeline as a PowerShell line an operator can paste."""
        parts = []
        for cmdlet in self.pipeline():
            words = [cmdlet.name]
            for name, value in cmdlet.params:
                words.append(f"-{name}" if value is SWITCH else f"-{name} {_ps_literal(value)}")
            parts.append(" ".join(words))
        return " | ".join(parts)


def _ps_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return ",".join(_ps_literal(v) for v in value)
    text = str(value).replace("'", "''")
    return f"'{text}'"


# -- cluster-wide reads (from one node) ---------------------------------------------

CLUSTER_NODE_PROPS = ("Name", "Id", "State", "DrainStatus", "Cluster")
CSV_PROPS = ("Name", "Id", "OwnerNode", "State")
CSV_STATE_PROPS = ("Name", "Node", "StateInfo", "VolumeName", "VolumeFriendlyName")
PARTITION_PROPS = ("Path", "VolumeLabel", "VolumeGuid", "TotalSize", "FreeSpace", "MountPoints")


def get_cluster_nodes() -> Command:
    return Command("cluster nodes", (Cmdlet("Get-ClusterNode"),), CLUSTER_NODE_PROPS)


def get_csvs() -> Command:
    return Command("cluster shared volumes", (Cmdlet("Get-ClusterSharedVolume"),), CSV_PROPS)


def get_csv_states() -> Command:
    return Command("CSV state per node", (Cmdlet("Get-ClusterSharedVolumeState"),), CSV_STATE_PROPS)


def get_disk_partitions() -> Command:
    return Command(
        "cluster disk partitions",
        (
            Cmdlet(
                "Get-CimInstance",
                (("Namespace", "root/MSCluster"), ("ClassName", "MSCluster_DiskPartition")),
            ),
        ),
        PARTITION_PROPS,
    )


# -- per-node reads (VMs hosted by the node answering) ---------------------------------

COMPUTER_PROPS = ("Name", "Domain")


def get_computer_system() -> Command:
    """Which cluster node this connection reached (its computer name)."""
    return Command(
        "computer name",
        (Cmdlet("Get-CimInstance", (("ClassName", "Win32_ComputerSystem"),)),),
        COMPUTER_PROPS,
    )


VM_PROPS = (
    "Name",
    "Id",
    "State",
    "Generation",
    "Version",
    "ProcessorCount",
    "MemoryStartup",
    "ComputerName",
)
SNAPSHOT_PROPS = ("Id", "VMId", "Name", "ParentSnapshotId", "SnapshotType", "CreationTime")
DRIVE_PROPS = ("VMId", "Path", "ControllerType", "ControllerNumber", "ControllerLocation")
VHD_PROPS = ("Path", "VhdFormat", "VhdType", "FileSize", "Size", "ParentPath", "DiskIdentifier")
REPLICATION_PROPS = ("VMId", "VMName", "State", "Health", "Mode", "ReplicaServer")
INTEGRATION_PROPS = ("VMId", "VMName", "Name", "Enabled", "PrimaryOperationalStatus")
SERVICE_PROPS = ("Name", "Status", "DisplayName")


def get_vms() -> Command:
    return Command("virtual machines", (Cmdlet("Get-VM"),), VM_PROPS)


def get_snapshots() -> Command:
    return Command("checkpoints", (Cmdlet("Get-VMSnapshot", (("VMName", "*"),)),), SNAPSHOT_PROPS)


def get_hard_disk_drives() -> Command:
    return Command(
        "virtual hard disk drives",
        (Cmdlet("Get-VMHardDiskDrive", (("VMName", "*"),)),),
        DRIVE_PROPS,
    )


def get_vhds(paths: list[str]) -> Command:
    """Get-VHD for these files; a file that is gone is a non-terminating error."""
    return Command(
        "virtual hard disk files",
        (Cmdlet("Get-VHD", (("Path", list(paths)),)),),
        VHD_PROPS,
        tolerate_errors=True,
    )


def get_replication() -> Command:
    return Command("replication", (Cmdlet("Get-VMReplication"),), REPLICATION_PROPS)


def get_heartbeat() -> Command:
    return Command(
        "integration services (heartbeat)",
        (Cmdlet("Get-VMIntegrationService", (("VMName", "*"), ("Name", "Heartbeat"))),),
        INTEGRATION_PROPS,
    )


def get_service(name: str) -> Command:
    """The backup agent's Windows service; "not found" is a normal answer."""
    return Command(
        "backup agent service",
        (Cmdlet("Get-Service", (("Name", name),)),),
        SERVICE_PROPS,
        tolerate_errors=True,
    )


def get_registry_value(path: str, name: str) -> Command:
    """One registry value (the backup agent's version); "not found" is a normal answer."""
    return Command(
        "backup agent version",
        (Cmdlet("Get-ItemPropertyValue", (("Path", path), ("Name", name))),),
        tolerate_errors=True,
    )


# -- the one mutating command -------------------------------------------------------------


def remove_all_snapshots(vm_id: str) -> Command:
    """Merge: remove every checkpoint of one VM (Hyper-V merges the chain into the base)."""
    return Command(
        "merge (remove every checkpoint)",
        (
            Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),)),
            Cmdlet("Remove-VMSnapshot", (("Name", "*"),)),
        ),
        mutating=True,
    )


def update_vm_version(vm_id: str) -> Command:
    """Irreversible: raise the VM's configuration version to the host's default."""
    return Command(
        "configuration-version upgrade",
        (
            Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),)),
            Cmdlet("Update-VMVersion", (("Force", SWITCH),)),
        ),
        mutating=True,
    )


#: Cmdlets that change something on the host.
MUTATING_CMDLETS = frozenset({"Remove-VMSnapshot", "Update-VMVersion"})

#: Every cmdlet the read path may send (tests assert nothing else goes out).
READ_CMDLETS = frozenset(
    {
        "Get-ClusterNode",
        "Get-ClusterSharedVolume",
        "Get-ClusterSharedVolumeState",
        "Get-CimInstance",
        "Get-VM",
        "Get-VMSnapshot",
        "Get-VMHardDiskDrive",
        "Get-VHD",
        "Get-VMReplication",
        "Get-VMIntegrationService",
        "Get-Service",
        "Get-ItemPropertyValue",
        "Select-Object",
    }
)
