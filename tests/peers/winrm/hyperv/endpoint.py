"""What every handler of one endpoint shares: :class:`Endpoint` (model, node, call log, events).

An endpoint serves one node (``node="HV-NODE-01"``: only the VMs that node
hosts) or the whole cluster (``node=None``). Handlers are module-level
functions ``handler(ep, params, writer)``; :func:`..registry.build_hyperv_registry`
binds them to one :class:`Endpoint`.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from typing import Any

from ventana.state.model import VM, Node, PowerState

from ..cmdlets import CommandWriter
from .enums import _ENABLED_STATE
from .model import ClusterModel
from .wire import Row, _piped_vm_ids


class EventQueues:
    """CIM indications of this endpoint: one queue per SourceIdentifier.

    A real server keeps them per runspace and drops them with it; here a
    re-register replaces the old one.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, list[Row]] = {}
        self.subscriptions: dict[str, Any] = {}
        self._counter = iter(range(1, 1 << 62))

    def event(self, source: str, vm: VM) -> Row:
        """A PSEventArgs for an ``__InstanceModificationEvent`` of the VM's Msvm_ComputerSystem."""
        target = Row(
            ["Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/"
             "Msvm_ComputerSystem"],
            {"Name": vm.id.upper(), "ElementName": vm.name, "Caption": "Virtual Machine",
             "EnabledState": _ENABLED_STATE.get(vm.power, 0), "OtherEnabledState": None,
             # HealthState 5 OK, 25 Critical Failure (a Paused-Critical VM).
             "HealthState": 25 if vm.power is PowerState.PAUSED_CRITICAL else 5,
             "OnTimeInMilliseconds": 0},
            to_string=f"Msvm_ComputerSystem (Name = \"{vm.id.upper()}\")",
        )
        new = Row(["Microsoft.Management.Infrastructure.CimInstance#root/virtualization/v2/"
                   "__InstanceModificationEvent"], {"TargetInstance": target})
        args = Row(["Microsoft.Management.Infrastructure.CimCmdlets."
                    "CimIndicationEventInstanceEventArgs"], {"NewEvent": new})
        return Row(["System.Management.Automation.PSEventArgs"], {
            "EventIdentifier": next(self._counter), "SourceIdentifier": source,
            "TimeGenerated": datetime.now(UTC), "SourceEventArgs": args,
        })


class Endpoint:
    """One node's (or the whole cluster's) view of the model, shared by its handlers."""

    def __init__(self, model: ClusterModel, node: str | None) -> None:
        self.model = model
        self.node = node
        self.events = EventQueues()
        #: Msvm_VirtualSystemSettingData instances made by ``indications._settings``:
        #: VM or checkpoint id -> (the object it was made from, SnapshotType override, row).
        self.settings_rows: dict[str, tuple[Any, str | None, dict[str, Any]]] = {}

    def log(self, name: str) -> None:
        """Record a command served (``model.calls``, for tests)."""
        with self.model.lock:
            self.model.calls.append(name)

    def piped_vms(self, writer: CommandWriter) -> list[VM]:
        """The VMs piped in (``Get-VM -Id … | <cmdlet>``) that still exist."""
        model = self.model
        with model.lock:
            return [model.vms[i] for i in _piped_vm_ids(writer) if i in model.vms]

    def node_entity(self) -> Node | None:
        """The node this endpoint answers as (the first node for a cluster-wide endpoint)."""
        model = self.model
        with model.lock:
            return model.nodes.get(self.node or next(iter(model.nodes)))

    def update(self, vm_id: str, **changes: Any) -> None:
        """Replace fields of one VM in the model."""
        model = self.model
        with model.lock:
            model.vms[vm_id] = dataclasses.replace(model.vms[vm_id], **changes)
            model.version += 1

