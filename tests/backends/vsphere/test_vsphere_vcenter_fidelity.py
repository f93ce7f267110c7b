"""The vSphere backend against the peer behaving as a real vCenter does, not as
vcsim 0.24.2 allowed (issue 11; patch 0009 and the controls in tools/vcsim):

- partial updates: nested changes under their own paths (the client asks for
  whole properties, and re-reads the enclosing property if a nested one comes);
- layoutEx is never pushed: the client calls RefreshStorageInfo after every
  ``snapshot`` change and after every action, and reads it back;
- tasks that never appear in TaskManager.recentTask, tasks that outlive the
  action's timeout (UNKNOWN, the VM re-read, nothing re-sent), and a VM that
  is busy with a task the feed never showed;
- datastores: names unique only per datacenter (two datacenters, same names),
  and ``VM.datastore`` unordered (an ISO's datastore listed first).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(
        f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
        allow_module_level=True,
    )

from pyVim.connect import Disconnect
from pyVim.task import WaitForTask
from pyVmomi import vim
from test_vsphere_backend import (  # the same folder (rootdir-less test modules)
    Stream,
    config_for,
    connect,
    iso_cdrom,
    reconfig_via,
    snapshot_via,
    vm_by_name,
)

from ventana.backends.vsphere import VSphereBackend
from ventana.backends.vsphere.session import Session
from ventana.state.events import LinkState
from ventana.state.model import Kind, TaskState

# Two datacenters, each with its own LocalDS_0 and LocalDS_1 (same names).
SIZE = {"datacenters": 2, "clusters": 1, "hosts": 2, "standalone_hosts": 0, "vms": 4,
        "datastores": 2}


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, **SIZE)
    yield handle
    handle.stop()


@pytest.fixture
def other(vcsim: VcsimHandle):
    si = connect(vcsim)
    yield si
    Disconnect(si)


async def open_stream(handle: VcsimHandle, **kw: object) -> Stream:
    backend = VSphereBackend(config_for(handle, read_only=False, **kw), password=handle.password)
    s = Stream(backend, handle.password)
    await s.until(lambda: s.state() is not None and s.state().value == "connected", 15,
                  "connected")
    return s


@pytest.fixture(params=[False, True], ids=["whole", "partial"])
async def stream(request: pytest.FixtureRequest, vcsim: VcsimHandle,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stream]:
    # "partial": the filter asks for partialUpdates as the old code did; the peer
    # then names nested changes, which the client must re-read, not store.
    monkeypatch.setattr(Session, "partial_updates", request.param)
    s = await open_stream(vcsim)
    yield s
    await s.close()


async def grow_disk(other, vm_id: str, kb: int) -> int:
    vm = vim.VirtualMachine(vm_id, other._stub)
    disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
    disk.capacityInKB += kb
    disk.capacityInBytes = disk.capacityInKB * 1024
    spec = vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)])
    await asyncio.to_thread(WaitForTask, vm.ReconfigVM_Task(spec))
    return disk.capacityInKB * 1024


@pytest.mark.timeout(40)
async def test_nested_changes_keep_disks_and_snapshots_current(
    stream: Stream, other, request: pytest.FixtureRequest
) -> None:
    store = stream.store
    name = "DC0_C0_H0_VM0" if "whole" in request.node.callspec.id else "DC0_C0_H0_VM1"
    vm = vm_by_name(store, name)
    capacity = await grow_disk(other, vm.id, 2048)
    await stream.until(
        lambda: any(d.max_bytes == capacity for d in store.disks_of(vm.id)), 10,
        "the grown disk's capacity")

    first = await snapshot_via(other, vm.id, "first")
    second = await snapshot_via(other, vm.id, "second")  # a child: only currentSnapshot moves
    await stream.until(
        lambda: {c.id for c in store.checkpoints_of(vm.id)} == {first, second}, 10,
        "both snapshots, the child under the first")
    assert store.get(Kind.CHECKPOINT, second).parent_id == first
    props = stream.backend.cached("vm", vm.id) or {}
    assert not [k for k in props if k.startswith(("snapshot.", "config.hardware."))], props.keys()


def snapshot_file(handle: VcsimHandle, vm_name: str, n: int) -> Path:
    [path] = handle.log_path.parent.glob(f"govcsim-*/{vm_name}/{vm_name}-Snapshot{n}.vmsn")
    return path


@pytest.mark.timeout(40)
async def test_layout_ex_is_refreshed_after_a_snapshot_change(vcsim: VcsimHandle, other) -> None:
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H0_VM2")
        first = await snapshot_via(other, vm.id, "grows")
        await s.until(lambda: store.get(Kind.CHECKPOINT, first), 10, "snapshot seen")
        await s.until(lambda: store.get(Kind.CHECKPOINT, first).disk_path.endswith(
            "disk1-000001.vmdk"), 10, "the delta it made, from a refreshed layoutEx (never pushed)")
        # The state file grows on the datastore; vCenter pushes nothing for it.
        snapshot_file(vcsim, vm.name, 1).write_bytes(b"\0" * (3 << 20))
        await snapshot_via(other, vm.id, "next")  # a snapshot change: refresh again
        await s.until(lambda: store.get(Kind.CHECKPOINT, first).size_bytes >= 3 << 20, 10,
                      "the new size after RefreshStorageInfo")
    finally:
        await s.close()


@pytest.mark.timeout(40)
async def test_a_task_missing_from_recent_task_still_ends_the_action(
    vcsim: VcsimHandle, other
) -> None:
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H0_VM3")
        snap = await snapshot_via(other, vm.id, "to-remove")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        await reconfig_via(other, vm.id, "vcsim.task.hideFromRecentTask", "true")
        await reconfig_via(other, vm.id, "vcsim.delay.RemoveAllSnapshots_Task", "1")
        result = await asyncio.wait_for(s.backend.executor().merge(vm.id, "t-hidden"), 20)
        assert result.state is TaskState.OK, result.error
        await s.until(lambda: not store.checkpoints_of(vm.id), 10, "snapshot gone")
        await s.until(lambda: store.task("t-hidden").state is TaskState.OK, 10, "row OK")
    finally:
        await reconfig_via(other, vm.id, "vcsim.task.hideFromRecentTask", "false")
        await reconfig_via(other, vm.id, "vcsim.delay.RemoveAllSnapshots_Task", "")
        await s.close()


@pytest.mark.timeout(90)
async def test_a_task_past_its_timeout_is_unknown_and_the_vm_is_reread(
    vcsim: VcsimHandle, other
) -> None:
    s = await open_stream(vcsim, task_timeout_s=2)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H1_VM0")
        snap = await snapshot_via(other, vm.id, "slow")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        await reconfig_via(other, vm.id, "vcsim.task.hideFromRecentTask", "true")
        await reconfig_via(other, vm.id, "vcsim.delay.RemoveAllSnapshots_Task", "6")
        executor = s.backend.executor()
        result = await asyncio.wait_for(executor.merge(vm.id, "t-slow"), 20)
        assert result.state is TaskState.UNKNOWN, result
        assert "did not end within" in result.error and "verify on the host" in result.error
        assert "re-read from the server: 1 snapshot(s)" in result.detail
        await s.until(lambda: store.task("t-slow").state is TaskState.UNKNOWN, 10, "row UNKNOWN")

        # While it still runs on the server, a second action on the VM is refused
        # before anything is sent (the task is not in recentTask, but it is ours).
        again = await asyncio.wait_for(executor.remove_snapshot(snap, "t-again"), 10)
        assert again.state is TaskState.FAILED and "VM_BUSY" in again.error, again
        assert "nothing was sent" in again.error

        # The server finishes the one removal it got (the console follows it: the
        # VM stops being busy for it), and the feed shows the result.
        deadline = asyncio.get_running_loop().time() + 30
        while vm.id in s.backend.busy_vms:
            assert asyncio.get_running_loop().time() < deadline, "the late task never ended"
            await asyncio.sleep(0.2)
        await s.until(lambda: not store.checkpoints_of(vm.id), 10, "removed by the late task")
    finally:
        await reconfig_via(other, vm.id, "vcsim.task.hideFromRecentTask", "false")
        await reconfig_via(other, vm.id, "vcsim.delay.RemoveAllSnapshots_Task", "")
        await s.close()


@pytest.mark.timeout(40)
async def test_a_vm_busy_on_the_server_is_refused_before_sending(
    vcsim: VcsimHandle, other
) -> None:
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H1_VM1")
        snap = await snapshot_via(other, vm.id, "busy")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        await reconfig_via(other, vm.id, "vcsim.delay.CreateSnapshot_Task", "3")
        server_vm = vim.VirtualMachine(vm.id, other._stub)
        running = await asyncio.to_thread(server_vm.CreateSnapshot_Task, "by-someone-else", "",
                                          False, False)
        result = await asyncio.wait_for(s.backend.executor().merge(vm.id, "t-busy"), 10)
        assert result.state is TaskState.FAILED and "VM_BUSY" in result.error, result
        assert "nothing was sent" in result.error
        await asyncio.to_thread(WaitForTask, running)
        assert {t.name for t in server_vm.snapshot.rootSnapshotList} == {"busy"}
    finally:
        await reconfig_via(other, vm.id, "vcsim.delay.CreateSnapshot_Task", "")
        await s.close()


def server_props(other, kind: type, paths: list[str]) -> dict[str, dict]:
    content = other.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return {o._moId: {p: getattr_path(o, p) for p in paths} for o in view.view}
    finally:
        view.Destroy()


def getattr_path(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def vm_home(server_vm) -> str:
    """The moref of the datastore holding the VM's .vmx, as the server says."""
    name = server_vm.config.files.vmPathName.split("]")[0].lstrip("[")
    return next(d._moId for d in server_vm.datastore if d.name == name)


