"""CIM/WMI.

Get-CimInstance (Win32_ComputerSystem, MSCluster_*, Msvm_GuestNetworkAdapterConfiguration) and
the VM event stream (Register-CimIndicationEvent, Wait-/Get-/Remove-Event, Unregister-Event).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from psrpcore.types import PSUInt

from ventana.state.model import (
    MB,
    VM,
    IntegrationState,
    LunRole,
    PowerState,
)

from ..cmdlets import CommandWriter, ErrorCategory, TerminatingError
from . import indications
from .devices import nic_guid
from .endpoint import Endpoint
from .model import volume_guid
from .wire import (
    _num,
    _obj,
    _properties,
    _wire,
)


def get_cim(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model, node = ep.model, ep.node
    cls = str(params.get("ClassName", "")).casefold()
    ep.log(f"Get-CimInstance {cls}")
    if cls == "win32_computersystem":
        writer.write_output(
            _obj(
                writer,
                [
                    "Microsoft.Management.Infrastructure.CimInstance#root/cimv2/Win32_ComputerSystem"
                ],
                {"Name": model.profile.computer(node or next(iter(model.nodes))),
                 "Domain": model.profile.domain},
            )
        )
        return
    if cls == "mscluster_clustersharedvolume":
        with model.lock:
            luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
        for lun in luns:
            writer.write_output(_obj(
                writer,
                ["Microsoft.Management.Infrastructure.CimInstance#root/MSCluster/"
                 "MSCluster_ClusterSharedVolume"],
                {
                    "Name": model.mount_of(lun.id),
                    "VolumeName": f"\\\\?\\Volume{{{volume_guid(lun.id)}}}\\",
                    "BackupState": _num(writer, PSUInt, 1 if lun.in_backup else 0),
                    "FaultState": _num(writer, PSUInt, 0),
                },
            ))
        return
    if cls == "msvm_guestnetworkadapterconfiguration":  # KVP: what the guests report
        for vm in model.vms_of(node):
            if vm.power is not PowerState.RUNNING or vm.integration is not \
                    IntegrationState.OK:
                continue
            for nic in model.nics_of(vm):
                if not nic.get("ip"):
                    continue
                writer.write_output(_obj(writer, [
                    "Microsoft.Management.Infrastructure.CimInstance#root/virtualization/"
                    "v2/Msvm_GuestNetworkAdapterConfiguration"], {
                    "InstanceID": f"Microsoft:GuestNetwork\\{vm.id.upper()}\\"
                                  f"{nic_guid(vm, nic)}",
                    "IPAddresses": [nic["ip"], "fe80::215:5dff:fe00:1"],
                    "Subnets": ["255.255.255.0", "64"],
                    "DefaultGateways": [f"10.20.{nic['vlan']}.1"],
                    "DNSServers": ["10.20.10.11", "10.20.10.12"],
                    "DHCPEnabled": False}))
        return
    if cls != "mscluster_diskpartition":
        writer.write_error(
            f"Invalid class {params.get('ClassName')}", category=ErrorCategory.ObjectNotFound
        )
        return
    with model.lock:
        luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
    for lun in luns:
        mount = model.mount_of(lun.id)
        writer.write_output(
            _obj(
                writer,
                [
                    "Microsoft.Management.Infrastructure.CimInstance#root/MSCluster/"
                    "MSCluster_DiskPartition"
                ],
                {
                    "Path": mount,
                    "VolumeLabel": lun.name,
                    "VolumeGuid": volume_guid(lun.id),
                    "TotalSize": PSUInt(lun.total_bytes // MB),
                    "FreeSpace": PSUInt(lun.free_bytes // MB),
                    "MountPoints": [mount],
                },
            )
        )


def register_cim_indication(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Register-CimIndicationEvent -Namespace root/virtualization/v2 -Query … -Source…"""
    model, node = ep.model, ep.node
    ep.log("Register-CimIndicationEvent")
    namespace = str(params.get("Namespace", "")).casefold().replace("\\", "/")
    query = str(params.get("Query", ""))
    source = str(params.get("SourceIdentifier", "")) or str(uuid.uuid4())
    if not model.indications:
        raise TerminatingError(
            "Access denied", error_id="HRESULT 0x80041003,"
            "Microsoft.Management.Infrastructure.CimCmdlets.RegisterCimIndicationCommand",
            category=ErrorCategory.PermissionDenied,
            exception_type="Microsoft.Management.Infrastructure.CimException",
        )
    if "msvm_computersystem" not in query.casefold():  # a polled class (checkpoints, CSVs)
        indications.register(ep, namespace, query, source)
        return
    if namespace != "root/virtualization/v2":
        raise TerminatingError(
            f"Invalid query: {query}", error_id="HRESULT 0x80041017",
            category=ErrorCategory.InvalidArgument,
            exception_type="Microsoft.Management.Infrastructure.CimException",
        )

    with model.lock:
        model.queries.append(query)  # what the client subscribed to (tests check the filter)

    def watcher(vm: VM) -> None:
        if node is not None and vm.node_id != node:
            return
        with ep.events.cond:
            queue = ep.events.queues.setdefault(source, [])
            queue.append(ep.events.event(source, vm))
            del queue[:-10_000]
            ep.events.cond.notify_all()

    with model.lock:
        old = ep.events.subscriptions.pop(source, None)
        if old in model.watchers:
            model.watchers.remove(old)
        ep.events.subscriptions[source] = watcher
        model.watchers.append(watcher)
    with ep.events.cond:
        ep.events.queues[source] = []


