"""Virtual machines.

Get-VM, Get-VMReplication, Get-VMIntegrationService, Update-VMVersion, Stop-/Start-VM, New-VM,
Set-VMProcessor, Set-VMMemory, Rename-VM, Set-VM, Remove-VM.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from ventana.state.model import (
    MB,
    VM,
    IntegrationState,
    PowerState,
    ReplicationState,
)

from ..cmdlets import CommandWriter, ErrorCategory, PSInt64, TerminatingError
from .endpoint import Endpoint
from .enums import (
    _POWER,
    _REPL,
    HV,
    HeartbeatStatus,
    OperationalStatus,
    OpStatus,
    ReplHealth,
    ReplMode,
    ReplState,
    _enum,
    vm_state,
)
from .model import ClusterModel
from .wire import (
    _as_list,
    _guid,
    _match,
    _num,
    _obj,
    _piped_vm_ids,
    _vm_filter,
    _vz_error,
)


def _heartbeat(vm: VM) -> Any:
    """Get-VM's Heartbeat (VMHeartbeatStatus): null while the VM is not running."""
    if vm.power is not PowerState.RUNNING:
        return None
    if vm.integration is IntegrationState.DEGRADED:
        return HeartbeatStatus["LostCommunication"]
    if vm.integration is IntegrationState.OK:
        return HeartbeatStatus["OkApplicationsUnknown"]  # no application monitoring
    return HeartbeatStatus["NoContact"]


def _merging(vm: VM, model: ClusterModel) -> int | None:
    """The background merge's percent (None: not merging)."""
    if not model.merging:  # nothing merges (the usual case): no lock taken per VM
        return None
    with model.lock:
        started, seconds = model.merging.get(vm.id, (0.0, 0.0))
        if not seconds:
            return None
        done = (time.monotonic() - started) / seconds
        if done >= 1:
            del model.merging[vm.id]
            return None
    return int(done * 100)


def _vm_object(vm: VM, writer: CommandWriter, model: ClusterModel) -> Any:
    merging = _merging(vm, model)
    return _obj(
        writer,
        [HV + "VirtualMachine", HV + "VirtualMachineBase", HV + "VirtualizationObject"],
        {
            "Name": vm.name,
            "Id": _guid(vm.id),
            "VMId": _guid(vm.id),
            "State": vm_state(model.profile, _POWER.get(vm.power, "Other")),
            "Generation": vm.generation,
            "Version": vm.config_version,
            "ProcessorCount": _num(writer, PSInt64, vm.vcpus),
            "MemoryStartup": _num(writer, PSInt64, vm.memory_mb * MB),
            "DynamicMemoryEnabled": vm.id in model.dynamic_memory,
            "ComputerName": model.profile.vm_host(vm.node_id),
            "IsClustered": vm.id in model.clustered,
            "Path": model.vm_folder(vm),
            **model.backup.locations_of(vm.id, model.vm_folder(vm)),
            "ReplicationState": _enum(ReplState, _REPL[vm.replication]),
            "Heartbeat": _heartbeat(vm),
            "PrimaryOperationalStatus": OperationalStatus["Ok"],
            "SecondaryOperationalStatus": None if merging is None
            else OperationalStatus["MergingDisks"],
            "Status": "Operating normally" if merging is None
            else f"Merging disks ({merging}%)",
            "HardDrives": "Microsoft.HyperV.PowerShell.HardDiskDrive[]",  # nested: a string
        },
        to_string=f"VirtualMachine (Name = '{vm.name}') [Id = '{vm.id}']",
    )


def get_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model, node = ep.model, ep.node
    ep.log("Get-VM")
    patterns = [str(p).casefold() for p in _as_list(params.get("Name"))] or ["*"]
    ids = {str(i).casefold() for i in _as_list(params.get("Id"))}
    for vm in model.vms_of(node):
        if ids and vm.id.casefold() not in ids:
            continue
        if _match(vm.name, patterns):
            writer.write_output(_vm_object(vm, writer, model))
    if (
        ids
        and not writer.stopping
        and not any(v.id.casefold() in ids for v in model.vms_of(node))
    ):
        writer.write_error(
            "Hyper-V was unable to find a virtual machine with the given id.",
            error_id="InvalidParameter",
            category=ErrorCategory.InvalidArgument,
            exception_type=HV + "VirtualizationException",
        )