@pytest.mark.timeout(60)
async def test_same_named_datastores_in_two_datacenters(vcsim: VcsimHandle, other) -> None:
    from ventana.state.plans_vsphere import plan_remove_all

    s = await open_stream(vcsim)
    store = s.store
    try:
        luns = [lun for lun in store.luns() if lun.name == "LocalDS_0"]
        assert len(luns) == 2 and luns[0].id != luns[1].id
        for server_vm in [vim.VirtualMachine(v.id, other._stub) for v in store.vms()]:
            home = vm_home(server_vm)
            vm = store.vm(server_vm._moId)
            assert vm.lun_id == home, vm.name
            assert {d.lun_id for d in store.disks_of(vm.id)} == {home}, vm.name

        vm = vm_by_name(store, "DC1_C0_H0_VM1")
        snap = await snapshot_via(other, vm.id, "dc1")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        plan = plan_remove_all(store, vm.id, datetime.now(UTC))
        assert plan.lun_id == vm_home(vim.VirtualMachine(vm.id, other._stub))
    finally:
        await s.close()


@pytest.mark.timeout(40)
async def test_an_iso_datastore_listed_first_is_not_taken_for_the_vms(
    vcsim: VcsimHandle, other
) -> None:
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H1_VM2")
        server_vm = vim.VirtualMachine(vm.id, other._stub)
        home = vm_home(server_vm)
        iso_ds = next(d for d in store.luns() if d.id != home and d.name.startswith("LocalDS")
                      and d.cluster_id == vm.cluster_id)
        await asyncio.to_thread(WaitForTask,
                                server_vm.ReconfigVM_Task(iso_cdrom(server_vm, iso_ds.name)))
        assert server_vm.datastore[0]._moId == iso_ds.id  # the ISO's store comes first
        snap = await snapshot_via(other, vm.id, "with-iso")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        assert store.vm(vm.id).lun_id == home
        from ventana.state.plans_vsphere import plan_remove_all

        plan = plan_remove_all(store, vm.id, datetime.now(UTC))
        assert plan.lun_id == home
    finally:
        await s.close()


