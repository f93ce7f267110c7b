"""The vcsim test peer (tools/vcsim) answers what the pyvmomi backend needs.

Every connection passes an explicit SSL context: pyvmomi silently skips
certificate checks for 127.0.0.1 without one (RELIABILITY.md), and the
refusal test listens on 127.0.0.2.
"""

from __future__ import annotations

import ssl
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(
        f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
        allow_module_level=True,
    )

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

pytestmark = pytest.mark.timeout(30)

PC = vmodl.query.PropertyCollector
SIZE = {"clusters": 2, "hosts": 2, "standalone_hosts": 1, "vms": 3, "datastores": 2}


def connect(handle: VcsimHandle, *, cafile: Path | None = None, password: str | None = None):
    ctx = ssl.create_default_context(cafile=str(cafile or handle.ca_path))
    return SmartConnect(
        host=handle.host,
        port=handle.port,
        user=handle.user,
        pwd=handle.password if password is None else password,
        sslContext=ctx,
        httpConnectionTimeout=20,
    )


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), **SIZE)
    yield handle
    assert handle.stop() == 0, handle.log_path.read_text()[-2000:]


@pytest.fixture(scope="module")
def si(vcsim: VcsimHandle):
    si = connect(vcsim)
    yield si
    Disconnect(si)


@pytest.fixture(scope="module")
def vms(si) -> dict[str, vim.VirtualMachine]:
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return {vm.name: vm for vm in view.view}
    finally:
        view.Destroy()


def view_filter_spec(view, kind, paths) -> PC.FilterSpec:
    traverse = PC.TraversalSpec(name="traverseView", type=vim.view.ContainerView, path="view")
    return PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=[PC.PropertySpec(type=kind, pathSet=paths)],
    )


def retrieve_all(si, kind, paths, *, max_objects: int | None = None):
    """RetrievePropertiesEx over a ContainerView of `kind`, following tokens; returns pages."""
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    pc = content.propertyCollector
    try:
        result = pc.RetrievePropertiesEx(
            [view_filter_spec(view, kind, paths)], PC.RetrieveOptions(maxObjects=max_objects)
        )
        pages = []
        while result is not None:
            pages.append(list(result.objects))
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
        return pages
    finally:
        view.Destroy()


def props(obj_content) -> dict:
    return {p.name: p.val for p in obj_content.propSet}


def retrieve_props(si, kind, paths) -> list[dict]:
    return [props(o) for page in retrieve_all(si, kind, paths) for o in page]


def reconfig_extra(vm, **options: str) -> None:
    spec = vim.vm.ConfigSpec(
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in options.items()]
    )
    WaitForTask(vm.ReconfigVM_Task(spec))


# --- TLS and login -----------------------------------------------------------


def test_login_verifies_certificate_against_the_generated_ca(vcsim: VcsimHandle, si) -> None:
    assert vcsim.url == f"https://127.0.0.1:{vcsim.port}/sdk"
    assert si.content.about.apiType == "VirtualCenter"
    session = si.content.sessionManager.currentSession
    assert session is not None and session.userName == vcsim.user


def test_wrong_password_is_refused(vcsim: VcsimHandle) -> None:
    with pytest.raises(vim.fault.InvalidLogin):
        connect(vcsim, password="not-the-password")


def test_unknown_ca_is_refused(tmp_path: Path) -> None:
    # 127.0.0.2: pyvmomi would skip verification for 127.0.0.1 without a context.
    with start_vcsim(
        tmp_path / "peer", clusters=0, standalone_hosts=1, vms=1, listen="127.0.0.2:0"
    ) as handle:
        assert handle.host == "127.0.0.2"
        other_ca = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other_ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(handle, cafile=other_ca)
        # Control: the same server with the right CA is accepted.
        good = connect(handle)
        assert good.content.about.apiType == "VirtualCenter"
        Disconnect(good)
        assert handle.running


# --- inventory ---------------------------------------------------------------


