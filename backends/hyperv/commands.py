"""The written contract with a Hyper-V failover cluster, as code.

Every pipeline Ventana sends to a node is built here and nowhere else: the
cmdlets, their parameters (sent with ``add_command``/``add_parameter``, never
as script text) and the top-level properties read from what comes back.
Each read ends in ``Select-Object -Property … | ConvertTo-Json -Compress``:
the node keeps only the properties Ventana reads and sends them as ONE
JSON string per command instead of one CLIXML object per row. pypsrp spends
~1-2 ms deserializing each CLIXML object (and the node as long serializing
it); at 2,500 VMs per node that was minutes per poll, while ``json.loads``
of the same rows takes milliseconds. :func:`decode_json` turns the JSON
back into one dict per object, with the quirks of Windows PowerShell 5.1's
``ConvertTo-Json`` undone: enums arrive as their numeric value (mapped
back to the member name with :data:`ENUMS`), DateTime as ``"/Date(ms)/"``
(``\\/Date(ms)\\/`` in the JSON text), Guid as a string, a single object
not wrapped in an array. ``COMMANDS.md`` beside this file documents the same contract for a
Windows operator; keep the two in step.

The reads only read; the commands of the actions (merge, upgrade, compact,
delete, the rebuild's steps) are marked ``mutating``: a read-only session
refuses to send them (``MUTATING_CMDLETS`` lists their cmdlets).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

#: A parameter sent as a switch (``-Force``): pypsrp's ``add_parameter(name)``.
SWITCH = object()


@dataclass(frozen=True, slots=True)
class Cmdlet:
    """One command of a pipeline: a cmdlet with parameters, or (``script``) a fixed script.

    A script is constant text written here (never built from cluster data or
    user input): the projection that turns enums into their names on the
    host (:meth:`Command.pipeline`). Values always go as parameters.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    script: bool = False

    @property
    def commands(self) -> tuple[str, ...]:
        """The cmdlets this runs (a projection script runs Select-Object and ConvertTo-Json)."""
        return ("Select-Object", "ConvertTo-Json") if self.script else (self.name,)


@dataclass(frozen=True, slots=True)
class Command:
    """One pipeline: cmdlets in order, then ``Select-Object -Property`` of ``properties``."""

    label: str
    cmdlets: tuple[Cmdlet, ...]
    properties: tuple[str, ...] = ()
    #: Non-terminating errors that are a normal answer (e.g. "not found").
    tolerate_errors: bool = False
    mutating: bool = False
    #: Writes no output (may be batched without selecting properties).
    quiet: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def json(self) -> bool:
        """Whether the answer is one JSON string (every command that selects properties)."""
        return bool(self.properties)

    @property
    def enum_properties(self) -> tuple[str, ...]:
        """The selected properties that are enums: sent as their names, converted on the host."""
        return tuple(p for p in self.properties if p in self.extra.get("enums", {}))

    def projection(self) -> str:
        """``Select-Object -Property … | ConvertTo-Json -Compress``, enums as calculated
        properties (``@{n='State';e={[string]$_.State}}``: the member's name, whatever
        number this Windows version gives it; ``[string[]]`` for an array of enums)."""
        arrays = self.extra.get("enum_arrays", ())
        items = []
        for name in self.properties:
            if name in self.enum_properties:
                cast = "[string[]]" if name in arrays else "[string]"
                items.append(f"@{{n='{name}';e={{{cast}$_.{name}}}}}")
            else:
                items.append(f"'{name}'")
        return f"Select-Object -Property {','.join(items)} | ConvertTo-Json -Compress"

    def pipeline(self) -> tuple[Cmdlet, ...]:
        if not self.properties:
            return self.cmdlets
        if self.enum_properties:  # a calculated property needs a script block: a fixed script
            return (*self.cmdlets, Cmdlet(f"$input | {self.projection()}", script=True))
        return (
            *self.cmdlets,
            Cmdlet("Select-Object", (("Property", list(self.properties)),)),
            Cmdlet("ConvertTo-Json", (("Compress", SWITCH),)),
        )

    def as_powershell(self) -> str:
        """The same pipeline as a PowerShell line an operator can paste.

        The projection script is printed without its ``$input |`` (the same
        thing typed in a pipeline).
        """
        parts = []
        for cmdlet in self.pipeline():
            if cmdlet.script:
                parts.append(cmdlet.name.removeprefix("$input | "))
                continue
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


# -- decoding ConvertTo-Json ----------------------------------------------------------------

