"""What a Hyper-V node answers (pypsrp objects) → Ventana's frozen dataclasses.

Objects arrive as decoded JSON rows (``ConvertTo-Json``: enums converted to
their names on the host, nested objects as JSON objects up to the default
depth and as their ToString beyond it) or as pypsrp ``GenericComplexObject``s
(properties in ``adapted_properties``/``extended_properties``, enums whose
``str()`` is the member name). Nothing here sanitizes text (the store does),
but nothing here may crash on an odd value either: an unknown enum name maps
to the model's UNKNOWN (or the most careful value where the model has none)
and, for what a VM reports, raises a finding (``UNKNOWN_VALUE``); a missing
number maps to 0, a bad date to the Unix epoch. Node names are normalized
once, here (:func:`node_name`): the cluster, WMI and Get-VM spell them in
different cases and short or FQDN forms. All functions are pure.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ventana.state.model import (
    MB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Entity,
    Finding,
    Health,
    IntegrationState,
    Lun,
    LunRole,
    LunState,
    Node,
    NodeState,
    Platform,
    PowerState,
    ReplicationState,
    ServiceState,
    Severity,
    VirtualDisk,
)

from ..coerce import EPOCH, aware_utc

# -- primitive values ------------------------------------------------------------------


def props(obj: Any) -> dict[str, Any]:
    """Every top-level property of an object, adapted and extended (note) ones merged."""
    # Called hundreds of thousands of times per inventory at 64 nodes: a decoded JSON
    # row (a plain dict: every read's answer) is copied at once — a dict has neither
    # attribute, and each failed getattr raises and swallows an AttributeError.
    if type(obj) is dict:
        return obj.copy()
    # ``type(...) is dict`` first (what pypsrp gives), the Mapping ABC's slower check after.
    out: dict[str, Any] = {}
    for attr in ("adapted_properties", "extended_properties"):
        value = getattr(obj, attr, None)
        if value is not None and (type(value) is dict or isinstance(value, Mapping)):
            out.update(value)
    if not out and (type(obj) is dict or isinstance(obj, Mapping)):
        out.update(obj)
    return out


def text(value: Any) -> str:
    """A string property (None → ""); nested objects arrive as their ToString."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def enum_name(value: Any) -> str:
    """An enum's member name as sent (converted on the host; pypsrp prints enums by name)."""
    return text(value).strip()


def nested_name(value: Any) -> str:
    """A nested object's name: ConvertTo-Json sends one within its depth as a JSON object
    (its ``Name``), beyond it — and CLIXML at the default depth — as its ToString."""
    if isinstance(value, Mapping):
        return text(value.get("Name")).strip()
    found = props(value) if not isinstance(value, str) else {}
    if "Name" in found:
        return text(found.get("Name")).strip()
    return text(value).strip()


_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$|:")


def node_name(value: Any) -> str:
    """A node's name as one spelling: the host part, upper-case (``hv-node-01.lab.example``,
    ``HV-NODE-01`` and ``hv-node-01`` are one node). An address stays as it is."""
    name = nested_name(value)
    if not name or _IP.search(name):
        return name
    return name.split(".", 1)[0].upper()


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(float(text(value)))
    except (TypeError, ValueError, OverflowError):
        return 0


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return text(value).strip().lower() in ("true", "1", "yes")


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def as_id(value: Any) -> str:
    """A Guid (``uuid.UUID`` or any string holding one) as lower-case text; else the text."""
    if isinstance(value, uuid.UUID):
        return str(value)
    s = text(value).strip()
    match = _GUID.search(s)
    return match.group().lower() if match else s


_FRACTION = re.compile(r"(\.\d{6})\d+")


def as_datetime(value: Any) -> datetime:
    """A CLIXML DateTime string (``2024-05-01T10:00:00.1234567Z``) as aware UTC."""
    if isinstance(value, datetime):
        parsed = value
    else:
        s = _FRACTION.sub(r"\1", text(value).strip()).replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(s)
        except ValueError:
            return EPOCH
    return aware_utc(parsed)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _fold(name: str) -> str:
    return name.replace(" ", "").replace("_", "").casefold()


