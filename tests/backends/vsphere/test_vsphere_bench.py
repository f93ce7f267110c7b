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