def test_inventory_counts_match_the_requested_size(vcsim: VcsimHandle, si) -> None:
    size = vcsim.size
    expected = {
        vim.Datacenter: size.datacenters,
        vim.ClusterComputeResource: size.total_clusters,
        vim.HostSystem: size.total_hosts,
        vim.VirtualMachine: size.total_vms,
        vim.Datastore: size.total_datastores,
    }
    for kind, count in expected.items():
        assert len(retrieve_props(si, kind, ["name"])) == count, kind

    vms = retrieve_props(
        si, vim.VirtualMachine, ["name", "runtime.host", "datastore", "runtime.powerState"]
    )
    per_host = Counter(vm["runtime.host"]._moId for vm in vms)
    assert len(per_host) == size.total_hosts
    assert set(per_host.values()) == {size.vms}
    assert {vm["runtime.powerState"] for vm in vms} == {"poweredOn"}
    per_ds = Counter(vm["datastore"][0]._moId for vm in vms)
    assert len(per_ds) == size.total_datastores  # spread round-robin
    assert "DC0_C0_H0_VM0" in {vm["name"] for vm in vms}

    datastores = retrieve_props(
        si, vim.Datastore, ["name", "summary.capacity", "summary.freeSpace"]
    )
    assert sorted(d["name"] for d in datastores) == ["LocalDS_0", "LocalDS_1"]
    assert all(0 < d["summary.freeSpace"] <= d["summary.capacity"] for d in datastores)


def test_retrieve_pages_honour_max_objects(vcsim: VcsimHandle, si) -> None:
    pages = retrieve_all(si, vim.VirtualMachine, ["name"], max_objects=4)
    total = vcsim.size.total_vms
    assert [len(p) for p in pages] == [4] * (total // 4) + ([total % 4] if total % 4 else [])
    names = [props(o)["name"] for page in pages for o in page]
    assert len(names) == len(set(names)) == total

    # A cancelled token cannot be continued.
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    pc = content.propertyCollector
    first = pc.RetrievePropertiesEx(
        [view_filter_spec(view, vim.VirtualMachine, ["name"])], PC.RetrieveOptions(maxObjects=2)
    )
    assert len(first.objects) == 2 and first.token
    pc.CancelRetrievePropertiesEx(first.token)
    with pytest.raises(vmodl.fault.InvalidArgument):
        pc.ContinueRetrievePropertiesEx(first.token)
    view.Destroy()


def test_fetching_unset_snapshot_does_not_break_the_server(vcsim: VcsimHandle, si, vms) -> None:
    vm = vms["DC0_C0_H0_VM0"]  # never gets a snapshot in this module
    assert vm.snapshot is None  # the Fetch path
    assert vm.rootSnapshot == []
    [page] = retrieve_all(si, vim.VirtualMachine, ["name", "snapshot", "layoutEx"])
    assert all("snapshot" not in props(o) for o in page)
    assert vm.name == "DC0_C0_H0_VM0"  # same connection still answers
    assert vcsim.running


# --- live updates ------------------------------------------------------------


def wait_for_change(pc, version: str, moid: str, name: str, deadline: float):
    """Poll WaitForUpdatesEx until `moid` reports a change of `name`; returns (version, val)."""
    while time.monotonic() < deadline:
        update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=2))
        if update is None:
            continue
        version = update.version
        for fs in update.filterSet:
            for obj in fs.objectSet:
                if obj.obj._moId != moid:
                    continue
                for change in obj.changeSet:
                    if change.name == name:
                        return version, change.val
    raise AssertionError(f"no {name} update for {moid}")


def test_wait_for_updates_sees_changes_made_by_a_second_connection(vcsim, si, vms) -> None:
    content = si.content
    pc = content.propertyCollector.CreatePropertyCollector()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    pc.CreateFilter(
        view_filter_spec(view, vim.VirtualMachine, ["name", "runtime.powerState", "snapshot"]),
        partialUpdates=False,  # whole properties (the partial form: the next test)
    )
    initial = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0))
    entered = [o for fs in initial.filterSet for o in fs.objectSet]
    assert len(entered) == vcsim.size.total_vms
    assert {o.kind for o in entered} == {"enter"}

    target = vms["DC0_C0_H1_VM0"]
    other = connect(vcsim)
    try:
        other_vm = vim.VirtualMachine(target._moId, other._stub)
        WaitForTask(other_vm.PowerOffVM_Task())
        deadline = time.monotonic() + 15
        version, state = wait_for_change(
            pc, initial.version, target._moId, "runtime.powerState", deadline
        )
        assert state == "poweredOff"

        WaitForTask(other_vm.CreateSnapshot_Task("seen-live", "", False, False))
        _, snap = wait_for_change(pc, version, target._moId, "snapshot", deadline)
        assert [s.name for s in snap.rootSnapshotList] == ["seen-live"]
    finally:
        Disconnect(other)
        pc.Destroy()
        view.Destroy()


