"""The vSphere benchmark compares like with like (bench/vsphere.py).

At a small size, the three inventory readers — ours (``VSphereBackend`` into
a ``Store``), the plain object-by-object pyvmomi script and the govc-style Go
program — find the same VMs, hosts, datastores, clusters and snapshots as
the simulator holds. And the inventory as the backend reads it (the update
filter's first answer, its VMs read from the raw XML by leanxml) holds
exactly what pyvmomi's objects turned into the lean forms hold, and maps to
the entities plain pyvmomi's objects map to; the backend's cache holds no
pyvmomi object.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from pathlib import Path

import pytest
from peers.vcsim import BUILD_HINT, is_built, start_vcsim

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from bench import vsphere  # noqa: E402
from ventana.backends.ssh.watcher import vm_log_dir  # noqa: E402
from ventana.backends.vsphere import lean, leanxml  # noqa: E402
from ventana.backends.vsphere import session as vs_session  # noqa: E402
from ventana.backends.vsphere.backend import VSphereBackend, VSphereConfig  # noqa: E402
from ventana.backends.vsphere.executor import _files_bytes  # noqa: E402

pytestmark = [
    pytest.mark.skipif(not is_built(), reason=BUILD_HINT),
    pytest.mark.timeout(120),
]


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    # 2 clusters of 2 hosts + 1 standalone host per datacenter; 50 VMs; 3 datastores.
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), clusters=2, hosts=2,
                         standalone_hosts=1, vms=10, datastores=3, quiet=True)
    try:
        made = vsphere.add_snapshots(handle, every=7)
        yield handle, made
    finally:
        handle.stop()


async def test_three_readers_agree_on_counts_and_names(vcsim) -> None:  # type: ignore[no-untyped-def]
    handle, made = vcsim
    size = handle.size
    ours = await vsphere.read_ours(handle, max_object_updates=7)  # several pages
    plain = vsphere.read_plain(handle)
    assert ours.summary() == (size.total_vms, size.total_hosts, size.total_datastores,
                              size.total_clusters + size.standalone_hosts, made)
    assert plain.summary() == ours.summary()
    assert plain.vms == ours.vms and plain.hosts == ours.hosts
    assert plain.datastores == ours.datastores and plain.clusters == ours.clusters
    assert len(set(ours.vms)) == size.total_vms
    if not vsphere.inventory_bench_path().is_file():
        pytest.skip(f"inventory-bench not built: {BUILD_HINT}")
    go = vsphere.read_go(handle)
    assert go.summary() == ours.summary()
    assert (go.vms, go.hosts, go.datastores, go.clusters) == (
        ours.vms, ours.hosts, ours.datastores, ours.clusters)


def pyvmomi_read(session: vs_session.Session, *, compact: bool = True
                 ) -> list[vs_session.ObjectUpdate]:
    """The filter's objects read by plain pyvmomi (``RetrievePropertiesEx``, paged):
    the reference the lean reader is held to (``compact``: VMs' properties turned
    into the lean forms by ``lean.compact_vm``, as the backend does with pyvmomi's
    objects)."""
    pc = vs_session.PC
    out: list[vs_session.ObjectUpdate] = []
    collector = session.content.propertyCollector
    result = collector.RetrievePropertiesEx([session.spec], pc.RetrieveOptions(maxObjects=9))
    while result is not None:
        for oc in result.objects:
            props = {lean.intern(p.name) or "": p.val for p in oc.propSet}
            kind = vs_session.type_name(oc.obj)
            if compact and kind == "VirtualMachine":
                lean.compact_vm(props)
            out.append(vs_session.ObjectUpdate("enter", kind, oc.obj._moId, props))
        result = (collector.ContinueRetrievePropertiesEx(result.token)
                  if result.token else None)
    return out


def first_answer(session: vs_session.Session) -> list[vs_session.ObjectUpdate]:
    """The update filter's first answer, every page of it, as the backend reads it."""
    pages: list[vs_session.ObjectUpdate] = []
    while not session.caught_up:
        pages.extend(session.wait(5) or ())
    return pages


def vm_props(updates: list[vs_session.ObjectUpdate]) -> dict[str, dict[str, object]]:
    """Each VM's set properties (an unset one is absent from both readings)."""
    return {u.moid: {k: v for k, v in u.assigned.items() if v is not None}
            for u in updates if u.type_name == "VirtualMachine"}


