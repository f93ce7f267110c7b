"""``ventana probe --vsphere``: a read-only capture of what a real vCenter answers.

The simulator our tests use (tools/vcsim) imitates vCenter from VMware's
published reference; the probe lets an operator check that against their own
vCenter. It logs in as the backend does and sends every *read* the backend
sends, keeping each raw SOAP answer:

- the update filter's first ``WaitForUpdatesEx`` (whole properties,
  ``partialUpdates=False``), every page of it (``maxObjectUpdates``): the
  backend's inventory read; and one more wait of ``wait_s`` seconds — what
  the server pushes meanwhile;
- ``TaskManager.recentTask`` with every task's ``info`` (the VM_BUSY read);
- for the VMs named (``vm_names``: ``--vm``, as shown or as vCenter reports
  the name), else the first ``vm_limit`` VMs, ``layoutEx``, ``snapshot``,
  ``runtime.consolidationNeeded`` and ``datastore`` read directly (what the
  backend reads after ``RefreshStorageInfo``; the probe does not call it).

Nothing that changes the server is sent (no task, no ``RefreshStorageInfo``
or ``RefreshDatastore``); the session's own collector, view and filter are
destroyed at the end. The capture is JSON lines: a header (server version,
API version, time, options), then one record per answer with the method,
what it was for and the raw body. ``anonymize`` replaces every inventory
name (VMs, hosts, datastores, clusters, datacenters, folders, networks,
snapshots, the user) by a stable alias in the answers; moref ids and sizes
stay. ``decode`` reads a capture back through the backend's own decoders,
and ``Capture.lean_differences`` holds the backend's lean reader of the
inventory (``leanxml``) to pyvmomi's reading of the same answers, VM by VM:
the probe says in its summary whether they agree on this server.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapResponseDeserializer, SoapStubAdapter

from ventana.state.sanitize import clean
from ventana.state.vsphere_names import typed_matches, unescape

from .leanxml import NS as _NS
from .leanxml import Unreadable, split_answer
from .session import (
    PC,
    STORAGE_PATHS,
    ObjectUpdate,
    Session,
    object_updates,
)

FORMAT = 2  # 2: the inventory is the update filter's first answer (1: RetrievePropertiesEx)


@dataclass
class ProbeResult:
    """What a probe wrote."""

    path: Path
    records: int
    objects: int
    anonymized: bool
    notes: list[str] = field(default_factory=list)
    #: ``Capture.lean_differences`` of the capture (empty: the lean reader agrees).
    lean_differences: list[str] = field(default_factory=list)


def probe(
    host: str,
    port: int,
    user: str,
    password: str,
    out: Path,
    *,
    ca_file: Path | None = None,
    insecure: bool = False,
    anonymize: bool = False,
    wait_s: int = 5,
    vm_limit: int = 20,
    vm_names: tuple[str, ...] = (),
    page_size: int = 500,
) -> ProbeResult:
    """Log in, send the backend's reads, write the raw answers to ``out``. Blocks."""
    session = Session(host, port, user, password, ca_file=ca_file, insecure=insecure,
                      http_timeout=max(30.0, wait_s + 15.0))
    records: list[dict[str, Any]] = []
    notes: list[str] = []

    def keep(purpose: str, method: str, body: bytes) -> ET.Element:
        records.append({"purpose": purpose, "method": method,
                        "body": body.decode("utf-8", errors="replace")})
        return ET.fromstring(body)

    try:
        pc = session.pc
        # 1. The inventory: the update filter's first answer, every page of it.
        session.filter = pc.CreateFilter(session.spec, partialUpdates=False)
        version, more = "", True
        while more:
            root = keep("inventory", "WaitForUpdatesEx", session.post_raw(
                pc, "WaitForUpdatesEx",
                [version, PC.WaitOptions(maxWaitSeconds=0, maxObjectUpdates=page_size)]))
            version = root.findtext(f".//{_NS}returnval/{_NS}version") or ""
            more = root.findtext(f".//{_NS}returnval/{_NS}truncated") == "true" and bool(version)
        # 2. What the server pushes in wait_s after it.
        if version:
            keep("next-wait", "WaitForUpdatesEx", session.post_raw(
                pc, "WaitForUpdatesEx", [version, PC.WaitOptions(maxWaitSeconds=wait_s)]))
        # 3. The VM_BUSY read: recentTask with each task's info.
        tm = session.content.taskManager
        tasks = PC.TraversalSpec(name="recentTasks", type=vim.TaskManager, path="recentTask")
        spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=tm, skip=True, selectSet=[tasks])],
                             propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info"])])
        keep("recent-tasks", "RetrievePropertiesEx", session.post_raw(
            session.content.propertyCollector, "RetrievePropertiesEx",
            [[spec], PC.RetrieveOptions()]))
        # 4. The storage re-read: the VMs named (as shown or as vCenter reports
        # them), else the inventory's first ``vm_limit``.
        inventory = [e for e in _objects(records, "inventory") if e["type"] == "VirtualMachine"]
        if vm_names:
            vms = [e["obj"] for e in inventory
                   if any(typed_matches(n, unescape(e["name"])) for n in vm_names)]
            found = {unescape(e["name"]) for e in inventory if e["obj"] in vms}
            notes.extend(f"no VM named '{clean(n)}' in the inventory" for n in vm_names
                         if not any(typed_matches(n, f) for f in found))
        else:
            vms = [e["obj"] for e in inventory][:vm_limit]
        for vm_id in vms:
            vm = vim.VirtualMachine(vm_id, session.si._stub)
            spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vm, skip=False)],
                                 propSet=[PC.PropertySpec(type=vim.VirtualMachine,
                                                          pathSet=list(STORAGE_PATHS))])
            try:
                keep(f"storage:{vm_id}", "RetrievePropertiesEx", session.post_raw(
                    session.content.propertyCollector, "RetrievePropertiesEx",
                    [[spec], PC.RetrieveOptions()]))
            except vmodl.MethodFault as exc:
                notes.append(f"storage read of {vm_id}: {type(exc).__name__}")
        about = session.content.about
        header = {
            "ventana_probe": FORMAT,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "server": {"fullName": str(about.fullName), "apiType": str(about.apiType),
                       "apiVersion": str(about.apiVersion), "build": str(about.build)},
            "soap_version": str(session.si._stub.version),
            "host": host, "user": user,
            "options": {"wait_s": wait_s, "vm_limit": vm_limit, "page_size": page_size,
                        "vms_named": len(vm_names)},
            "anonymized": anonymize,
            "notes": notes,
        }
    finally:
        session.close()
    objects = len(_objects(records, "inventory"))
    differences = Capture(header, records).lean_differences()
    if anonymize:
        header, records = _anonymize(header, records)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    tmp.replace(out)
    return ProbeResult(out, len(records), objects, anonymize, notes, differences)