def changes_for(pc, version: str, moid: str, want, deadline: float):
    """Collect ``moid``'s changes until ``want(changes)``; returns (version, changes)."""
    seen: list = []
    while time.monotonic() < deadline:
        update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=1))
        if update is None:
            continue
        version = update.version
        seen += [c for fs in update.filterSet for o in fs.objectSet if o.obj._moId == moid
                 for c in o.changeSet]
        if want(seen):
            return version, seen
    raise AssertionError(f"{moid}: changes {[(c.name, c.op) for c in seen]}")


def test_partial_updates_name_the_nested_change_as_vcenter_does(vcsim, si, vms) -> None:
    """partialUpdates=true: only the nested change, under its own path, with add/remove
    ops for elements (pyvmomi docs/vmodl/query/PropertyCollector.rst, CreateFilter;
    PropertyCollector/Change.rst); false: the whole property named in the filter."""
    vm = vms["DC0_C0_H0_VM2"]
    content = si.content
    collectors = {}
    for partial in (True, False):
        pc = content.propertyCollector.CreatePropertyCollector()
        pc.CreateFilter(PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=vm, skip=False)],
            propSet=[PC.PropertySpec(type=vim.VirtualMachine,
                                     pathSet=["snapshot", "config.hardware"])],
        ), partialUpdates=partial)
        collectors[partial] = [pc, pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0))
                               .version]
    try:
        create_snapshot(vm, "nested")
        deadline = time.monotonic() + 15
        for partial, entry in collectors.items():
            pc, version = entry
            entry[1], got = changes_for(pc, version, vm._moId, lambda cs: cs, deadline)
            names = {c.name for c in got}
            # A snapshot also moves each disk onto its new delta (patch 0014): the
            # disk's backing changes, pushed as config.hardware (device by device).
            if partial:
                assert "snapshot.currentSnapshot" in names, names
                assert all(n.startswith(("snapshot.", "config.hardware.device[")) for n in names)
            else:
                assert "snapshot" in names and names <= {"snapshot", "config.hardware"}, names
                [tree] = [c.val for c in got if c.name == "snapshot"]
                assert [t.name for t in tree.rootSnapshotList] == ["nested"]

        disk = next(d for d in vm.config.hardware.device
                    if isinstance(d, vim.vm.device.VirtualDisk))
        disk.capacityInKB += 1024
        disk.capacityInBytes = disk.capacityInKB * 1024
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)])))
        pc, version = collectors[True]
        path = f"config.hardware.device[{disk.key}].capacityInKB"
        _, got = changes_for(pc, version, vm._moId, lambda cs: any(c.name == path for c in cs),
                             deadline)
        assert [c.val for c in got if c.name == path] == [disk.capacityInKB]
        assert not any(c.name == "config.hardware" for c in got)
        pc, version = collectors[False]
        _, got = changes_for(pc, version, vm._moId, lambda cs: cs, deadline)
        [hw] = [c.val for c in got if c.name == "config.hardware"]
        assert {d.key: d.capacityInKB for d in hw.device
                if isinstance(d, vim.vm.device.VirtualDisk)}[disk.key] == disk.capacityInKB
    finally:
        for pc, _ in collectors.values():
            pc.Destroy()