def _lookup(table: Mapping[str, Any], name: str, default: Any) -> Any:
    return table.get(_fold(name), default)


# -- enums by name -----------------------------------------------------------------------

NODE_STATES = {
    "up": NodeState.UP,
    "down": NodeState.DOWN,
    "paused": NodeState.PAUSED,
    "joining": NodeState.JOINING,
}

POWER_STATES = {
    "running": PowerState.RUNNING,
    "off": PowerState.OFF,
    "saved": PowerState.SAVED,
    "paused": PowerState.PAUSED,
    "pausedcritical": PowerState.PAUSED_CRITICAL,
    "starting": PowerState.STARTING,
    "stopping": PowerState.STOPPING,
    "saving": PowerState.STOPPING,
    "pausing": PowerState.RUNNING,
    "resuming": PowerState.STARTING,
    "reset": PowerState.STARTING,
    "runningcritical": PowerState.RUNNING,
    "offcritical": PowerState.OFF,
    "savedcritical": PowerState.SAVED,
    "startingcritical": PowerState.STARTING,
    "stoppingcritical": PowerState.STOPPING,
    # The rest of VMState (Hyper-V module 2.0.0.0; Server 2016 lacks Hibernated and
    # ComponentServicing): known names, so no "unknown value" finding.
    "other": PowerState.UNKNOWN,
    "fastsaved": PowerState.SAVED,
    "fastsaving": PowerState.STOPPING,
    "forceshutdown": PowerState.STOPPING,
    "forcereboot": PowerState.STARTING,
    "hibernated": PowerState.SAVED,
    "componentservicing": PowerState.UNKNOWN,
    "resetcritical": PowerState.STARTING,
    "savingcritical": PowerState.STOPPING,
    "pausingcritical": PowerState.PAUSED_CRITICAL,
    "resumingcritical": PowerState.STARTING,
    "fastsavedcritical": PowerState.SAVED,
    "fastsavingcritical": PowerState.STOPPING,
}

#: Standard and production checkpoints both arrive as "Standard"; backup
#: software (VSS/RCT) leaves "Recovery" checkpoints behind.
SNAPSHOT_TYPES = {
    "standard": CheckpointKind.STANDARD,
    "recovery": CheckpointKind.BACKUP,
    "planned": CheckpointKind.RECOVERY,
    "replica": CheckpointKind.RECOVERY,
    "appconsistentreplica": CheckpointKind.RECOVERY,
    "syncedreplica": CheckpointKind.RECOVERY,
    "missing": CheckpointKind.RECOVERY,
}
#: Hyper-V Replica's own recovery points: a merge (Remove-VMSnapshot -Name *) would
#: remove them with the others.
REPLICA_SNAPSHOTS = frozenset({"replica", "appconsistentreplica", "syncedreplica"})


def is_replica_snapshot(snapshot_type: Any) -> bool:
    """A Hyper-V Replica checkpoint, by its ``SnapshotType`` name (never its number)."""
    return _fold(enum_name(snapshot_type)) in REPLICA_SNAPSHOTS

REPLICATION_STATES = {
    "disabled": ReplicationState.DISABLED,
    "replicating": ReplicationState.REPLICATING,
    "readyforinitialreplication": ReplicationState.REPLICATING,
    "initialreplicationinprogress": ReplicationState.REPLICATING,
    "waitingforinitialreplication": ReplicationState.REPLICATING,
    "resynchronizing": ReplicationState.REPLICATING,
    "waitingforupdatecompletion": ReplicationState.REPLICATING,
    "suspended": ReplicationState.SUSPENDED,
    "resynchronizesuspended": ReplicationState.SUSPENDED,
    "error": ReplicationState.ERROR,
    "updateerror": ReplicationState.ERROR,
    "waitingforstartresynchronize": ReplicationState.ERROR,
}

HEALTH = {
    "normal": Health.NORMAL,
    "warning": Health.WARNING,
    "critical": Health.CRITICAL,
    "notapplicable": Health.NOT_APPLICABLE,
}

