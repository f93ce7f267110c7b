"""``ventana probe --hyperv NODE``: capture what real hosts answer to the read contract.

Read-only by construction: it sends exactly the reads of ``COMMANDS.md``
(:data:`READS`, built by ``commands.py``; nothing mutating, nothing the
console does not send) to each node given, and writes every raw answer —
the JSON text as the host sent it, the non-terminating errors, or the
failure — to one file (mode 0600). ``--anonymize`` replaces names, paths,
ids and addresses with stable tokens (the same value always gets the same
token, so joins between reads survive) before anything is written.

:func:`decode` turns such a capture back into Ventana's entities with the
same ``mapping`` the console uses: a capture from a real cluster confirms
(or refutes) the contract in one command, without the console.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ventana.state.model import Entity
from ventana.state.sanitize import clean

from . import commands as cmd
from .backup import CAMPAIGN_PORTS, CAMPAIGN_SERVICES
from .mapping import (
    ClusterRead,
    NodeFacts,
    NodeRead,
    cluster_entities,
    cluster_name,
    node_entities,
    node_name,
    path_key,
)

FORMAT = "ventana-hyperv-probe/1"

#: Every read of the contract the probe sends, by key (the order they go out).
READS: dict[str, Callable[[], cmd.Command]] = {
    "computer": cmd.get_computer_system,
    "default_version": cmd.get_default_version,  # what Update-VMVersion raises a VM to
    "cluster_nodes": cmd.get_cluster_nodes,
    "csvs": cmd.get_csvs,
    "csv_states": cmd.get_csv_states,
    "partitions": cmd.get_disk_partitions,
    "csv_backups": cmd.get_csv_backup_states,
    "vms": cmd.get_vms,
    "snapshots": cmd.get_snapshots,
    "drives": cmd.get_hard_disk_drives,
    "vhds_attached": cmd.get_attached_vhds,
    "vhds_checkpoints": cmd.get_checkpoint_vhds,
    "replication": cmd.get_replication,
    # Backup readiness (backup.py), with the campaign's agent names and ports; the agent
    # executable's version needs the service's answer first: not probed.
    "agent_service": lambda: cmd.get_agent_services(CAMPAIGN_SERVICES),
    "agent_ports": lambda: cmd.get_listening_ports(CAMPAIGN_PORTS),
    "integration": cmd.get_integration_services,
    "kvp": cmd.get_guest_kvp,
    "vm_locations": cmd.get_vm_locations,
    "cluster_groups": cmd.get_cluster_groups,
}
#: KVP items kept in an anonymized capture (the guest's OS; never its names or addresses).
_KVP_KEEP = ("OSName", "OSPlatformId", "OSMajorVersion", "OSMinorVersion", "OSBuildNumber",
             "OSVersion")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One node: the name it is known by and where to reach it."""

    name: str
    host: str
    port: int


async def capture(targets: list[ProbeTarget], make_session: Callable[[ProbeTarget], Any], *,
                  anonymize: bool = False) -> dict[str, Any]:
    """Send every read to every node; the capture (raw answers, per node)."""
    nodes = []
    for target in targets:
        session = make_session(target)
        session.allow_mutating = False
        reads: dict[str, Any] = {}
        try:
            for key, build in READS.items():
                command = build()
                entry: dict[str, Any] = {"command": command.as_powershell(),
                                         "output": [], "errors": []}
                try:
                    answer = await session.run_raw(command)
                    entry["output"] = [o if isinstance(o, str) else repr(o)
                                       for o in answer.output]
                    entry["errors"] = answer.errors
                except Exception as exc:  # a read the node refuses is part of the answer
                    entry["failure"] = str(exc)
                reads[key] = entry
        finally:
            await session.close()
        nodes.append({"node": target.name, "reads": reads})
    data = {"format": FORMAT, "taken": datetime.now(UTC).isoformat(timespec="seconds"),
            "anonymized": anonymize, "nodes": nodes}
    return Anonymizer().capture(data) if anonymize else data


