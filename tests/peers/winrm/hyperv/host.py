"""Host facts.

Get-Service (the backup agent), Get-ItemPropertyValue (its version),
Get-VMHostSupportedVersion (the configuration versions the host supports).
"""

from __future__ import annotations

from typing import Any

from ventana.state.model import (
    ServiceState,
)

from ..cmdlets import CommandWriter, ErrorCategory
from .endpoint import Endpoint
from .enums import (
    ServiceStatus,
    _enum,
)
from .model import BACKUP_SERVICE, BACKUP_VERSION_KEY
from .wire import (
    Row,
    _as_list,
    _obj,
)


def get_service(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Get-Service")
    n = ep.node_entity()
    for name in [str(p) for p in _as_list(params.get("Name"))]:
        if name.casefold() != BACKUP_SERVICE.casefold() or n.backup_agent_state in (
            ServiceState.MISSING,
            ServiceState.UNKNOWN,
        ):
            writer.write_error(
                f"Cannot find any service with service name '{name}'.",
                error_id="NoServiceFoundForGivenName,Microsoft.PowerShell.Commands.GetServiceCommand",
                category=ErrorCategory.ObjectNotFound,
                exception_type="Microsoft.PowerShell.Commands.ServiceCommandException",
                target=name,
            )
            continue
        running = n.backup_agent_state is ServiceState.RUNNING
        writer.write_output(
            _obj(
                writer,
                ["System.ServiceProcess.ServiceController", "System.ComponentModel.Component"],
                {
                    "Name": BACKUP_SERVICE,
                    "Status": _enum(ServiceStatus, "Running" if running else "Stopped"),
                    "DisplayName": "Ventana test backup agent",
                },
                to_string="System.ServiceProcess.ServiceController",
            )
        )


def get_item_property_value(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    ep.log("Get-ItemPropertyValue")
    n = ep.node_entity()
    path = str(params.get("Path", ""))
    if path.casefold() != BACKUP_VERSION_KEY.casefold() or not n.backup_agent_version:
        writer.write_error(
            f"Cannot find path '{path}' because it does not exist.",
            error_id="PathNotFound,Microsoft.PowerShell.Commands.GetItemPropertyValueCommand",
            category=ErrorCategory.ObjectNotFound,
            target=path,
        )
        return
    writer.write_output(n.backup_agent_version)


#: The configuration versions a host supports, newest last: the long-term-servicing table of
#: MicrosoftDocs windows-server "Upgrade virtual machine version in Hyper-V on Windows or
#: Windows Server" (Server 2019: 5.0 … 9.0, not 9.1; Server 2016: 5.0 … 8.0).
_SUPPORTED = ("5.0", "6.2", "7.0", "7.1", "8.0", "8.1", "8.2", "8.3", "9.0")


def _version(text: str) -> Row:
    """A ``System.Version``: an object (Major, Minor, Build, Revision — Build and
    Revision -1 when unset) that ConvertTo-Json writes as one; ``[string]`` gives "9.0"."""
    major, minor = (int(x) for x in text.split("."))
    return Row(["System.Version", "System.Object"],
               {"Major": major, "Minor": minor, "Build": -1, "Revision": -1,
                "MajorRevision": -1, "MinorRevision": -1}, to_string=text)


def get_host_supported_version(ep: Endpoint, params: dict[str, Any],
                               writer: CommandWriter) -> None:
    """Get-VMHostSupportedVersion [-Default]: "returns a list of virtual machine
    configuration versions that are supported on a host"; with -Default "the default
    virtual machine configuration version for this host" (MicrosoftDocs
    windows-powershell-docs, hyper-v/Get-VMHostSupportedVersion.md). Each is a
    Microsoft.HyperV.PowerShell.VMHostSupportedVersion: Name (string), Version
    (System.Version), IsDefault (bool) — the module's type (dsccommunity/HyperVDsc
    Hyper-V stubs). The Name texts here are illustrative (the client reads Version)."""
    model = ep.model
    ep.log("Get-VMHostSupportedVersion")
    default = model.host_version
    known = [v for v in _SUPPORTED if float(v) <= float(default)]
    for version in [default] if params.get("Default") else known:
        writer.write_output(_obj(
            writer, ["Microsoft.HyperV.PowerShell.VMHostSupportedVersion", "System.Object"],
            {"Name": f"Configuration version {version}", "Version": _version(version),
             "IsDefault": version == default},
            to_string="Microsoft.HyperV.PowerShell.VMHostSupportedVersion"))


HANDLERS = {
    "Get-Service": get_service,
    "Get-ItemPropertyValue": get_item_property_value,
    "Get-VMHostSupportedVersion": get_host_supported_version,
}