def wait_event(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Wait-Event [-SourceIdentifier S] -Timeout N: the oldest queued event (kept queued);
    without -SourceIdentifier, of any subscription ("By default, Wait-Event waits for any
    event": learn.microsoft.com/powershell/module/microsoft.powershell.utility/wait-event)."""
    ep.log("Wait-Event")
    source = params.get("SourceIdentifier")
    timeout = float(params.get("Timeout", -1))
    deadline = None if timeout < 0 else time.monotonic() + timeout
    while True:
        tick = indications.poll(ep)  # polled subscriptions enumerate at their WITHIN ticks
        with ep.events.cond:
            queues = [ep.events.queues.get(str(source), [])] if source is not None else [
                q for q in ep.events.queues.values() if q]
            first = min((q[0] for q in queues if q),
                        key=lambda e: e.props["EventIdentifier"], default=None)
            if first is not None:
                event = first
                break
            left = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if tick is not None:
                left = min(left, max(0.0, tick - time.monotonic()) + 0.001)
            if left <= 0:
                return
            ep.events.cond.wait(left)
        writer.check_stop()
    writer.write_output(event if writer.piped else _wire(event))


def get_event(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Get-Event")
    indications.poll(ep)
    source = str(params.get("SourceIdentifier", ""))
    with ep.events.cond:
        queued = list(ep.events.queues.get(source, []))
    for event in queued:
        writer.write_output(event if writer.piped else _wire(event))


def remove_event(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Remove-Event")
    ids = {found[1].get("EventIdentifier") for found in map(_properties, writer.input)
           if found is not None}
    source = params.get("SourceIdentifier")
    with ep.events.cond:
        for name, queue in ep.events.queues.items():
            if source is not None and name == str(source):
                queue.clear()
            elif ids:
                queue[:] = [e for e in queue if e.props["EventIdentifier"] not in ids]


def unregister_event(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Unregister-Event")
    source = str(params.get("SourceIdentifier", ""))
    with model.lock:
        old = ep.events.subscriptions.pop(source, None)
        if old in model.watchers:
            model.watchers.remove(old)
    with ep.events.cond:
        ep.events.queues.pop(source, None)


HANDLERS = {
    "Get-CimInstance": get_cim,
    "Register-CimIndicationEvent": register_cim_indication,
    "Wait-Event": wait_event,
    "Get-Event": get_event,
    "Remove-Event": remove_event,
    "Unregister-Event": unregister_event,
}