def _objects(records: list[dict[str, Any]], purpose: str) -> list[dict[str, str]]:
    out = []
    for rec in records:
        if rec["purpose"] != purpose:
            continue
        for obj in ET.fromstring(rec["body"]).iter(f"{_NS}objectSet"):
            ref = obj.find(f"{_NS}obj")
            if ref is not None:
                name = next((c.findtext(f"{_NS}val") or "" for c in obj.findall(f"{_NS}changeSet")
                             if c.findtext(f"{_NS}name") == "name"), "")
                out.append({"obj": ref.text or "", "type": ref.get("type", ""), "name": name})
    return out


# -- anonymizing ----------------------------------------------------------------------


def _anonymize(
    header: dict[str, Any], records: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every inventory name → a stable alias (``VirtualMachine-3``, ``Datastore-1``)."""
    aliases: dict[str, str] = {}
    counts: dict[str, int] = {}

    def alias(name: str, kind: str) -> None:
        if name and name not in aliases:
            counts[kind] = counts.get(kind, 0) + 1
            aliases[name] = f"{kind}-{counts[kind]}"

    for rec in records:
        root = ET.fromstring(rec["body"])
        for holder in root.iter():
            ref = holder.find(f"{_NS}obj")
            kind = ref.get("type", "") if ref is not None else ""
            for prop in list(holder.iterfind(f"{_NS}propSet")) + list(
                    holder.iterfind(f"{_NS}changeSet")):
                if prop.findtext(f"{_NS}name") == "name":
                    alias(prop.findtext(f"{_NS}val") or "", kind or "object")
        for tag in ("entityName", "userName"):
            for el in root.iter(f"{_NS}{tag}"):
                alias(el.text or "", tag)
        for el in root.iter(f"{_NS}name"):  # snapshot names, file names ([ds] path)
            text = el.text or ""
            m = re.match(r"\[([^\]]+)\]", text)
            if m:
                alias(m.group(1), "Datastore")
        for tree in root.iter(f"{_NS}rootSnapshotList"):
            for el in tree.iter(f"{_NS}name"):
                alias(el.text or "", "Snapshot")
    alias(str(header.get("user") or ""), "user")
    alias(str(header.get("host") or ""), "host")
    ordered = sorted(aliases, key=len, reverse=True)
    escaped = {escape(n): n for n in ordered}
    # A name counts only as a whole word of a text node ("[ds] vm/vm.vmx" holds two),
    # and a number is never replaced: a VM named "1" must not rewrite every key.
    word = re.compile(
        "(?<!\\w)(" + "|".join(re.escape(escape(n)) for n in ordered) + ")(?!\\w)"
    ) if ordered else None

    def text_node(m: re.Match[str]) -> str:
        text = m.group(1)
        if word is None or re.fullmatch(r"[-+0-9.eE:TZ ]*", text):
            return m.group(0)
        return ">" + word.sub(lambda w: escape(aliases[escaped[w.group(1)]]), text) + "<"

    def scrub(text: str) -> str:
        if word is None:
            return text
        if "<" not in text:
            return aliases.get(text, text)
        return re.sub(r">([^<]+)<", text_node, text)

    header = {**header, "host": scrub(str(header["host"])), "user": scrub(str(header["user"]))}
    return header, [{**r, "body": scrub(r["body"])} for r in records]


# -- decoding -------------------------------------------------------------------------


@dataclass
class Capture:
    """A probe file read back: the header and the decoded answers."""

    header: dict[str, Any]
    records: list[dict[str, Any]]

    def _answers(self) -> Iterator[tuple[bytes, Any]]:
        """Each inventory page's raw body, with a pyvmomi reader of such an answer."""
        stub = SoapStubAdapter("localhost", version=self.header["soap_version"])
        collector = vmodl.query.PropertyCollector("probe", stub)
        info = collector._GetMethodInfo("WaitForUpdatesEx")
        for rec in self.records:
            if rec["purpose"] == "inventory":
                yield rec["body"].encode(), functools.partial(
                    SoapResponseDeserializer(stub).Deserialize, resultType=info.result)

    def inventory(self) -> list[ObjectUpdate]:
        """The inventory as the backend reads it (VMs lean, the rest by pyvmomi)."""
        out: list[ObjectUpdate] = []
        for body, deserialize in self._answers():
            vms, rest = split_answer(body)
            out.extend(ObjectUpdate(kind, "VirtualMachine", oid, assigned, removed)
                       for kind, oid, assigned, removed in vms)
            out.extend(object_updates(deserialize(rest)))
        return out

    def lean_differences(self) -> list[str]:
        """Where the backend's lean reader of the inventory and pyvmomi's reading
        of the same answers (turned into the lean forms) disagree, VM by VM: empty
        when they agree. An answer the lean reader refuses is said so (the backend
        then reads it through pyvmomi: slower, not wrong)."""
        out: list[str] = []
        for n, (body, deserialize) in enumerate(self._answers(), 1):
            try:
                vms, _ = split_answer(body)
            except Unreadable as exc:
                out.append(f"page {n}: not read lean ({exc}); the backend reads it by pyvmomi")
                continue
            theirs = {u.moid: u.assigned for u in object_updates(deserialize(body))
                      if u.type_name == "VirtualMachine"}
            for _, oid, assigned, _ in vms:
                other = {k: v for k, v in theirs.pop(oid, {}).items() if v is not None}
                mine = {k: v for k, v in assigned.items() if v is not None}
                if mine != other:
                    names = sorted(k for k in mine.keys() | other.keys()
                                   if mine.get(k) != other.get(k))
                    out.append(f"{oid}: {', '.join(names)} read otherwise than pyvmomi reads it")
            out.extend(f"{oid}: missed by the lean reader" for oid in theirs)
        return out

    def purposes(self) -> list[str]:
        return [r["purpose"] for r in self.records]


def decode(path: Path) -> Capture:
    """Read a probe file; ``ValueError`` when it is not one."""
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    try:
        header = json.loads(next(lines))
    except (StopIteration, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a ventana probe capture") from exc
    if not isinstance(header, dict) or "ventana_probe" not in header:
        raise ValueError(f"{path}: not a ventana probe capture")
    if header["ventana_probe"] != FORMAT:
        raise ValueError(f"{path}: a ventana probe capture of format "
                         f"{clean(str(header['ventana_probe']))[:20]}; this version reads "
                         f"format {FORMAT} — run the probe again")
    return Capture(header, [json.loads(line) for line in _nonempty(lines)])


def _nonempty(lines: Iterator[str]) -> Iterator[str]:
    for line in lines:
        if line.strip():
            yield line


def summary(result: ProbeResult) -> str:
    extra = f"; notes: {'; '.join(result.notes)}" if result.notes else ""
    diffs = result.lean_differences
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; ... {len(diffs) - 5} more" if len(diffs) > 5 else "")
        extra += (f"; the backend's lean inventory reader DIFFERS from pyvmomi on this "
                  f"server ({len(diffs)}): {shown} — please report it with the capture")
    else:
        extra += "; the backend's lean inventory reader agrees with pyvmomi on every VM"
    with contextlib.suppress(Exception):
        size = result.path.stat().st_size
        return (f"wrote {result.records} answers ({result.objects} objects, {size} bytes"
                f"{', names anonymized' if result.anonymized else ''}) to {result.path}{extra}")
    return f"wrote {result.path}{extra}"
