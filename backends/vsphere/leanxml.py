"""The update filter's first answer read from its raw XML, without pyvmomi.

The first ``WaitForUpdatesEx`` of the backend's update filter is the whole
inventory (every object ``enter``, every property), and it is the only full
read the backend makes: at a full vCenter's size (45,000 VMs) it is most of
the client's work. pyvmomi's deserializer builds a typed object per XML
element (a ``PropertyChange`` per property, a ``VirtualDevice`` per device, a
``FileInfo`` per file ...) that ``lean.compact_vm`` then turns into the small
forms the backend keeps; reading the VMs' object updates with ElementTree
straight into those forms is several times cheaper.

This module owns that reading: ``split_answer`` takes a raw answer, reads
every ``VirtualMachine`` object update into ``(kind, moref, assigned,
removed)`` with the values ``compact_vm`` gives for pyvmomi's objects (the
same classes, interned strings, moref values, ``Iso8601`` datetimes), and
returns the body with those object updates cut out, for pyvmomi to read the
rest (hosts, datastores, clusters, tasks: a few hundred objects). Anything it
does not expect — a property it does not know, a value it cannot read, a body
written otherwise than it cuts — raises ``Unreadable``, and the caller reads
the whole answer through pyvmomi instead: never a guess.
(Tests: tests/backends/vsphere/test_vsphere_bench.py compares it with
pyvmomi's reading VM by VM through vcsim; ``ventana probe --vsphere`` makes
the same comparison on the operator's own vCenter.)
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from pyVmomi import Iso8601

from .lean import (
    LeanDescription,
    LeanDevice,
    LeanDiskBacking,
    LeanDiskLayout,
    LeanDiskUnit,
    LeanFileInfo,
    LeanHardware,
    LeanLayoutEx,
    LeanSnapshotInfo,
    LeanSnapshotLayout,
    LeanSnapshotTree,
    LeanVirtualDisk,
    LeanVirtualPCIPassthrough,
    LeanVirtualSCSIController,
    intern,
    lean_layout_of,
)

XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
NS = "{urn:vim25}"


class Unreadable(Exception):
    """The answer is not as this reader expects: read it through pyvmomi."""


def _text(elem: ET.Element, tag: str) -> str:
    return elem.findtext(f"{NS}{tag}") or ""


def _bool(elem: ET.Element, tag: str) -> bool | None:
    text = elem.findtext(f"{NS}{tag}")
    return None if text is None else text == "true"


def _int(elem: ET.Element | None, default: int | None = 0) -> int | None:
    return int(elem.text) if elem is not None and elem.text else default


def _xsd_bool(text: str | None) -> bool:
    """An ``xsd:boolean`` as pyvmomi's deserializer reads it (SoapAdapter: "0"/"false",
    "1"/"true", case-insensitive; anything else is an error)."""
    low = (text or "").lower()
    if low in ("0", "false"):
        return False
    if low in ("1", "true"):
        return True
    raise Unreadable(f"not a boolean: {text!r}")


# -- config.hardware and layoutEx ---------------------------------------------------------
def _disk_layouts(parent: ET.Element) -> tuple[LeanDiskLayout, ...]:
    return tuple(
        LeanDiskLayout(
            key=_int(d.find(f"{NS}key")) or 0,
            chain=tuple(
                LeanDiskUnit(tuple(int(k.text or 0) for k in u.findall(f"{NS}fileKey")))
                for u in d.findall(f"{NS}chain")
            ),
        )
        for d in parent.findall(f"{NS}disk")
    )


def layout(val: ET.Element) -> LeanLayoutEx:
    """``layoutEx`` (a ``VirtualMachineFileLayoutEx``)."""
    return lean_layout_of(
        files=(
            LeanFileInfo(
                key=_int(f.find(f"{NS}key")) or 0,
                name=_text(f, "name"),
                type=intern(_text(f, "type")) or "",
                size=_int(f.find(f"{NS}size")) or 0,
                uniqueSize=_int(f.find(f"{NS}uniqueSize"), None),
                accessible=_bool(f, "accessible"),
            )
            for f in val.findall(f"{NS}file")
        ),
        disk=_disk_layouts(val),
        snapshot=tuple(
            LeanSnapshotLayout(
                key=intern(_text(s, "key")) or "",
                dataKey=_int(s.find(f"{NS}dataKey")) or 0,
                memoryKey=_int(s.find(f"{NS}memoryKey"), None),
                disk=_disk_layouts(s),
            )
            for s in val.findall(f"{NS}snapshot")
        ),
    )


def _label(dev: ET.Element) -> LeanDescription | None:
    info = dev.find(f"{NS}deviceInfo")
    return None if info is None else LeanDescription(intern(_text(info, "label")) or "")


def _backing(dev: ET.Element) -> LeanDiskBacking | None:
    backing = dev.find(f"{NS}backing")
    if backing is None:
        return None
    return LeanDiskBacking(
        diskMode=intern(backing.findtext(f"{NS}diskMode")),
        compatibilityMode=intern(backing.findtext(f"{NS}compatibilityMode")),
    )


def hardware(val: ET.Element) -> LeanHardware:
    """``config.hardware`` (a ``VirtualHardware``): the devices ``lean_hardware`` keeps."""
    disks: list[LeanDevice] = []
    for dev in val.findall(f"{NS}device"):
        xsi = dev.get(XSI_TYPE, "")
        if xsi.endswith("VirtualDisk"):
            disks.append(LeanVirtualDisk(
                key=_int(dev.find(f"{NS}key")) or 0,
                capacityInKB=_int(dev.find(f"{NS}capacityInKB")) or 0,
                capacityInBytes=_int(dev.find(f"{NS}capacityInBytes"), None),
                deviceInfo=_label(dev),
                backing=_backing(dev),
            ))
        elif dev.find(f"{NS}sharedBus") is not None:  # every VirtualSCSIController model
            disks.append(LeanVirtualSCSIController(
                key=_int(dev.find(f"{NS}key")) or 0,
                sharedBus=intern(_text(dev, "sharedBus")) or "",
                deviceInfo=_label(dev),
            ))
        elif xsi.endswith("VirtualPCIPassthrough"):
            disks.append(LeanVirtualPCIPassthrough(
                key=_int(dev.find(f"{NS}key")) or 0, deviceInfo=_label(dev)))
    return LeanHardware(
        numCPU=_int(val.find(f"{NS}numCPU")) or 0,
        numCoresPerSocket=_int(val.find(f"{NS}numCoresPerSocket")) or 0,
        memoryMB=_int(val.find(f"{NS}memoryMB")) or 0,
        device=tuple(disks),
    )


# -- the rest of a VM --------------------------------------------------------------------
def _tree(elem: ET.Element) -> LeanSnapshotTree:
    created = elem.findtext(f"{NS}createTime")
    when = Iso8601.ParseISO8601(created) if created else None
    if created and when is None:
        raise Unreadable(f"not a dateTime: {created!r}")
    quiesced = elem.findtext(f"{NS}quiesced")
    return LeanSnapshotTree(
        snapshot=intern(_text(elem, "snapshot")) or "",
        name=_text(elem, "name"),
        description=_text(elem, "description"),
        createTime=when,
        quiesced=False if quiesced is None else _xsd_bool(quiesced),
        childSnapshotList=tuple(_tree(c) for c in elem.findall(f"{NS}childSnapshotList")),
    )


def snapshot(val: ET.Element) -> LeanSnapshotInfo:
    """``snapshot`` (a ``VirtualMachineSnapshotInfo``)."""
    current = val.findtext(f"{NS}currentSnapshot")
    return LeanSnapshotInfo(
        currentSnapshot=intern(current) if current else None,
        rootSnapshotList=tuple(_tree(t) for t in val.findall(f"{NS}rootSnapshotList")),
    )


def _string(val: ET.Element) -> str:
    return val.text or ""


def _interned(val: ET.Element) -> str:
    return intern(val.text or "") or ""


def _refs(val: ET.Element) -> tuple[str, ...]:
    return tuple(intern(r.text) or "" for r in val if r.text)


def _boolean(val: ET.Element) -> bool:
    return _xsd_bool(val.text)


#: Every property the backend asks of a VM (session.VM_PATHS), read as
#: ``lean.compact_vm`` keeps it: enumerations, versions and morefs interned,
#: the big properties in their ``Lean*`` classes.
VM_READERS: dict[str, Callable[[ET.Element], Any]] = {
    "name": _string,
    "runtime.powerState": _interned,
    "runtime.host": _interned,
    "runtime.connectionState": _interned,
    "runtime.consolidationNeeded": _boolean,
    "config.hardware": hardware,
    "config.version": _interned,
    "config.firmware": _interned,
    "snapshot": snapshot,
    "layoutEx": layout,
    "datastore": _refs,
    "guest.toolsRunningStatus": _interned,
    "guest.toolsVersionStatus2": _interned,
    "config.changeTrackingEnabled": _boolean,
    "config.template": _boolean,
    "runtime.faultToleranceState": _interned,
}

VmUpdate = tuple[str, str, dict[str, Any], tuple[str, ...]]  # kind, moref, assigned, removed


def read_vm(obj_set: ET.Element) -> VmUpdate:
    """One VM's ``objectSet`` (an ``ObjectUpdate``)."""
    kind = obj_set.findtext(f"{NS}kind") or ""
    oid = obj_set.findtext(f"{NS}obj") or ""
    if kind not in ("enter", "modify", "leave") or not oid:
        raise Unreadable(f"object update {kind!r} of {oid!r}")
    assigned: dict[str, Any] = {}
    removed: list[str] = []
    for change in obj_set.findall(f"{NS}changeSet"):
        name = intern(change.findtext(f"{NS}name")) or ""
        reader = VM_READERS.get(name)
        if reader is None:  # a nested path or one not asked for: pyvmomi and the caller
            raise Unreadable(f"property {name!r}")
        val = change.find(f"{NS}val")
        if val is None or change.findtext(f"{NS}op") in ("remove", "indirectRemove"):
            removed.append(name)
        else:
            try:
                assigned[name] = reader(val)
            except Unreadable:
                raise
            except (ValueError, TypeError, AttributeError) as exc:
                raise Unreadable(f"{name}: {exc}") from exc
    return kind, intern(oid) or "", assigned, tuple(removed)