#: No enum is decoded by its number: the numbers differ between Windows versions
#: (Hyper-V module 2.0.0.0 numbers VMState RunningCritical 32785, Server 2016's
#: module, without Hibernated and ComponentServicing, 32783 — dsccommunity/HyperVDsc
#: ``tests/Unit/Stubs/Hyper-V.stubs.psm1``; eryph-org ``VirtualMachineState.cs``).
#: Every enum read is converted to its member name on the host
#: (:meth:`Command.projection`); a number that still arrives (an old contract, a
#: hand-made capture) reaches ``mapping`` as its digits, an unknown name: the
#: careful value and a finding.

_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _date(value: Any) -> Any:
    """``"/Date(1736150400000)/"`` (ConvertTo-Json's DateTime) → aware UTC datetime."""
    if isinstance(value, str) and value.startswith("/Date("):
        match = _DATE.match(value)
        if match:
            try:
                return _EPOCH + timedelta(milliseconds=int(match.group(1)))
            except OverflowError:
                return value
    return value


def parse_json(payload: str) -> list[dict[str, Any]]:
    """One ConvertTo-Json answer → its objects (a single object arrives unwrapped)."""
    data = json.loads(payload) if payload.strip() else []
    rows = data if isinstance(data, list) else [data]
    return [row for row in rows if isinstance(row, dict)]