def test_layout_ex_is_not_pushed_but_refresh_storage_info_updates_it(si, vms) -> None:
    """VirtualMachine.layoutEx "might not generate property collector update
    notifications" (pyvmomi docs/vim/VirtualMachine.rst): the peer pushes none;
    RefreshStorageInfo updates the value, sizes included."""
    vm = vms["DC0_C0_H1_VM2"]
    content = si.content
    pc = content.propertyCollector.CreatePropertyCollector()
    pc.CreateFilter(PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=vm, skip=False)],
        propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot", "layoutEx"])],
    ), partialUpdates=False)
    try:
        version = pc.WaitForUpdatesEx("", PC.WaitOptions(maxWaitSeconds=0)).version
        snap = create_snapshot(vm, "unpushed")
        _, got = changes_for(pc, version, vm._moId, lambda cs: cs, time.monotonic() + 10)
        assert {c.name for c in got} == {"snapshot"}  # no layoutEx
        vm.RefreshStorageInfo()
        layout = vm.layoutEx
        [snap_layout] = [s for s in layout.snapshot if s.key._moId == snap._moId]
        vmsn = next(f for f in layout.file if f.key == snap_layout.dataKey)
        assert vmsn.name.endswith(".vmsn")
    finally:
        pc.Destroy()


def test_tasks_can_stay_out_of_recent_task_and_run_late(si, vms) -> None:
    """Test controls: a task never listed in TaskManager.recentTask, one that stays
    running for a while before doing its work."""
    vm = vms["DC0_C1_H0_VM2"]
    reconfig_extra(vm, **{"vcsim.task.hideFromRecentTask": "true",
                          "vcsim.delay.CreateSnapshot_Task": "2"})
    task = vm.CreateSnapshot_Task("late", "", False, False)
    assert task.info.state == "running"
    assert task._moId not in {t._moId for t in si.content.taskManager.recentTask}
    assert vm.snapshot is None
    assert WaitForTask(task) == "success"
    assert [t.name for t in vm.snapshot.rootSnapshotList] == ["late"]
    assert task._moId not in {t._moId for t in si.content.taskManager.recentTask}
    reconfig_extra(vm, **{"vcsim.task.hideFromRecentTask": "false",
                          "vcsim.delay.CreateSnapshot_Task": ""})
    task = vm.CreateSnapshot_Task("prompt", "", False, False)
    assert task.info.state == "success"
    assert task._moId in {t._moId for t in si.content.taskManager.recentTask}


# --- snapshots and consolidation ---------------------------------------------


def create_snapshot(vm, name: str):
    task = vm.CreateSnapshot_Task(name, f"{name} description", False, False)
    WaitForTask(task)
    assert task.info.entity._moId == vm._moId
    assert task.info.name.info.wsdlName == "CreateSnapshot_Task"  # not UnknownManagedMethod
    return task.info.result


def test_create_snapshot_shows_tree_and_layout(vms) -> None:
    vm = vms["DC0_C0_H1_VM1"]
    snap = create_snapshot(vm, "before-patch")
    tree = vm.snapshot.rootSnapshotList
    assert [t.name for t in tree] == ["before-patch"]
    assert tree[0].snapshot._moId == snap._moId == vm.snapshot.currentSnapshot._moId
    assert [s._moId for s in vm.rootSnapshot] == [snap._moId]
    layout = vm.layoutEx
    assert [s.key._moId for s in layout.snapshot] == [snap._moId]
    file_keys = {f.key for f in layout.file}
    assert layout.snapshot[0].dataKey in file_keys
    assert layout.disk and layout.snapshot[0].disk


def test_remove_current_root_snapshot_with_children(vms) -> None:
    vm = vms["DC0_C1_H0_VM0"]
    root = create_snapshot(vm, "root")
    child = create_snapshot(vm, "child")
    WaitForTask(root.RevertToSnapshot_Task())
    assert vm.snapshot.currentSnapshot._moId == root._moId  # a current root with a child

    task = root.RemoveSnapshot_Task(removeChildren=False)
    assert WaitForTask(task) == "success"
    assert task.info.entity._moId == vm._moId  # the VM, as vCenter reports it
    assert task.info.entityName == vm.name
    info = vm.snapshot
    assert [t.name for t in info.rootSnapshotList] == ["child"]
    assert info.currentSnapshot is None
    assert [s._moId for s in vm.rootSnapshot] == [child._moId]
    assert [s.key._moId for s in vm.layoutEx.snapshot] == [child._moId]

    grandchild_parent = create_snapshot(vm, "next")  # current is unset: becomes a new root
    assert {t.name for t in vm.snapshot.rootSnapshotList} == {"child", "next"}
    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None and vm.rootSnapshot == []
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        _ = grandchild_parent.vm


