"""Host facts outside Hyper-V.

Get-Service (the backup agent), Get-ItemPropertyValue (its version).
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


HANDLERS = {
    "Get-Service": get_service,
    "Get-ItemPropertyValue": get_item_property_value,
}