def fix_rows(command: Command, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Undo ConvertTo-Json's quirks in place: "/Date(ms)/" → datetime; an enum that
    arrives as a number (not converted on the host) → its digits, which no table knows."""
    enums = command.enum_properties
    dates = command.extra.get("dates", ())
    if not enums and not dates:
        return rows
    for row in rows:
        for name in enums:
            value = row.get(name)
            if type(value) is int:
                row[name] = str(value)
        for name in dates:
            row[name] = _date(row.get(name))
    return rows


def decode_json(command: Command, payload: str) -> list[dict[str, Any]]:
    """One ConvertTo-Json answer → one dict per object (enums by name, DateTime as datetime).

    An empty answer is no objects. Raises ``ValueError`` when the text is not JSON.
    """
    return fix_rows(command, parse_json(payload))


def _enums(dates: tuple[str, ...] = (), arrays: tuple[str, ...] = (), **enums: str
           ) -> dict[str, Any]:
    """``Command.extra``: property → its enum type (converted to names on the host; the
    type is documentation), DateTime properties, and the enum properties that are arrays."""
    return {"enums": enums, "dates": dates, "enum_arrays": arrays}


# -- cluster-wide reads (from one node) ---------------------------------------------

CLUSTER_NODE_PROPS = ("Name", "Id", "State", "DrainStatus", "Cluster")
CSV_PROPS = ("Name", "Id", "OwnerNode", "State")
CSV_STATE_PROPS = ("Name", "Node", "StateInfo", "VolumeName", "VolumeFriendlyName")
PARTITION_PROPS = ("Path", "VolumeLabel", "VolumeGuid", "TotalSize", "FreeSpace", "MountPoints")


def get_cluster_nodes() -> Command:
    return Command("cluster nodes", (Cmdlet("Get-ClusterNode"),), CLUSTER_NODE_PROPS,
                   extra=_enums(State="ClusterNodeState", DrainStatus="NodeDrainStatus"))


def get_csvs() -> Command:
    return Command("cluster shared volumes", (Cmdlet("Get-ClusterSharedVolume"),), CSV_PROPS,
                   extra=_enums(State="ClusterResourceState"))


def get_csv_states() -> Command:
    return Command("CSV state per node", (Cmdlet("Get-ClusterSharedVolumeState"),),
                   CSV_STATE_PROPS, extra=_enums(StateInfo="ClusterSharedVolumeStateInfo"))


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


CSV_BACKUP_PROPS = ("Name", "VolumeName", "BackupState")


def get_csv_backup_states() -> Command:
    """Each CSV's backup state: ``BackupState`` 0 = none, 1 = a backup is in progress.

    CIM ``MSCluster_ClusterSharedVolume`` (root/MSCluster) is the one place
    the cluster reports it flat (Get-ClusterSharedVolume nests it, and
    Get-ClusterSharedVolumeState only shows the redirection a backup may cause).
    """
    return Command(
        "CSV backup state",
        (
            Cmdlet(
                "Get-CimInstance",
                (("Namespace", "root/MSCluster"), ("ClassName", "MSCluster_ClusterSharedVolume")),
            ),
        ),
        CSV_BACKUP_PROPS,
        tolerate_errors=True,
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
    "Heartbeat",
)
SNAPSHOT_PROPS = ("Id", "VMId", "Name", "ParentSnapshotId", "SnapshotType", "CreationTime")
DRIVE_PROPS = ("VMId", "Path", "ControllerType", "ControllerNumber", "ControllerLocation")
#: The poll's drives also say which are pass-through (physical) disks: DiskNumber set.
POLL_DRIVE_PROPS = (*DRIVE_PROPS, "DiskNumber")
VHD_PROPS = ("Path", "VhdFormat", "VhdType", "FileSize", "Size", "ParentPath", "DiskIdentifier")
REPLICATION_PROPS = ("VMId", "VMName", "State", "Health", "Mode", "ReplicaServer")
SERVICE_PROPS = ("Name", "Status", "DisplayName")


def get_vms() -> Command:
    """Every VM of the node, with its heartbeat (``Heartbeat``, a ``VMHeartbeatStatus``:
    no integration service is looked up by its display name, which is localized)."""
    return Command("virtual machines", (Cmdlet("Get-VM"),), VM_PROPS,
                   extra=_enums(State="VMState", Heartbeat="VMHeartbeatStatus"))


def get_snapshots() -> Command:
    return Command("checkpoints", (Cmdlet("Get-VMSnapshot", (("VMName", "*"),)),),
                   SNAPSHOT_PROPS, extra=_enums(("CreationTime",), SnapshotType="SnapshotType"))


def get_hard_disk_drives() -> Command:
    return Command(
        "virtual hard disk drives",
        (Cmdlet("Get-VMHardDiskDrive", (("VMName", "*"),)),),
        POLL_DRIVE_PROPS,
        extra=_enums(ControllerType="ControllerType"),
    )


def get_attached_vhds() -> Command:
    """Get-VHD of every file a VM's drives use now (the leaves of the chains), piped."""
    return Command(
        "virtual hard disk files (attached)",
        (Cmdlet("Get-VMHardDiskDrive", (("VMName", "*"),)), Cmdlet("Get-VHD")),
        VHD_PROPS,
        tolerate_errors=True,
        extra=_enums(VhdFormat="VhdFormat", VhdType="VhdType"),
    )


def get_checkpoint_vhds() -> Command:
    """Get-VHD of every file a checkpoint's drives froze (the rest of the chains), piped."""
    return Command(
        "virtual hard disk files (checkpoints)",
        (
            Cmdlet("Get-VMSnapshot", (("VMName", "*"),)),
            Cmdlet("Get-VMHardDiskDrive"),
            Cmdlet("Get-VHD"),
        ),
        VHD_PROPS,
        tolerate_errors=True,
        extra=_enums(VhdFormat="VhdFormat", VhdType="VhdType"),
    )


def get_vhds(paths: list[str]) -> Command:
    """Get-VHD for these files; a file that is gone is a non-terminating error."""
    return Command(
        "virtual hard disk files",
        (Cmdlet("Get-VHD", (("Path", list(paths)),)),),
        VHD_PROPS,
        tolerate_errors=True,
        extra=_enums(VhdFormat="VhdFormat", VhdType="VhdType"),
    )


def get_replication() -> Command:
    return Command("replication", (Cmdlet("Get-VMReplication"),), REPLICATION_PROPS,
                   extra=_enums(State="VMReplicationState", Health="VMReplicationHealthState",
                                Mode="VMReplicationMode"))


def get_service(name: str) -> Command:
    """The backup agent's Windows service; "not found" is a normal answer."""
    return Command(
        "backup agent service",
        (Cmdlet("Get-Service", (("Name", name),)),),
        SERVICE_PROPS,
        tolerate_errors=True,
        extra=_enums(Status="ServiceControllerStatus"),
    )


def get_registry_value(path: str, name: str) -> Command:
    """One registry value (the backup agent's version); "not found" is a normal answer."""
    return Command(
        "backup agent version",
        (Cmdlet("Get-ItemPropertyValue", (("Path", path), ("Name", name))),),
        tolerate_errors=True,
    )


# -- backup readiness (backup.py; docs/backup-readiness.md) ------------------------------

AGENT_SERVICE_PROPS = ("Name", "DisplayName", "State", "StartMode", "PathName", "ProcessId")
DATA_FILE_PROPS = ("Name", "Version")
LISTEN_PROPS = ("LocalAddress", "LocalPort", "OwningProcess")
INTEGRATION_PROPS = ("VMId", "Id", "Enabled", "PrimaryOperationalStatus")
KVP_PROPS = ("SystemName", "GuestIntrinsicExchangeItems")
LOCATION_PROPS = ("Id", "ConfigurationLocation", "SnapshotFileLocation", "SmartPagingFilePath",
                  "IsClustered")
CLUSTER_GROUP_PROPS = ("Name", "State", "GroupType")


def wql_string(value: str) -> str:
    """A WQL string literal: backslash and quote escaped with a backslash (WQL's rules)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def get_agent_services(names: tuple[str, ...]) -> Command:
    """The backup agent's Windows service(s), by service name or display name (CIM
    ``Win32_Service``: state, start mode, the binary's path and the process id). No match
    is an empty answer, not an error. The names come from the config (WQL-quoted)."""
    where = " OR ".join(f"{field} = {wql_string(name)}"
                        for name in names for field in ("Name", "DisplayName"))
    return Command(
        "backup agent service",
        (Cmdlet("Get-CimInstance", (("ClassName", "Win32_Service"), ("Filter", where))),),
        AGENT_SERVICE_PROPS,
    )


def get_file_version(path: str) -> Command:
    """An executable's file version (CIM ``CIM_DataFile`` by its key, ``Name``)."""
    return Command(
        "backup agent file version",
        (Cmdlet("Get-CimInstance", (("ClassName", "CIM_DataFile"),
                                    ("Filter", f"Name = {wql_string(path)}"))),),
        DATA_FILE_PROPS,
    )


def get_listening_ports(ports: tuple[int, ...]) -> Command:
    """The TCP ports among ``ports`` something listens on. None listening is a
    non-terminating ObjectNotFound error ("No matching MSFT_NetTCPConnection objects")."""
    return Command(
        "backup agent ports",
        (Cmdlet("Get-NetTCPConnection", (("State", "Listen"),
                                         ("LocalPort", [int(p) for p in ports]))),),
        LISTEN_PROPS,
        tolerate_errors=True,
    )


def get_integration_services() -> Command:
    """Every VM's integration services (matched by the component id at the end of ``Id``,
    never by the localized ``Name``)."""
    return Command(
        "integration services (all VMs)",
        (Cmdlet("Get-VMIntegrationService", (("VMName", "*"),)),),
        INTEGRATION_PROPS,
        extra=_enums(PrimaryOperationalStatus="VMIntegrationComponentOperationalStatus"),
    )


def get_vm_locations() -> Command:
    """Where each VM keeps its configuration, checkpoints and smart paging file (its
    disks' paths come with the drives): every file of a VM on SMB must be in one share."""
    return Command("VM file locations", (Cmdlet("Get-VM"),), LOCATION_PROPS)


def get_cluster_groups() -> Command:
    """The cluster's roles and their state (a VM's role is matched by its name)."""
    return Command("cluster groups", (Cmdlet("Get-ClusterGroup"),), CLUSTER_GROUP_PROPS,
                   extra=_enums(State="ClusterGroupState", GroupType="GroupType"))


def get_guest_kvp() -> Command:
    """What each running guest reports about itself through KVP (``Msvm_KvpExchangeComponent``
    ``GuestIntrinsicExchangeItems``: embedded-instance XML, OSName, OSPlatformId…)."""
    return Command(
        "guest KVP (OS)",
        (Cmdlet("Get-CimInstance", (("Namespace", "root/virtualization/v2"),
                                    ("ClassName", "Msvm_KvpExchangeComponent"))),),
        KVP_PROPS,
    )


def get_default_version() -> Command:
    """The host's default VM configuration version (``Get-VMHostSupportedVersion
    -Default``, "the default virtual machine configuration version for this host" —
    MicrosoftDocs windows-powershell-docs, hyper-v/Get-VMHostSupportedVersion.md):
    what ``Update-VMVersion``, which has no target parameter, raises a VM to; the
    upgrade plan states it. ``Version`` is a System.Version, which ConvertTo-Json
    writes as an object (Major, Minor, Build, …): converted to its string ("9.0") on
    the host, like the enums. Read once per connection; a host without the cmdlet
    (2012 R2) answers an error: unknown."""
    return Command("default configuration version",
                   (Cmdlet("Get-VMHostSupportedVersion", (("Default", SWITCH),)),),
                   ("Name", "Version", "IsDefault"), extra=_enums(Version="System.Version"))


# -- streaming: VM state changes as they happen (CIM indications) ------------------------

#: The event subscription's name in the runspace (one per node session).
VM_EVENTS = "Ventana.VMState"
#: Only a change of state or health (``OnTimeInMilliseconds`` changes constantly on
#: every running VM: "every modification" would send one event per VM per second).
#: WQL compares the instance before and after (``PreviousInstance``) in the
#: WHERE clause of an ``__InstanceModificationEvent`` query.
VM_EVENT_QUERY = (
    "SELECT * FROM __InstanceModificationEvent WITHIN 2 "
    "WHERE TargetInstance ISA 'Msvm_ComputerSystem' "
    "AND (TargetInstance.EnabledState <> PreviousInstance.EnabledState "
    "OR TargetInstance.HealthState <> PreviousInstance.HealthState)"
)
VM_EVENT_PROPS = ("Name", "ElementName", "EnabledState", "OtherEnabledState", "HealthState")
WAIT_EVENT_PROPS = ("EventIdentifier",)

#: root/virtualization/v2 Msvm_ComputerSystem.EnabledState (CIM_EnabledLogicalElement):
#: 2 Enabled, 3 Disabled, 4 Shutting Down, 6 Enabled but Offline (saved), 9 Quiesce
#: (paused), 10 Starting; 1 Other: the state is named in ``OtherEnabledState``
#: (transitions such as "Saving"); 0 Unknown, 5 Not Applicable, 7 In Test, 8 Deferred
#: say nothing Ventana can show. The v1 namespace's 32768+ values are gone since
#: Windows Server 2012 R2 (learn.microsoft.com windows/win32/hyperv_v2/msvm-computersystem).
ENABLED_STATES = {2: "Running", 3: "Off", 4: "Stopping", 6: "Saved", 9: "Paused",
                  10: "Starting"}
#: HealthState 20 Major Failure, 25 Critical Failure: the VM's storage or
#: configuration failed (Hyper-V's "…Critical" states, e.g. Paused-Critical).
CRITICAL_HEALTH = frozenset({20, 25})


def event_state(enabled: int, other: str, health: int) -> str | None:
    """The VMState name a streamed Msvm_ComputerSystem change stands for (None: unknown —
    the next poll reads it)."""
    if enabled == 1:
        name = other.strip().replace(" ", "")
        if not name:
            return None
    else:
        name = ENABLED_STATES.get(enabled, "")
        if not name:
            return None
    return f"{name}Critical" if health in CRITICAL_HEALTH else name


def subscribe_vm_events() -> Command:
    """Subscribe this runspace to Msvm_ComputerSystem changes (queued as PowerShell events).

    Changes nothing on the host: the subscription lives in the session's
    runspace and ends with it.
    """
    return Command(
        "VM state subscription",
        (
            Cmdlet(
                "Register-CimIndicationEvent",
                (
                    ("Namespace", "root/virtualization/v2"),
                    ("Query", VM_EVENT_QUERY),
                    ("SourceIdentifier", VM_EVENTS),
                ),
            ),
        ),
        quiet=True,
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


def get_vm_snapshots(vm_id: str) -> Command:
    """One VM's checkpoints, read on the action session just before the merge is sent:
    the executor refuses a VM with a Hyper-V Replica checkpoint (``SnapshotType``
    Replica/AppConsistentReplica/SyncedReplica) itself, whatever the plan said."""
    return Command("checkpoints of one VM", (_by_id(vm_id), Cmdlet("Get-VMSnapshot")),
                   SNAPSHOT_PROPS, extra=_enums(("CreationTime",), SnapshotType="SnapshotType"))


MERGE_STATUS_PROPS = ("Name", "SecondaryOperationalStatus", "Status")


def get_merge_status(vm_id: str) -> Command:
    """Whether the VM's disks still merge: ``Remove-VMSnapshot`` returns when the
    checkpoints are gone from the tree; the .avhdx files go on merging in the background
    (SecondaryOperationalStatus ``MergingDisks``, Status "Merging disks (N%)")."""
    return Command("background merge state", (_by_id(vm_id),), MERGE_STATUS_PROPS,
                   extra=_enums(SecondaryOperationalStatus="VMOperationalStatus"))


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


# -- clean-up: compact a VHDX, delete an obsolete VM ----------------------------------------

VM_CHECK_PROPS = ("Name", "Id", "State", "Path", "IsClustered", "ReplicationState")


def get_vm_check(vm_id: str) -> Command:
    """One VM's state as the host sees it now (re-checked just before a mutating step)."""
    return Command(
        "VM state (pre-check)",
        (Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),)),),
        VM_CHECK_PROPS,
        extra=_enums(State="VMState", ReplicationState="VMReplicationState"),
    )