#: Get-VM's ``Heartbeat`` (VMHeartbeatStatus, Hyper-V module 2.0.0.0: Unknown,
#: Disabled, NoContact, Error, LostCommunication, OkApplicationsUnknown,
#: OkApplicationsHealthy, OkApplicationsCritical, Paused), and the integration
#: service's PrimaryOperationalStatus (the rebuild's reads).
HEARTBEAT = {
    "okapplicationsunknown": IntegrationState.OK,
    "okapplicationshealthy": IntegrationState.OK,
    "okapplicationscritical": IntegrationState.DEGRADED,
    "unknown": IntegrationState.UNKNOWN,
    "disabled": IntegrationState.UNKNOWN,
    "paused": IntegrationState.UNKNOWN,
    "ok": IntegrationState.OK,
    "degraded": IntegrationState.DEGRADED,
    "error": IntegrationState.DEGRADED,
    "nonrecoverableerror": IntegrationState.DEGRADED,
    "nocontact": IntegrationState.DEGRADED,
    "lostcommunication": IntegrationState.DEGRADED,
    "protocolmismatch": IntegrationState.DEGRADED,
    "applicationcritical": IntegrationState.DEGRADED,
    "communicationtimedout": IntegrationState.DEGRADED,
}

SERVICE_STATES = {
    "running": ServiceState.RUNNING,
    "stopped": ServiceState.STOPPED,
    "startpending": ServiceState.STOPPED,
    "stoppending": ServiceState.STOPPED,
    "paused": ServiceState.STOPPED,
    "pausepending": ServiceState.STOPPED,
    "continuepending": ServiceState.STOPPED,
}

CSV_STATES = {
    "online": LunState.ONLINE,
    "offline": LunState.OFFLINE,
    "failed": LunState.FAILED,
    "onlinepending": LunState.OFFLINE,
    "offlinepending": LunState.OFFLINE,
    "pending": LunState.OFFLINE,
    "initializing": LunState.OFFLINE,
}

REDIRECTED = {"filesystemredirected", "blockredirected"}


def node_state(state: Any, drain: Any) -> NodeState:
    result = _lookup(NODE_STATES, enum_name(state), NodeState.UNKNOWN)
    if result is NodeState.PAUSED and _fold(enum_name(drain)) == "inprogress":
        return NodeState.DRAINING
    return result  # type: ignore[no-any-return]


def power_state(value: Any) -> PowerState:
    return _lookup(POWER_STATES, enum_name(value), PowerState.UNKNOWN)  # type: ignore[no-any-return]


def checkpoint_kind(value: Any) -> CheckpointKind:
    # Unknown: a recovery checkpoint (never shown as a plain, mergeable one).
    return _lookup(SNAPSHOT_TYPES, enum_name(value), CheckpointKind.RECOVERY)  # type: ignore[no-any-return]


def known(table: Mapping[str, Any], value: Any) -> bool:
    """Whether an enum name is one of the table's (an empty value counts as known: null)."""
    name = enum_name(value)
    return not name or _fold(name) in table


def replication_state(value: Any) -> ReplicationState:
    # An unknown state of a replicating VM is shown as an error: look before merging.
    return _lookup(REPLICATION_STATES, enum_name(value), ReplicationState.ERROR)  # type: ignore[no-any-return]


def replication_health(value: Any) -> Health:
    return _lookup(HEALTH, enum_name(value), Health.WARNING)  # type: ignore[no-any-return]


def service_state(value: Any) -> ServiceState:
    return _lookup(SERVICE_STATES, enum_name(value), ServiceState.UNKNOWN)  # type: ignore[no-any-return]


def csv_state(value: Any) -> LunState:
    return _lookup(CSV_STATES, enum_name(value), LunState.FAILED)  # type: ignore[no-any-return]


def disk_format(path: str, vhd_format: Any) -> DiskFormat:
    lower = path.lower()
    if lower.endswith(".avhdx") or lower.endswith(".avhd"):
        return DiskFormat.AVHDX
    if _fold(enum_name(vhd_format)) == "vhd" or lower.endswith(".vhd"):
        return DiskFormat.VHD
    return DiskFormat.VHDX