# -- pages ------------------------------------------------------------------------------------
_VERSION = re.compile(rb"<returnval>\s*<version>([^<]*)</version>")
_TRUNCATED = re.compile(rb"<truncated>\s*true\s*</truncated>\s*</returnval>")


def continuation(body: bytes) -> str | None:
    """The version to ask the next page with, when ``body`` is a truncated
    ``WaitForUpdatesEx`` answer (``UpdateSet.truncated``: "more updates are
    available", pyvmomi docs/vmodl/query/PropertyCollector/UpdateSet.rst), read
    from the raw body before it is parsed; None otherwise. ``UpdateSet`` is
    ``version``, then ``filterSet``s, then ``truncated`` (its WSDL sequence), so the
    version opens the answer and ``truncated`` closes it."""
    tail = body[-512:]
    if not _TRUNCATED.search(tail):
        return None
    found = _VERSION.search(body, 0, 4096)
    if found is None:
        return None
    try:  # the version as XML text: entities undone
        version = ET.fromstring(b"<v>" + found.group(1) + b"</v>").text or ""
    except ET.ParseError:  # not asked ahead; the page itself is read as usual
        return None
    return version or None


# -- cutting the VMs out of an answer ------------------------------------------------------
_OPEN, _CLOSE = b"<objectSet>", b"</objectSet>"
_VM_HEAD = re.compile(
    rb"<objectSet>\s*<kind>[A-Za-z]+</kind>\s*<obj\b[^>]*\btype=\"VirtualMachine\"")