def get_vm_drives(vm_id: str) -> Command:
    """The disk files one VM's drives use now (where its storage is)."""
    return Command(
        "VM drives (pre-check)",
        (Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),)), Cmdlet("Get-VMHardDiskDrive")),
        DRIVE_PROPS,
        extra=_enums(ControllerType="ControllerType"),
    )


def paths_present(paths: list[str]) -> Command:
    """Whether each file still exists (one Boolean per path, in order; literal paths)."""
    return Command("files still present", (Cmdlet("Test-Path", (("LiteralPath", list(paths)),)),))


def optimize_vhd(path: str) -> Command:
    """Compact one dynamic VHD/VHDX (VM off, file not in use)."""
    return Command(
        "compact (Optimize-VHD)",
        (Cmdlet("Optimize-VHD", (("Path", path), ("Mode", "Full"))),),
        mutating=True,
    )


def mount_vhd_read_only(path: str) -> Command:
    """Attach a file read-only, no drive letter: Optimize-VHD -Mode Full needs it (on a file
    not attached read-only, Full falls back to Prezeroed and reclaims less)."""
    return Command(
        "attach the file read-only (Mount-VHD)",
        (Cmdlet("Mount-VHD", (("Path", path), ("ReadOnly", SWITCH), ("NoDriveLetter", SWITCH))),),
        mutating=True, quiet=True,
    )


