"""The vSphere benchmark compares like with like (bench/vsphere.py).

At a small size, the three inventory readers — ours (``VSphereBackend`` into
a ``Store``), the plain object-by-object pyvmomi script and the govc-style Go
program — find the same VMs, hosts, datastores, clusters and snapshots as
the simulator holds. And the lean first read (``config.hardware`` and
``layoutEx`` parsed without pyvmomi's typed objects) maps to exactly the
entities the plain pyvmomi read maps to; so do pyvmomi's objects turned into
the lean forms the backend's cache keeps (lean.py), which hold no pyvmomi
object.
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
from ventana.backends.vsphere import lean  # noqa: E402
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
    ours = await vsphere.read_ours(handle, page_size=7)  # several pages
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


def test_lean_first_read_maps_like_pyvmomi(vcsim) -> None:  # type: ignore[no-untyped-def]
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path)
    try:
        lean = session.read_all(9)
        full = session._retrieve(session.spec, 9, compact=False)  # as pyvmomi builds them
        compacted = session._retrieve(session.spec, 9)  # ... turned into the lean forms
    finally:
        session.close()
    vm = next(u for u in lean if u.type_name == "VirtualMachine")
    assert isinstance(vm.assigned["config.hardware"], vs_session.LeanHardware)
    assert isinstance(vm.assigned["layoutEx"], vs_session.LeanLayoutEx)
    assert {u.moid for u in lean} == {u.moid for u in full}

    def entities(objects: list[vs_session.ObjectUpdate]) -> list[object]:
        backend = VSphereBackend(VSphereConfig(host="unused"), password="unused")
        return sorted(backend._apply(objects, full=True), key=repr)

    mapped = entities(lean)
    assert mapped == entities(full)
    assert entities(compacted) == mapped
    assert_lean_only(lean + compacted)
    assert_same_readings(lean, full)
    kinds = {type(e.entity).__name__ for e in mapped}  # type: ignore[attr-defined]
    assert {"VM", "VirtualDisk", "Checkpoint", "Node", "Lun", "Cluster"} <= kinds


def test_lean_first_wait_maps_like_pyvmomi(vcsim) -> None:  # type: ignore[no-untyped-def]
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path)
    try:
        lean = session.wait(5)  # the filter's first answer: every object, lean
        assert session.version
        full = session._retrieve(session.spec, 50, compact=False)
    finally:
        session.close()
    assert lean is not None
    vm = next(u for u in lean if u.type_name == "VirtualMachine")
    assert isinstance(vm.assigned["layoutEx"], vs_session.LeanLayoutEx)
    assert {(u.moid, u.kind) for u in lean if u.type_name != "Task"} == {
        (u.moid, "enter") for u in full if u.type_name != "Task"}

    def entities(objects: list[vs_session.ObjectUpdate]) -> list[object]:
        backend = VSphereBackend(VSphereConfig(host="unused"), password="unused")
        return sorted(backend._apply(objects, full=True), key=repr)

    assert entities(lean) == entities(full)
    assert_lean_only(lean)
    assert_same_readings(lean, full)


def test_every_page_of_the_first_wait_is_read_lean(vcsim) -> None:  # type: ignore[no-untyped-def]
    """With ``maxObjectUpdates`` the first answer comes in pages (``truncated``):
    each page is read lean, and together they map like one full pyvmomi read."""
    handle, _ = vcsim
    session = vs_session.Session(handle.host, handle.port, handle.user, handle.password,
                                 ca_file=handle.ca_path, max_object_updates=7)
    pages: list[vs_session.ObjectUpdate] = []
    try:
        while not session.caught_up:
            pages.extend(session.wait(5) or ())
        full = session._retrieve(session.spec, 50, compact=False)
    finally:
        session.close()
    assert session.truncated >= 5  # 50 VMs, 5 hosts, 3 datastores, ... in pages of 7
    assert {u.moid for u in pages if u.type_name != "Task"} == {
        u.moid for u in full if u.type_name != "Task"}
    assert_lean_only(pages)

    def entities(objects: list[vs_session.ObjectUpdate]) -> list[object]:
        backend = VSphereBackend(VSphereConfig(host="unused"), password="unused")
        return sorted(backend._apply(objects, full=True), key=repr)

    assert entities(pages) == entities(full)


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
