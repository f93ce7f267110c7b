"""Backup readiness on a Hyper-V node: the backup agent and each VM's online-backup facts.

What it reads (the pipelines are in ``commands``; ``COMMANDS.md`` lists them
with their cost) and what it makes of the answers:

- **The backup agent** (``read_agent``): its Windows service by service name
  or display name (CIM ``Win32_Service``: ``State``, ``StartMode``,
  ``PathName``), the version of the service's executable (CIM
  ``CIM_DataFile.Version`` by the path ``PathName`` starts with — or a
  registry value when ``backup_version_key`` is configured), and, while it
  runs, which of its ports something listens on (``Get-NetTCPConnection
  -State Listen -LocalPort …``). Defaults are the source campaign's: the
  service shown as "Dell Avamar Plug-in Service for Windows", ports 28001,
  28002, 29000, 30001-30003. A read the node refuses is a fact "not checked"
  with the node's reason (``AgentFacts.unchecked``), never a guess.
- **Each VM** (``read_vm_facts``): the Backup (volume shadow copy)
  integration service found by its component id (the end of
  ``VMIntegrationComponent.Id``; its ``Name`` is localized), the guest's OS
  as it reports it through KVP (``Msvm_KvpExchangeComponent
  .GuestIntrinsicExchangeItems``: OSName, OSPlatformId), and pass-through
  disks (``Get-VMHardDiskDrive``'s ``DiskNumber``, read with the drives).

These are the conditions of Hyper-V's online ("Child VM Snapshot") backup in
MicrosoftDocs win32 ``desktop-src/HyperV_v2/backing-up-and-restoring-virtual-
machines.md``; dynamic disks and non-NTFS volumes inside the guest cannot be
seen from the host and are reported as not checked by the findings.
None of this has met a real host yet: it is written against the published
classes and tested against the WinRM test endpoint (docs/backup-readiness.md).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ventana.state.model import PowerState, ServiceState
from ventana.state.sanitize import clean

from . import commands as cmd
from .mapping import as_id, as_int, enum_name, props, text
from .session import CommandFailed, NodeSession

log = logging.getLogger(__name__)

#: The source campaign's agent: its service as the Services console shows it.
CAMPAIGN_SERVICES: tuple[str, ...] = ("Dell Avamar Plug-in Service for Windows",)
#: …and the ports it listens on (the campaign's firewall table).
CAMPAIGN_PORTS: tuple[int, ...] = (28001, 28002, 29000, 30001, 30002, 30003)
#: The Backup (volume shadow copy) integration component's id: the last part of
#: ``VMIntegrationComponent.Id`` ("Microsoft:<VM id>\\5CED1297-…"), the same in every
#: language (Msvm_VssComponent DeviceID "Microsoft:5CED1297-…").
VSS_COMPONENT = "5ced1297-4598-4915-a5fc-ad21bb4d02a4"
#: PrimaryOperationalStatus values of a component that answers (Degraded: an older
#: integration-services version in the guest, still talking to the host).
ANSWERING = frozenset({"ok", "degraded"})
#: KVP OSPlatformId of Windows NT (System.PlatformID.Win32NT = 2).
WINDOWS_PLATFORM = "2"
#: Get-NetTCPConnection's non-terminating ObjectNotFound error for a port no listener
#: matches, in either spelling: "No matching MSFT_NetTCPConnection objects found by CIM
#: query …" / "No MSFT_NetTCPConnection objects found with property 'LocalPort' …".
NO_LISTENER = "MSFT_NetTCPConnection objects found"
MAX_KVP_ITEM = 16 * 1024  # one embedded instance; a real one is a few hundred bytes


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """The backup agent on one node, as read (None: not read)."""

    state: ServiceState = ServiceState.UNKNOWN
    name: str | None = None
    start_mode: str | None = None
    version: str | None = None
    ports_closed: tuple[int, ...] | None = None
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VmBackupFacts:
    """One VM's online-backup facts (None: not read)."""

    vss_service: str | None = None
    guest_os: str | None = None
    guest_windows: bool | None = None
    passthrough: tuple[str, ...] | None = None
    unchecked: tuple[str, ...] = ()
    #: Configuration, checkpoint and smart paging folders (None: not read).
    locations: tuple[str, ...] | None = None
    #: The state of the VM's cluster group (Online, Offline, …; None: not clustered/read).
    cluster_group: str | None = None


