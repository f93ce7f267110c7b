"""The domain model: plain frozen dataclasses with stable keys.

Every entity a backend reports (cluster, node, VM, checkpoint, virtual disk,
LUN/CSV/datastore, task, finding) is one immutable value here. The store owns
the current set; backends only describe new values through events. Sizes are
bytes, times are timezone-aware UTC datetimes. A key is ``(kind, id)`` and is
stable for the life of the object on its source system.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

GB = 1024**3
MB = 1024**2


class Kind(StrEnum):
    CLUSTER = "cluster"
    NODE = "node"
    VM = "vm"
    CHECKPOINT = "checkpoint"
    DISK = "disk"
    LUN = "lun"
    TASK = "task"
    FINDING = "finding"


Key = tuple[Kind, str]


class Platform(StrEnum):
    HYPERV = "hyperv"
    VSPHERE = "vsphere"


class NodeState(StrEnum):
    UP = "up"
    DOWN = "down"
    PAUSED = "paused"
    DRAINING = "draining"
    JOINING = "joining"
    UNKNOWN = "unknown"


class ServiceState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    MISSING = "missing"
    UNKNOWN = "unknown"


class PowerState(StrEnum):
    RUNNING = "running"
    OFF = "off"
    SAVED = "saved"
    PAUSED = "paused"
    PAUSED_CRITICAL = "paused-critical"
    STARTING = "starting"
    STOPPING = "stopping"
    UNKNOWN = "unknown"


class ReplicationState(StrEnum):
    DISABLED = "disabled"
    REPLICATING = "replicating"
    SUSPENDED = "suspended"
    ERROR = "error"


class Health(StrEnum):
    NORMAL = "normal"
    WARNING = "warning"
    CRITICAL = "critical"
    NOT_APPLICABLE = "n/a"


class IntegrationState(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    OFF = "off"
    UNKNOWN = "unknown"


class CheckpointKind(StrEnum):
    STANDARD = "standard"
    PRODUCTION = "production"
    RECOVERY = "recovery"
    BACKUP = "backup-created"


class DiskFormat(StrEnum):
    VHD = "vhd"
    VHDX = "vhdx"
    AVHDX = "avhdx"
    VMDK = "vmdk"


class LunRole(StrEnum):
    CSV = "csv"
    QUORUM = "quorum"
    DATASTORE = "datastore"


class LunState(StrEnum):
    ONLINE = "online"
    REDIRECTED = "redirected"
    FAILED = "failed"
    OFFLINE = "offline"


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    WARNING = "warning"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self not in (TaskState.QUEUED, TaskState.RUNNING)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"
    BLOCKING = "blocking"

    @property
    def rank(self) -> int:
        return ("info", "warning", "critical", "blocking").index(self.value)


class FinalState(StrEnum):
    """The end states a VM reaches in a maintenance campaign."""

    OPERATIONAL = "Operational"
    DEGRADED = "Degraded"
    PENDING = "With pending tasks"
    FAILED = "Failed"
    OPTIMIZED = "Optimized"
    MONITORING = "Under monitoring"
    MIGRATED = "Migrated"
    PARTIAL = "Partially consolidated"


@dataclass(frozen=True, slots=True)
class Cluster:
    id: str
    name: str
    platform: Platform
    nodes: int = 0

    KIND = Kind.CLUSTER


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    cluster_id: str
    state: NodeState = NodeState.UP
    csv_owned: tuple[str, ...] = ()
    backup_agent_version: str | None = None
    backup_agent_state: ServiceState = ServiceState.UNKNOWN
    vm_count: int = 0
    # The backup agent's ports found closed on this node; () all open, None unknown.
    backup_ports_closed: tuple[int, ...] | None = None
    # Backup agent facts read on real hosts (Hyper-V: Win32_Service; docs/backup-readiness.md);
    # None means "not reported". ``backup_unchecked``: a fact that could not be read, each
    # as "what: why" (shown as "not checked", never as OK or bad).
    backup_agent_name: str | None = None  # the service's display name as found
    backup_agent_start_mode: str | None = None  # Win32_Service.StartMode: Auto, Manual, Disabled
    backup_unchecked: tuple[str, ...] = ()
    #: The host's default VM configuration version (Hyper-V: Get-VMHostSupportedVersion
    #: -Default), what Update-VMVersion raises a VM to; "" not known.
    default_config_version: str = ""

    KIND = Kind.NODE


@dataclass(frozen=True, slots=True)
class VM:
    id: str
    name: str
    cluster_id: str
    node_id: str
    power: PowerState = PowerState.UNKNOWN
    generation: int = 2
    config_version: str = ""
    vcpus: int = 1
    memory_mb: int = 1024
    replication: ReplicationState = ReplicationState.DISABLED
    replication_health: Health = Health.NOT_APPLICABLE
    replica_target: str = ""
    integration: IntegrationState = IntegrationState.UNKNOWN
    disk_ids: tuple[str, ...] = ()
    lun_id: str = ""
    consolidation_needed: bool = False
    #: The last stun (vSphere: ``Checkpoint_Unstun`` in vmware.log, over SSH)
    #: and when it ended; None until the SSH side channel has seen one.
    last_stun_ms: float | None = None
    stun_at: datetime | None = None
    # Facts for backup eligibility; None / () mean "not reported by this backend".
    vss_capable: bool | None = None  # the guest can take VSS (application-consistent) snapshots
    dynamic_disks: bool | None = None  # the guest uses dynamic (LDM) disks
    storage_paths: tuple[str, ...] = ()  # configuration, checkpoint and disk locations
    # vSphere facts for snapshot-based backup and snapshot limitations (vsphere
    # mapping; docs/vsphere.md); None means "not reported", never "no".
    tools_version_status: str | None = None  # guest.toolsVersionStatus2, e.g. guestToolsCurrent
    independent_disks: tuple[str, ...] | None = None  # labels of disks in an independent mode
    physical_rdms: tuple[str, ...] | None = None  # labels of physical-mode RDM disks
    cbt_enabled: bool | None = None  # config.changeTrackingEnabled
    shared_buses: tuple[str, ...] | None = None  # SCSI controllers sharing their bus
    passthrough_devices: tuple[str, ...] | None = None  # DirectPath I/O (PCI passthrough)
    template: bool | None = None  # config.template
    fault_tolerance: str | None = None  # runtime.faultToleranceState
    # Hyper-V facts for online (host-level, VSS "Child VM Snapshot") backup; None: not read.
    vss_service: str | None = None  # Backup (volume shadow copy) integration service: ok, ...
    guest_os: str | None = None  # the guest's OS as it reports it through KVP (OSName)
    guest_windows: bool | None = None  # KVP OSPlatformId 2 (Win32NT)
    passthrough_disks: tuple[str, ...] | None = None  # pass-through (physical) disks
    #: Conditions of online backup that could not be checked, each as "what: why".
    backup_unchecked: tuple[str, ...] = ()
    #: Junctions/links/non-regular files under the VM's SMB folders: None not applicable
    #: or not read; otherwise what became of the check (e.g. "not checked: needs delegation").
    smb_link_check: str | None = None
    cluster_group_state: str | None = None  # its cluster role: Online, Offline, …; None: n/a

    KIND = Kind.VM


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: str
    vm_id: str
    name: str
    parent_id: str | None
    kind: CheckpointKind
    created: datetime
    disk_path: str = ""
    size_bytes: int = 0
    #: vSphere snapshot flags (None where the platform does not say).
    quiesced: bool | None = None
    memory: bool | None = None
    #: Bytes removing this snapshot alone consolidates or deletes, where that
    #: differs from ``size_bytes`` (vSphere: ``size_bytes`` follows the vSphere
    #: Client's count, this the delta created when it was taken + its own
    #: files); None: ``size_bytes``.
    merge_bytes: int | None = None

    KIND = Kind.CHECKPOINT


@dataclass(frozen=True, slots=True)
class VirtualDisk:
    id: str
    vm_id: str
    path: str
    format: DiskFormat
    size_bytes: int
    max_bytes: int
    parent_path: str | None = None
    lun_id: str = ""

    KIND = Kind.DISK


@dataclass(frozen=True, slots=True)
class Lun:
    id: str
    name: str
    cluster_id: str
    total_bytes: int
    free_bytes: int
    owner_node_id: str = ""
    role: LunRole = LunRole.CSV
    state: LunState = LunState.ONLINE
    in_backup: bool = False

    KIND = Kind.LUN


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    kind: str
    target: str
    target_name: str = ""
    pct: float = 0.0
    state: TaskState = TaskState.QUEUED
    started: datetime | None = None
    ended: datetime | None = None
    message: str = ""
    error: str = ""

    KIND = Kind.TASK


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    severity: Severity
    target: str
    code: str
    message: str

    KIND = Kind.FINDING


Entity = Cluster | Node | VM | Checkpoint | VirtualDisk | Lun | Task | Finding

ENTITY_TYPES: dict[Kind, type] = {
    Kind.CLUSTER: Cluster,
    Kind.NODE: Node,
    Kind.VM: VM,
    Kind.CHECKPOINT: Checkpoint,
    Kind.DISK: VirtualDisk,
    Kind.LUN: Lun,
    Kind.TASK: Task,
    Kind.FINDING: Finding,
}


def key_of(entity: Entity) -> Key:
    return (entity.KIND, entity.id)