def update_version(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Update-VMVersion -Force for the piped VMs: refused unless the VM is off."""
    model = ep.model
    ep.log("Update-VMVersion")
    for vm_id in _piped_vm_ids(writer):
        with model.lock:
            vm = model.vms.get(vm_id)
            if vm is None:
                continue
            if vm.power is not PowerState.OFF:
                raise _vz_error(
                    f"Update-VMVersion: Failed to update the configuration version of "
                    f"'{vm.name}': The operation cannot be performed while the virtual "
                    "machine is in its current state.",
                    "InvalidState", ErrorCategory.InvalidOperation)
            model.vms[vm_id] = dataclasses.replace(vm, config_version=model.host_version)
            model.version += 1


def get_replication(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model, node = ep.model, ep.node
    ep.log("Get-VMReplication")
    for vm in model.vms_of(node):
        if vm.replication is ReplicationState.DISABLED:
            continue
        writer.write_output(
            _obj(
                writer,
                [HV + "VMReplication", HV + "VirtualizationObject"],
                {
                    "VMId": _guid(vm.id),
                    "VMName": vm.name,
                    "State": _enum(ReplState, _REPL[vm.replication]),
                    "Health": _enum(
                        ReplHealth,
                        {"normal": "Normal", "warning": "Warning", "critical": "Critical"}.get(
                            vm.replication_health.value, "NotApplicable"
                        ),
                    ),
                    "Mode": _enum(ReplMode, "Primary"),
                    "ReplicaServer": vm.replica_target,
                },
            )
        )


#: The integration services every VM has (key into HostProfile.service), enabled or not,
#: with the component's fixed id (the last part of VMIntegrationComponent.Id, the same in
#: every language: Msvm_*ComponentSettingData InstanceID).
_SERVICES = (("heartbeat", True), ("shutdown", True), ("kvp", True), ("timesync", True),
             ("vss", True), ("guest", False))
SERVICE_IDS = {
    "heartbeat": "84EAAE65-2F2E-45F5-9BB5-0E857DC8EB47",
    "shutdown": "9F8233AC-BE49-4C79-8EE3-E7E1985B2077",
    "kvp": "2A34B1C2-FD73-4043-8A5B-DD2159BC743F",
    "timesync": "2497F4DE-E9FA-4204-80E4-4B75C46419C0",
    "vss": "5CED1297-4598-4915-A5FC-AD21BB4D02A4",
    "guest": "6C09BB55-D683-4DA0-8931-C9BF705F6480",
}


def get_integration(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Get-VMIntegrationService [-VMName …] [-Name …], or of piped VMs.

    Names are the host's localized Captions (profile ``german``: "Takt" for
    Heartbeat); a ``-Name`` that matches no service of a VM is a
    non-terminating ObjectNotFound error, as a lookup by a name that does not
    exist on this host.
    """
    model, node = ep.model, ep.node
    ep.log("Get-VMIntegrationService")
    patterns = _vm_filter(params)
    wanted = [str(n) for n in _as_list(params.get("Name"))]
    names = [n.casefold() for n in wanted] or ["*"]
    piped = set(_piped_vm_ids(writer))
    profile = model.profile
    for vm in model.vms_of(node):
        if piped and vm.id not in piped:
            continue
        if not piped and not _match(vm.name, patterns):
            continue
        found = False
        for key, enabled in _SERVICES:
            # Disabled by the operator (Disable-VMIntegrationService): Enabled False, no
            # status; enabled but the guest side not answering: NoContact.
            enabled = enabled and (key, vm.id) not in model.backup.ic_disabled
            name = profile.service(key)
            if not _match(name, names):
                continue
            found = True
            status = None
            if vm.power is PowerState.RUNNING and enabled:
                degraded = key == "heartbeat" and vm.integration is IntegrationState.DEGRADED
                if (key == "shutdown" and not shutdown_available(model, vm)) or (
                        (key, vm.id) in model.backup.ic_no_contact):
                    status = _enum(OpStatus, "NoContact")
                else:
                    status = _enum(OpStatus, "Degraded" if degraded else "Ok")
            writer.write_output(_obj(
                writer, [HV + "VMIntegrationComponent", HV + "VirtualMachineComponent"],
                {"VMId": _guid(vm.id), "VMName": vm.name, "Name": name,
                 "Id": f"Microsoft:{vm.id.upper()}\\{SERVICE_IDS[key]}", "Enabled": enabled,
                 "PrimaryOperationalStatus": status}))
        if wanted and not found:
            writer.write_error(
                f"No integration service named '{', '.join(wanted)}' was found for virtual "
                f"machine '{vm.name}'.", error_id="ObjectNotFound",
                category=ErrorCategory.ObjectNotFound,
                exception_type=HV + "VirtualizationException", target=vm.name)


def shutdown_available(model: ClusterModel, vm: VM) -> bool:
    """Whether the guest's Shutdown integration service answers (running, services OK)."""
    return (vm.power is PowerState.RUNNING and vm.integration is IntegrationState.OK
            and vm.id not in model.no_shutdown)


def stop_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Stop-VM [-Force] [-TurnOff]: a guest shutdown through the Shutdown integration
    service; -TurnOff powers off. Without that service, -Force powers the VM off (the
    forced stop the Stop-VM documentation describes; issue 14 §3) and the peer records
    it in ``model.turned_off``; without -Force it is refused."""
    model = ep.model
    ep.log("Stop-VM")
    for vm in ep.piped_vms(writer):
        if vm.power is PowerState.OFF:
            continue
        if params.get("TurnOff") or not shutdown_available(model, vm):
            if not params.get("TurnOff") and not params.get("Force"):
                raise _vz_error(
                    f"Stop-VM: The virtual machine '{vm.name}' cannot be shut down: its "
                    "Shutdown integration service is not available.", "InvalidOperation",
                    ErrorCategory.InvalidOperation)
            with model.lock:
                model.turned_off.add(vm.id)
            model.set_power(vm.id, PowerState.OFF)
            continue
        writer.write_progress("Stop-VM", f"Shutting down {vm.name}", percent=50)
        writer.wait(model.merge_step_s)
        model.set_power(vm.id, PowerState.OFF)


def start_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Start-VM")
    for vm in ep.piped_vms(writer):
        if vm.power is not PowerState.RUNNING:
            model.set_power(vm.id, PowerState.RUNNING)


def new_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model, node = ep.model, ep.node
    ep.log("New-VM")
    name = str(params.get("Name", ""))
    gen = int(params.get("Generation", 1))
    if not params.get("NoVHD"):
        raise TerminatingError("this peer creates VMs with -NoVHD only",
                               error_id="InvalidArgument",
                               category=ErrorCategory.InvalidArgument)
    with model.lock:
        here = node or next(iter(model.nodes))
        vm = VM(id=str(uuid.uuid4()), name=name, cluster_id=model.cluster.id, node_id=here,
                power=PowerState.OFF, generation=gen, config_version=model.host_version,
                vcpus=1, memory_mb=int(params.get("MemoryStartupBytes", 512 * MB)) // MB,
                integration=IntegrationState.OFF)
        model.vms[vm.id] = vm
        model.chains[vm.id] = []
        model.slots[vm.id] = []
        model.scsi_controllers[vm.id] = 1
        model.nics[vm.id] = [{"name": "Network Adapter", "switch": "", "vlan": 0,
                              "mac": "000000000000", "dynamic": True, "ip": None}]
        if gen == 2:
            model.firmware[vm.id] = {"order": [("nic", "Network Adapter")], "secure": True,
                                     "template": "MicrosoftWindows"}
        model.version += 1
    writer.write_output(_vm_object(vm, writer, model))


def set_processor(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Set-VMProcessor")
    for vm in ep.piped_vms(writer):
        ep.update(vm.id, vcpus=int(params.get("Count", vm.vcpus)))


def set_memory(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Set-VMMemory")
    for vm in ep.piped_vms(writer):
        ep.update(vm.id, memory_mb=int(params.get("StartupBytes", vm.memory_mb * MB)) // MB)
        with model.lock:
            if params.get("DynamicMemoryEnabled"):
                model.dynamic_memory.add(vm.id)
            else:
                model.dynamic_memory.discard(vm.id)


def rename_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Rename-VM")
    for vm in ep.piped_vms(writer):
        ep.update(vm.id, name=str(params.get("NewName", vm.name)))


def set_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Set-VM")
    for vm in ep.piped_vms(writer):
        with model.lock:
            if "AutomaticStartAction" in params:
                model.auto_start[vm.id] = str(params["AutomaticStartAction"])
            model.version += 1


def remove_vm(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Get-VM -Id … | Remove-VM -Force: configuration and checkpoints go, files stay."""
    model = ep.model
    ep.log("Remove-VM")
    for vm_id in _piped_vm_ids(writer):
        with model.lock:
            vm = model.vms.get(vm_id)
            if vm is None:
                continue
            if vm.power is not PowerState.OFF:
                raise _vz_error(
                    f"Remove-VM: '{vm.name}' failed to delete: The operation cannot be "
                    "performed while the virtual machine is in its current state.",
                    "InvalidState", ErrorCategory.InvalidOperation)
            if vm.id in model.clustered:
                raise _vz_error(
                    f"Remove-VM: '{vm.name}' is a clustered virtual machine: remove its "
                    "cluster role first (Remove-ClusterGroup).", "InvalidOperation",
                    ErrorCategory.InvalidOperation)
            del model.vms[vm_id]
            for cp_id in model.chains.pop(vm_id, []):
                model.checkpoints.pop(cp_id, None)
                model.files.pop(cp_id, None)
            model.version += 1


HANDLERS = {
    "Get-VM": get_vm,
    "Update-VMVersion": update_version,
    "Get-VMReplication": get_replication,
    "Get-VMIntegrationService": get_integration,
    "Stop-VM": stop_vm,
    "Start-VM": start_vm,
    "New-VM": new_vm,
    "Set-VMProcessor": set_processor,
    "Set-VMMemory": set_memory,
    "Rename-VM": rename_vm,
    "Set-VM": set_vm,
    "Remove-VM": remove_vm,
}