def test_the_lean_reader_reads_every_vm_as_pyvmomi_does(vcsim) -> None:  # type: ignore[no-untyped-def]
    """The inventory's VMs, read from the raw XML (leanxml), hold exactly what
    pyvmomi's objects turned into the lean forms hold — property by property,
    VM by VM (snapshot trees with children, layouts, devices, unset facts)."""
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path, max_object_updates=9)
    try:
        read = first_answer(session)
        reference = pyvmomi_read(session)
    finally:
        session.close()
    mine, theirs = vm_props(read), vm_props(reference)
    assert mine.keys() == theirs.keys() and len(mine) == 50
    for oid, props in mine.items():
        assert props == theirs[oid], oid
    assert any(p.get("snapshot") is not None for p in mine.values())
    assert_lean_only(read)


def test_an_answer_the_lean_reader_does_not_expect_is_read_by_pyvmomi(vcsim) -> None:  # type: ignore[no-untyped-def]
    """A VM property the reader does not know (a nested path, a server that answers
    otherwise) makes the whole answer pyvmomi's, never a guess."""
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path)
    try:
        session.filter = session.pc.CreateFilter(session.spec, partialUpdates=False)
        body = session.post_raw(session.pc, "WaitForUpdatesEx",
                                ["", vs_session.PC.WaitOptions(maxWaitSeconds=1)])
    finally:
        session.close()
    vms, rest = leanxml.split_answer(body)
    assert len(vms) == 50 and b'<obj type="VirtualMachine">' not in rest
    assert b'<obj type="HostSystem">' in rest
    unknown = body.replace(b"<name>config.version</name>", b"<name>config.version.x</name>", 1)
    with pytest.raises(leanxml.Unreadable, match=r"config\.version\.x"):
        leanxml.split_answer(unknown)
    odd = body.replace(b'<objectSet><kind>enter</kind><obj type="VirtualMachine">',
                       b'<objectSet ><kind>enter</kind><obj type="VirtualMachine">', 1)
    with pytest.raises(leanxml.Unreadable, match="49 VM object updates cut, 50 read"):
        leanxml.split_answer(odd)
    bad = body.replace(b'xsd:boolean">false<', b'xsd:boolean">maybe<', 1)
    with pytest.raises(leanxml.Unreadable, match="maybe"):
        leanxml.split_answer(bad)

    # A name written as CDATA holding "</objectSet>" (vCenter escapes, but a server
    # may not): the byte cut goes wrong, so the page is read whole by pyvmomi.
    name = b">DC0_C0_H0_VM0<"
    assert name in body
    hostile = body.replace(name, b"><![CDATA[x</objectSet>y]]><", 1)
    with pytest.raises(leanxml.Unreadable, match="CDATA"):
        leanxml.split_answer(hostile)
    update, vms = session_reading(handle, hostile)
    assert vms == []  # pyvmomi's
    names = {str(c.val) for fs in update.filterSet for o in fs.objectSet
             for c in o.changeSet if c.name == "name"}
    assert "x</objectSet>y" in names and len(names) >= 50


def session_reading(handle: object, body: bytes) -> tuple[object, list[object]]:
    """``Session._whole_answer`` of ``body`` (as if the server had sent it)."""
    session = vs_session.Session(handle.host, handle.port, handle.user,  # type: ignore[attr-defined]
                                 handle.password, ca_file=handle.ca_path)  # type: ignore[attr-defined]
    try:
        session._page = lambda version, options: body  # type: ignore[method-assign]
        return session._whole_answer("", vs_session.PC.WaitOptions(maxWaitSeconds=1))
    finally:
        session.close()


def test_lean_first_wait_maps_like_pyvmomi(vcsim) -> None:  # type: ignore[no-untyped-def]
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path)
    try:
        read = session.wait(5)  # the filter's first answer: every object, lean
        assert session.version and session.caught_up
        full = pyvmomi_read(session, compact=False)  # as pyvmomi builds them
    finally:
        session.close()
    assert read is not None
    vm = next(u for u in read if u.type_name == "VirtualMachine")
    assert isinstance(vm.assigned["config.hardware"], lean.LeanHardware)
    assert isinstance(vm.assigned["layoutEx"], lean.LeanLayoutEx)
    assert {(u.moid, u.kind) for u in read if u.type_name != "Task"} == {
        (u.moid, "enter") for u in full if u.type_name != "Task"}

    mapped = entities(read)
    assert mapped == entities(full)
    assert_lean_only(read)
    assert_same_readings(read, full)
    kinds = {type(e.entity).__name__ for e in mapped}  # type: ignore[attr-defined]
    assert {"VM", "VirtualDisk", "Checkpoint", "Node", "Lun", "Cluster"} <= kinds