def split_answer(body: bytes) -> tuple[list[VmUpdate], bytes]:
    """Every VM's object update in a ``WaitForUpdatesEx`` answer, read; and the
    answer with those object updates cut out (what is left for pyvmomi).

    Object updates do not nest (``PropertyFilterUpdate.objectSet``: pyvmomi
    docs/vmodl/query/PropertyCollector/FilterUpdate.rst), so each runs from its
    ``<objectSet>`` to the next ``</objectSet>``; the cut is checked against the
    parse (as many VM updates cut as read) and ``Unreadable`` otherwise. Markup
    that could hold those bytes as text — CDATA, comments, processing
    instructions — is not cut at all (vCenter escapes text; pyvmomi reads it).
    """
    after_declaration = body.find(b"?>") + 2 if body.lstrip()[:5] == b"<?xml" else 0
    if b"<![CDATA[" in body or b"<!--" in body or b"<?" in body[after_declaration:]:
        raise Unreadable("CDATA, a comment or a processing instruction in the answer")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise Unreadable(f"not XML: {exc}") from exc
    vms = [read_vm(obj_set) for obj_set in root.iter(f"{NS}objectSet")
           if (ref := obj_set.find(f"{NS}obj")) is not None
           and ref.get("type") == "VirtualMachine"]
    pieces: list[bytes] = []
    pos = cut = 0
    while (start := body.find(_OPEN, pos)) >= 0:
        end = body.find(_CLOSE, start)
        if end < 0:
            raise Unreadable("an object update without its end")
        end += len(_CLOSE)
        if _VM_HEAD.match(body, start):
            pieces.append(body[pos:start])
            pos = end
            cut += 1
        else:
            pieces.append(body[pos:end])
            pos = end
    pieces.append(body[pos:])
    if cut != len(vms):
        raise Unreadable(f"{cut} VM object updates cut, {len(vms)} read")
    return vms, b"".join(pieces)
