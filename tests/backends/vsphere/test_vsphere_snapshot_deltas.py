"""Snapshot delta disks as vCenter makes them (vcsim patch 0014), and what the
console plans from them: the consolidation space estimate and the NO_SPACE /
LOW_SPACE checks on the datastore of the delta files.

A snapshot freezes each disk and the VM runs on a new delta beside it
(vSphere documentation, "Snapshot Files"); ``layoutEx.snapshot[].disk`` is the
chain "when the snapshot was taken" (pyvmomi
``docs/vim/vm/FileLayoutEx/SnapshotLayout.rst``); removing it commits the delta.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime

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
from test_vsphere_backend import connect, reconfig_via, snapshot_via, vm_by_name
from test_vsphere_vcenter_fidelity import open_stream

from ventana.state.derived import LUN_CRITICAL_PCT
from ventana.state.model import GB, Kind
from ventana.state.plans_vsphere import ESTIMATES, ServerEstimate, plan_remove_all

SIZE = {"datacenters": 1, "clusters": 1, "hosts": 2, "standalone_hosts": 0, "vms": 3,
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


@pytest.fixture(autouse=True)
def no_estimates() -> Iterator[None]:
    ESTIMATES.clear()
    yield
    ESTIMATES.clear()


def server_vm(si, name: str) -> vim.VirtualMachine:
    view = si.content.viewManager.CreateContainerView(
        si.content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(v for v in view.view if v.name == name)
    finally:
        view.Destroy()


def disks(vm: vim.VirtualMachine) -> list[vim.vm.device.VirtualDisk]:
    return [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]


def chain_names(layout: vim.vm.FileLayoutEx, disk_layout) -> list[str]:
    names = {f.key: f.name for f in layout.file}
    out = []
    for unit in disk_layout.chain:
        descriptor = [names[k] for k in unit.fileKey if not names[k].endswith(
            ("-flat.vmdk", "-sesparse.vmdk"))]
        out.append(descriptor[0])
    return out


def test_a_snapshot_runs_the_vm_on_a_delta_and_removal_commits_it(other) -> None:
    vm = server_vm(other, "DC0_C0_H0_VM0")
    [disk] = disks(vm)
    base = disk.backing.fileName
    WaitForTask(vm.CreateSnapshot_Task("one", "", False, False))
    one = vm.snapshot.currentSnapshot
    WaitForTask(vm.CreateSnapshot_Task("two", "", False, False))
    two = vm.snapshot.currentSnapshot
    [disk] = disks(vm)
    d1, d2 = (base.replace(".vmdk", f"-00000{n}.vmdk") for n in (1, 2))
    assert disk.backing.fileName == d2 and disk.backing.parent.fileName == d1
    assert disk.backing.parent.parent.fileName == base
    vm.RefreshStorageInfo()
    layout = vm.layoutEx
    [running] = layout.disk
    assert chain_names(layout, running) == [base, d1, d2]  # base first, running point last
    frozen = {s.key._moId: chain_names(layout, s.disk[0]) for s in layout.snapshot}
    assert frozen == {one._moId: [base], two._moId: [base, d1]}
    types = {f.name: f.type for f in layout.file}
    assert types[d2.replace(".vmdk", "-sesparse.vmdk")] == "diskExtent"

    # The guest writes 5 MiB: the running delta grows (seen after RefreshStorageInfo).
    reconfig = vim.vm.ConfigSpec(extraConfig=[
        vim.option.OptionValue(key="vcsim.guest.writeBytes", value=str(5 << 20))])
    WaitForTask(vm.ReconfigVM_Task(reconfig))
    vm.RefreshStorageInfo()
    sizes = {f.name: f.size for f in vm.layoutEx.file}
    assert sizes[d2.replace(".vmdk", "-sesparse.vmdk")] == 5 << 20

    # Removing the current snapshot commits its delta (d2) into d1: the VM runs on d1.
    WaitForTask(two.RemoveSnapshot_Task(removeChildren=False))
    [disk] = disks(vm)
    assert disk.backing.fileName == d1 and disk.backing.parent.fileName == base
    sizes = {f.name: f.size for f in vm.layoutEx.file}
    assert d2 not in sizes and sizes[d1.replace(".vmdk", "-sesparse.vmdk")] == 5 << 20
    WaitForTask(vm.RemoveAllSnapshots_Task())
    [disk] = disks(vm)
    assert disk.backing.fileName == base and disk.backing.parent is None
    assert not any("-00000" in f.name for f in vm.layoutEx.file)


def test_a_held_consolidation_leaves_the_deltas_for_consolidate(other) -> None:
    vm = server_vm(other, "DC0_C0_H0_VM1")
    [disk] = disks(vm)
    base = disk.backing.fileName
    WaitForTask(vm.CreateSnapshot_Task("held", "", False, False))
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(
        key="vcsim.removeSnapshot.leavesConsolidationNeeded", value="true")])))
    WaitForTask(vm.RemoveAllSnapshots_Task())
    assert vm.snapshot is None and vm.runtime.consolidationNeeded
    [disk] = disks(vm)
    assert disk.backing.fileName != base  # the delta is still there
    WaitForTask(vm.ConsolidateVMDisks_Task())
    [disk] = disks(vm)
    assert disk.backing.fileName == base and not vm.runtime.consolidationNeeded


@pytest.mark.timeout(90)
async def test_the_estimate_and_space_checks_follow_the_delta_files(
    vcsim: VcsimHandle, other
) -> None:
    """A VM whose second disk lives on another datastore than its home: the guest
    writes more there than that datastore has free. vCenter's estimate names that
    datastore; the plan's NO_SPACE names it too — and not the VM's home, which
    holds only the first disk's small delta. Then LOW_SPACE for a delta that fits
    but leaves that datastore under the critical level."""
    s = await open_stream(vcsim)
    store = s.store
    try:
        vm = vm_by_name(store, "DC0_C0_H1_VM2")
        ref = vim.VirtualMachine(vm.id, other._stub)
        home = vm.lun_id
        far = next(lun for lun in store.luns() if lun.id != home)
        await s.backend.refresh_datastores([far.id])
        await s.until(lambda: store.lun(far.id).free_bytes > 0, 10, "datastore read")
        free = store.lun(far.id).free_bytes
        # A second disk on the far datastore, large enough to hold more than its free space.
        [first] = disks(ref)
        data = vim.vm.device.VirtualDisk(
            key=-1, controllerKey=first.controllerKey, unitNumber=first.unitNumber + 1,
            capacityInKB=(free + 64 * GB) // 1024,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                fileName=f"[{far.name}] {vm.name}-data.vmdk", diskMode="persistent",
                thinProvisioned=True))
        await asyncio.to_thread(WaitForTask, ref.ReconfigVM_Task(vim.vm.ConfigSpec(
            deviceChange=[vim.vm.device.VirtualDeviceSpec(
                operation="add", fileOperation="create", device=data)])))
        await s.backend.refresh_datastores([far.id, home])  # vcsim counted the new disk's size
        snap = await snapshot_via(other, vm.id, "before-load")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap) is not None, 10, "snapshot")

        written = free + 8 * GB  # the guest writes more than the far datastore has free
        await reconfig_via(other, vm.id, "vcsim.guest.writeBytes", str(written))
        await s.backend.refresh_vm_storage(vm.id)  # layoutEx is not pushed
        await s.until(lambda: any(d.lun_id == far.id and d.parent_path and d.size_bytes >= written
                                  for d in store.disks_of(vm.id)), 10, "the far delta's size")
        near = [d for d in store.disks_of(vm.id) if d.lun_id == home and d.parent_path]
        # capped at disk1's capacity (plus its small descriptor)
        assert near and all(d.size_bytes <= d.max_bytes + 4096 for d in near), near

        executor = s.backend.executor()
        by_lun = await executor.estimate_consolidation(vm.id)
        assert by_lun[far.id] >= written  # the delta merges into data.vmdk, on the far store
        assert by_lun.get(home, 0) < written
        now = datetime.now(UTC)
        ESTIMATES[vm.id] = ServerEstimate(
            by_lun, frozenset(c.id for c in store.checkpoints_of(vm.id)), now)
        plan = plan_remove_all(store, vm.id, now)
        no_space = [f for f in plan.findings if f.code == "NO_SPACE"]
        assert len(no_space) == 1 and far.name in no_space[0].message, plan.findings
        assert plan.lun_id == far.id and plan.space_needed >= written
        ESTIMATES.clear()  # without the server's estimate: from the delta files alone
        plan = plan_remove_all(store, vm.id, now)
        assert [f.code for f in plan.findings if f.code == "NO_SPACE"] == ["NO_SPACE"]
        assert plan.lun_id == far.id

        # The removal commits the deltas; a new snapshot, a write that fits but leaves
        # the far datastore under the critical level: LOW_SPACE, not NO_SPACE.
        await asyncio.to_thread(WaitForTask, ref.RemoveAllSnapshots_Task())
        await s.until(lambda: not store.checkpoints_of(vm.id), 10, "snapshots removed")
        snap = await snapshot_via(other, vm.id, "second")
        await s.until(lambda: store.get(Kind.CHECKPOINT, snap) is not None, 10, "snapshot")
        await s.backend.refresh_datastores([far.id])
        lun = store.lun(far.id)
        margin = int(lun.total_bytes * LUN_CRITICAL_PCT / 200)  # half the critical level
        written = max(1, lun.free_bytes - margin)
        await reconfig_via(other, vm.id, "vcsim.guest.writeBytes", str(written))
        await s.backend.refresh_vm_storage(vm.id)
        await s.until(lambda: any(d.lun_id == far.id and d.parent_path and d.size_bytes >= written
                                  for d in store.disks_of(vm.id)), 10, "the new delta's size")
        plan = plan_remove_all(store, vm.id, datetime.now(UTC))
        codes = {(f.code, far.name in f.message) for f in plan.findings}
        assert ("LOW_SPACE", True) in codes and ("NO_SPACE", True) not in codes, plan.findings
    finally:
        await s.close()
