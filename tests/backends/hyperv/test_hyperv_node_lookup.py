"""Every Hyper-V action finds a VM's node the same way, through one endpoint for the cluster.

A single WinRM endpoint may answer for every node of a cluster (the cluster
name, a lab, the test peer's ``build_hyperv_registry(model)`` with no node):
its ``Win32_ComputerSystem`` names one node, yet its ``Get-VM`` lists the VMs
of all of them. A VM hosted by another node is then reached through the
session whose last read reported it (``HyperVContext.node_for``'s owner
fallback). Compact and delete always did that; merge and upgrade looked the
node up by computer name only and refused ("node … is not connected; the
merge was not sent") — the bug these tests pin.
"""

from __future__ import annotations

import pytest
from peers.winrm.fixture import PeerHandle
from peers.winrm.hyperv import ClusterModel
from test_hyperv_backend import Feed, backend_for, one_peer  # noqa: F401 - the fixture

from ventana.state.events import LinkState
from ventana.state.model import VM, FinalState, Kind, PowerState, TaskState


def served_name(model: ClusterModel) -> str:
    """The node the one endpoint says it is (its Win32_ComputerSystem name)."""
    return next(iter(model.nodes))


def vm_on_another_node(model: ClusterModel, *, checkpoints: bool) -> VM:
    me = served_name(model).casefold()
    return next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
                if v.node_id.casefold() != me and bool(model.chains.get(v.id)) is checkpoints)


async def up(feed: Feed) -> None:
    source = feed.backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")


@pytest.mark.timeout(40)
async def test_merge_of_a_vm_on_another_node_served_by_the_same_endpoint(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = vm_on_another_node(model, checkpoints=True)
    backend = backend_for(handle, read_only=False)
    feed = Feed(backend)
    try:
        await up(feed)
        await feed.until(lambda: (Kind.VM, vm.id) in feed.state, 10, "the VM read")
        assert feed.state[(Kind.VM, vm.id)].node_id == vm.node_id != served_name(model)
        result = await backend.executor().merge(vm.id, "merge-other-node")
        assert result.state is TaskState.OK, result.error
        assert result.final_state is FinalState.OPERATIONAL
        assert model.chains[vm.id] == [] and "Remove-VMSnapshot" in model.calls
    finally:
        await feed.close()


@pytest.mark.timeout(40)
async def test_upgrade_of_a_vm_on_another_node_served_by_the_same_endpoint(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if v.node_id.casefold() != served_name(model).casefold()
              and v.config_version != model.host_version)
    model.set_power(vm.id, PowerState.OFF)
    backend = backend_for(handle, read_only=False)
    feed = Feed(backend)
    try:
        await up(feed)
        await feed.until(lambda: (Kind.VM, vm.id) in feed.state
                         and feed.state[(Kind.VM, vm.id)].power is PowerState.OFF, 10, "VM off")
        result = await backend.executor().upgrade_version(vm.id, "upgrade-other-node",
                                                          model.host_version)
        assert result.state is TaskState.OK, result.error
        assert model.vms[vm.id].config_version == model.host_version
        assert "Update-VMVersion" in model.calls
    finally:
        await feed.close()