def path_key(path: str) -> str:
    """Windows paths compare case-insensitively."""
    return path.strip().casefold()


# -- raw reads ----------------------------------------------------------------------------


@dataclass(slots=True)
class ClusterRead:
    """The cluster-wide answers, read from one node."""

    nodes: list[Any] = field(default_factory=list)
    csvs: list[Any] = field(default_factory=list)
    csv_states: list[Any] = field(default_factory=list)
    partitions: list[Any] = field(default_factory=list)
    backups: list[Any] = field(default_factory=list)  # MSCluster_ClusterSharedVolume
    #: The last storage mapping made from this read (``_storage``): the row lists and
    #: cluster id it was made from, its LUNs and mount points. Kept here, with the
    #: read it belongs to (one per backend), not in a module global shared by all.
    storage_memo: tuple[tuple[Any, ...], tuple[list[Lun], list[Mount]]] | None = field(
        default=None, compare=False, repr=False)


@dataclass(slots=True)
class NodeRead:
    """What one node answered about the VMs it hosts."""

    vms: list[Any] = field(default_factory=list)
    snapshots: list[Any] = field(default_factory=list)
    drives: list[Any] = field(default_factory=list)
    vhds: dict[str, Any] = field(default_factory=dict)  # path_key -> VHD object
    replication: list[Any] = field(default_factory=list)
    service: Any = None
    service_missing: bool = False
    agent_version: str | None = None


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """Per-node facts the cluster-wide entities need."""

    vm_count: int = 0
    agent_state: ServiceState = ServiceState.UNKNOWN
    agent_version: str | None = None
    # Read by backup.read_agent (None: not read).
    agent_name: str | None = None
    agent_start_mode: str | None = None
    agent_ports_closed: tuple[int, ...] | None = None
    agent_unchecked: tuple[str, ...] = ()
    default_version: str = ""  # Get-VMHostSupportedVersion -Default ("": not known)


@dataclass(frozen=True, slots=True)
class Mount:
    """A CSV's mount point, to tell which LUN a file lives on."""

    prefix: str  # path_key of "C:\\ClusterStorage\\Volume3\\"
    lun_id: str


# -- cluster-wide entities -------------------------------------------------------------


def cluster_name(read: ClusterRead, default: str) -> str:
    for obj in read.nodes:
        name = nested_name(props(obj).get("Cluster"))
        if name:
            return name
    return default


def _volume_guid(value: Any) -> str:
    match = _GUID.search(text(value))
    return match.group().lower() if match else ""


def cluster_entities(
    read: ClusterRead, cluster_id: str, facts: Mapping[str, NodeFacts]
) -> tuple[list[Entity], list[Mount]]:
    """Cluster, nodes and CSV LUNs; plus each CSV's mount point for placing files."""
    luns, mounts = _storage(read, cluster_id)
    nodes: list[Node] = []
    owned_by: dict[str, list[str]] = {}
    for lun in luns:
        owned_by.setdefault(lun.owner_node_id.casefold(), []).append(lun.id)
    for obj in read.nodes:
        p = props(obj)
        name = node_name(p.get("Name"))
        if not name:
            continue
        f = facts.get(name.casefold(), NodeFacts())
        owned = tuple(owned_by.get(name.casefold(), ()))
        nodes.append(
            Node(
                name,
                name,
                cluster_id,
                node_state(p.get("State"), p.get("DrainStatus")),
                owned,
                f.agent_version,
                f.agent_state,
                f.vm_count,
                backup_ports_closed=f.agent_ports_closed,
                backup_agent_name=f.agent_name,
                backup_agent_start_mode=f.agent_start_mode,
                backup_unchecked=f.agent_unchecked,
                default_config_version=f.default_version,
            )
        )
    cluster = Cluster(cluster_id, cluster_id, Platform.HYPERV, nodes=len(nodes))
    entities: list[Entity] = [cluster, *nodes, *luns]
    return entities, list(mounts)