def test_every_page_of_the_first_wait_is_read_lean(vcsim) -> None:  # type: ignore[no-untyped-def]
    """With ``maxObjectUpdates`` the first answer comes in pages (``truncated``):
    each page is read lean, and together they map like one full pyvmomi read."""
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path, max_object_updates=7)
    try:
        pages = list(session.wait(5) or ())
        # The next page was asked for as soon as this one's body was in (read ahead).
        assert session._next_page is not None and session._next_page[0] == session.version
        pages.extend(first_answer(session))
        assert session._next_page is None  # nothing asked after the last page
        full = pyvmomi_read(session, compact=False)
    finally:
        session.close()
    assert session.truncated >= 5  # 50 VMs, 5 hosts, 3 datastores, ... in pages of 7
    assert {u.moid for u in pages if u.type_name != "Task"} == {
        u.moid for u in full if u.type_name != "Task"}
    assert_lean_only(pages)
    assert entities(pages) == entities(full)


def entities(objects: list[vs_session.ObjectUpdate]) -> list[object]:
    """What the backend emits for ``objects`` read in full."""
    backend = VSphereBackend(VSphereConfig(host="unused"), password="unused")
    return sorted(backend._apply(objects, full=True), key=repr)


LEAN_VALUES = (str, int, float, bool, tuple, datetime, *lean.LEAN_TYPES)


def assert_lean_only(updates: list[vs_session.ObjectUpdate]) -> None:
    """VMs' properties hold no pyvmomi object (the backend's cache keeps these)."""
    for upd in updates:
        if upd.type_name != "VirtualMachine":
            continue
        for name, value in upd.assigned.items():
            assert type(value) in LEAN_VALUES, (name, type(value))
            assert sys.intern(name) is name  # one key object for every VM


def assert_same_readings(lean_read: list[vs_session.ObjectUpdate],
                         full: list[vs_session.ObjectUpdate]) -> None:
    """The stun watcher's log directory and the executor's bytes are the same from
    the files the lean forms keep as from every file of the layout."""
    by_id = {u.moid: u.assigned for u in full if u.type_name == "VirtualMachine"}
    for upd in lean_read:
        if upd.type_name != "VirtualMachine":
            continue
        mine, theirs = upd.assigned.get("layoutEx"), by_id[upd.moid].get("layoutEx")
        assert vm_log_dir(mine) == vm_log_dir(theirs)
        assert _files_bytes(mine) == _files_bytes(theirs)
        assert len(mine.file) < len(theirs.file)  # nvram, .vmsd ... are not kept


async def test_the_inventory_mapped_page_by_page_is_the_inventory_mapped_at_once(vcsim) -> None:  # type: ignore[no-untyped-def]
    """The backend maps each page of the first answer as it comes (VMs before the
    hosts and datastores they name, in vcsim's order) and then again as a whole:
    once CONNECTED, the store holds exactly what mapping everything at once gives."""
    from ventana.state.events import ConnectionChanged, LinkState
    from ventana.state.model import Kind
    from ventana.state.store import Store

    handle, _ = vcsim
    iso_vm = await asyncio.to_thread(add_iso_on_another_datastore, handle)
    cfg = VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                        ca_file=handle.ca_path, max_object_updates=7)
    backend = VSphereBackend(cfg, password=handle.password)
    paged = Store()
    stream = backend.events()
    try:
        async for event in stream:
            paged.apply(event)
            if isinstance(event, ConnectionChanged) and event.state is LinkState.CONNECTED:
                break
        session = backend._session
        assert session is not None and session.truncated >= 5
        full = pyvmomi_read(session, compact=False)
    finally:
        await backend.close()
        async for _ in stream:
            pass
    whole = Store()
    for event in entities(full):
        whole.apply(event)  # type: ignore[arg-type]
    for kind in (Kind.VM, Kind.NODE, Kind.CLUSTER, Kind.LUN, Kind.CHECKPOINT, Kind.DISK):
        assert sorted(map(repr, paged.all(kind))) == sorted(map(repr, whole.all(kind))), kind
    assert paged.count(Kind.VM) == 50
    # Its home is found by the datastores' names, which come pages after the VMs.
    home = paged.vm(iso_vm)
    assert home is not None and home.lun_id and home.lun_id == whole.vm(iso_vm).lun_id


