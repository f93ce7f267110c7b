"""Devices the rebuild copies.

network adapters (+VLAN), Gen2 firmware (boot order, Secure Boot), Gen1 BIOS.
"""

from __future__ import annotations

import uuid
from typing import Any

from ventana.state.model import (
    VM,
    IntegrationState,
    PowerState,
)

from ..cmdlets import CommandWriter, ErrorCategory
from .endpoint import Endpoint
from .enums import (
    HV,
    BootDevice,
    BootType,
    OnOff,
    VlanMode,
    _enum,
)
from .wire import (
    Row,
    _as_list,
    _guid,
    _match,
    _obj,
    _properties,
    _vz_error,
    _wire,
)


class _Piped:
    piped = True


_PIPED: Any = _Piped()  # Rows only: the next command (or Select-Object) reads them


def _nic_row(vm: VM, nic: dict[str, Any]) -> Any:
    up = vm.power is PowerState.RUNNING and vm.integration is IntegrationState.OK
    return _obj(_PIPED, [HV + "VMNetworkAdapter", HV + "VirtualMachineComponent"], {
        "VMId": _guid(vm.id), "VMName": vm.name, "Name": nic["name"],
        "Id": f"Microsoft:{vm.id.upper()}\\{nic_guid(vm, nic)}",
        "SwitchName": nic["switch"], "MacAddress": nic["mac"],
        "DynamicMacAddressEnabled": nic["dynamic"],
        "IPAddresses": [nic["ip"], "fe80::215:5dff:fe00:1"] if up and nic.get("ip") else [],
    }, to_string=f"VMNetworkAdapter (Name = '{nic['name']}', VMName = '{vm.name}') "
                 f"[Id = 'Microsoft:{vm.id.upper()}']")


def nic_guid(vm: VM, nic: dict[str, Any]) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"nic:{vm.id}:{nic['name']}")).upper()


def _adapters(ep: Endpoint, params: dict[str, Any], writer: CommandWriter
              ) -> list[tuple[VM, dict]]:
    """(VM, NIC) pairs: of piped adapters, or of piped VMs filtered by -Name."""
    model = ep.model
    out = []
    names = [str(n).casefold() for n in _as_list(params.get("Name"))
             or _as_list(params.get("VMNetworkAdapterName"))] or ["*"]
    for found in map(_properties, writer.input):
        if found is None:
            continue
        kind, p = found
        with model.lock:
            vm = model.vms.get(str(p.get("VMId") or p.get("Id") or ""))
        if vm is None:
            continue
        for nic in model.nics_of(vm):
            if kind.endswith("VMNetworkAdapter"):
                if nic["name"] == p.get("Name"):
                    out.append((vm, nic))
            elif _match(nic["name"], names):
                out.append((vm, nic))
    return out


