"""The VM rebuild workflow on Hyper-V, through the WinRM/PSRP test peer.

The runner (backends/rebuild_runner.py) drives HyperVExecutor's six steps;
the peer's model is the host: the capture is read with Get-VM,
Get-VMHardDiskDrive, Get-VMNetworkAdapter(+Vlan), Get-VMFirmware…; the merge
stops the VM and removes its checkpoints; the create copies the disks with
Convert-VHD and builds a new VM with New-VM and its settings; the boot order
is checked before Start-VM; the old VM is renamed and kept Off. Guest
services are not readable from the host: the comparison is skipped and
flagged, never claimed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from peers.winrm.fixture import PeerHandle
from peers.winrm.hyperv import ClusterModel
from test_hyperv_backend import Feed, backend_for, one_peer  # noqa: F401 - the fixture

from ventana.backends.actions import ActionRunner
from ventana.backends.base import ReadOnlyError
from ventana.backends.hyperv import commands as c
from ventana.backends.hyperv.backend import HyperVBackend, HyperVExecutor
from ventana.backends.hyperv.rebuild import boot_entries
from ventana.backends.rebuild_runner import execute_rebuild  # noqa: F401 - registers "rebuild"
from ventana.state.actionlog import ActionLog
from ventana.state.events import LinkState, TaskProgress
from ventana.state.model import VM, FinalState, PowerState, TaskState
from ventana.state.rebuild import RebuildState, RebuildStore, StepState
from ventana.state.store import Store

TB = 1024**4


def two_disk_gen2(model: ClusterModel, *, checkpoints: bool = True) -> VM:
    """A running Gen2 VM with two disks and checkpoints; its CSV given 2 TB of room."""
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if v.generation == 2 and len(v.disk_ids) >= 2
              and bool(model.chains.get(v.id)) is checkpoints
              and v.power is PowerState.RUNNING and v.replication.value == "disabled")
    return room(model, vm)


def room(model: ClusterModel, vm: VM) -> VM:
    """Give the VM's CSV 2 TB more, so the merge and the copy fit."""
    with model.lock:
        lun = model.luns[vm.lun_id]
        model.luns[lun.id] = dataclasses.replace(lun, total_bytes=lun.total_bytes + 2 * TB,
                                                 free_bytes=lun.free_bytes + 2 * TB)
        model.changed()
    return vm


async def connected(backend: HyperVBackend, store: Store) -> Feed:
    feed = Feed(backend, store)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20,
                     "connected")
    return feed


async def run_rebuild(backend: HyperVBackend, store: Store, db: Path, vm: VM):  # type: ignore[no-untyped-def]
    log = ActionLog.open(db)
    try:
        runner = ActionRunner(store, backend, log)
        plan = runner.plan("rebuild", vm.id, db=str(db))
        assert not plan.blocking, [f.code for f in plan.blocking]
        result = await runner.execute(plan, plan.target_name)
        rows = log.rows()
    finally:
        log.close()
    rs = RebuildStore.open(db)
    wf = rs.latest(vm.id)
    rs.close()
    return plan, result, wf, rows