@pytest.mark.timeout(40)
async def test_a_removal_whose_consolidation_fails_is_removed_consolidation_failed(
    vcsim: VcsimHandle, other
) -> None:
    """The removal task errors, but the snapshots are gone and consolidationNeeded
    is set (a locked disk): not a plain failure — consolidate is the next step."""
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H1_VM3")
        snap = await snapshot_via(other, vm.id, "locked")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        await reconfig_via(other, vm.id, "vcsim.removeSnapshot.failsConsolidation",
                           "msg.snapshot.error-DISKLOCKED")
        executor = s.backend.executor()
        result = await asyncio.wait_for(executor.remove_snapshot(snap, "t-locked"), 15)
        assert result.state is TaskState.WARNING, result
        assert result.error.startswith("removed, consolidation failed")
        assert "DISKLOCKED" in result.error and "Consolidate" in result.error
        await s.until(lambda: store.vm(vm.id).consolidation_needed, 10, "flag seen")
        assert store.get(Kind.CHECKPOINT, snap) is None

        await reconfig_via(other, vm.id, "vcsim.removeSnapshot.failsConsolidation", "")
        done = await asyncio.wait_for(executor.consolidate(vm.id, "t-unlocked"), 15)
        assert done.state is TaskState.OK, done
        await s.until(lambda: not store.vm(vm.id).consolidation_needed, 10, "flag cleared")
    finally:
        await reconfig_via(other, vm.id, "vcsim.removeSnapshot.failsConsolidation", "")
        await s.close()


