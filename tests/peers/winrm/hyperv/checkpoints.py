"""Checkpoints and merges.

Get-VMSnapshot, Remove-VMSnapshot.
"""

from __future__ import annotations

import time
from typing import Any

from ..cmdlets import CommandWriter, ErrorCategory
from .endpoint import Endpoint
from .enums import (
    _SNAP,
    HV,
    SnapshotType,
    _enum,
)
from .wire import (
    _as_list,
    _guid,
    _match,
    _obj,
    _piped_vm_ids,
    _properties,
    _vm_filter,
    _vz_error,
)


def get_snapshot(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model, node = ep.model, ep.node
    ep.log("Get-VMSnapshot")
    patterns = _vm_filter(params)
    piped = set(_piped_vm_ids(writer))
    wanted_id = str(params.get("Id", "")).casefold()
    for vm in model.vms_of(node):
        if piped and vm.id not in piped:
            continue
        if not piped and not _match(vm.name, patterns):
            continue
        with model.lock:
            cps = [model.checkpoints[c] for c in model.chains.get(vm.id, [])]
        for cp in cps:
            if wanted_id and cp.id.casefold() != wanted_id:
                continue
            writer.write_output(
                _obj(
                    writer,
                    [HV + "VMSnapshot", HV + "VirtualMachineBase"],
                    {
                        "Id": _guid(cp.id),
                        "VMId": _guid(vm.id),
                        "VMName": vm.name,
                        "Name": cp.name,
                        "ParentSnapshotId": _guid(cp.parent_id) if cp.parent_id else None,
                        "SnapshotType": _enum(SnapshotType, model.snapshot_types.get(
                            cp.id, _SNAP[cp.kind])),
                        "CreationTime": cp.created,
                        "HardDrives": "Microsoft.HyperV.PowerShell.HardDiskDrive[]",
                    },
                )
            )


def remove_snapshot(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Remove-VMSnapshot -Name * for the piped VMs: merges newest first, with progress."""
    model = ep.model
    ep.log("Remove-VMSnapshot")
    names = [str(n).casefold() for n in _as_list(params.get("Name"))] or ["*"]
    snaps = [p for t, p in (f for f in map(_properties, writer.input) if f is not None)
             if t.endswith("VMSnapshot")]
    if snaps:  # Get-VMSnapshot -Id … | Remove-VMSnapshot: exactly these
        for snap in snaps:
            for pct in (0, 50):
                writer.write_progress("Remove-VMSnapshot", f"Merging {snap['Name']}",
                                      percent=pct)
                if writer.wait(model.merge_step_s):
                    return
            with model.lock:
                if str(snap["Id"]) in model.checkpoints:
                    model.remove_checkpoint(str(snap["Id"]))
                if model.background_merge_s > 0:  # the files merge on after it returns
                    model.merging[str(snap.get("VMId", ""))] = (
                        time.monotonic(), model.background_merge_s)
        writer.write_progress("Remove-VMSnapshot", "Completed", percent=100, completed=True)
        return
    for vm_id in _piped_vm_ids(writer):
        with model.lock:
            vm = model.vms.get(vm_id)
            chain = [model.checkpoints[c] for c in model.chains.get(vm_id, [])]
        if vm is None:
            continue
        todo = [cp for cp in reversed(chain) if _match(cp.name, names)]
        steps = 4
        for i, cp in enumerate(todo):
            for step in range(steps):
                pct = int((i * steps + step) * 100 / (len(todo) * steps))
                writer.write_progress(
                    "Remove-VMSnapshot",
                    f"Merging disks of {vm.name}: checkpoint {i + 1} of {len(todo)}",
                    percent=pct,
                )
                if writer.wait(model.merge_step_s):
                    return
            if model.merge_fail_after is not None and i >= model.merge_fail_after:
                raise _vz_error(
                    f"'{vm.name}' failed to remove checkpoint '{cp.name}': "
                    "The process cannot access the file because it is being used by "
                    "another process. (0x80070020)",
                    "OperationFailed", ErrorCategory.ResourceBusy)
            model.remove_checkpoint(cp.id)
        if todo and model.background_merge_s > 0:
            # The checkpoints are gone from the tree, but the .avhdx files go on merging in
            # the background: Get-VM reports SecondaryOperationalStatus MergingDisks
            # (VMOperationalStatus 32772, Hyper-V module 2.0.0.0) until it ends.
            with model.lock:
                model.merging[vm_id] = (time.monotonic(), model.background_merge_s)
        writer.write_progress("Remove-VMSnapshot", "Completed", percent=100, completed=True)


HANDLERS = {
    "Get-VMSnapshot": get_snapshot,
    "Remove-VMSnapshot": remove_snapshot,
}
