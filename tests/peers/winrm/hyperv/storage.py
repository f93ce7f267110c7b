"""Drives and disk files.

Get-VMHardDiskDrive, Get-VHD, Optimize-VHD, Convert-VHD, Add-VMHardDiskDrive, Add-
VMScsiController, Remove-Item, Test-Path.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from psrpcore.types import PSUInt64

from ventana.state.model import (
    MB,
    DiskFormat,
    PowerState,
    VirtualDisk,
)

from ..cmdlets import CommandWriter, ErrorCategory, TerminatingError
from .endpoint import Endpoint
from .enums import (
    HV,
    ControllerType,
    VhdFormat,
    VhdType,
    _enum,
)
from .wire import (
    _as_list,
    _guid,
    _match,
    _num,
    _obj,
    _properties,
    _vm_filter,
    _vz_error,
)


def get_drive(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Get-VMHardDiskDrive -VMName …, or of piped VMs, or of piped checkpoints."""
    model, node = ep.model, ep.node
    ep.log("Get-VMHardDiskDrive")
    patterns = _vm_filter(params)
    piped = [found for found in map(_properties, writer.input) if found is not None]
    snapshots = [p for t, p in piped if t.endswith("VMSnapshot")]
    if snapshots:
        for snap in snapshots:
            with model.lock:
                vm = model.vms.get(str(snap.get("VMId", "")))
                files = [model.disks.get(f) for f in model.files.get(str(snap["Id"]), [])]
            if vm is None:
                continue
            for n, child in enumerate(files):
                if child is None or not child.parent_path:
                    continue
                writer.write_output(_obj(writer, [HV + "HardDiskDrive", HV + "Drive"], {
                    "VMId": _guid(vm.id),
                    "VMName": vm.name,
                    "Path": child.parent_path,  # the file this checkpoint froze
                    "ControllerType": _enum(
                        ControllerType, "IDE" if vm.generation == 1 else "SCSI"
                    ),
                    "ControllerNumber": 0,
                    "ControllerLocation": n,
                }))
        return
    wanted = {str(p.get("Id", "")) for _, p in piped}
    for vm in model.vms_of(node):
        if wanted and vm.id not in wanted:
            continue
        if not wanted and not _match(vm.name, patterns):
            continue
        for n, chain in enumerate(model.drive_chains(vm)):
            if not chain:
                continue
            ctype, cnumber, clocation = model.slot(vm, n)
            writer.write_output(
                _obj(
                    writer,
                    [HV + "HardDiskDrive", HV + "Drive"],
                    {
                        "VMId": _guid(vm.id),
                        "VMName": vm.name,
                        "Path": chain[-1].path,
                        "ControllerType": _enum(ControllerType, ctype),
                        "ControllerNumber": cnumber,
                        "ControllerLocation": clocation,
                        "DiskNumber": None,  # a file-backed drive has none
                    },
                )
            )
        # Pass-through disks: a physical disk of the host, named by its DiskNumber
        # (Add-VMHardDiskDrive -DiskNumber, MicrosoftDocs windows-powershell-docs
        # hyper-v/Add-VMHardDiskDrive.md: "the disk number of the offline physical hard
        # drive to be connected as a passthrough disk"). Its Path here is a description
        # of the disk, not a file (its exact wording is not published; the client reads
        # only DiskNumber).
        for k, number in enumerate(model.backup.passthrough.get(vm.id, [])):
            location = len(model.drive_chains(vm)) + k
            writer.write_output(_obj(writer, [HV + "HardDiskDrive", HV + "Drive"], {
                "VMId": _guid(vm.id),
                "VMName": vm.name,
                "Path": f"Disk {number} 100.00 GB Bus 0 Lun {location} Target 0",
                "ControllerType": _enum(ControllerType, "SCSI"),
                "ControllerNumber": 0,
                "ControllerLocation": location,
                "DiskNumber": number,
            }))