def dismount_vhd(path: str) -> Command:
    """Detach a file attached by :func:`mount_vhd_read_only` (always sent after it)."""
    return Command("detach the file (Dismount-VHD)", (Cmdlet("Dismount-VHD", (("Path", path),)),),
                   mutating=True, quiet=True)


def remove_cluster_group(vm_id: str) -> Command:
    """Remove a VM's cluster role and its resources (by the VM's Id, never a name)."""
    return Command(
        "remove the VM's cluster role",
        (Cmdlet("Remove-ClusterGroup", (("VMId", uuid.UUID(vm_id)), ("RemoveResources", SWITCH),
                                        ("Force", SWITCH))),),
        mutating=True,
    )


def remove_vm(vm_id: str) -> Command:
    """Remove a VM's configuration (Hyper-V leaves its disk files)."""
    return Command(
        "remove the VM",
        (Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),)), Cmdlet("Remove-VM", (("Force", SWITCH),))),
        mutating=True,
    )


def remove_file(path: str) -> Command:
    """Delete exactly one file: a literal path, no wildcard, no -Recurse."""
    return Command(
        "delete a disk file",
        (Cmdlet("Remove-Item", (("LiteralPath", path),)),),
        mutating=True,
    )


# -- rebuild: capture, merge, create, verify, retire ----------------------------------------