def add_iso_on_another_datastore(handle: object) -> str:
    """A CD-ROM on an ISO in another datastore than the VM's home, so that the VM's
    ``datastore`` lists two (the ISO's first): its home needs the datastores' names."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim
    from test_vsphere_backend import iso_cdrom  # the same folder

    si = vsphere._connect(handle)
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine],
                                                       True)
        vm = sorted(view.view, key=lambda v: v.name)[0]
        home = vm.datastore[0]
        other = next(d for d in vm.runtime.host.datastore if d != home)
        WaitForTask(vm.ReconfigVM_Task(iso_cdrom(vm, other.name)), si=si)
        assert len(vm.datastore) == 2
        return str(vm._moId)
    finally:
        Disconnect(si)


def test_a_host_or_vm_that_moves_remaps_what_depends_on_it() -> None:
    """Without walking every VM: a host moved to another cluster re-maps its VMs (and
    only them); a VM moved to another host moves in both hosts' VM counts."""
    from ventana.backends.vsphere.session import ObjectUpdate as U

    backend = VSphereBackend(VSphereConfig(host="unused"), password="unused")
    vm = {"runtime.powerState": "poweredOn"}
    backend._apply([
        U("enter", "ClusterComputeResource", "c1", {"name": "C1"}),
        U("enter", "ClusterComputeResource", "c2", {"name": "C2"}),
        U("enter", "HostSystem", "h1", {"name": "H1", "parent": "c1"}),
        U("enter", "HostSystem", "h2", {"name": "H2", "parent": "c2"}),
        U("enter", "VirtualMachine", "v1", {**vm, "name": "V1", "runtime.host": "h1"}),
        U("enter", "VirtualMachine", "v2", {**vm, "name": "V2", "runtime.host": "h2"}),
    ], full=True)

    def upserts(events: list[object], kind: str) -> dict[str, object]:
        return {e.entity.id: e.entity for e in events  # type: ignore[attr-defined]
                if type(getattr(e, "entity", None)).__name__ == kind}

    moved = backend._apply([U("modify", "HostSystem", "h1", {"parent": "c2"})])
    assert {i: v.cluster_id for i, v in upserts(moved, "VM").items()} == {"v1": "c2"}
    vmotion = backend._apply([U("modify", "VirtualMachine", "v2", {"runtime.host": "h1"})])
    nodes = upserts(vmotion, "Node")
    assert (nodes["h1"].vm_count, nodes["h2"].vm_count) == (2, 0)  # type: ignore[attr-defined]
    gone = backend._apply([U("leave", "VirtualMachine", "v1", {})])
    assert upserts(gone, "Node")["h1"].vm_count == 1  # type: ignore[attr-defined]
    assert backend._vms_on == {"h1": {"v2"}} and backend._host_of == {"v2": "h1"}


async def test_a_page_asked_ahead_with_a_wrong_version_reads_again_without_asking_ahead(
        vcsim, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Were a server to write its version otherwise than ``leanxml.continuation`` reads
    it, the page asked ahead would not match: the backend logs in again and reads the
    inventory without asking ahead — once, never a loop of re-reads."""
    from ventana.state.events import ConnectionChanged, LinkState
    from ventana.state.model import Kind
    from ventana.state.store import Store

    handle, _ = vcsim
    misread = [0]
    real = leanxml.continuation

    def wrong_once(body: bytes) -> str | None:
        version = real(body)
        if version is not None and not misread[0]:
            misread[0] += 1
            return version + "-misread"
        return version

    monkeypatch.setattr(leanxml, "continuation", wrong_once)
    cfg = VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                        ca_file=handle.ca_path, max_object_updates=7, backoff_initial_s=0.1)
    backend = VSphereBackend(cfg, password=handle.password)
    store = Store()
    links: list[ConnectionChanged] = []
    stream = backend.events()
    try:
        async for event in stream:
            store.apply(event)
            if isinstance(event, ConnectionChanged):
                links.append(event)
                if event.state is LinkState.CONNECTED:
                    break
    finally:
        await backend.close()
        async for _ in stream:
            pass
    assert misread == [1] and backend.reads == 2 and backend._read_ahead is False
    assert [e.state for e in links] == [LinkState.CONNECTING, LinkState.RECONNECTING,
                                        LinkState.CONNECTED]
    assert "misread" in links[1].reason
    assert store.count(Kind.VM) == 50


def test_continuation_reads_the_version_of_a_truncated_answer_only() -> None:
    """The version to ask the next page with, from the raw bytes; nothing when the
    answer is complete or its version cannot be read (the page is then read as usual)."""
    def answer(version: bytes, truncated: bytes) -> bytes:
        return (b'<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="s"><soapenv:Body>'
                b'<WaitForUpdatesExResponse xmlns="urn:vim25"><returnval><version>' + version
                + b"</version><filterSet></filterSet>" + truncated
                + b"</returnval></WaitForUpdatesExResponse></soapenv:Body></soapenv:Envelope>")

    assert leanxml.continuation(answer(b"7&amp;8", b"<truncated>true</truncated>")) == "7&8"
    assert leanxml.continuation(answer(b"7", b"<truncated>false</truncated>")) is None
    assert leanxml.continuation(answer(b"7", b"")) is None
    assert leanxml.continuation(answer(b"7&bad;", b"<truncated>true</truncated>")) is None
    assert leanxml.continuation(answer(b"", b"<truncated>true</truncated>")) is None
