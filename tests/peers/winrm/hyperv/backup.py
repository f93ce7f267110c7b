"""Backup readiness reads: the agent's service, its file version, its ports; guest KVP.

Get-CimInstance for Win32_Service, CIM_DataFile and
root/virtualization/v2 Msvm_KvpExchangeComponent (every other class goes to
``cim.get_cim``), and Get-NetTCPConnection. The facts come from the
inventory's nodes (agent state, version, closed ports) and ``model.backup``
(``backup_state.BackupHost``: start mode, refusals, KVP, pass-through).
"""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

from psrpcore.types import PSUInt, PSUInt16

from ventana.state.model import IntegrationState, PowerState, ServiceState

from ..cmdlets import CommandWriter, ErrorCategory, TerminatingError, ps_enum
from . import cim
from .backup_state import AGENT_DISPLAY_NAME, AGENT_EXE
from .endpoint import Endpoint
from .enums import FC, _enum
from .model import BACKUP_SERVICE
from .wire import _as_list, _obj

CIM = "Microsoft.Management.Infrastructure.CimInstance#"
#: One WQL comparison ``Prop = 'value'`` of a -Filter; in a WQL string a backslash
#: escapes the next character (learn.microsoft.com windows/win32/wmisdk/wql-sql-for-wmi:
#: "\\" in a string literal; CIM_DataFile names are written 'C:\\Windows\\…').
_WQL = re.compile(r"(\w+)\s*=\s*'((?:[^'\\]|\\.)*)'")


def _wql(params: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k.casefold(), re.sub(r"\\(.)", r"\1", v))
            for k, v in _WQL.findall(str(params.get("Filter", "")))]


def _denied(what: str) -> TerminatingError:
    # A CIM query the account may not run fails with WBEM_E_ACCESS_DENIED (0x80041003,
    # learn.microsoft.com windows/win32/wmisdk/wmi-error-constants), which Get-CimInstance
    # raises as a CimException, category PermissionDenied.
    return TerminatingError("Access denied", error_id="HRESULT 0x80041003",
                            category=ErrorCategory.PermissionDenied,
                            exception_type="Microsoft.Management.Infrastructure.CimException",
                            target=what)


def _node(ep: Endpoint) -> str:
    n = ep.node_entity()
    return n.id if n is not None else ""