@pytest.mark.timeout(40)
async def test_the_first_wait_arrives_in_pieces_of_max_object_updates(
    vcsim: VcsimHandle, other
) -> None:
    """WaitOptions.maxObjectUpdates (docs/vmodl/query/PropertyCollector/WaitOptions.rst):
    the initial state comes in truncated pieces; nothing is lost between them."""
    s = await open_stream(vcsim, max_object_updates=7)
    store = s.store
    try:
        vm = vm_by_name(store, "DC1_C0_H1_VM3")
        snap = await snapshot_via(other, vm.id, "after-pieces")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap), 15, "a change after the pieces")
        session = s.backend.session
        assert session is not None and session.truncated >= 3, session and session.truncated
        total = 2 * (1 * 2 * 4)
        assert len(list(store.vms())) == total
    finally:
        await s.close()


@pytest.mark.timeout(40)
async def test_snapshot_limitations_refuse_before_anything_is_sent(
    vcsim: VcsimHandle, other
) -> None:
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC1_C0_H0_VM0")
        server_vm = vim.VirtualMachine(vm.id, other._stub)
        disk = next(d for d in server_vm.config.hardware.device
                    if isinstance(d, vim.vm.device.VirtualDisk))
        disk.backing.diskMode = "independent_persistent"
        await asyncio.to_thread(WaitForTask, server_vm.ReconfigVM_Task(vim.vm.ConfigSpec(
            deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)])))
        executor = s.backend.executor()
        tasks_before = len(other.content.taskManager.recentTask)
        refused = await asyncio.wait_for(
            executor.create_snapshot(vm.id, "t-mem", "with-memory", memory=True), 10)
        assert refused.state is TaskState.FAILED and "independent disks" in refused.error
        assert "nothing was sent" in refused.error
        assert len(other.content.taskManager.recentTask) == tasks_before
        assert server_vm.snapshot is None

        done = await asyncio.wait_for(executor.create_snapshot(vm.id, "t-disk", "disk-only"), 10)
        assert done.state is TaskState.OK, done
        assert "independent disks are not in the snapshot" in done.detail
    finally:
        await s.close()


@pytest.mark.timeout(40)
async def test_layout_ex_is_refreshed_after_a_storage_vmotion(vcsim: VcsimHandle, other) -> None:
    """A Storage vMotion pushes the VM's ``datastore``, not its layoutEx: the
    files (and the vmware.log the stun watcher follows) are read again."""
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC1_C0_H1_VM2")
        snap = await snapshot_via(other, vm.id, "before-move")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap) is not None and store.get(
            Kind.CHECKPOINT, snap).disk_path.endswith("-000001.vmdk"), 10,
            "snapshot and its layout")
        # Settled: no refresh under way, none asked for by a late snapshot push.
        for _ in range(3):
            await s.until(lambda: vm.id not in s.backend._refreshing, 10, "no refresh")
            await asyncio.sleep(0.3)
        before = store.get(Kind.CHECKPOINT, snap).size_bytes
        snapshot_file(vcsim, vm.name, 1).write_bytes(b"\0" * (2 << 20))
        await asyncio.sleep(0.5)  # nothing pushed, nothing refreshed
        assert store.get(Kind.CHECKPOINT, snap).size_bytes == before
        ref = vim.VirtualMachine(vm.id, other._stub)
        here = {d._moId for d in ref.datastore}
        dc = ref.runtime.host.parent.parent.parent  # host -> cluster -> host folder -> DC
        target = next(d for d in dc.datastore if d._moId not in here)
        await asyncio.to_thread(WaitForTask, ref.RelocateVM_Task(
            vim.vm.RelocateSpec(datastore=target)))
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap).size_bytes >= 2 << 20, 10,
                      "layoutEx re-read after the datastore change")
    finally:
        await s.close()