def test_remove_snapshot_with_children_moves_current_to_parent(vms) -> None:
    vm = vms["DC0_C1_H0_VM1"]
    base = create_snapshot(vm, "base")
    middle = create_snapshot(vm, "middle")
    create_snapshot(vm, "leaf")
    WaitForTask(middle.RemoveSnapshot_Task(removeChildren=True))
    info = vm.snapshot
    assert [t.name for t in info.rootSnapshotList] == ["base"]
    assert info.rootSnapshotList[0].childSnapshotList == []
    assert info.currentSnapshot._moId == base._moId
    assert base.childSnapshot == []


def test_consolidate_clears_consolidation_needed(vms) -> None:
    vm = vms["DC0_C1_H1_VM0"]
    assert vm.runtime.consolidationNeeded is False
    reconfig_extra(vm, **{"vcsim.consolidationNeeded": "true"})
    assert vm.runtime.consolidationNeeded is True
    assert vm.summary.runtime.consolidationNeeded is True
    assert not any(o.key.startswith("vcsim.") for o in vm.config.extraConfig)

    estimate = vm.EstimateStorageForConsolidateSnapshots_Task()
    WaitForTask(estimate)
    assert {r.datastore._moId for r in estimate.info.result} == {d._moId for d in vm.datastore}
    assert all(r.freeSpaceRequiredInKb >= 0 for r in estimate.info.result)

    task = vm.ConsolidateVMDisks_Task()
    assert WaitForTask(task) == "success"
    assert task.info.entity._moId == vm._moId
    assert vm.runtime.consolidationNeeded is False


def test_snapshot_removal_can_leave_consolidation_needed(vms) -> None:
    vm = vms["DC0_C1_H1_VM1"]
    reconfig_extra(vm, **{"vcsim.removeSnapshot.leavesConsolidationNeeded": "true"})
    snap = create_snapshot(vm, "backup-proxy-holds-disk")
    WaitForTask(snap.RemoveSnapshot_Task(removeChildren=False))
    assert vm.snapshot is None
    assert vm.runtime.consolidationNeeded is True  # "successful" removal, still a warning
    WaitForTask(vm.ConsolidateVMDisks_Task())
    assert vm.runtime.consolidationNeeded is False


def test_task_fault_hook_fails_the_task_with_its_message(vms) -> None:
    vm = vms["DC0_C1_H1_VM2"]
    reconfig_extra(vm, **{"vcsim.fail.ConsolidateVMDisks_Task": "Device or resource busy"})
    task = vm.ConsolidateVMDisks_Task()
    with pytest.raises(vim.fault.GenericVmConfigFault) as err:
        WaitForTask(task)
    assert task.info.state == "error"
    assert task.info.error.msg == "Device or resource busy"
    assert err.value.reason == "Device or resource busy"
    reconfig_extra(vm, **{"vcsim.fail.ConsolidateVMDisks_Task": ""})
    assert WaitForTask(vm.ConsolidateVMDisks_Task()) == "success"

    # Methods of a snapshot count for its VM; the failed removal leaves the tree alone.
    snap = create_snapshot(vm, "held-by-backup")
    reconfig_extra(vm, **{"vcsim.fail.RemoveSnapshot_Task": "msg.snapshot.error-DISKLOCKED"})
    task = snap.RemoveSnapshot_Task(removeChildren=False)
    with pytest.raises(vim.fault.GenericVmConfigFault):
        WaitForTask(task)
    assert task.info.entity._moId == vm._moId
    assert task.info.error.msg == "msg.snapshot.error-DISKLOCKED"
    assert [t.name for t in vm.snapshot.rootSnapshotList] == ["held-by-backup"]


def test_refresh_datastore_answers(si, vms) -> None:
    ds = vms["DC0_C0_H0_VM0"].datastore[0]
    ds.RefreshDatastore()
    assert ds.summary.freeSpace > 0


# --- lifecycle ---------------------------------------------------------------


def test_sigterm_removes_the_datastore_folders(tmp_path: Path) -> None:
    handle = start_vcsim(tmp_path, clusters=0, standalone_hosts=1, vms=1, datastores=2)
    folders = sorted(tmp_path.glob("govcsim-*"))
    assert len(folders) == 2
    assert handle.stop() == 0
    assert not any(p.exists() for p in folders)