#: What a junction/link check under an SMB share needs: the node reading the share on
#: the operator's behalf is a second hop, which takes CredSSP or Kerberos delegation.
NEEDS_DELEGATION = ("not checked: needs delegation (reading the share from the node is a "
                    "second hop: CredSSP or Kerberos constrained delegation)")


def is_unc(path: str) -> bool:
    return path.replace("/", "\\").startswith("\\\\")


def _why(exc: Exception) -> str:
    return clean(str(exc))[:200]


def service_state(value: str) -> ServiceState:
    """Win32_Service.State: "Running", "Stopped"; the rest ("Start Pending", "Paused"…)
    is neither (UNKNOWN: the findings say it was not checked)."""
    folded = value.strip().casefold()
    if folded == "running":
        return ServiceState.RUNNING
    if folded == "stopped":
        return ServiceState.STOPPED
    return ServiceState.UNKNOWN


def executable(path_name: str) -> str:
    """The executable of a service's ``PathName`` (a command line: quoted, or not)."""
    value = path_name.strip()
    if value.startswith('"'):
        return value[1:].split('"', 1)[0]
    lower = value.casefold()
    at = lower.find(".exe")
    return value[: at + 4] if at >= 0 else value.split(" ", 1)[0]


def _pick(rows: list[dict[str, Any]], names: tuple[str, ...]) -> dict[str, Any]:
    """The service of the first configured name that matched (a running one first)."""
    order = {n.casefold(): i for i, n in enumerate(names)}

    def rank(p: dict[str, Any]) -> tuple[int, int]:
        i = min(order.get(text(p.get("Name")).casefold(), 99),
                order.get(text(p.get("DisplayName")).casefold(), 99))
        return (0 if service_state(text(p.get("State"))) is ServiceState.RUNNING else 1, i)

    return min(rows, key=rank)


async def read_agent(session: NodeSession, services: tuple[str, ...], ports: tuple[int, ...],
                     version_key: str | None = None, version_value: str = "Version"
                     ) -> AgentFacts:
    """The agent's service, version and listening ports on the node ``session`` reaches.

    A refused read is "not checked" with the node's reason; a lost connection
    propagates (the poll marks the node stale).
    """
    try:
        answer = await session.run(cmd.get_agent_services(services))
    except CommandFailed as exc:
        return AgentFacts(unchecked=(f"service: the node refused Win32_Service ({_why(exc)})",))
    rows = [props(o) for o in answer.output]
    if not rows:
        return AgentFacts(ServiceState.MISSING)
    row = _pick(rows, services)
    raw_state = clean(text(row.get("State")).strip())
    state = service_state(raw_state)
    unchecked: list[str] = []
    if state is ServiceState.UNKNOWN:
        unchecked.append(f"state: {raw_state or 'none reported'} (neither running nor stopped)")
    name = clean(text(row.get("DisplayName")).strip() or text(row.get("Name")).strip())
    start_mode = clean(text(row.get("StartMode")).strip()) or None
    version: str | None = None
    if version_key:
        try:
            value = await session.run(cmd.get_registry_value(version_key, version_value))
            version = clean(text(value.output[0]).strip()) if value.output else None
        except CommandFailed as exc:
            unchecked.append(f"version: {_why(exc)}")
        if version is None and not unchecked:
            unchecked.append(f"version: no value {version_value!r} under {version_key}")
    else:
        exe = executable(text(row.get("PathName")))
        if not exe:
            unchecked.append("version: the service reports no executable")
        else:
            try:
                files = await session.run(cmd.get_file_version(exe))
                found = [clean(text(props(o).get("Version")).strip()) for o in files.output]
                version = next((v for v in found if v), None)
                if version is None:
                    unchecked.append(f"version: {clean(exe)} "
                                     + ("has no version resource" if files.output
                                        else "was not found"))
            except CommandFailed as exc:
                unchecked.append(f"version: {_why(exc)}")
    closed: tuple[int, ...] | None = None
    if state is ServiceState.RUNNING and ports:
        try:
            listening = await session.run(cmd.get_listening_ports(ports))
            other = [e for e in listening.errors if NO_LISTENER.casefold() not in e.casefold()]
            if other:
                unchecked.append(f"ports: {clean(other[0])[:200]}")
            else:
                open_ports = {as_int(props(o).get("LocalPort")) for o in listening.output}
                closed = tuple(sorted(p for p in ports if p not in open_ports))
        except CommandFailed as exc:
            unchecked.append(f"ports: {_why(exc)}")
    return AgentFacts(state, name or None, start_mode, version, closed, tuple(unchecked))


