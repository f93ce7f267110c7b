"""Backup facts read from vSphere (issue 15), through the real backend and vcsim.

Each fact is served both ways by the peer — set through ReconfigVM_Task as an
operator (or a backup product) would, or through patch 0010's test controls
where vcsim has no other way (VMware Tools states) — and each finding is
shown raised, cleared and, where vcsim can leave the property unset,
"unknown" (no finding):

- independent disks (``diskMode`` ``independent_*``) and physical-mode RDMs
  (``RawDiskMappingVer1BackingInfo.compatibilityMode == physicalMode``) →
  SNAPSHOT_SKIPS_DISKS; the create-snapshot plan blocks on the RDM before
  anything is sent and the executor still refuses;
- ``guest.toolsRunningStatus`` / ``guest.toolsVersionStatus2`` → TOOLS_NOT_READY
  (vcsim leaves the version status unset until told: unknown);
- ``config.changeTrackingEnabled`` → CBT_OFF (unset on a new vcsim VM: unknown;
  patch 0010 makes vcsim push its changes, as vCenter does);
- the lean first read (ElementTree) and pyvmomi's give the same entities.
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
from test_vsphere_backend import Stream, config_for, connect  # the same folder
from test_vsphere_bench import first_answer, pyvmomi_read, vm_props

from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.backends.vsphere import session as vs_session
from ventana.backends.vsphere.lean import (
    LeanHardware,
    LeanVirtualPCIPassthrough,
    LeanVirtualSCSIController,
)
from ventana.state import findings as F
from ventana.state.model import VM, Severity, TaskState
from ventana.state.plans_vsphere import plan_create_snapshot, plan_remove_all
from ventana.state.store import Store

pytestmark = pytest.mark.timeout(60)
SIZE = {"clusters": 1, "hosts": 1, "standalone_hosts": 0, "vms": 4, "datastores": 1}


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, **SIZE)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def other(vcsim: VcsimHandle):
    si = connect(vcsim)
    yield si
    Disconnect(si)


# -- the server side: what an operator or a backup product changes ----------------------
def server_vm(si, name: str) -> vim.VirtualMachine:
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                      [vim.VirtualMachine], True)
    try:
        return next(v for v in view.view if v.name == name)
    finally:
        view.Destroy()


def reconfigure(vm: vim.VirtualMachine, **spec: object) -> None:
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(**spec)))


def edit(vm: vim.VirtualMachine, device: vim.vm.device.VirtualDevice, op: str = "edit",
         file_op: str | None = None) -> None:
    reconfigure(vm, deviceChange=[vim.vm.device.VirtualDeviceSpec(
        operation=op, fileOperation=file_op, device=device)])


def first_disk(vm: vim.VirtualMachine) -> vim.vm.device.VirtualDisk:
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


def set_disk_mode(vm: vim.VirtualMachine, mode: str) -> None:
    disk = first_disk(vm)
    disk.backing.diskMode = mode
    edit(vm, disk)


def add_physical_rdm(vm: vim.VirtualMachine) -> None:
    """A physical-mode RDM (its mapping file in the VM's folder), on unit 3 of the
    first SCSI controller."""
    ctrl = next(d for d in vm.config.hardware.device
                if isinstance(d, vim.vm.device.VirtualSCSIController))
    home = vm.config.files.vmPathName.rsplit("/", 1)[0]
    edit(vm, vim.vm.device.VirtualDisk(
        key=-1, controllerKey=ctrl.key, unitNumber=3, capacityInKB=1024,
        backing=vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
            fileName=f"{home}/lun7-rdmp.vmdk", compatibilityMode="physicalMode",
            diskMode="independent_persistent", deviceName="/vmfs/devices/disks/naa.6000c29")),
        "add", "create")


def remove_rdms(vm: vim.VirtualMachine) -> None:
    for d in vm.config.hardware.device:
        if isinstance(getattr(d, "backing", None),
                      vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo):
            edit(vm, d, "remove")


def add_shared_bus(vm: vim.VirtualMachine) -> None:
    edit(vm, vim.vm.device.ParaVirtualSCSIController(key=-2, busNumber=1,
                                                     sharedBus="physicalSharing"), "add")


def add_passthrough(vm: vim.VirtualMachine) -> None:
    edit(vm, vim.vm.device.VirtualPCIPassthrough(
        key=-3, backing=vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo(
            id="0000:03:00.0", deviceId="1db6", systemId="5e8f-host", vendorId=4318,
            deviceName="GPU")), "add")


def set_tools(vm: vim.VirtualMachine, running: str, version: str) -> None:
    """Patch 0010's controls (vcsim has no guest): guest.toolsRunningStatus and
    guest.toolsVersionStatus2 as VMware Tools would report them."""
    reconfigure(vm, extraConfig=[
        vim.option.OptionValue(key="vcsim.guest.toolsRunningStatus", value=running),
        vim.option.OptionValue(key="vcsim.guest.toolsVersionStatus2", value=version)])


# -- the client side -----------------------------------------------------------------------
async def open_stream(handle: VcsimHandle) -> Stream:
    backend = VSphereBackend(config_for(handle, read_only=False), password=handle.password)
    s = Stream(backend, handle.password)
    await s.until(lambda: s.state() is not None and s.state().value == "connected", 15,
                  "connected")
    return s


def vm_named(store: Store, name: str) -> VM:
    [vm] = [v for v in store.vms() if v.name == name]
    return vm


def codes(engine: F.FindingsEngine, vm: VM) -> dict[str, F.LiveFinding]:
    return {f.code: f for f in engine.for_target(f"vm:{vm.id}")}


async def test_each_fact_raises_clears_and_stays_unknown(vcsim: VcsimHandle, other) -> None:
    name = "DC0_C0_H0_VM0"
    target = server_vm(other, name)
    s = await open_stream(vcsim)
    engine = F.FindingsEngine(s.store).attach()
    try:
        await s.until(lambda: any(v.name == name for v in s.store.vms()), 10, "the VM")
        vm = vm_named(s.store, name)
        # Unknown: vcsim sets neither changeTrackingEnabled nor toolsVersionStatus2.
        assert vm.cbt_enabled is None and vm.tools_version_status is None
        assert vm.independent_disks == () and vm.physical_rdms == ()  # read: none
        assert vm.template is False
        assert vm.fault_tolerance is None  # vcsim leaves runtime.faultToleranceState unset
        assert not {F.SNAPSHOT_SKIPS_DISKS, F.TOOLS_NOT_READY, F.CBT_OFF} & set(codes(engine, vm))

        # Raised.
        await asyncio.to_thread(set_disk_mode, target, "independent_nonpersistent")
        await asyncio.to_thread(add_physical_rdm, target)
        await asyncio.to_thread(reconfigure, target, changeTrackingEnabled=False)
        await asyncio.to_thread(set_tools, target, "guestToolsNotRunning",
                                "guestToolsNeedUpgrade")
        await s.until(lambda: {F.SNAPSHOT_SKIPS_DISKS, F.TOOLS_NOT_READY, F.CBT_OFF}
                      <= set(codes(engine, vm_named(s.store, name))), 15,
                      "findings raised")
        vm = vm_named(s.store, name)
        disk_label = first_disk(target).deviceInfo.label
        [rdm_label] = [d.deviceInfo.label for d in target.config.hardware.device
                       if isinstance(getattr(d, "backing", None),
                                     vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo)]
        assert vm.independent_disks == (disk_label,) and vm.physical_rdms == (rdm_label,)
        assert vm.cbt_enabled is False and vm.tools_version_status == "guestToolsNeedUpgrade"
        found = codes(engine, vm)
        skips = found[F.SNAPSHOT_SKIPS_DISKS]
        assert skips.severity is Severity.WARNING
        assert disk_label in skips.message and f"{rdm_label} (physical RDM)" in skips.message
        tools = found[F.TOOLS_NOT_READY]
        assert tools.severity is Severity.WARNING
        assert "not running" in tools.message and "guestToolsNeedUpgrade" in tools.message
        assert "quiesced" in tools.message
        assert found[F.CBT_OFF].severity is Severity.INFO

        # The plans say so before anything is sent; the executor still refuses.
        now = datetime.now(UTC)
        create = plan_create_snapshot(s.store, vm.id, now)
        blocking = {f.code: f.message for f in create.findings if f.severity is Severity.BLOCKING}
        assert f"{rdm_label} is a physical-mode RDM" in blocking["SNAPSHOT_UNSUPPORTED"]
        remove = plan_remove_all(s.store, vm.id, now)
        assert any(f.code == "INDEPENDENT_DISKS" and f.severity is Severity.WARNING
                   for f in remove.findings)
        tasks_before = len(other.content.taskManager.recentTask)
        refused = await asyncio.wait_for(
            s.backend.executor().create_snapshot(vm.id, "t-rdm", "with-rdm"), 10)
        assert refused.state is TaskState.FAILED and "physical-mode RDM" in refused.error
        assert len(other.content.taskManager.recentTask) == tasks_before

        # Cleared.
        await asyncio.to_thread(remove_rdms, target)
        await asyncio.to_thread(set_disk_mode, target, "persistent")
        await asyncio.to_thread(reconfigure, target, changeTrackingEnabled=True)
        await asyncio.to_thread(set_tools, target, "guestToolsRunning", "guestToolsCurrent")
        await s.until(lambda: not {F.SNAPSHOT_SKIPS_DISKS, F.TOOLS_NOT_READY, F.CBT_OFF}
                      & set(codes(engine, vm_named(s.store, name))), 15, "findings cleared")
        vm = vm_named(s.store, name)
        assert (vm.independent_disks, vm.physical_rdms, vm.cbt_enabled) == ((), (), True)
        assert vm.tools_version_status == "guestToolsCurrent"
        create = plan_create_snapshot(s.store, vm.id, datetime.now(UTC))
        assert not {"SNAPSHOT_UNSUPPORTED", "INDEPENDENT_DISKS"} & {
            f.code for f in create.findings}

        # Back to unknown: an unset version status is "not reported", not "no Tools".
        await asyncio.to_thread(set_tools, target, "guestToolsNotRunning", "")
        await s.until(lambda: vm_named(s.store, name).tools_version_status is None, 10,
                      "version status unset")
        assert F.TOOLS_NOT_READY not in codes(engine, vm_named(s.store, name))
    finally:
        engine.detach()
        await s.close()


async def test_shared_bus_blocks_the_create_plan_and_the_executor(
    vcsim: VcsimHandle, other
) -> None:
    name = "DC0_C0_H0_VM1"
    target = server_vm(other, name)
    s = await open_stream(vcsim)
    try:
        await asyncio.to_thread(add_shared_bus, target)
        await s.until(lambda: bool(vm_named(s.store, name).shared_buses), 15, "shared bus")
        vm = vm_named(s.store, name)
        [label] = [d.deviceInfo.label for d in target.config.hardware.device
                   if getattr(d, "sharedBus", "noSharing") != "noSharing"]
        assert vm.shared_buses == (f"{label} (physicalSharing)",)
        plan = plan_create_snapshot(s.store, vm.id, datetime.now(UTC))
        [unsupported] = [f for f in plan.findings if f.code == "SNAPSHOT_UNSUPPORTED"]
        assert unsupported.severity is Severity.BLOCKING and label in unsupported.message
        refused = await asyncio.wait_for(
            s.backend.executor().create_snapshot(vm.id, "t-bus", "shared"), 10)
        assert refused.state is TaskState.FAILED and "shares its SCSI bus" in refused.error
    finally:
        await s.close()


def test_lean_and_pyvmomi_reads_give_the_same_facts(vcsim: VcsimHandle, other) -> None:
    name = "DC0_C0_H0_VM2"
    target = server_vm(other, name)
    set_disk_mode(target, "independent_persistent")
    add_physical_rdm(target)
    add_shared_bus(target)
    add_passthrough(target)
    reconfigure(target, changeTrackingEnabled=True)
    set_tools(target, "guestToolsRunning", "guestToolsSupportedOld")
    session = vs_session.Session(vcsim.host, vcsim.port, vcsim.user, vcsim.password,
                                 ca_file=vcsim.ca_path, max_object_updates=9)
    try:
        lean = first_answer(session)  # as the backend reads it
        full = pyvmomi_read(session)  # every property through pyvmomi
    finally:
        session.close()
    vm_update = next(u for u in lean if u.assigned.get("name") == name)
    assert vm_props([vm_update]) == vm_props([u for u in full if u.moid == vm_update.moid])
    hardware = vm_update.assigned["config.hardware"]
    assert isinstance(hardware, LeanHardware)
    assert any(isinstance(d, LeanVirtualSCSIController) for d in hardware.device)
    assert any(isinstance(d, LeanVirtualPCIPassthrough) for d in hardware.device)

    def entities(objects: list[vs_session.ObjectUpdate]) -> list[object]:
        backend = VSphereBackend(VSphereConfig(host="unused"), password="unused")
        return sorted(backend._apply(objects, full=True), key=repr)

    mapped = entities(lean)
    assert mapped == entities(full)
    [vm] = [e.entity for e in mapped  # type: ignore[attr-defined]
            if isinstance(e.entity, VM) and e.entity.name == name]  # type: ignore[attr-defined]
    assert vm.independent_disks and vm.physical_rdms and vm.shared_buses
    assert vm.passthrough_devices
    assert vm.cbt_enabled is True and vm.tools_version_status == "guestToolsSupportedOld"