def get_vhd(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Get-VHD")
    paths = [str(p) for p in _as_list(params.get("Path"))]
    for found in map(_properties, writer.input):  # -Path by property name, piped
        if found is not None and found[1].get("Path"):
            paths.append(str(found[1]["Path"]))
    for path in paths:
        disk = model.disk_by_path(path)
        if disk is None:
            writer.write_error(
                f"Getting the mounted storage instance for the path '{path}' failed.",
                error_id="ObjectNotFound,Microsoft.Vhd.PowerShell.Cmdlets.GetVHD",
                category=ErrorCategory.ObjectNotFound,
                exception_type=HV + "VirtualizationException",
                target=path,
            )
            continue
        fmt = "VHD" if disk.format is DiskFormat.VHD else "VHDX"
        kind = "Differencing" if disk.parent_path else "Dynamic"
        writer.write_output(
            _obj(
                writer,
                ["Microsoft.Vhd.PowerShell.VirtualHardDisk"],
                {
                    "Path": disk.path,
                    "VhdFormat": _enum(VhdFormat, fmt),
                    "VhdType": _enum(VhdType, kind),
                    "FileSize": _num(writer, PSUInt64, disk.size_bytes),
                    "Size": _num(writer, PSUInt64, disk.max_bytes),
                    "ParentPath": disk.parent_path or "",
                    "DiskIdentifier": disk.id.upper(),
                    "Attached": True,
                },
            )
        )


def mount_vhd(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Mount-VHD -Path P [-ReadOnly] [-NoDriveLetter]: attached to the host; refused while
    its VM runs (the file is in use)."""
    model = ep.model
    ep.log("Mount-VHD")
    for path in [str(p) for p in _as_list(params.get("Path"))]:
        with model.lock:
            disk = model.disk_by_path(path)
            owner = model.owner_of(disk) if disk is not None else None
            if disk is None:
                raise _vz_error(f"Mount-VHD: The system cannot find the file specified: "
                                f"'{path}'.", "ObjectNotFound", ErrorCategory.ObjectNotFound)
            if (owner is not None and owner.power is not PowerState.OFF) or \
                    path.casefold() in model.mounted:
                raise _vz_error(f"Mount-VHD: Failed to mount the disk '{path}': The process "
                                "cannot access the file because it is being used by another "
                                "process. (0x80070020)", "InvalidOperation",
                                ErrorCategory.ResourceBusy)
            model.mounted[path.casefold()] = "ReadOnly" if params.get("ReadOnly") else \
                "ReadWrite"


def dismount_vhd(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Dismount-VHD -Path P."""
    model = ep.model
    ep.log("Dismount-VHD")
    for path in [str(p) for p in _as_list(params.get("Path"))]:
        with model.lock:
            if model.mounted.pop(path.casefold(), None) is None:
                raise _vz_error(f"Dismount-VHD: The disk '{path}' is not attached.",
                                "InvalidParameter", ErrorCategory.InvalidArgument)


def optimize_vhd(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Optimize-VHD -Path P -Mode Full: refused while the file's VM is not Off.

    Optimize-VHD (MicrosoftDocs, hyper-v/Optimize-VHD): "the virtual hard disk must
    not be attached or must be attached in read-only mode", and ``-Mode Full`` on a
    VHDX "not attached as read-only prior to the operation … will default to
    Prezeroed mode", which cannot see the guest file system's free space: the file
    keeps ``model.compact_keep_prezeroed`` of its size instead of ``compact_keep``.
    """
    model = ep.model
    ep.log("Optimize-VHD")
    for path in [str(p) for p in _as_list(params.get("Path"))]:
        with model.lock:
            disk = model.disk_by_path(path)
            owner = model.owner_of(disk) if disk is not None else None
            mounted = model.mounted.get(path.casefold())
        if mounted == "ReadWrite":
            raise _vz_error(
                f"Optimize-VHD: The virtual disk '{path}' is attached read-write; it must not "
                "be attached or be attached read-only.", "InvalidOperation",
                ErrorCategory.InvalidOperation)
        if disk is None:
            raise _vz_error(f"Optimize-VHD: The system cannot find the file specified: "
                            f"'{path}'.", "ObjectNotFound", ErrorCategory.ObjectNotFound)
        with model.lock:
            model._indexes()
            parent = disk.path.casefold() in model._children
        if parent:
            raise _vz_error(
                f"Optimize-VHD: The virtual disk '{path}' is the parent of a differencing "
                "disk and cannot be compacted. (0xC03A0017)", "InvalidOperation",
                ErrorCategory.InvalidOperation)
        if owner is not None and owner.power is not PowerState.OFF:
            raise _vz_error(
                f"Optimize-VHD: Failed to compact the virtual disk '{path}': The process "
                "cannot access the file because it is being used by another process. "
                "(0x80070020)", "InvalidOperation", ErrorCategory.ResourceBusy)
        for pct in (0, 25, 50, 75):
            writer.write_progress("Optimize-VHD", f"Compacting {path}", percent=pct)
            if writer.wait(model.merge_step_s):
                return
        with model.lock:
            disk = model.disks[disk.id]
            keep = model.compact_keep if mounted == "ReadOnly" else model.compact_keep_prezeroed
            after = max(4 * MB, int(disk.size_bytes * keep))
            after = min(after, disk.size_bytes)
            model.disks[disk.id] = dataclasses.replace(disk, size_bytes=after)
            model.free_file(disk, disk.size_bytes - after)
            model.version += 1
        writer.write_progress("Optimize-VHD", "Completed", percent=100, completed=True)


def convert_vhd(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Convert-VHD")
    source, dest = str(params.get("Path", "")), str(params.get("DestinationPath", ""))
    with model.lock:
        disk = model.disk_by_path(source)
        owner = model.owner_of(disk) if disk is not None else None
        if disk is None:
            raise _vz_error(f"Convert-VHD: The system cannot find the file '{source}'.",
                            "ObjectNotFound", ErrorCategory.ObjectNotFound)
        if owner is not None and owner.power is not PowerState.OFF:
            raise _vz_error(f"Convert-VHD: '{source}' is in use by '{owner.name}' "
                            "(0x80070020).", "InvalidOperation", ErrorCategory.ResourceBusy)
        if model.disk_by_path(dest) is not None:
            raise _vz_error(f"Convert-VHD: The file '{dest}' already exists.",
                            "InvalidParameter", ErrorCategory.ResourceExists)
        size = model.flat_size(disk)
        lun = model.luns.get(disk.lun_id)
        if lun is not None and lun.free_bytes < size:
            raise _vz_error("Convert-VHD: There is not enough space on the disk.",
                            "OperationFailed", ErrorCategory.WriteError)
    for pct in (0, 50):
        writer.write_progress("Convert-VHD", f"Converting {source}", percent=pct)
        if writer.wait(model.merge_step_s):
            return
    with model.lock:
        copy = VirtualDisk(str(uuid.uuid4()), "", dest, DiskFormat.VHDX, size,
                           disk.max_bytes, None, disk.lun_id)
        model.disks[copy.id] = copy
        model.free_file(copy, -size)
        model.version += 1
    writer.write_progress("Convert-VHD", "Completed", percent=100, completed=True)


def add_drive(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Add-VMHardDiskDrive")
    path = str(params.get("Path", ""))
    slot = (str(params.get("ControllerType", "SCSI")).upper(),
            int(params.get("ControllerNumber", 0)), int(params.get("ControllerLocation", 0)))
    for vm in ep.piped_vms(writer):
        with model.lock:
            disk = model.disk_by_path(path)
            if disk is None:
                raise _vz_error(f"Add-VMHardDiskDrive: cannot find '{path}'.",
                                "ObjectNotFound", ErrorCategory.ObjectNotFound)
            owner = model.owner_of(disk)
            if owner is not None and owner.id != vm.id:
                raise _vz_error(f"Add-VMHardDiskDrive: '{path}' is attached to "
                                f"'{owner.name}'.", "InvalidOperation",
                                ErrorCategory.ResourceBusy)
            slots = model.slots.setdefault(vm.id, [model.slot(vm, n)
                                                   for n in range(len(vm.disk_ids))])
            if slot in slots:
                raise _vz_error(f"Add-VMHardDiskDrive: the slot {slot} is in use.",
                                "InvalidOperation", ErrorCategory.ResourceExists)
            if slot[0] == "SCSI" and slot[1] >= model.scsi_controllers.get(vm.id, 4):
                raise _vz_error(f"Add-VMHardDiskDrive: '{vm.name}' has no SCSI controller "
                                f"number {slot[1]}.", "ObjectNotFound",
                                ErrorCategory.ObjectNotFound)
            model.disks[disk.id] = dataclasses.replace(disk, vm_id=vm.id)
            slots.append(slot)
            index = len(vm.disk_ids)
            model.vms[vm.id] = dataclasses.replace(
                vm, disk_ids=(*vm.disk_ids, disk.id), lun_id=vm.lun_id or disk.lun_id)
            if vm.generation == 2:
                order = model.firmware_of(vm)["order"]
                if model.prepend_boot_entries:
                    order.insert(0, ("disk", index))
                else:
                    order.append(("disk", index))
            model.version += 1


def add_scsi_controller(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Add-VMScsiController")
    for vm in ep.piped_vms(writer):
        with model.lock:
            count = model.scsi_controllers.get(vm.id, 1)
            if count >= 4:
                raise _vz_error("Add-VMScsiController: a VM has at most 4 SCSI "
                                "controllers.", "InvalidOperation",
                                ErrorCategory.InvalidOperation)
            model.scsi_controllers[vm.id] = count + 1
            model.version += 1


def remove_item(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Remove-Item -LiteralPath P: one file; a folder or a wildcard is refused."""
    model = ep.model
    ep.log("Remove-Item")
    if params.get("Recurse") or ("Path" in params and "LiteralPath" not in params):
        raise TerminatingError("this peer accepts -LiteralPath only, without -Recurse",
                               error_id="InvalidArgument",
                               category=ErrorCategory.InvalidArgument)
    for path in [str(p) for p in _as_list(params.get("LiteralPath"))]:
        with model.lock:
            disk = model.disk_by_path(path)
            busy = disk is not None and (path.casefold() in model.locked
                                         or model.owner_of(disk) is not None)
            if disk is not None and not busy:
                del model.disks[disk.id]
                model.free_file(disk, disk.size_bytes)
                model.version += 1
        if disk is None:
            writer.write_error(
                f"Cannot find path '{path}' because it does not exist.",
                error_id="PathNotFound,Microsoft.PowerShell.Commands.RemoveItemCommand",
                category=ErrorCategory.ObjectNotFound, target=path)
        elif busy:
            writer.write_error(
                f"Cannot remove item {path}: The process cannot access the file '{path}' "
                "because it is being used by another process.",
                error_id="RemoveFileSystemItemIOError,"
                         "Microsoft.PowerShell.Commands.RemoveItemCommand",
                category=ErrorCategory.WriteError, exception_type="System.IO.IOException",
                target=path)


def test_path(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Test-Path")
    for path in [str(p) for p in _as_list(params.get("LiteralPath"))]:
        writer.write_output(model.disk_by_path(path) is not None)


HANDLERS = {
    "Get-VMHardDiskDrive": get_drive,
    "Get-VHD": get_vhd,
    "Optimize-VHD": optimize_vhd,
    "Mount-VHD": mount_vhd,
    "Dismount-VHD": dismount_vhd,
    "Convert-VHD": convert_vhd,
    "Add-VMHardDiskDrive": add_drive,
    "Add-VMScsiController": add_scsi_controller,
    "Remove-Item": remove_item,
    "Test-Path": test_path,
}
