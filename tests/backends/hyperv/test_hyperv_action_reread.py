"""After our own actions (compact, delete, merge, upgrade) the result shows at once.

Against the WinRM endpoint, with a 60 s poll and no event stream (so
neither a poll nor a CSV event can bring them): when the action ends, the
backend re-reads that VM and the CSVs' free space in one round trip
(``HyperVContext.reread_vm``), and the store has the host's new file sizes,
checkpoints and free space within a second — with no full poll sent
(``Get-VMReplication`` is sent by the full poll only).
"""

from __future__ import annotations

import dataclasses

import pytest
from peers.winrm.fixture import PeerHandle
from peers.winrm.hyperv import ClusterModel
from test_hyperv_backend import backend_for, one_peer  # noqa: F401 - the fixture
from test_hyperv_cleanup import connected, lun_free, off_vm

from ventana.state.model import Kind, PowerState, TaskState

#: Action's end → store: the targeted re-read is one round trip, already answered when
#: the action returns; this bound only lets the consumer apply the queued events.
AT_ONCE_S = 1.0


def full_polls(model: ClusterModel) -> int:
    with model.lock:
        return model.calls.count("Get-VMReplication")


def shown_sizes(feed, vm_id: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {d.path: d.size_bytes for d in feed.of(Kind.DISK).values() if d.vm_id == vm_id}


@pytest.mark.timeout(40)
async def test_a_compact_shows_the_new_sizes_and_the_csv_space_without_a_poll(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle, read_only=False, poll_interval=60.0, stream=False)
    feed = await connected(backend)
    polls = full_polls(model)
    paths = tuple(d.path for d in backend._vm_disks(vm.id))
    free_before = lun_free(feed, vm.lun_id)
    result = await backend.executor().compact_vhdx(vm.id, "compact-now", paths)
    assert result.state is TaskState.OK, result.error
    with model.lock:
        host = {p: model.disk_by_path(p).size_bytes for p in paths}
        free_host = model.luns[vm.lun_id].free_bytes
    assert sum(host.values()) == result.size_after < result.size_before
    await feed.until(lambda: shown_sizes(feed, vm.id) == host, AT_ONCE_S, "the new sizes")
    # Megabytes on the wire (MSCluster_DiskPartition.FreeSpace).
    await feed.until(lambda: lun_free(feed, vm.lun_id) == free_host // 2**20 * 2**20,
                     AT_ONCE_S, "the CSV's new free space")
    assert lun_free(feed, vm.lun_id) > free_before
    assert full_polls(model) == polls, "a full poll ran"
    await feed.close()


@pytest.mark.timeout(40)
async def test_a_merge_shows_the_merged_chain_at_once_without_a_poll(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm_id = next(v for v, chain in model.chains.items() if len(chain) >= 2)
    backend = backend_for(handle, read_only=False, poll_interval=60.0, stream=False)
    feed = await connected(backend)
    polls = full_polls(model)
    cps = list(model.chains[vm_id])
    assert all((Kind.CHECKPOINT, c) in feed.state for c in cps)
    result = await backend.executor().merge(vm_id, "merge-now")
    assert result.state is TaskState.OK, result.error
    with model.lock:
        host = {d.path: d.size_bytes for d in model.disks.values() if d.vm_id == vm_id}
    assert result.size_after == sum(host.values())
    await feed.until(lambda: shown_sizes(feed, vm_id) == host
                     and not any((Kind.CHECKPOINT, c) in feed.state for c in cps),
                     AT_ONCE_S, "the merged chain")
    assert full_polls(model) == polls, "a full poll ran"
    await feed.close()


@pytest.mark.timeout(40)
async def test_a_delete_removes_the_vm_and_shows_the_space_without_a_poll(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model, checkpoints=True)
    backend = backend_for(handle, read_only=False, poll_interval=60.0, stream=False)
    feed = await connected(backend)
    polls = full_polls(model)
    paths = tuple(d.path for d in backend._vm_disks(vm.id))
    free_before = lun_free(feed, vm.lun_id)
    result = await backend.executor().delete_vm(vm.id, "delete-now", paths)
    assert result.state is TaskState.OK, result.error
    with model.lock:
        free_host = model.luns[vm.lun_id].free_bytes
    await feed.until(lambda: (Kind.VM, vm.id) not in feed.state and not shown_sizes(feed, vm.id)
                     and not any(c.vm_id == vm.id for c in feed.of(Kind.CHECKPOINT).values())
                     and lun_free(feed, vm.lun_id) == free_host // 2**20 * 2**20,
                     AT_ONCE_S, "the VM gone and its space back")
    assert lun_free(feed, vm.lun_id) > free_before
    assert full_polls(model) == polls, "a full poll ran"
    await feed.close()


@pytest.mark.timeout(40)
async def test_an_upgrade_reads_the_version_reached_without_a_poll(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm_id = next(v for v in sorted(model.vms) if not model.chains.get(v))
    with model.lock:
        model.vms[vm_id] = dataclasses.replace(model.vms[vm_id], config_version="5.0")
        model.version += 1
    model.set_power(vm_id, PowerState.OFF)
    backend = backend_for(handle, read_only=False, poll_interval=60.0, stream=False)
    feed = await connected(backend)
    polls = full_polls(model)
    want = "8.0" if model.profile.server2016 else "9.0"
    result = await backend.executor().upgrade_version(vm_id, "upgrade-now", want)
    assert result.state is TaskState.OK, result.error
    assert result.detail == f"configuration version 5.0 → {want}"  # read back from the host
    await feed.until(lambda: feed.state[(Kind.VM, vm_id)].config_version == want, AT_ONCE_S,
                     "the version reached")
    assert full_polls(model) == polls, "a full poll ran"
    await feed.close()
