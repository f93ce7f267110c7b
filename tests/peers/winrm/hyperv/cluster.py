"""FailoverClusters cmdlets.

Get-ClusterNode, Get-ClusterSharedVolume(State), Remove-ClusterGroup, Add-
ClusterVirtualMachineRole.
"""

from __future__ import annotations

import uuid
from typing import Any

from ventana.state.model import (
    LunRole,
    LunState,
)

from ..cmdlets import CommandWriter, ErrorCategory, TerminatingError
from .endpoint import Endpoint
from .enums import (
    _CSV_STATE,
    FC,
    CsvStateInfo,
    DrainStatus,
    NodeStateEnum,
    ResourceState,
    _enum,
)
from .model import ClusterModel, volume_guid
from .wire import (
    Row,
    _obj,
    _wire,
)


def _cluster_row(model: ClusterModel) -> Row:
    """The ``Cluster`` object a ClusterObject carries (its ToString is the cluster's name)."""
    name = model.cluster.name
    return Row([FC + "Cluster"], {
        "Name": name, "Id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ventana-test-cluster:{name}")),
        "Domain": model.profile.domain}, to_string=name)


_NODE_STATES = {"up": "Up", "down": "Down", "paused": "Paused", "joining": "Joining"}


def _node_row(model: ClusterModel, node_id: str) -> Row:
    """A ClusterNode (Get-ClusterNode's output, and a CSV's ``OwnerNode``)."""
    n = model.nodes.get(node_id)
    state = n.state.value if n is not None else "unknown"
    name = model.profile.cluster_node(node_id)
    return Row([FC + "ClusterNode", FC + "ClusterObject"], {
        "Name": name,
        "Id": str(list(model.nodes).index(node_id) + 1) if n is not None else "",
        "State": _enum(NodeStateEnum, _NODE_STATES.get(state, "Unknown")),
        "DrainStatus": _enum(DrainStatus,
                             "InProgress" if state == "draining" else "NotInitiated"),
        "Cluster": _cluster_row(model),
    }, to_string=name)


def get_cluster_node(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Get-ClusterNode: ``Cluster`` is a nested object (a Cluster), not a name."""
    model = ep.model
    ep.log("Get-ClusterNode")
    with model.lock:
        rows = [_node_row(model, node_id) for node_id in model.nodes]
    for row in rows:
        writer.write_output(row if writer.piped else _wire(row))


def get_csvs(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Get-ClusterSharedVolume")
    with model.lock:
        luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
    for lun in luns:
        writer.write_output(
            _obj(
                writer,
                [FC + "ClusterSharedVolume", FC + "ClusterObject"],
                {
                    "Name": model.resource_name(lun.id),
                    "Id": lun.id,
                    "OwnerNode": _node_row(model, lun.owner_node_id),  # a ClusterNode object
                    "State": _enum(ResourceState, _CSV_STATE[lun.state]),
                    "SharedVolumeInfo": "{" + model.mount_of(lun.id) + "}",
                },
                to_string=model.resource_name(lun.id),
            )
        )


def get_csv_state(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Get-ClusterSharedVolumeState")
    with model.lock:
        luns = [x for x in model.luns.values() if x.role is LunRole.CSV]
        nodes = list(model.nodes)
    node_names = [model.profile.cluster_node(n) for n in nodes]
    for lun in luns:
        # One row per CSV and node; what is the CSV's is worked out once, not per node.
        info = "Direct"
        if lun.state is LunState.REDIRECTED:
            info = "FileSystemRedirected"
        name = model.resource_name(lun.id)
        state = _enum(CsvStateInfo, info)
        volume = f"\\\\?\\Volume{{{volume_guid(lun.id)}}}\\"
        friendly = model.mount_of(lun.id).rsplit("\\", 1)[-1]
        for node_name in node_names:
            writer.write_output(
                _obj(
                    writer,
                    [FC + "ClusterSharedVolumeState"],
                    {
                        "Name": name,
                        "Node": node_name,
                        "StateInfo": state,
                        "VolumeName": volume,
                        "VolumeFriendlyName": friendly,
                    },
                )
            )


def remove_cluster_group(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    """Remove-ClusterGroup -VMId G -RemoveResources -Force: the VM's role goes."""
    model = ep.model
    ep.log("Remove-ClusterGroup")
    vm_id = str(params.get("VMId", "")).casefold()
    if not params.get("RemoveResources"):
        raise TerminatingError("The group still has resources; use -RemoveResources.",
                               error_id="InvalidOperation",
                               category=ErrorCategory.InvalidOperation)
    with model.lock:
        if vm_id not in model.clustered:
            raise TerminatingError(
                f"No clustered role was found for the virtual machine with id '{vm_id}'.",
                error_id="ClusterObjectNotFound", category=ErrorCategory.ObjectNotFound,
                exception_type=FC + "ClusterCmdletException")
        model.clustered.discard(vm_id)
        model.version += 1


def add_cluster_role(ep: Endpoint, params: dict[str, Any], writer: CommandWriter) -> None:
    model = ep.model
    ep.log("Add-ClusterVirtualMachineRole")
    if model.role_needs_credssp:
        # A remote session without CredSSP cannot make the second hop to the cluster
        # service (Get-WSManCredSSP docs: CredSSP is "designed for commands that create a
        # remote session from another remote session"; issue 14 §6). This peer has no
        # CredSSP, so the refusal is unconditional in this mode.
        raise TerminatingError(
            "You do not have administrative privileges on the cluster. Contact your "
            "network administrator to request access. Access is denied",
            error_id="ClusterAccessDenied", category=ErrorCategory.PermissionDenied,
            exception_type=FC + "ClusterCmdletException")
    vm_id = str(params.get("VMId", "")).casefold()
    name = str(params.get("Name", ""))
    with model.lock:
        vm = model.vms.get(vm_id)
        if vm is None:
            raise TerminatingError(f"No virtual machine with id {vm_id}.",
                                   error_id="ObjectNotFound",
                                   category=ErrorCategory.ObjectNotFound)
        taken = {model.group_names.get(v, model.vms[v].name).casefold()
                 for v in model.clustered if v in model.vms}
        if (name or vm.name).casefold() in taken:
            raise TerminatingError(
                f"A cluster group named '{name or vm.name}' already exists.",
                error_id="ClusterGroupExists", category=ErrorCategory.ResourceExists,
                exception_type=FC + "ClusterCmdletException")
        model.clustered.add(vm_id)
        model.group_names[vm_id] = name or vm.name
        model.version += 1


HANDLERS = {
    "Get-ClusterNode": get_cluster_node,
    "Get-ClusterSharedVolume": get_csvs,
    "Get-ClusterSharedVolumeState": get_csv_state,
    "Remove-ClusterGroup": remove_cluster_group,
    "Add-ClusterVirtualMachineRole": add_cluster_role,
}