def write(data: dict[str, Any], path: Path) -> None:
    """The capture as JSON, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=1)
        out.write("\n")


# -- anonymizing ------------------------------------------------------------------------------

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
#: Properties whose text names something (a VM, a node, a cluster, a checkpoint, a domain).
_NAMES = frozenset({"Name", "VMName", "ElementName", "ComputerName", "Cluster", "Node",
                    "ReplicaServer", "VolumeLabel", "Domain", "OwnerNode", "DisplayName",
                    "VolumeFriendlyName"})
_PATHS = frozenset({"Path", "ParentPath", "MountPoints", "PathName", "ConfigurationLocation",
                    "SnapshotFileLocation", "SmartPagingFilePath"})
#: Path parts kept: they say where a file lives, not what it is.
_KEEP = re.compile(r"^(?:[A-Za-z]:|ClusterStorage|Volume\d+|)$", re.IGNORECASE)
#: Names kept: the cluster's own resource names and enum-like words carry no secret.
_KEEP_NAME = re.compile(r"^(?:Cluster Disk \d+|Volume\d+)$")


class Anonymizer:
    """Stable tokens: the same value anywhere in the capture gets the same token."""

    def __init__(self) -> None:
        self._salt = os.urandom(8).hex()
        self._tokens: dict[tuple[str, str], str] = {}

    def token(self, kind: str, value: str) -> str:
        key = (kind, value.casefold())
        if key not in self._tokens:
            digest = hashlib.sha256(f"{self._salt}:{kind}:{key[1]}".encode()).hexdigest()
            if kind == "guid":
                h = digest[:32]
                self._tokens[key] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
            else:
                self._tokens[key] = f"{kind}-{digest[:8]}"
        return self._tokens[key]

    def name(self, value: str) -> str:
        if _KEEP_NAME.match(value):
            return value
        host, dot, _ = value.partition(".")
        if dot and not _IPV4.fullmatch(value):  # an FQDN: the host part, then a fake domain
            return f"{self.token('name', host)}.example"
        return self.token("name", value)

    def path(self, value: str) -> str:
        parts = value.split("\\")
        out = []
        for part in parts:
            if _KEEP.match(part):
                out.append(part)
                continue
            stem, dot, ext = part.rpartition(".")
            out.append(f"{self.token('file', stem)}.{ext}" if dot and len(ext) <= 5
                       else self.token("file", part))
        return "\\".join(out)

    def text(self, value: str) -> str:
        value = _GUID.sub(lambda m: self.token("guid", m.group()), value)
        return _IPV4.sub(lambda m: self.token("ip", m.group()), value)

    def value(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self.value(k, v) for k, v in value.items()}
        if isinstance(value, list):
            if key == "GuestIntrinsicExchangeItems":  # guest XML: keep only the OS items
                value = [v for v in value if isinstance(v, str) and any(
                    f"<VALUE>{k}</VALUE>" in v for k in _KVP_KEEP)]
            return [self.value(key, v) for v in value]
        if not isinstance(value, str):
            return value
        if key in _PATHS or (key == "Name" and value[1:3] == ":\\"):
            return self.path(self.text(value))
        if key in _NAMES and not _GUID.fullmatch(value):
            return self.name(value)
        return self.text(value)

    def answer(self, raw: str) -> str:
        """One JSON answer, every value anonymized (an answer that is not JSON: as text)."""
        try:
            data = json.loads(raw)
        except ValueError:
            return self.text(raw)
        return json.dumps(self.value("", data), separators=(",", ":"))

    def capture(self, data: dict[str, Any]) -> dict[str, Any]:
        nodes = []
        for node in data["nodes"]:
            reads = {}
            for key, entry in node["reads"].items():
                reads[key] = {
                    "command": entry["command"],  # the contract's text: no cluster data in it
                    "output": [self.answer(o) for o in entry.get("output", [])],
                    "errors": [self.text(e) for e in entry.get("errors", [])],
                    **({"failure": self.text(entry["failure"])} if "failure" in entry else {}),
                }
            nodes.append({"node": self.name(node["node"]), "reads": reads})
        return {**data, "nodes": nodes}


# -- decoding a capture -----------------------------------------------------------------------


def _rows(entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
    command = READS[key]()
    rows: list[dict[str, Any]] = []
    for text in entry.get("output", []):
        rows.extend(cmd.decode_json(command, text))
    return rows


def decode(data: dict[str, Any], default_cluster: str = "cluster") -> list[Entity]:
    """A capture → Ventana's entities (cluster, nodes, LUNs, VMs, disks, checkpoints,
    findings), decoded by the console's own ``mapping``. Raises ValueError on a file
    that is not a capture."""
    if data.get("format") != FORMAT:
        raise ValueError(f"not a Ventana Hyper-V probe capture (format {data.get('format')!r})")
    entities: list[Entity] = []
    cluster: ClusterRead | None = None
    for node in data["nodes"]:
        reads = node["reads"]
        if cluster is None and _rows(reads["cluster_nodes"], "cluster_nodes"):
            cluster = ClusterRead(*(_rows(reads[k], k) for k in (
                "cluster_nodes", "csvs", "csv_states", "partitions", "csv_backups")))
    cluster = cluster or ClusterRead()
    cluster_id = cluster_name(cluster, default_cluster)
    facts: dict[str, NodeFacts] = {}  # each node's default configuration version
    for node in data["nodes"]:
        reads = node["reads"]
        computer = next((str(r.get("Name") or "") for r in _rows(reads["computer"], "computer")),
                        node["node"])
        rows = _rows(reads["default_version"], "default_version") \
            if "default_version" in reads else []  # captures before it had no such read
        version = next((str(r.get("Version") or "") for r in rows if r.get("Version")), "")
        if version:
            facts[node_name(computer or node["node"]).casefold()] = NodeFacts(
                default_version=version)
    found, mounts = cluster_entities(cluster, cluster_id, facts)
    entities.extend(found)
    for node in data["nodes"]:
        reads = node["reads"]
        computer = next((str(r.get("Name") or "") for r in _rows(reads["computer"], "computer")),
                        node["node"])
        nread = NodeRead(vms=_rows(reads["vms"], "vms"),
                         snapshots=_rows(reads["snapshots"], "snapshots"),
                         drives=_rows(reads["drives"], "drives"),
                         replication=_rows(reads["replication"], "replication"))
        for key in ("vhds_attached", "vhds_checkpoints"):
            for row in _rows(reads[key], key):
                nread.vhds[path_key(str(row.get("Path") or ""))] = row
        entities.extend(node_entities(nread, cluster_id, computer or node["node"], mounts))
    return entities


# -- the command line (``ventana probe --hyperv NODE …``) ----------------------------------------


def main(args: Any) -> int:
    """Run the probe from parsed arguments (``tui/cli.py``); the exit code.

    0 the capture was written (some reads may have failed: they are in it);
    2 bad arguments or no password; 3 the file cannot be written.
    """
    import asyncio
    import sys

    from .credentials import CredentialError, resolve_password
    from .session import NodeSession

    if not args.probe_hyperv or not args.user or not args.out:
        print("ventana probe: needs --hyperv NODE (repeat), --user DOMAIN\\user and --out FILE",
              file=sys.stderr)
        return 2
    port = args.winrm_port or 5986
    resolve = dict(r.split("=", 1) for r in args.resolve if "=" in r)
    targets = []
    for item in args.probe_hyperv:
        name, sep, p = item.rpartition(":")
        name, node_port = (name, int(p)) if sep and p.isdigit() else (item, port)
        where = resolve.get(name, f"{name}:{node_port}")
        host, sep, p = where.rpartition(":")
        host, node_port = (host, int(p)) if sep and p.isdigit() else (where, node_port)
        targets.append(ProbeTarget(name, host, node_port))
    # Reach the first node and verify its certificate as pypsrp will (the certifi bundle
    # unless --ca-file, checked against the node's NAME) before the keyring or the
    # operator is asked for a password, as the console does (docs/operator-safety.md).
    from ..hostcheck import HostCheckError, check_host, requests_context

    first = targets[0]
    try:
        check_host(first.name, first.port, requests_context(args.ca_file),
                   connect_to=(first.host, first.port))
    except HostCheckError as exc:
        print(f"ventana probe: {clean(str(exc))}", file=sys.stderr)
        return 2
    try:
        credential = resolve_password(args.user, password_file=args.password_file)
    except CredentialError as exc:
        print(f"ventana probe: {exc}", file=sys.stderr)
        return 2

    def session(target: ProbeTarget) -> NodeSession:
        return NodeSession(target.host, port=target.port, username=credential.username,
                           password=credential.password, auth=args.auth or "negotiate",
                           cert_validation=str(args.ca_file) if args.ca_file else True,
                           name=target.name)

    data = asyncio.run(capture(targets, session, anonymize=args.anonymize))
    try:
        write(data, args.out)
    except OSError as exc:
        print(f"ventana probe: cannot write {args.out}: {exc}", file=sys.stderr)
        return 3
    failed = [f"{n['node']}: {k}" for n in data["nodes"] for k, e in n["reads"].items()
              if "failure" in e]
    print(f"wrote {args.out}: {len(data['nodes'])} node(s), {len(READS)} reads each"
          + (f"; {len(failed)} refused ({', '.join(failed[:3])})" if failed else ""))
    return 0