VM_CONFIG_PROPS = ("Name", "Id", "State", "Generation", "Version", "ProcessorCount",
                   "MemoryStartup", "DynamicMemoryEnabled", "Path", "ComputerName",
                   "ReplicationState", "IsClustered", "Heartbeat")
NIC_PROPS = ("Name", "Id", "SwitchName", "MacAddress", "DynamicMacAddressEnabled",
             "IPAddresses")
GUEST_NET_PROPS = ("InstanceID", "IPAddresses", "Subnets", "DefaultGateways", "DNSServers",
                   "DHCPEnabled")
VLAN_PROPS = ("OperationMode", "AccessVlanId")
FIRMWARE_PROPS = ("SecureBoot", "SecureBootTemplate")
BOOT_PROPS = ("BootType", "Description", "FirmwarePath", "Device")
BIOS_PROPS = ("StartupOrder",)
CHECKPOINT_PROPS = ("Id", "Name", "SnapshotType", "CreationTime", "ParentSnapshotId")
COMPONENT_PROPS = ("Name", "Id", "Enabled", "PrimaryOperationalStatus")
#: The Shutdown integration service's fixed id (the end of VMIntegrationComponent.Id): its
#: display name is localized ("Herunterfahren des Betriebssystems"), its id is not.
SHUTDOWN_SERVICE_ID = "9f8233ac-be49-4c79-8ee3-e7e1985b2077"
NEW_VM_PROPS = ("Id", "Name")



def _int64(value: int) -> str:
    """An Int64 parameter as its digits: pypsrp 0.9 serializes every Python int as
    Int32, and PowerShell's parameter binding converts the string to Int64."""
    return str(int(value))


def _by_id(vm_id: str) -> Cmdlet:
    return Cmdlet("Get-VM", (("Id", uuid.UUID(vm_id)),))


def get_vm_config(vm_id: str) -> Command:
    return Command("VM configuration", (_by_id(vm_id),), VM_CONFIG_PROPS,
                   extra=_enums(State="VMState", ReplicationState="VMReplicationState",
                                Heartbeat="VMHeartbeatStatus"))


def get_vm_nics(vm_id: str) -> Command:
    """NICs with the guest's addresses as the host sees them (KVP; empty when the guest
    does not report)."""
    return Command("network adapters", (_by_id(vm_id), Cmdlet("Get-VMNetworkAdapter")),
                   NIC_PROPS)


