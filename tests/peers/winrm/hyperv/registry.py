"""The command registry of one endpoint: each cmdlet family's handlers bound to an Endpoint."""

from __future__ import annotations

import functools

from ..cmdlets import CommandRegistry, Handler
from . import backup, checkpoints, cim, cluster, devices, host, storage, vms
from .endpoint import Endpoint
from .model import ClusterModel
from .pipeline import _convert_to_json, _select, projection_script

#: The cmdlet families, each a module with a ``HANDLERS`` table of ``handler(ep, params, writer)``.
FAMILIES = (cluster, cim, vms, checkpoints, storage, devices, host, backup)  # backup: last


def build_hyperv_registry(model: ClusterModel, node: str | None = None) -> CommandRegistry:
    """The Hyper-V/FailoverClusters commands of one node (None: of the whole cluster)."""
    ep = Endpoint(model, node)
    handlers: dict[str, Handler] = {}
    for family in FAMILIES:
        for name, fn in family.HANDLERS.items():
            handlers[name] = functools.partial(fn, ep)
    handlers["Select-Object"] = _select
    handlers["ConvertTo-Json"] = _convert_to_json
    return CommandRegistry(handlers, scripts=projection_script)


def build_registry() -> CommandRegistry:
    """For ``--commands``: the default simulated cluster (74 VMs) on one endpoint."""
    return build_hyperv_registry(ClusterModel())