def passthrough_disks(drives: Iterable[Any]) -> dict[str, tuple[str, ...]]:
    """VM id -> its pass-through disks ("physical disk 2 (SCSI 0:1)"), from the drives."""
    out: dict[str, list[str]] = {}
    for obj in drives:
        p = props(obj)
        number = p.get("DiskNumber")
        if number is None or text(number).strip() == "":
            continue
        where = (f"{clean(enum_name(p.get('ControllerType')))} "
                 f"{as_int(p.get('ControllerNumber'))}:{as_int(p.get('ControllerLocation'))}")
        out.setdefault(as_id(p.get("VMId")), []).append(
            f"physical disk {as_int(number)} ({where})")
    return {k: tuple(v) for k, v in out.items()}


def kvp_items(items: Any) -> dict[str, str]:
    """Name -> Data of KVP embedded instances (``<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">
    <PROPERTY NAME="Name"><VALUE>OSName</VALUE></PROPERTY><PROPERTY NAME="Data">…``).
    Guest-supplied text: anything with a DTD or entity, or too long, is skipped."""
    out: dict[str, str] = {}
    values = items if isinstance(items, list) else [items] if items else []
    for item in values:
        raw = text(item)
        if not raw or len(raw) > MAX_KVP_ITEM or "<!" in raw:
            continue
        try:  # control characters made visible first (XML 1.0 refuses most of them)
            root = ET.fromstring(clean(raw))
        except ET.ParseError:
            continue
        fields: dict[str, str] = {}
        for prop in root.iter("PROPERTY"):
            value = prop.find("VALUE")
            fields[prop.get("NAME", "")] = (value.text or "") if value is not None else ""
        if fields.get("Name"):
            out[fields["Name"]] = clean(fields.get("Data", "").strip())
    return out


def vm_group_states(rows: Iterable[Any]) -> dict[str, str]:
    """Get-ClusterGroup's rows → each VM role's name (casefolded) → its state."""
    groups: dict[str, str] = {}
    for obj in rows:
        p = props(obj)
        if enum_name(p.get("GroupType")).casefold() == "virtualmachine":
            groups[text(p.get("Name")).strip().casefold()] = (
                clean(enum_name(p.get("State")).strip()) or "Unknown")
    return groups