def get_guest_network() -> Command:
    """The guests' IP settings as their integration services report them over KVP
    (``InstanceID`` = ``Microsoft:GuestNetwork\\<VM id>\\<adapter id>``); a guest
    without integration services reports nothing."""
    return Command(
        "guest IP configuration (KVP)",
        (Cmdlet("Get-CimInstance", (("Namespace", "root/virtualization/v2"),
                                    ("ClassName", "Msvm_GuestNetworkAdapterConfiguration"))),),
        GUEST_NET_PROPS, tolerate_errors=True)


def get_nic_vlan(vm_id: str, nic: str) -> Command:
    return Command(
        "network adapter VLAN",
        (_by_id(vm_id), Cmdlet("Get-VMNetworkAdapter", (("Name", nic),)),
         Cmdlet("Get-VMNetworkAdapterVlan")),
        VLAN_PROPS, extra=_enums(OperationMode="VMNetworkAdapterVlanMode"))


def get_firmware(vm_id: str) -> Command:
    return Command("firmware (Gen2)", (_by_id(vm_id), Cmdlet("Get-VMFirmware")),
                   FIRMWARE_PROPS, extra=_enums(SecureBoot="OnOffState"))


def get_boot_order(vm_id: str) -> Command:
    """The Gen2 boot order, one entry per device, first first."""
    return Command(
        "boot order (Gen2)",
        (_by_id(vm_id), Cmdlet("Get-VMFirmware"),
         Cmdlet("Select-Object", (("ExpandProperty", "BootOrder"),))),
        BOOT_PROPS, extra=_enums(BootType="VMBootSourceType", Device="[string]: ToString"))


def get_bios(vm_id: str) -> Command:
    return Command("BIOS startup order (Gen1)", (_by_id(vm_id), Cmdlet("Get-VMBios")),
                   BIOS_PROPS, extra=_enums(arrays=("StartupOrder",), StartupOrder="BootDevice"))


def get_vm_checkpoints(vm_id: str) -> Command:
    return Command("the VM's checkpoints", (_by_id(vm_id), Cmdlet("Get-VMSnapshot")),
                   CHECKPOINT_PROPS,
                   extra=_enums(("CreationTime",), SnapshotType="SnapshotType"))


def get_vm_heartbeat(vm_id: str) -> Command:
    """One VM's state and heartbeat (``Get-VM``'s ``Heartbeat``, not a localized service
    name)."""
    return Command("the VM's heartbeat", (_by_id(vm_id),), ("Name", "State", "Heartbeat"),
                   extra=_enums(State="VMState", Heartbeat="VMHeartbeatStatus"))


def get_vm_integration(vm_id: str, name: str | None = None) -> Command:
    params = (("Name", name),) if name else ()
    return Command("integration services", (_by_id(vm_id),
                                            Cmdlet("Get-VMIntegrationService", params)),
                   COMPONENT_PROPS,
                   extra=_enums(PrimaryOperationalStatus="VMIntegrationComponentOperationalStatus"))


def stop_vm(vm_id: str, *, turn_off: bool = False) -> Command:
    """Shut the guest down (-Force: no prompt); ``turn_off``: power off without the guest."""
    params: tuple[tuple[str, Any], ...] = (("Force", SWITCH),)
    if turn_off:
        params = (("TurnOff", SWITCH), *params)
    return Command("stop the VM", (_by_id(vm_id), Cmdlet("Stop-VM", params)), mutating=True)


def start_vm(vm_id: str) -> Command:
    return Command("start the VM", (_by_id(vm_id), Cmdlet("Start-VM")), mutating=True)


def remove_snapshot(snapshot_id: str) -> Command:
    """Remove (merge) one checkpoint, by its Id."""
    return Command(
        "merge one checkpoint",
        (Cmdlet("Get-VMSnapshot", (("Id", uuid.UUID(snapshot_id)),)), Cmdlet("Remove-VMSnapshot")),
        mutating=True,
    )


def convert_vhd(source: str, destination: str) -> Command:
    """A new, flat, dynamic copy of a disk (the whole chain up to ``source``)."""
    return Command(
        "copy the consolidated disk (Convert-VHD)",
        (Cmdlet("Convert-VHD", (("Path", source), ("DestinationPath", destination),
                                ("VHDType", "Dynamic"))),),
        mutating=True,
    )


def new_vm(name: str, generation: int, memory_bytes: int, folder: str) -> Command:
    return Command(
        "create the VM (New-VM)",
        (Cmdlet("New-VM", (("Name", name), ("Generation", int(generation)),
                           ("MemoryStartupBytes", _int64(memory_bytes)), ("Path", folder),
                           ("NoVHD", SWITCH))),),
        NEW_VM_PROPS, mutating=True,
    )