def get_cim(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    cls = str(params.get("ClassName", "")).casefold()
    handler = CLASSES.get(cls)
    if handler is None:
        cim.get_cim(ep, params, writer)
        return
    ep.log(f"Get-CimInstance {cls}")
    handler(ep, params, writer)


def win32_service(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Win32_Service (learn.microsoft.com windows/win32/cimwin32prov/win32-service):
    ``State`` a string ("Stopped", "Start Pending", "Stop Pending", "Running",
    "Continue Pending", "Pause Pending", "Paused", "Unknown"), ``StartMode`` a string
    ("Boot", "System", "Auto", "Manual", "Disabled"), ``PathName`` the binary's
    command line, ``ProcessId`` uint32 (0 when stopped). A -Filter that matches no
    service returns nothing, not an error (Get-CimInstance, MicrosoftDocs
    PowerShell-Docs CimCmdlets/Get-CimInstance.md: instances that match the query)."""
    n = ep.node_entity()
    node = _node(ep)
    host = ep.model.backup
    if host.refused(node, "service"):
        raise _denied("Win32_Service")
    if n is None or n.backup_agent_state in (ServiceState.MISSING, ServiceState.UNKNOWN):
        return
    wanted = _wql(params)
    if not any((k == "name" and v.casefold() == BACKUP_SERVICE.casefold())
               or (k == "displayname" and v.casefold() == AGENT_DISPLAY_NAME.casefold())
               for k, v in wanted):
        return
    running = n.backup_agent_state is ServiceState.RUNNING
    state = host.state.get(node) or ("Running" if running else "Stopped")
    writer.write_output(_obj(writer, [CIM + "root/cimv2/Win32_Service"], {
        "Name": BACKUP_SERVICE,
        "DisplayName": AGENT_DISPLAY_NAME,
        "State": state,
        "StartMode": host.start_mode.get(node, "Auto"),
        "PathName": f'"{AGENT_EXE}" --service',
        "ProcessId": PSUInt(4242 if state == "Running" else 0),
    }))


def cim_datafile(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """CIM_DataFile by its key ``Name``, the full path (learn.microsoft.com
    windows/win32/cimwin32prov/cim-datafile: ``Version`` "Version string for the
    file"; a path that does not exist matches no instance)."""
    n = ep.node_entity()
    node = _node(ep)
    host = ep.model.backup
    if host.refused(node, "file"):
        raise _denied("CIM_DataFile")
    names = [v for k, v in _wql(params) if k == "name"]
    if n is None or node in host.exe_missing or not any(
            v.casefold() == AGENT_EXE.casefold() for v in names):
        return
    writer.write_output(_obj(writer, [CIM + "root/cimv2/CIM_DataFile"], {
        "Name": AGENT_EXE,
        "Version": n.backup_agent_version or "",
    }))


def _kvp_item(name: str, data: str) -> str:
    """One GuestIntrinsicExchangeItems entry: an embedded Msvm_KvpExchangeDataItem
    instance as CIM-XML (learn.microsoft.com windows/win32/hyperv_v2/
    msvm-kvpexchangedataitem; parsed as /INSTANCE/PROPERTY[@NAME]/VALUE by
    microsoft/FreeBSD-Test-Automation HyperV/WS2008R2/lisa/setupscripts/kvpIntrinsicValues.ps1)."""
    return ('<INSTANCE CLASSNAME="Msvm_KvpExchangeDataItem">'
            f'<PROPERTY NAME="Data" TYPE="string"><VALUE>{escape(data)}</VALUE></PROPERTY>'
            f'<PROPERTY NAME="Name" TYPE="string"><VALUE>{escape(name)}</VALUE></PROPERTY>'
            '<PROPERTY NAME="Source" TYPE="uint16"><VALUE>2</VALUE></PROPERTY></INSTANCE>')


def kvp_component(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Msvm_KvpExchangeComponent per VM (learn.microsoft.com windows/win32/hyperv_v2/
    msvm-kvpexchangecomponent): ``SystemName`` the VM's GUID, ``GuestIntrinsicExchangeItems``
    what a running guest's KVP service reports — empty while the VM is off or the
    service does not run. A Windows guest sends OSName and OSPlatformId (2: Win32NT,
    Msvm_KvpExchangeDataItem's key table); the Linux daemon sends OSName, OSVersion…
    and no OSPlatformId (torvalds/linux tools/hv/hv_kvp_daemon.c, its intrinsic keys)."""
    model, node = ep.model, ep.node
    host = model.backup
    if host.refused(_node(ep), "kvp"):
        raise _denied("Msvm_KvpExchangeComponent")
    for vm in model.vms_of(node):
        items: list[str] = []
        if (vm.power is PowerState.RUNNING and vm.integration is not IntegrationState.OFF
                and vm.id not in host.no_kvp):
            linux = vm.name.startswith(("lnx-", "fw-"))
            os_name, platform = host.guest_os.get(vm.id) or (
                ("Ubuntu 22.04.4 LTS", "") if linux
                else ("Windows Server 2019 Datacenter", "2"))
            items.append(_kvp_item("FullyQualifiedDomainName", f"{vm.name}.lab.example"))
            items.append(_kvp_item("OSName", os_name))
            if platform:
                items.append(_kvp_item("OSPlatformId", platform))
        writer.write_output(_obj(writer, [
            CIM + "root/virtualization/v2/Msvm_KvpExchangeComponent"], {
            "SystemName": vm.id.upper(),
            "GuestIntrinsicExchangeItems": items,
            "EnabledState": PSUInt16(2 if vm.power is PowerState.RUNNING else 3),
        }))


def get_net_tcp_connection(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Get-NetTCPConnection -State Listen -LocalPort … (learn.microsoft.com
    powershell/module/nettcpip/get-nettcpconnection). A CDXML cmdlet: each -LocalPort
    value no connection matches is a non-terminating ObjectNotFound error "No matching
    MSFT_NetTCPConnection objects found by CIM query … WHERE ((LocalPort = N)) AND
    ((State = 2))" (the messages scripts match, e.g. "No MSFT_NetTCPConnection objects
    found"); a listener on both stacks is two rows (0.0.0.0 and ::)."""
    ep.log("Get-NetTCPConnection")
    n = ep.node_entity()
    node = _node(ep)
    if ep.model.backup.refused(node, "ports"):
        raise _denied("MSFT_NetTCPConnection")
    states = [str(s).casefold() for s in _as_list(params.get("State"))]
    ports = [int(p) for p in _as_list(params.get("LocalPort"))]
    running = n is not None and n.backup_agent_state is ServiceState.RUNNING
    closed = set(n.backup_ports_closed or ()) if n is not None else set()
    for port in ports:
        listening = running and port not in closed and states in ([], ["listen"])
        if not listening:
            writer.write_error(
                "No matching MSFT_NetTCPConnection objects found by CIM query for instances "
                "of the ROOT/StandardCimv2/MSFT_NetTCPConnection class on the  CIM server: "
                f"SELECT * FROM MSFT_NetTCPConnection  WHERE ((LocalPort = {port})) AND "
                "((State = 2)). Verify query parameters and retry.",
                error_id="CmdletizationQuery_NotFound,Get-NetTCPConnection",
                category=ErrorCategory.ObjectNotFound,
                exception_type="Microsoft.Management.Infrastructure.CimJobException",
                target="MSFT_NetTCPConnection")
            continue
        for address in ("0.0.0.0", "::"):
            writer.write_output(_obj(writer, [CIM + "ROOT/StandardCimv2/MSFT_NetTCPConnection"], {
                "LocalAddress": address, "LocalPort": PSUInt16(port),
                "OwningProcess": PSUInt(4242)}))


#: clusapi.h CLUSTER_GROUP_STATE and CLUSGROUP_TYPE, as the FailoverClusters module's
#: ClusterGroupState / GroupType number them (learn.microsoft.com windows/win32/api/
#: clusapi/ne-clusapi-cluster_group_state, ne-clusapi-clusgroup_type: VirtualMachine 111).
GroupState = ps_enum(FC + "ClusterGroupState", {
    "Unknown": -1, "Online": 0, "Offline": 1, "Failed": 2, "PartialOnline": 3, "Pending": 4})
GroupType = ps_enum(FC + "GroupType", {"Cluster": 1, "AvailableStorage": 2,
                                       "VirtualMachine": 111})


def get_cluster_group(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Get-ClusterGroup: every role of the cluster (MicrosoftDocs windows-powershell-docs
    failoverclusters/Get-ClusterGroup.md), a VM's role named after the VM unless renamed
    (``model.group_names``). Online while the VM runs, Offline when it is off or saved:
    the endpoint's own simplification (not from a published table; a test sets any
    state through ``model.backup.group_state``)."""
    ep.log("Get-ClusterGroup")
    model = ep.model
    writer.write_output(_obj(writer, [FC + "ClusterGroup"], {
        "Name": "Cluster Group", "State": _enum(GroupState, "Online"),
        "GroupType": _enum(GroupType, "Cluster")}))
    for vm in model.vms_of(None):
        if vm.id not in model.clustered:
            continue
        state = model.backup.group_state.get(vm.id) or (
            "Online" if vm.power in (PowerState.RUNNING, PowerState.PAUSED) else "Offline")
        writer.write_output(_obj(writer, [FC + "ClusterGroup"], {
            "Name": model.group_names.get(vm.id, vm.name),
            "State": _enum(GroupState, state), "GroupType": _enum(GroupType, "VirtualMachine"),
            "OwnerNode": vm.node_id}))


CLASSES = {
    "win32_service": win32_service,
    "cim_datafile": cim_datafile,
    "msvm_kvpexchangecomponent": kvp_component,
}

HANDLERS = {
    "Get-CimInstance": get_cim,
    "Get-NetTCPConnection": get_net_tcp_connection,
    "Get-ClusterGroup": get_cluster_group,
}