@pytest.mark.timeout(60)
async def test_full_rebuild_through_the_endpoint(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path,  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = two_disk_gen2(model)
    model.system_drive[vm.id] = 1  # the campaign's incident: the OS disk is not the first
    model.slots[vm.id] = [("SCSI", 0, 0), ("SCSI", 1, 0)]  # ... and on a second controller
    old_nics = [dict(n) for n in model.nics_of(vm)]
    old_slots = [model.slot(vm, n) for n in range(len(vm.disk_ids))]
    template = model.firmware_of(vm)["template"]
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = await connected(backend, store)
    _plan, result, wf, rows = await run_rebuild(backend, store, tmp_path / "a.db", vm)

    # Guest services cannot be read from the host: skipped and flagged, not claimed.
    assert result.state is TaskState.WARNING, result.error
    assert "guest services not compared" in result.error
    assert wf.state is RebuildState.DONE
    assert wf.step("services").state is StepState.SKIPPED
    assert all(wf.step(n).state is StepState.DONE
               for n in ("capture", "merge", "create", "verify_boot", "keep_old"))
    cap = wf.capture
    assert cap["generation"] == 2 and cap["vcpus"] == vm.vcpus
    assert cap["memory_mb"] == vm.memory_mb and cap["guest_reachable"] is False
    assert "PowerShell Direct" in cap["services_note"]
    assert [n["mac"] for n in cap["nics"]] == [n["mac"] for n in old_nics]
    assert cap["nics"][0]["ipv4"][0] == {
        "address": old_nics[0]["ip"], "prefix": 24, "gateway": f"10.20.{old_nics[0]['vlan']}.1",
        "dns": ["10.20.10.11", "10.20.10.12"], "dhcp": False}
    [system] = [d for d in cap["disks"] if d["system"]]
    assert (system["controller_type"], system["controller_number"],
            system["controller_location"]) == old_slots[1]

    # The new VM, as the host has it.
    new = model.vms[wf.new_vm_id]
    assert (new.name, new.generation, new.vcpus, new.memory_mb) == (
        vm.name, 2, vm.vcpus, vm.memory_mb)
    assert new.power is PowerState.RUNNING and new.config_version == model.host_version
    assert sorted(model.slot(new, n) for n in range(len(new.disk_ids))) == sorted(old_slots)
    assert [(n["name"], n["switch"], n["vlan"], n["mac"], n["dynamic"])
            for n in model.nics_of(new)] == [
        (n["name"], n["switch"], n["vlan"], n["mac"], False) for n in old_nics]
    fw = model.firmware_of(new)
    first_disk = next(e for e in fw["order"] if e[0] == "disk")
    assert model.slot(new, first_disk[1]) == old_slots[1]  # boots the system disk
    assert fw["template"] == template
    assert new.id in model.clustered and model.group_names[new.id] != vm.name
    for disk_id in new.disk_ids:
        assert model.disks[disk_id].path.startswith(cap["new_folder"])
        assert model.disks[disk_id].parent_path is None  # a flat copy

    # The old VM: merged, Off, renamed, no automatic start.
    old = model.vms[vm.id]
    assert old.name == wf.old_vm_name and old.power is PowerState.OFF
    assert model.chains[vm.id] == [] and model.auto_start[vm.id] == "Nothing"

    # Every step logged; the mutating cmdlets are those of the contract.
    steps = [r.action for r in rows if r.action.startswith("rebuild.")]
    assert {"rebuild.capture", "rebuild.merge", "rebuild.create", "rebuild.verify_boot",
            "rebuild.keep_old"} <= set(steps)
    sent = {x for x in model.calls if x in c.MUTATING_CMDLETS}
    assert model.scsi_controllers[new.id] == 2
    assert {"Stop-VM", "Remove-VMSnapshot", "Convert-VHD", "New-VM", "Add-VMHardDiskDrive",
            "Add-VMScsiController",
            "Add-VMNetworkAdapter", "Set-VMFirmware", "Start-VM", "Rename-VM",
            "Add-ClusterVirtualMachineRole"} <= sent
    await feed.until(lambda: store.vm(wf.new_vm_id) is not None, 10, "the new VM in the view")
    await feed.close()


@pytest.mark.timeout(60)
async def test_wrong_boot_device_stops_before_start_with_the_known_state(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path,  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = two_disk_gen2(model)
    model.prepend_boot_entries = True  # the host puts the last attached disk first
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = await connected(backend, store)
    _plan, result, wf, rows = await run_rebuild(backend, store, tmp_path / "b.db", vm)
    assert result.state is TaskState.FAILED
    assert result.final_state is FinalState.FAILED
    assert "INACCESSIBLE_BOOT_DEVICE" in result.error and "What to do" in result.error
    step = wf.step("verify_boot")
    assert step.state is StepState.FAILED and step.manual
    assert wf.state is RebuildState.FAILED
    assert wf.step("keep_old").state is StepState.PENDING
    new = model.vms[wf.new_vm_id]
    assert new.power is PowerState.OFF  # never started
    assert "Start-VM" not in model.calls
    old = model.vms[vm.id]
    assert old.name == vm.name and old.power is PowerState.OFF  # intact fallback
    [row] = [r for r in rows if r.action == "rebuild.verify_boot"]
    assert row.outcome == "failed"
    await feed.close()


@pytest.mark.timeout(30)
async def test_read_only_session_sends_no_rebuild_step(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = two_disk_gen2(model)
    backend = backend_for(handle)
    store = Store()
    feed = await connected(backend, store)
    ex = HyperVExecutor(backend)
    for call in (lambda: ex.capture(vm.id, "t"),
                 lambda: ex.rebuild_merge(vm.id, "t", to_last_parent=False),
                 lambda: ex.create_from_capture({"vm_id": vm.id}, "t"),
                 lambda: ex.verify_boot(vm.id, {}, "t"),
                 lambda: ex.retire_old(vm.id, "x-old", "t")):
        with pytest.raises(ReadOnlyError):
            await call()
    with pytest.raises(ReadOnlyError):
        await backend.sessions()[0].run(c.stop_vm(vm.id))
    assert not set(model.calls) & c.MUTATING_CMDLETS
    await feed.close()


def test_boot_entries_read_both_shapes() -> None:
    rows = [
        {"BootType": "Drive", "Device": "HardDiskDrive (Name = 'Hard Drive on SCSI controller "
                                        "number 0 at location 1', VMName = 'x') [Id = 'y']"},
        {"BootType": "Drive", "Device": {"ControllerType": 1, "ControllerNumber": 0,
                                         "ControllerLocation": 0}},
        {"BootType": "Network", "Device": "VMNetworkAdapter (Name = 'LAN', VMName = 'x')"},
        {"BootType": "File", "Description": "Windows Boot Manager", "FirmwarePath": "\\EFI"},
    ]
    assert boot_entries(rows) == [
        {"type": "HardDiskDrive", "controller_type": "SCSI", "controller_number": 0,
         "controller_location": 1},
        {"type": "HardDiskDrive", "controller_type": "SCSI", "controller_number": 0,
         "controller_location": 0},
        {"type": "NetworkAdapter", "name": "LAN"},
        {"type": "File", "description": "Windows Boot Manager", "firmware_path": "\\EFI"},
    ]


def test_commands_md_documents_every_rebuild_command() -> None:
    doc = (Path(c.__file__).parent / "COMMANDS.md").read_text()
    v, n = "d3b0c9b2-8f2e-4a53-9d3c-6a7f0f6b2a11", "e7a1f0c4-2b6d-4c1e-9f3a-5d8b7c6a4e21"
    p = "C:\\ClusterStorage\\Volume1\\app-01\\app-01.vhdx"
    folder = "C:\\ClusterStorage\\Volume1\\app-01-rebuilt-20250106"
    q = folder + "\\app-01.vhdx"
    reads = [c.get_vm_config(v), c.get_vm_drives(v), c.get_vhds([p]), c.get_vm_nics(v),
             c.get_nic_vlan(v, "Network Adapter"), c.get_firmware(v), c.get_boot_order(v),
             c.get_bios(v), c.get_vm_checkpoints(v), c.get_vm_integration(v),
             c.get_vm_heartbeat(n), c.get_guest_network()]
    writes = [c.stop_vm(v), c.stop_vm(v, turn_off=True), c.remove_all_snapshots(v),
              c.remove_snapshot("5a6b7c8d-1e2f-4a3b-8c9d-0e1f2a3b4c5d"), c.convert_vhd(p, q),
              c.new_vm("app-01", 2, 8 * 1024**3, folder), c.set_processor(n, 4),
              c.set_memory(n, 8 * 1024**3, False), c.remove_nics(n),
              c.add_nic(n, "Network Adapter", "vSwitch-LAN", "00155D0A0B0C"),
              c.set_nic_vlan(n, "Network Adapter", 20), c.add_scsi_controller(n),
              c.add_drive(n, "SCSI", 0, 1, q),
              c.set_secure_boot(n, "MicrosoftWindows"),
              c.add_cluster_role(n, "app-01-rebuilt-20250106"), c.start_vm(n),
              c.rename_vm(v, "app-01-old-20250106"), c.set_no_autostart(v)]
    for command in reads:
        assert command.as_powershell() in doc, command.as_powershell()
        sent = {n for x in command.pipeline() for n in x.commands}
        assert not command.mutating and sent <= c.READ_CMDLETS
    for command in writes:
        assert command.as_powershell() in doc, command.as_powershell()
        sent = {n for x in command.pipeline() for n in x.commands}
        assert command.mutating and sent & c.MUTATING_CMDLETS


@pytest.mark.timeout(40)
async def test_merge_to_the_last_parent_keeps_the_newest_checkpoint(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    """A replicating VM: Stop-VM, then every checkpoint but the newest, one by one by Id."""
    model, handle = one_peer
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if len(model.chains.get(v.id, [])) >= 3 and v.power is PowerState.RUNNING)
    newest = model.chains[vm.id][-1]
    backend = backend_for(handle, read_only=False)
    feed = await connected(backend, Store())
    result = await backend.executor().rebuild_merge(vm.id, "lp-1", to_last_parent=True)
    assert result.state is TaskState.OK, result.error
    assert result.data["checkpoints_left"] == 1 and model.chains[vm.id] == [newest]
    assert model.vms[vm.id].power is PowerState.OFF
    assert model.calls.count("Remove-VMSnapshot") >= 2 and "Stop-VM" in model.calls
    await feed.close()


@pytest.mark.timeout(40)
async def test_connection_lost_during_a_copy_is_unknown(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = two_disk_gen2(model)
    backend = backend_for(handle, read_only=False, operation_timeout=2)
    feed = await connected(backend, Store())
    ex = backend.executor()
    cap = (await ex.capture(vm.id, "c-1")).data
    assert (await ex.rebuild_merge(vm.id, "c-2", to_last_parent=False)).state is TaskState.OK
    model.merge_step_s = 0.5  # Convert-VHD's pace
    create = asyncio.create_task(ex.create_from_capture(cap, "c-3"))
    await feed.until(lambda: any(isinstance(e, TaskProgress) and e.task_id == "c-3"
                                 and "Convert" in e.message for e in feed.events),
                     10, "the copy running")
    await asyncio.to_thread(handle.peer.stop)
    result = await asyncio.wait_for(create, 20)
    assert result.state is TaskState.UNKNOWN and "verify on the host" in result.error
    await feed.close()


@pytest.mark.timeout(60)
async def test_a_gen1_vm_is_rebuilt_from_its_bios_capture(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path,  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = room(model, next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
                          if v.generation == 1 and model.chains.get(v.id)
                          and v.power is PowerState.RUNNING
                          and v.replication.value == "disabled"))
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = await connected(backend, store)
    _plan, result, wf, _rows = await run_rebuild(backend, store, tmp_path / "g1.db", vm)
    assert result.state is TaskState.WARNING, result.error
    assert wf.capture["firmware"]["bios_startup_order"][0] == "IDE"
    assert wf.capture["disks"][0]["system"] is True
    new = model.vms[wf.new_vm_id]
    assert new.generation == 1 and new.power is PowerState.RUNNING
    assert model.slot(new, 0) == ("IDE", 0, 0)
    assert "Get-VMBios" in model.calls and "Set-VMFirmware" not in model.calls
    await feed.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("one_peer", ["german"], indirect=True)
async def test_stop_vm_is_not_sent_when_the_shutdown_service_does_not_answer(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    """Stop-VM -Force would power the VM off without the guest's Shutdown service: the
    merge step checks it (by its fixed id, not its localized name) and sends nothing."""
    model, handle = one_peer
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if model.chains.get(v.id) and v.power is PowerState.RUNNING)
    model.no_shutdown.add(vm.id)
    backend = backend_for(handle, read_only=False)
    feed = await connected(backend, Store())
    result = await backend.executor().rebuild_merge(vm.id, "rb-stop", to_last_parent=False)
    assert result.state is TaskState.FAILED
    assert "Shutdown integration service" in result.error and "power" in result.error
    assert "Stop-VM" not in model.calls and vm.id not in model.turned_off
    assert model.vms[vm.id].power is PowerState.RUNNING and model.chains[vm.id]
    # The operator's explicit choice (the plan's "Turn off … instead of a guest shutdown"):
    # Stop-VM -TurnOff is sent, without asking the guest, and the merge goes on.
    result = await backend.executor().rebuild_merge(vm.id, "rb-off", to_last_parent=False,
                                                    turn_off=True)
    assert result.state is TaskState.OK, result.error
    assert "Stop-VM" in model.calls and vm.id in model.turned_off
    assert model.vms[vm.id].power is PowerState.OFF and not model.chains.get(vm.id)
    await feed.close()


@pytest.mark.timeout(60)
async def test_a_cluster_role_refused_without_credssp_leaves_a_known_state(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path,  # noqa: F811
) -> None:
    """Add-ClusterVirtualMachineRole over a session without CredSSP is refused: the step
    fails naming the requirement, the new VM is left Off and not clustered, and the
    line to run on the node is printed."""
    model, handle = one_peer
    model.role_needs_credssp = True
    vm = two_disk_gen2(model)
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = await connected(backend, store)
    _plan, result, wf, _rows = await run_rebuild(backend, store, tmp_path / "a.db", vm)
    assert result.state is not TaskState.OK
    create = wf.step("create")
    assert create.state is StepState.FAILED
    assert "CredSSP" in create.error and "Add-ClusterVirtualMachineRole -VMId" in create.error
    new = next(v for v in model.vms.values() if v.id not in {vm.id} and v.name == vm.name
               and v.id != vm.id and v.id not in model.clustered)
    assert new.power is PowerState.OFF and new.id in create.error
    assert vm.id in model.vms  # the old VM is kept
    await feed.close()


@pytest.mark.timeout(40)
async def test_the_rebuild_merge_waits_for_the_background_merge(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    """The merge step ends (and Convert-VHD may copy the chain) only once the disks have
    stopped merging, not when Remove-VMSnapshot returns."""
    model, handle = one_peer
    model.background_merge_s = 1.0
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if len(model.chains.get(v.id, [])) >= 3 and v.power is PowerState.RUNNING)
    backend = backend_for(handle, read_only=False)
    feed = await connected(backend, Store())
    result = await backend.executor().rebuild_merge(vm.id, "bg-1", to_last_parent=True)
    assert result.state is TaskState.OK, result.error
    assert vm.id not in model.merging  # ended before the step reported OK
    assert any(isinstance(e, TaskProgress) and e.message.startswith("Merging disks (")
               for e in feed.events)
    await feed.close()