def set_processor(vm_id: str, count: int) -> Command:
    return Command("set vCPUs", (_by_id(vm_id), Cmdlet("Set-VMProcessor",
                                                       (("Count", int(count)),))), mutating=True)


def set_memory(vm_id: str, startup_bytes: int, dynamic: bool) -> Command:
    return Command("set memory", (_by_id(vm_id), Cmdlet("Set-VMMemory", (
        ("StartupBytes", _int64(startup_bytes)), ("DynamicMemoryEnabled", bool(dynamic))))),
        mutating=True)


def remove_nics(vm_id: str) -> Command:
    """Remove the adapters New-VM added by default (the captured ones are added next)."""
    return Command("remove default network adapters",
                   (_by_id(vm_id), Cmdlet("Get-VMNetworkAdapter"),
                    Cmdlet("Remove-VMNetworkAdapter")), mutating=True)


def add_nic(vm_id: str, name: str, switch: str, mac: str) -> Command:
    params: list[tuple[str, Any]] = [("Name", name)]
    if switch:
        params.append(("SwitchName", switch))
    if mac:
        params.append(("StaticMacAddress", mac))
    return Command("add a network adapter",
                   (_by_id(vm_id), Cmdlet("Add-VMNetworkAdapter", tuple(params))), mutating=True)


def set_nic_vlan(vm_id: str, nic: str, vlan: int) -> Command:
    return Command(
        "set the adapter's VLAN",
        (_by_id(vm_id), Cmdlet("Get-VMNetworkAdapter", (("Name", nic),)),
         Cmdlet("Set-VMNetworkAdapterVlan", (("Access", SWITCH), ("VlanId", int(vlan))))),
        mutating=True)


def add_drive(vm_id: str, controller_type: str, number: int, location: int, path: str
              ) -> Command:
    return Command(
        "attach a disk",
        (_by_id(vm_id), Cmdlet("Add-VMHardDiskDrive", (
            ("ControllerType", controller_type), ("ControllerNumber", int(number)),
            ("ControllerLocation", int(location)), ("Path", path)))),
        mutating=True)


def add_scsi_controller(vm_id: str) -> Command:
    """One more SCSI controller (New-VM gives one: number 0)."""
    return Command("add a SCSI controller", (_by_id(vm_id), Cmdlet("Add-VMScsiController")),
                   mutating=True)


def set_secure_boot(vm_id: str, template: str) -> Command:
    return Command("set Secure Boot", (_by_id(vm_id), Cmdlet("Set-VMFirmware", (
        ("EnableSecureBoot", "On"), ("SecureBootTemplate", template)))), mutating=True)


def add_cluster_role(vm_id: str, name: str) -> Command:
    return Command("make the VM highly available", (Cmdlet(
        "Add-ClusterVirtualMachineRole", (("VMId", uuid.UUID(vm_id)), ("Name", name))),),
        mutating=True)


def rename_vm(vm_id: str, new_name: str) -> Command:
    return Command("rename the VM", (_by_id(vm_id), Cmdlet("Rename-VM", (
        ("NewName", new_name),))), mutating=True)


def set_no_autostart(vm_id: str) -> Command:
    return Command("no automatic start", (_by_id(vm_id), Cmdlet("Set-VM", (
        ("AutomaticStartAction", "Nothing"),))), mutating=True)


#: Cmdlets that change something on the host.
MUTATING_CMDLETS = frozenset({
    "Remove-VMSnapshot", "Update-VMVersion", "Optimize-VHD", "Mount-VHD", "Dismount-VHD",
    "Remove-ClusterGroup",
    "Remove-VM", "Remove-Item", "Stop-VM", "Start-VM", "Convert-VHD", "New-VM",
    "Set-VMProcessor", "Set-VMMemory", "Remove-VMNetworkAdapter", "Add-VMNetworkAdapter",
    "Set-VMNetworkAdapterVlan", "Add-VMHardDiskDrive", "Add-VMScsiController", "Set-VMFirmware",
    "Add-ClusterVirtualMachineRole", "Rename-VM", "Set-VM",
})

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
        "Get-VMHostSupportedVersion",
        "Get-VMIntegrationService",
        "Get-Service",
        "Get-ItemPropertyValue",
        "Get-NetTCPConnection",
        "Get-ClusterGroup",
        "Test-Path",
        "Get-VMNetworkAdapter",
        "Get-VMNetworkAdapterVlan",
        "Get-VMFirmware",
        "Get-VMBios",
        "Select-Object",
        "ConvertTo-Json",
        # Session-local event subscription (streaming): nothing on the host changes.
        "Register-CimIndicationEvent",
        "Wait-Event",
        "Get-Event",
        "Remove-Event",
    }
)