async def read_vm_facts(session: NodeSession, vms: dict[str, PowerState],
                        drives: Iterable[Any], names: dict[str, str] | None = None,
                        groups_seen: dict[bytes, dict[str, str]] | None = None
                        ) -> dict[str, VmBackupFacts]:
    """VM id -> its online-backup facts, for the VMs ``vms`` (id -> power; ``names``:
    id -> name, to find a clustered VM's role, named after the VM unless renamed).

    ``groups_seen``: the cluster groups last read (by the digest of their JSON text):
    Get-ClusterGroup answers every role of the cluster, the same text from every
    node (8,000 rows at 64 nodes), read again only when the text differs."""
    names = names or {}
    unchecked_all: list[str] = []
    vss: dict[str, str] = {}
    try:
        answer = await session.run(cmd.get_integration_services())
        for obj in answer.output:
            p = props(obj)
            component = text(p.get("Id")).rsplit("\\", 1)[-1].strip().casefold()
            if component != VSS_COMPONENT:
                continue
            status = enum_name(p.get("PrimaryOperationalStatus")).strip()
            if p.get("Enabled") is False or text(p.get("Enabled")).casefold() == "false":
                vss[as_id(p.get("VMId"))] = "disabled"
            elif status.casefold() in ANSWERING:
                vss[as_id(p.get("VMId"))] = "ok"
            elif not status and vms.get(as_id(p.get("VMId"))) is not PowerState.RUNNING:
                vss[as_id(p.get("VMId"))] = "enabled"  # no status while the VM is not running
            else:
                vss[as_id(p.get("VMId"))] = clean(status) or "no status"
        integration_read = True
    except CommandFailed as exc:
        unchecked_all.append(f"Backup integration service: {_why(exc)}")
        integration_read = False
    guests: dict[str, dict[str, str]] = {}
    kvp_read = True
    try:
        answer = await session.run(cmd.get_guest_kvp())
        for obj in answer.output:
            p = props(obj)
            guests[as_id(p.get("SystemName"))] = kvp_items(p.get("GuestIntrinsicExchangeItems"))
    except CommandFailed as exc:
        unchecked_all.append(f"guest OS: {_why(exc)}")
        kvp_read = False
    locations: dict[str, tuple[str, ...]] = {}
    clustered: dict[str, str] = {}  # clustered VM id -> its name (its role's default name)
    try:
        answer = await session.run(cmd.get_vm_locations())
        for obj in answer.output:
            p = props(obj)
            found = [clean(text(p.get(k)).strip()) for k in cmd.LOCATION_PROPS[1:4]]
            locations[as_id(p.get("Id"))] = tuple(dict.fromkeys(f for f in found if f))
            if p.get("IsClustered") is True or text(p.get("IsClustered")).casefold() == "true":
                clustered[as_id(p.get("Id"))] = ""
    except CommandFailed as exc:
        unchecked_all.append(f"file locations: {_why(exc)}")
    groups: dict[str, str] | None = None  # VM role name (casefolded) -> group state
    if clustered:
        try:
            answer = await session.run(cmd.get_cluster_groups())
            if groups_seen is not None and answer.digest and answer.digest in groups_seen:
                groups = groups_seen[answer.digest]
            else:
                groups = vm_group_states(answer.output)
                if groups_seen is not None and answer.digest:
                    groups_seen.clear()  # only the latest answer is kept
                    groups_seen[answer.digest] = groups
        except CommandFailed as exc:
            unchecked_all.append(f"cluster group: {_why(exc)}")
    passthrough = passthrough_disks(drives)
    out: dict[str, VmBackupFacts] = {}
    for vm_id, power in vms.items():
        unchecked = list(unchecked_all)
        service = vss.get(vm_id)
        if integration_read and service is None:
            unchecked.append("Backup integration service: not reported by the host")
        os_name: str | None = None
        windows: bool | None = None
        if kvp_read and power is PowerState.RUNNING:
            items = guests.get(vm_id, {})
            os_name = items.get("OSName") or None
            platform = items.get("OSPlatformId", "")
            if platform:
                windows = platform == WINDOWS_PLATFORM
            elif os_name:
                windows = "windows" in os_name.casefold()
            else:
                unchecked.append("guest OS: the guest reports nothing through KVP "
                                 "(Data Exchange service off or not installed)")
        group: str | None = None
        if vm_id in clustered and groups is not None:
            group = groups.get(names.get(vm_id, "").strip().casefold())
            if group is None:
                unchecked.append("cluster group: no VM role named after the VM (renamed?)")
        out[vm_id] = VmBackupFacts(service, os_name, windows, passthrough.get(vm_id, ()),
                                   tuple(unchecked), locations.get(vm_id), group)
    return out