@pytest.mark.timeout(60)
async def test_later_changes_arrive_in_pieces_of_max_object_updates(tmp_path: Path) -> None:
    """maxObjectUpdates bounds every WaitForUpdatesEx answer (vcsim patch 0012):
    a burst of changes to many VMs comes truncated, and every change arrives."""
    handle = start_vcsim(tmp_path, quiet=True, hosts=2, vms=4)  # 8 VMs
    si = connect(handle)
    s = await open_stream(handle, max_object_updates=2)
    store = s.store
    try:
        session = s.backend.session
        assert session is not None
        await s.until(lambda: len(list(store.vms())) == 8, 15, "the initial state")
        before = -1
        while session.truncated != before:  # every piece of the initial state read
            before = session.truncated
            await asyncio.sleep(1.0)
        vms = sorted(store.vms(), key=lambda v: v.name)

        def rename_all() -> None:
            tasks = [vim.VirtualMachine(v.id, si._stub).Rename_Task(f"burst-{i}")
                     for i, v in enumerate(vms)]
            for t in tasks:
                WaitForTask(t)

        await asyncio.to_thread(rename_all)
        await s.until(lambda: sorted(v.name for v in store.vms()) ==
                      [f"burst-{i}" for i in range(8)], 15, "every renamed VM")
        assert session.truncated > before, (before, session.truncated)
    finally:
        await s.close()
        Disconnect(si)
        handle.stop()


@pytest.mark.timeout(40)
async def test_an_event_queued_while_the_stream_hands_one_out_is_not_held_for_a_wait(
    vcsim: VcsimHandle,
) -> None:
    """The executor queues events (task rows, re-read storage) with ``emit``. One
    queued while the stream was handing out the previous one (its consumer busy with
    it) must go out next, not after the pending ``WaitForUpdatesEx`` returns (up to
    ``wait_s``, 30 s here): the wake-up it set must not be cleared unseen."""
    from ventana.state.events import TaskProgress

    backend = VSphereBackend(config_for(vcsim, read_only=False, wait_s=30),
                             password=vcsim.password)
    got: asyncio.Queue = asyncio.Queue()

    async def consume() -> None:
        async for event in backend.events():
            got.put_nowait(event)
            if isinstance(event, TaskProgress) and event.message == "first":
                await asyncio.sleep(0.5)  # the consumer is busy with it

    async def next_progress() -> TaskProgress:
        while not isinstance(event := await got.get(), TaskProgress):
            pass
        return event

    task = asyncio.create_task(consume())
    try:
        async with asyncio.timeout(15):
            while getattr(await got.get(), "state", None) is not LinkState.CONNECTED:
                pass
        await asyncio.sleep(1.0)  # the first wait is over; the stream sits in a 30 s one
        backend.emit(TaskProgress("t-1", 1.0, "first"))
        assert (await asyncio.wait_for(next_progress(), 5)).message == "first"
        backend.emit(TaskProgress("t-1", 2.0, "second"))  # while the consumer is busy
        assert (await asyncio.wait_for(next_progress(), 5)).message == "second"
    finally:
        await backend.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


@pytest.mark.timeout(40)
async def test_a_storage_read_folded_in_before_a_removal_does_not_bring_it_back(
    vcsim: VcsimHandle, other
) -> None:
    """A storage re-read folded into the view (queued events) while the watcher's
    answer removing the snapshot is already waiting: the events leave in the
    order the view changed, so the removal is the last word. (Seen once in CI:
    the re-mapped checkpoint overtook by its removal stayed on screen.)"""
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC1_C0_H1_VM1")
        first = await snapshot_via(other, vm.id, "left-behind")
        await s.until(lambda: (c := store.get(Kind.CHECKPOINT, first)) is not None
                      and bool(c.disk_path), 10, "the snapshot with its files (layoutEx)")
        # What follows blocks the event loop on purpose, so the watcher's answer
        # (the removal) is waiting when the storage read is folded in.
        WaitForTask(vim.VirtualMachine(vm.id, other._stub).RemoveAllSnapshots_Task())
        time.sleep(1.0)  # vcsim hands changes out every 250 ms: the answer is back
        session = s.backend.session
        assert session is not None
        props = session.refresh_storage(vm.id)  # layoutEx without the snapshot's files
        s.backend.apply_read("VirtualMachine", vm.id, props, ["layoutEx"])
        await s.until(lambda: store.get(Kind.CHECKPOINT, first) is None, 10, "the removal")
        await asyncio.sleep(1.0)
        assert store.get(Kind.CHECKPOINT, first) is None, "a stale re-mapping came after"
    finally:
        await s.close()
