"""WQL event queries the endpoint serves by polling, as WMI does: checkpoints and CSV space.

``Register-CimIndicationEvent -Query 'SELECT * FROM <event class> WITHIN <s> WHERE
TargetInstance ISA '<class>' [AND …]'`` for a class whose provider raises no
events itself is served by WMI **polling**: every ``WITHIN`` seconds it
enumerates the class's instances, compares them with the previous
enumeration and raises ``__InstanceCreationEvent`` (an instance appeared),
``__InstanceDeletionEvent`` (one went) or ``__InstanceModificationEvent``
(one changed: ``TargetInstance`` after, ``PreviousInstance`` before) for
each difference the ``WHERE`` clause accepts; ``__InstanceOperationEvent``
matches all three. A change made and undone within one interval raises
nothing; several changes to one instance within an interval raise one
event. (learn.microsoft.com/windows/win32/wmisdk/within-clause;
…/wmisdk/--instancecreationevent, --instancedeletionevent,
--instancemodificationevent, --instanceoperationevent.) The events then
queue in the runspace as PowerShell events (``PSEventArgs`` whose
``SourceEventArgs`` is a ``CimIndicationEventInstanceEventArgs`` holding
``NewEvent``, the event instance — learn.microsoft.com/powershell/module/
cimcmdlets/register-cimindicationevent).

Here the enumeration is done when the client next looks (``Wait-Event``,
``Get-Event``), at the ticks ``WITHIN`` sets since the subscription — the
same events, coalesced the same way, at the same moments as long as the
client is waiting (it always is between its reads).

Classes served:

- ``Msvm_VirtualSystemSettingData`` (root/virtualization/v2; the node's
  own VMs): one instance per VM (``VirtualSystemType``
  ``Microsoft:Hyper-V:System:Realized``) and one per checkpoint
  (``Microsoft:Hyper-V:Snapshot:Realized`` for a standard or production
  checkpoint, ``…:Recovery`` for one a backup made, ``…:Planned``, and the
  ``…:Replica:…`` types), ``InstanceID`` ``Microsoft:<id>``,
  ``VirtualSystemIdentifier`` the VM's Id as its ``Msvm_ComputerSystem.Name``
  (upper case) — learn.microsoft.com/windows/win32/hyperv_v2/
  msvm-virtualsystemsettingdata (MicrosoftDocs/win32
  desktop-src/HyperV_v2/Msvm-VirtualSystemSettingData.md);
- ``MSCluster_DiskPartition`` (root/MSCluster; the whole cluster): one per
  CSV, ``FreeSpace``/``TotalSize`` uint32 **megabytes** (a change under
  1 MiB changes no instance) — learn.microsoft.com/previous-versions/
  windows/desktop/cluswmi/mscluster-diskpartition; its parent class
  ``MSCluster_ClusterDiskPartition`` for ``ISA``.

The WHERE clause is evaluated as WQL does for what these queries use:
``AND``/``OR``/``NOT``, parentheses, ``=``, ``<>``/``!=``, ``<``, ``>``,
``<=``, ``>=``, ``LIKE`` (``%`` any run, ``_`` one character, ``[ ]`` a
set — learn.microsoft.com/windows/win32/wmisdk/like-operator, case
insensitive as WQL string comparisons are), ``ISA`` (the class or a
parent), on ``TargetInstance.P`` and ``PreviousInstance.P``. A query this
endpoint cannot serve is refused as WMI refuses an invalid query
(``HRESULT 0x80041017``, WBEM_E_INVALID_QUERY).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psrpcore.types import PSUInt

from ventana.state.model import MB, CheckpointKind, LunRole

from ..cmdlets import ErrorCategory, TerminatingError
from .endpoint import Endpoint
from .model import volume_guid
from .wire import Row

CIM = "Microsoft.Management.Infrastructure.CimInstance#"
VZ = CIM + "root/virtualization/v2/"
CLUSTER = CIM + "root/MSCluster/"

#: The checkpoint kinds' VirtualSystemType (Msvm_VirtualSystemSettingData's table).
SNAPSHOT_TYPE = {
    CheckpointKind.STANDARD: "Microsoft:Hyper-V:Snapshot:Realized",
    CheckpointKind.PRODUCTION: "Microsoft:Hyper-V:Snapshot:Realized",
    CheckpointKind.BACKUP: "Microsoft:Hyper-V:Snapshot:Recovery",
    CheckpointKind.RECOVERY: "Microsoft:Hyper-V:Snapshot:Planned",
}
#: The model's SnapshotType overrides (Get-VMSnapshot's names) → VirtualSystemType.
REPLICA_TYPE = {
    "Replica": "Microsoft:Hyper-V:Snapshot:Replica:Standard",
    "AppConsistentReplica": "Microsoft:Hyper-V:Snapshot:Replica:ApplicationConsistent",
    "SyncedReplica": "Microsoft:Hyper-V:Snapshot:Replica:PlannedFailover",
    "Missing": "Microsoft:Hyper-V:Snapshot:Missing",
}
#: class -> (namespace, parents for ISA).
CLASSES = {
    "msvm_virtualsystemsettingdata": ("root/virtualization/v2",
                                      ("cim_virtualsystemsettingdata", "cim_settingdata")),
    "mscluster_diskpartition": ("root/mscluster", ("mscluster_clusterdiskpartition",
                                                   "mscluster_logicalelement")),
}
EVENTS = {"__instancecreationevent", "__instancedeletionevent",
          "__instancemodificationevent", "__instanceoperationevent"}


def _invalid(query: str) -> TerminatingError:
    return TerminatingError(
        f"Invalid query: {query}", error_id="HRESULT 0x80041017",
        category=ErrorCategory.InvalidArgument,
        exception_type="Microsoft.Management.Infrastructure.CimException")


# -- WQL ------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*'|\"[^\"]*\")|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<op><>|!=|<=|>=|=|<|>|\(|\))|(?P<word>[A-Za-z_][\w.]*))"
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(text[pos:])
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


@dataclass
class Query:
    event: str  # lower case
    within: float
    cls: str  # lower case
    where: Callable[[dict[str, Any] | None, dict[str, Any] | None], bool]


def parse(query: str) -> Query:
    """``SELECT * FROM <event> WITHIN <s> WHERE <condition>``; ValueError if not served."""
    match = re.fullmatch(r"\s*SELECT\s+\*\s+FROM\s+(\w+)\s+WITHIN\s+([\d.]+)\s+WHERE\s+(.+)",
                         query, re.IGNORECASE | re.DOTALL)
    if match is None or match.group(1).casefold() not in EVENTS:
        raise ValueError(query)
    within = float(match.group(2))
    if within <= 0:
        raise ValueError(query)
    tokens = _tokens(match.group(3))
    isa: list[str] = []
    pos = 0

    def peek() -> tuple[str, str]:
        return tokens[pos] if pos < len(tokens) else ("", "")

    def take() -> tuple[str, str]:
        nonlocal pos
        token = peek()
        pos += 1
        return token

    Cond = Callable[[dict[str, Any] | None, dict[str, Any] | None], bool]

    def operand() -> Callable[[dict[str, Any] | None, dict[str, Any] | None], Any]:
        kind, value = take()
        if kind == "str":
            literal = value[1:-1].replace("''", "'")
            return lambda t, p: literal
        if kind == "num":
            number = float(value)
            return lambda t, p: number
        if kind == "word" and value.casefold() in ("true", "false"):
            flag = value.casefold() == "true"
            return lambda t, p: flag
        if kind == "word" and "." in value:
            head, prop = value.split(".", 1)
            if head.casefold() == "targetinstance":
                return lambda t, p: None if t is None else _prop(t, prop)
            if head.casefold() == "previousinstance":
                return lambda t, p: None if p is None else _prop(p, prop)
        if kind == "word" and value.casefold() in ("targetinstance",):
            return lambda t, p: "TargetInstance"
        raise ValueError(value)

    def comparison() -> Cond:
        left = operand()
        _, op = take()
        op = op.casefold()
        if op == "isa":
            _, cls = take()
            isa.append(cls[1:-1].casefold())
            return lambda t, p: True  # the class is matched when instances are listed
        right = operand()
        if op == "like":
            def like(t: Any, p: Any) -> bool:
                value, pattern = left(t, p), right(t, p)
                return value is not None and _like(str(value), str(pattern))
            return like
        compare = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b,
                   "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
                   ">": lambda a, b: a > b, "<=": lambda a, b: a <= b,
                   ">=": lambda a, b: a >= b}.get(op)
        if compare is None:
            raise ValueError(op)

        def test(t: Any, p: Any) -> bool:
            a, b = _fold(left(t, p)), _fold(right(t, p))
            if a is None or b is None:  # NULL compares as neither equal nor different
                return False
            try:
                return bool(compare(a, b))
            except TypeError:
                return False
        return test

    def factor() -> Cond:
        kind, value = peek()
        if kind == "word" and value.casefold() == "not":
            take()
            inner = factor()
            return lambda t, p: not inner(t, p)
        if value == "(":
            take()
            inner = disjunction()
            if take()[1] != ")":
                raise ValueError("unbalanced parentheses")
            return inner
        return comparison()

    def conjunction() -> Cond:
        parts = [factor()]
        while peek()[0] == "word" and peek()[1].casefold() == "and":
            take()
            parts.append(factor())
        return lambda t, p: all(c(t, p) for c in parts)

    def disjunction() -> Cond:
        parts = [conjunction()]
        while peek()[0] == "word" and peek()[1].casefold() == "or":
            take()
            parts.append(conjunction())
        return lambda t, p: any(c(t, p) for c in parts)

    where = disjunction()
    if pos != len(tokens) or len(isa) != 1:
        raise ValueError(query)
    return Query(match.group(1).casefold(), within, isa[0], where)


def _prop(row: dict[str, Any], name: str) -> Any:
    for key, value in row.items():
        if key.casefold() == name.casefold():
            return value
    return None


def _fold(value: Any) -> Any:
    """WQL compares strings case-insensitively; numbers as numbers."""
    if isinstance(value, str):
        return value.casefold()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def _like(value: str, pattern: str) -> bool:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                body = pattern[i + 1:end]
                body = "^" + body[1:] if body.startswith("^") else body
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), value, re.IGNORECASE | re.DOTALL) is not None


# -- instances --------------------------------------------------------------------------------


def _settings(ep: Endpoint) -> dict[str, dict[str, Any]]:
    """Msvm_VirtualSystemSettingData of the node's VMs and their checkpoints, by InstanceID.

    Enumerated every ``WITHIN`` seconds per subscription: an instance is made again only
    when what it is made from changed — the VM or checkpoint object (frozen: a change
    replaces it) or the checkpoint's SnapshotType override — else the one made before is
    listed again (``ep.settings_rows``), and :func:`_diff` passes it by identity.
    """
    model = ep.model
    made = ep.settings_rows
    out: dict[str, dict[str, Any]] = {}
    with model.lock:
        vms = model.vms_of(ep.node)
        for vm in vms:
            name = vm.id.upper()
            hit = made.get(vm.id)
            if hit is not None and hit[0] is vm:
                row = hit[2]
            else:
                row = {
                    "InstanceID": f"Microsoft:{name}", "ElementName": vm.name,
                    "VirtualSystemIdentifier": name,
                    "VirtualSystemType": "Microsoft:Hyper-V:System:Realized",
                    "Parent": None}
                made[vm.id] = (vm, None, row)
            out[f"Microsoft:{name}"] = row
            for cp_id in model.chains.get(vm.id, []):
                cp = model.checkpoints.get(cp_id)
                if cp is None:
                    continue
                override = model.snapshot_types.get(cp.id)
                hit = made.get(cp.id)
                if hit is not None and hit[0] is cp and hit[1] == override:
                    row = hit[2]
                else:
                    kind = REPLICA_TYPE.get(override or "", SNAPSHOT_TYPE[cp.kind])
                    row = {
                        "InstanceID": f"Microsoft:{cp.id.upper()}", "ElementName": cp.name,
                        "VirtualSystemIdentifier": name, "VirtualSystemType": kind,
                        "CreationTime": cp.created,
                        "Parent": (f"Msvm_VirtualSystemSettingData.InstanceID=\"Microsoft:"
                                   f"{cp.parent_id.upper()}\"") if cp.parent_id else None}
                    made[cp.id] = (cp, override, row)
                out[row["InstanceID"]] = row
    return out


def _partitions(ep: Endpoint) -> dict[str, dict[str, Any]]:
    """MSCluster_DiskPartition of every CSV, by Path (as Get-CimInstance answers it)."""
    model = ep.model
    with model.lock:
        luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
    out = {}
    for lun in luns:
        mount = model.mount_of(lun.id)
        out[mount] = {"Path": mount, "VolumeLabel": lun.name, "VolumeGuid": volume_guid(lun.id),
                      "TotalSize": lun.total_bytes // MB, "FreeSpace": lun.free_bytes // MB,
                      "MountPoints": [mount]}
    return out


LISTS: dict[str, Callable[[Endpoint], dict[str, dict[str, Any]]]] = {
    "msvm_virtualsystemsettingdata": _settings,
    "mscluster_diskpartition": _partitions,
}
TYPE_NAMES = {
    "msvm_virtualsystemsettingdata": VZ + "Msvm_VirtualSystemSettingData",
    "mscluster_diskpartition": CLUSTER + "MSCluster_DiskPartition",
}
SIZES = ("TotalSize", "FreeSpace")  # uint32 on the wire


# -- subscriptions ------------------------------------------------------------------------------


@dataclass
class Subscription:
    """One polled WQL subscription of one endpoint (kept in ``ep.events.subscriptions``)."""

    source: str
    query: Query
    cls: str  # the class whose instances are listed (the ISA class or its subclass)
    started: float
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    ticks: int = 0

    def next_tick(self) -> float:
        return self.started + (self.ticks + 1) * self.query.within


def register(ep: Endpoint, namespace: str, query: str, source: str) -> None:
    """Register-CimIndicationEvent for a polled class (see the module docstring)."""
    try:
        parsed = parse(query)
    except (ValueError, IndexError):
        raise _invalid(query) from None
    cls = next((c for c, (_, parents) in CLASSES.items()
                if parsed.cls == c or (parsed.cls in parents and c in LISTS)), None)
    if cls is None or CLASSES[cls][0] != namespace:
        raise _invalid(query)
    with ep.model.lock:
        ep.model.queries.append(query)
    sub = Subscription(source, parsed, cls, time.monotonic())
    sub.last = LISTS[cls](ep)  # the first enumeration: what later ones are compared with
    with ep.events.cond:
        ep.events.subscriptions[source] = sub
        ep.events.queues[source] = []


def _event(ep: Endpoint, sub: Subscription, kind: str, target: dict[str, Any],
           previous: dict[str, Any] | None) -> Row:
    type_name = TYPE_NAMES[sub.cls]
    key = "Path" if sub.cls == "mscluster_diskpartition" else "InstanceID"

    def instance(values: dict[str, Any]) -> Row:
        shown = {k: (PSUInt(v) if k in SIZES else v) for k, v in values.items()}
        return Row([type_name], shown,
                   to_string=f"{type_name.rsplit('/', 1)[-1]} ({key} = \"{values.get(key)}\")")

    # __Event.TIME_CREATED: 100 ns intervals since 1601-01-01 UTC.
    filetime = int((datetime.now(UTC) - datetime(1601, 1, 1, tzinfo=UTC)).total_seconds()
                   * 10_000_000)
    fields: dict[str, Any] = {"SECURITY_DESCRIPTOR": None, "TargetInstance": instance(target),
                              "TIME_CREATED": filetime}
    if previous is not None:
        fields["PreviousInstance"] = instance(previous)
    names = {"create": "__InstanceCreationEvent", "delete": "__InstanceDeletionEvent",
             "modify": "__InstanceModificationEvent"}
    namespace = CLASSES[sub.cls][0].replace("mscluster", "MSCluster")
    new = Row([f"{CIM}{namespace}/{names[kind]}"], fields)
    args = Row(["Microsoft.Management.Infrastructure.CimCmdlets."
                "CimIndicationEventInstanceEventArgs"], {"NewEvent": new})
    return Row(["System.Management.Automation.PSEventArgs"], {
        "EventIdentifier": next(ep.events._counter), "SourceIdentifier": sub.source,
        "TimeGenerated": datetime.now(UTC), "SourceEventArgs": args,
    })


def poll(ep: Endpoint) -> float | None:
    """Enumerate every subscription whose tick has come, queue the events its WHERE
    accepts; returns the next tick (monotonic), None without subscriptions."""
    now = time.monotonic()
    with ep.events.cond:
        subs = [s for s in ep.events.subscriptions.values() if isinstance(s, Subscription)]
    upcoming: float | None = None
    for sub in subs:
        if now >= sub.next_tick():
            sub.ticks = int((now - sub.started) // sub.query.within)
            current = LISTS[sub.cls](ep)
            events = _diff(ep, sub, sub.last, current)
            sub.last = current
            if events:
                with ep.events.cond:
                    queue = ep.events.queues.setdefault(sub.source, [])
                    queue.extend(events)
                    del queue[:-10_000]
                    ep.events.cond.notify_all()
        tick = sub.next_tick()
        upcoming = tick if upcoming is None else min(upcoming, tick)
    return upcoming


def _diff(ep: Endpoint, sub: Subscription, before: dict[str, dict[str, Any]],
          after: dict[str, dict[str, Any]]) -> list[Row]:
    wanted = sub.query.event
    out = []
    for key, row in after.items():
        old = before.get(key)
        if old is None:
            kind, target, previous = "create", row, None
        elif old is not row and old != row:  # the same instance made again: unchanged
            kind, target, previous = "modify", row, old
        else:
            continue
        if _wants(wanted, kind) and sub.query.where(target, previous):
            out.append(_event(ep, sub, kind, target, previous))
    for key, old in before.items():
        if key not in after and _wants(wanted, "delete") and sub.query.where(old, None):
            out.append(_event(ep, sub, "delete", old, None))
    return out


def _wants(event: str, kind: str) -> bool:
    return event == "__instanceoperationevent" or event == {
        "create": "__instancecreationevent", "delete": "__instancedeletionevent",
        "modify": "__instancemodificationevent"}[kind]