def get_nic(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Get-VMNetworkAdapter")
    for vm, nic in _adapters(ep, params, writer):
        row = _nic_row(vm, nic)
        writer.write_output(row if writer.piped else _wire(row))


def get_nic_vlan(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Get-VMNetworkAdapterVlan")
    for vm, nic in _adapters(ep, params, writer):
        writer.write_output(_obj(writer, [HV + "VMNetworkAdapterVlanSetting"], {
            "VMName": vm.name, "ParentAdapter": _nic_row(vm, nic).to_string,
            "OperationMode": _enum(VlanMode, "Access" if nic["vlan"] else "Untagged"),
            "AccessVlanId": nic["vlan"]}))


def set_nic_vlan(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Set-VMNetworkAdapterVlan")
    for _vm, nic in _adapters(ep, params, writer):
        with model.lock:
            nic["vlan"] = int(params.get("VlanId", 0)) if params.get("Access") else 0
            model.version += 1


def remove_nic(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Remove-VMNetworkAdapter")
    for vm, nic in _adapters(ep, params, writer):
        with model.lock:
            model.nics_of(vm).remove(nic)
            fw = model.firmware.get(vm.id)
            if fw is not None:
                fw["order"] = [e for e in fw["order"] if e != ("nic", nic["name"])]
            model.version += 1


def add_nic(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Add-VMNetworkAdapter")
    for vm in ep.piped_vms(writer):
        mac = str(params.get("StaticMacAddress", "")).replace("-", "").upper()
        nic = {"name": str(params.get("Name", "Network Adapter")),
               "switch": str(params.get("SwitchName", "")), "vlan": 0,
               "mac": mac or "000000000000", "dynamic": not mac, "ip": None}
        with model.lock:
            model.nics_of(vm).append(nic)
            if vm.generation == 2:
                model.firmware_of(vm)["order"].append(("nic", nic["name"]))
            model.version += 1


def _boot_rows(ep: Endpoint, vm: VM) -> list[Row]:
    model = ep.model
    rows = []
    for kind, key in model.firmware_of(vm)["order"]:
        if kind == "disk":
            ctype, number, loc = model.slot(vm, key)
            device = Row([HV + "HardDiskDrive"], {}, to_string=(
                f"HardDiskDrive (Name = 'Hard Drive on {ctype} controller number {number} "
                f"at location {loc}', VMName = '{vm.name}') [Id = 'Microsoft:{vm.id}']"))
            rows.append(Row([HV + "VMBootSource"], {
                "BootType": _enum(BootType, "Drive"), "Description": "EFI SCSI Device",
                "FirmwarePath": f"\\AcpiEx(VMBus,0,0)\\Scsi({number},{loc})",
                "Device": device}))
        else:
            device = Row([HV + "VMNetworkAdapter"], {}, to_string=(
                f"VMNetworkAdapter (Name = '{key}', VMName = '{vm.name}') "
                f"[Id = 'Microsoft:{vm.id}']"))
            rows.append(Row([HV + "VMBootSource"], {
                "BootType": _enum(BootType, "Network"), "Description": "EFI Network",
                "FirmwarePath": "\\AcpiEx(VMBus,0,0)\\MAC()", "Device": device}))
    return rows


def get_firmware(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Get-VMFirmware")
    for vm in ep.piped_vms(writer):
        if vm.generation != 2:
            raise _vz_error(f"Get-VMFirmware: '{vm.name}' is a generation 1 virtual "
                            "machine; firmware settings apply to generation 2 only.",
                            "InvalidParameter", ErrorCategory.InvalidArgument)
        fw = model.firmware_of(vm)
        row = Row([HV + "VMFirmware"], {
            "VMName": vm.name, "SecureBoot": _enum(OnOff, "On" if fw["secure"] else "Off"),
            "SecureBootTemplate": fw["template"], "BootOrder": _boot_rows(ep, vm)})
        writer.write_output(row if writer.piped else _wire(row))


def get_bios(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Get-VMBios")
    for vm in ep.piped_vms(writer):
        if vm.generation != 1:
            raise _vz_error(f"Get-VMBios: '{vm.name}' is a generation 2 virtual machine.",
                            "InvalidParameter", ErrorCategory.InvalidArgument)
        writer.write_output(_obj(writer, [HV + "VMBios"], {
            "VMName": vm.name, "StartupOrder": [
                _enum(BootDevice, n) for n in ("IDE", "CD", "LegacyNetworkAdapter",
                                               "Floppy")]}))


def set_firmware(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Set-VMFirmware")
    for vm in ep.piped_vms(writer):
        with model.lock:
            fw = model.firmware_of(vm)
            if "SecureBootTemplate" in params:
                fw["template"] = str(params["SecureBootTemplate"])
            if "EnableSecureBoot" in params:
                fw["secure"] = str(params["EnableSecureBoot"]) == "On"
            model.version += 1


HANDLERS = {
    "Get-VMNetworkAdapter": get_nic,
    "Get-VMNetworkAdapterVlan": get_nic_vlan,
    "Set-VMNetworkAdapterVlan": set_nic_vlan,
    "Remove-VMNetworkAdapter": remove_nic,
    "Add-VMNetworkAdapter": add_nic,
    "Get-VMFirmware": get_firmware,
    "Get-VMBios": get_bios,
    "Set-VMFirmware": set_firmware,
}