def _storage(read: ClusterRead, cluster_id: str) -> tuple[list[Lun], list[Mount]]:
    """The CSV LUNs and their mount points, mapped again only when the read's rows change.

    The backend publishes the cluster after every node's poll (64 times a
    cycle at 64 nodes) with new node facts, while the storage rows (one
    ``Get-ClusterSharedVolumeState`` row per CSV and node: 8,500 at 64 nodes
    x 133 CSVs) change only with a cluster read or a streamed partition — each
    of which assigns new lists (never changes one in place). So the last
    mapping is kept on the read (``ClusterRead.storage_memo``), keyed by the very
    lists it came from.
    """
    key = (read.csvs, read.csv_states, read.partitions, read.backups)
    last = read.storage_memo
    if last is not None and last[0][-1] == cluster_id and all(
        a is b for a, b in zip(last[0], key, strict=False)
    ):
        return last[1]
    storage = _map_storage(read, cluster_id)
    read.storage_memo = ((*key, cluster_id), storage)
    return storage


def _map_storage(read: ClusterRead, cluster_id: str) -> tuple[list[Lun], list[Mount]]:
    partitions: dict[str, dict[str, Any]] = {}
    for obj in read.partitions:
        p = props(obj)
        guid = _volume_guid(p.get("VolumeGuid")) or _volume_guid(p.get("Path"))
        if guid:
            partitions[guid] = p
    in_backup: set[str] = set()  # volume GUIDs with a backup in progress
    for obj in read.backups:
        p = props(obj)
        if as_int(p.get("BackupState")) == 1:
            in_backup.add(_volume_guid(p.get("VolumeName")) or path_key(text(p.get("Name"))))
    states: dict[str, list[dict[str, Any]]] = {}
    for obj in read.csv_states:
        p = props(obj)
        states.setdefault(text(p.get("Name")), []).append(p)

    luns: list[Lun] = []
    mounts: list[Mount] = []
    for obj in read.csvs:
        p = props(obj)
        name = text(p.get("Name"))
        lun_id = as_id(p.get("Id")) or name
        owner = node_name(p.get("OwnerNode"))
        rows = states.get(name, [])
        owner_rows = [r for r in rows if node_name(r.get("Node")) == owner]
        row = (owner_rows or rows or [{}])[0]
        state = csv_state(p.get("State"))
        if state is LunState.ONLINE and any(
            _fold(enum_name(r.get("StateInfo"))) in REDIRECTED for r in rows
        ):
            state = LunState.REDIRECTED
        part = partitions.get(_volume_guid(row.get("VolumeName")), {})
        total = as_int(part.get("TotalSize")) * MB
        free = as_int(part.get("FreeSpace")) * MB
        label = text(part.get("VolumeLabel")).strip()
        guid = _volume_guid(row.get("VolumeName"))
        backup = bool(guid and guid in in_backup) or any(
            path_key(text(m)) in in_backup for m in as_list(part.get("MountPoints"))
        )
        luns.append(
            Lun(
                lun_id,
                label or name,
                cluster_id,
                total,
                min(free, total) if total else free,
                owner_node_id=owner,
                role=LunRole.CSV,
                state=state,
                in_backup=backup,
            )
        )
        for mount in [*as_list(part.get("MountPoints")), part.get("Path")]:
            m = text(mount).strip().rstrip("\\")
            if m and not m.startswith("\\\\?\\"):
                mounts.append(Mount(path_key(m) + "\\", lun_id))
        friendly = text(row.get("VolumeFriendlyName")).strip()
        if friendly:
            mounts.append(Mount(path_key(f"C:\\ClusterStorage\\{friendly}") + "\\", lun_id))
    return luns, sorted(set(mounts), key=lambda m: -len(m.prefix))


def lun_for(path: str, mounts: Sequence[Mount]) -> str:
    key = path_key(path)
    for mount in mounts:  # longest prefix first
        if key.startswith(mount.prefix):
            return mount.lun_id
    return ""


# -- per-node entities -------------------------------------------------------------------


def _by_vm(objects: Iterable[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        p = props(obj)
        out.setdefault(as_id(p.get("VMId")), []).append(p)
    return out


def node_facts(read: NodeRead, vm_count: int) -> NodeFacts:
    if read.service_missing:
        state = ServiceState.MISSING
    elif read.service is None:
        state = ServiceState.UNKNOWN
    else:
        state = service_state(props(read.service).get("Status"))
    return NodeFacts(vm_count, state, read.agent_version)


def node_entities(
    read: NodeRead, cluster_id: str, node_id: str, mounts: Sequence[Mount]
) -> list[Entity]:
    """VMs, their disk files (whole chains) and checkpoints, as one node reports them."""
    drives = _by_vm(read.drives)
    snaps = _by_vm(read.snapshots)
    replication = {k: v[0] for k, v in _by_vm(read.replication).items()}
    node_id = node_name(node_id)
    findings: list[Entity] = []
    vms: list[Entity] = []
    disks: list[Entity] = []
    checkpoints: list[Entity] = []
    seen_files: set[str] = set()
    # Most files live under C:\ClusterStorage\VolumeN\: one lookup by that
    # folder instead of a scan of every mount per file (10,000s of files).
    by_prefix = {m.prefix: m.lun_id for m in mounts}
    nested = any(m.prefix.count("\\") != 3 for m in mounts)

    def lun_of(path: str) -> str:
        if not nested:
            parts = path_key(path).split("\\", 3)
            if len(parts) == 4:
                found = by_prefix.get("\\".join(parts[:3]) + "\\")
                if found is not None:
                    return found
        return lun_for(path, mounts)

    for obj in read.vms:
        p = props(obj)
        vm_id = as_id(p.get("Id"))
        if not vm_id:
            continue
        # Each drive's chain, leaf first, then reversed: base first.
        chains: list[list[dict[str, Any]]] = []
        for drive in drives.get(vm_id, []):
            chain: list[dict[str, Any]] = []
            path = text(drive.get("Path"))
            while path and path_key(path) in read.vhds and len(chain) < 1000:
                if path_key(path) in seen_files:
                    break
                seen_files.add(path_key(path))
                vhd = props(read.vhds[path_key(path)])
                chain.append(vhd)
                path = text(vhd.get("ParentPath")).strip()
            chains.append(list(reversed(chain)))
        base_ids: list[str] = []
        vm_lun = ""
        for chain in chains:
            for position, vhd in enumerate(chain):
                path = text(vhd.get("Path"))
                disk_id = as_id(vhd.get("DiskIdentifier")) or path_key(path)
                lun = lun_of(path)
                vm_lun = vm_lun or lun
                parent = text(vhd.get("ParentPath")).strip() or None
                disks.append(
                    VirtualDisk(
                        disk_id,
                        vm_id,
                        path,
                        disk_format(path, vhd.get("VhdFormat")),
                        as_int(vhd.get("FileSize")),
                        as_int(vhd.get("Size")),
                        parent,
                        lun,
                    )
                )
                if position == 0:
                    base_ids.append(disk_id)
        name = text(p.get("Name"))
        vm_snaps = snaps.get(vm_id, [])
        checkpoints.extend(_checkpoints(vm_id, vm_snaps, chains))
        power = power_state(p.get("State"))
        rep = replication.get(vm_id)
        checks = [("State", p.get("State"), POWER_STATES, "unknown power state"),
                  ("Heartbeat", p.get("Heartbeat"), HEARTBEAT, "heartbeat unknown")]
        if rep:
            checks += [("replication State", rep.get("State"), REPLICATION_STATES,
                        "replication error"),
                       ("replication Health", rep.get("Health"), HEALTH, "warning")]
        checks += [(f"SnapshotType of checkpoint {text(s.get('Name'))!r}", s.get("SnapshotType"),
                    SNAPSHOT_TYPES, "a recovery checkpoint (never merged as a plain one)")
                   for s in vm_snaps]
        findings.extend(_unknown_values(vm_id, name, checks))
        replicas = [s for s in vm_snaps if _fold(enum_name(s.get("SnapshotType")))
                    in REPLICA_SNAPSHOTS]
        if replicas:
            findings.append(Finding(
                f"hyperv:replica-checkpoint:{vm_id}", Severity.BLOCKING, f"vm:{vm_id}",
                "REPLICA_CHECKPOINT",
                f"{len(replicas)} Hyper-V Replica checkpoint(s) (e.g. "
                f"{text(replicas[0].get('Name'))!r}, "
                f"{enum_name(replicas[0].get('SnapshotType'))}): they belong to replication; "
                "a merge would remove them. Do not merge this VM's checkpoints."))
        if power is PowerState.RUNNING:
            integration = _lookup(HEARTBEAT, enum_name(p.get("Heartbeat")),
                                  IntegrationState.UNKNOWN)
        elif power in (PowerState.PAUSED_CRITICAL, PowerState.UNKNOWN):
            integration = IntegrationState.UNKNOWN
        else:
            integration = IntegrationState.OFF
        host = node_name(p.get("ComputerName")) or node_id
        vms.append(
            VM(
                id=vm_id,
                name=name,
                cluster_id=cluster_id,
                node_id=host,
                power=power,
                generation=as_int(p.get("Generation")) or 1,
                config_version=text(p.get("Version")),
                vcpus=as_int(p.get("ProcessorCount")),
                memory_mb=as_int(p.get("MemoryStartup")) // MB,
                replication=(
                    replication_state(rep.get("State")) if rep else ReplicationState.DISABLED
                ),
                replication_health=(
                    replication_health(rep.get("Health")) if rep else Health.NOT_APPLICABLE
                ),
                replica_target=text(rep.get("ReplicaServer")) if rep else "",
                integration=integration,
                disk_ids=tuple(base_ids),
                lun_id=vm_lun,
            )
        )
    return [*vms, *disks, *checkpoints, *findings]


def _unknown_values(vm_id: str, vm_name: str, checks: list[tuple[str, Any, Mapping[str, Any], str]]
                    ) -> list[Finding]:
    """A finding per value a VM reported that Ventana does not know (shown as ``treated``)."""
    out = []
    for what, value, table, treated in checks:
        if known(table, value):
            continue
        out.append(Finding(
            f"hyperv:unknown:{vm_id}:{what}", Severity.WARNING, f"vm:{vm_id}", "UNKNOWN_VALUE",
            f"{vm_name}: the host reported {what} {enum_name(value)!r}, which Ventana does not "
            f"know; shown as {treated}. Check the VM on the host before acting on it."))
    return out


def _checkpoints(
    vm_id: str, snaps: list[dict[str, Any]], chains: list[list[dict[str, Any]]]
) -> list[Checkpoint]:
    """Checkpoints; on a linear chain, each gets the differencing files made when it was taken.

    Taking checkpoint *k* (oldest first) starts file *k+1* of every drive's
    chain (file 0 is the base disk). A branched tree (an older checkpoint
    applied) has no such order: those checkpoints get no file and size 0.
    """
    ids = {as_id(s.get("Id")) for s in snaps}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for s in snaps:
        parent = as_id(s.get("ParentSnapshotId")) or None
        children.setdefault(parent if parent in ids else None, []).append(s)
    order: list[dict[str, Any]] = []
    current: str | None = None
    linear = len(children.get(None, [])) <= 1
    while linear and children.get(current):
        kids = children[current]
        if len(kids) > 1:
            linear = False
            break
        order.append(kids[0])
        current = as_id(kids[0].get("Id"))
    linear = linear and len(order) == len(snaps)
    files: dict[str, tuple[str, int]] = {}
    if linear and all(len(chain) == len(order) + 1 for chain in chains) and chains:
        for k, s in enumerate(order):
            paths = [text(chain[k + 1].get("Path")) for chain in chains]
            size = sum(as_int(chain[k + 1].get("FileSize")) for chain in chains)
            files[as_id(s.get("Id"))] = (paths[0], size)
    out = []
    for s in snaps:
        cp_id = as_id(s.get("Id"))
        if not cp_id:
            continue
        parent = as_id(s.get("ParentSnapshotId")) or None
        path, size = files.get(cp_id, ("", 0))
        out.append(
            Checkpoint(
                cp_id,
                vm_id,
                text(s.get("Name")),
                parent if parent in ids else None,
                checkpoint_kind(s.get("SnapshotType")),
                as_datetime(s.get("CreationTime")),
                path,
                size,
            )
        )
    return out
