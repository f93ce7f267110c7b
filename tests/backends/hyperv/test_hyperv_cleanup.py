"""Compact a VHDX and delete an obsolete VM on Hyper-V, through the WinRM/PSRP test peer.

The peer's model is the host: Optimize-VHD shrinks a file and gives its
unused blocks back to the CSV, refused while the file's VM is not Off;
Remove-ClusterGroup / Remove-VM / Remove-Item remove the role, the VM and
exactly the files named, and the CSV gains their space. Sizes and outcomes
are what the backend reads back from the endpoint. A read-only session
sends neither, even when the UI and the executor are bypassed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from peers.winrm.fixture import PeerHandle
from peers.winrm.hyperv import ClusterModel
from test_hyperv_backend import Feed, backend_for, one_peer  # noqa: F401 - the fixture

from ventana.backends.actions import ActionRunner
from ventana.backends.base import ReadOnlyError
from ventana.backends.hyperv import commands as c
from ventana.backends.hyperv.backend import HyperVBackend, HyperVExecutor
from ventana.backends.hyperv.cleanup import Cleanup, check_path, is_volume_root
from ventana.state.actionlog import ActionLog
from ventana.state.events import LinkState, TaskProgress
from ventana.state.model import VM, FinalState, Kind, PowerState, ReplicationState, TaskState
from ventana.state.store import Store


def off_vm(model: ClusterModel, *, checkpoints: bool = False) -> VM:
    """A VM with disks, no replication, turned Off on the host."""
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if v.disk_ids and v.replication is ReplicationState.DISABLED
              and bool(model.chains.get(v.id)) is checkpoints)
    model.set_power(vm.id, PowerState.OFF)
    return model.vms[vm.id]


async def connected(backend: HyperVBackend, store: Store | None = None) -> Feed:
    feed = Feed(backend, store)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20,
                     "connected")
    return feed


def lun_free(feed: Feed, lun_id: str) -> int:
    return feed.state[(Kind.LUN, lun_id)].free_bytes


@pytest.mark.timeout(40)
async def test_compact_of_an_off_vm_frees_space_read_back_from_the_host(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path,  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = await connected(backend, store)
    await feed.until(lambda: store.vm(vm.id) is not None
                     and store.vm(vm.id).power is PowerState.OFF, 10, "the VM off")
    free_before = lun_free(feed, vm.lun_id)
    log = ActionLog.open(tmp_path / "actions.db")
    try:
        runner = ActionRunner(store, backend, log)
        plan = runner.plan("compact", vm.id)
        assert not plan.blocking, plan.blocking
        paths = [d["path"] for d in plan.facts["disks"]]
        sizes = {p: model.disk_by_path(p).size_bytes for p in paths}
        result = await runner.execute(plan, plan.target_name)
        assert result.state is TaskState.OK, result.error
        assert result.final_state is FinalState.OPTIMIZED
        assert result.size_before == sum(sizes.values())
        now = {p: model.disk_by_path(p).size_bytes for p in paths}
        assert result.size_after == sum(now.values()) < result.size_before
        assert "freed" in result.detail
        freed = result.size_before - result.size_after
        # The CSV's free space as the backend reads it (MB granularity on the wire).
        await feed.until(lambda: lun_free(feed, vm.lun_id) >= free_before + freed - 2**20,
                         10, "the CSV gained the space")
        # The CSV's space streams (CIM subscription); the files' sizes come with the
        # next poll (a CSV that gained space triggers no file re-read).
        await feed.until(lambda: all({d.path: d.size_bytes for d in store.disks_of(vm.id)}
                                     .get(p) == now[p] for p in paths), 10, "the new sizes")
        progress = [e for e in feed.events if isinstance(e, TaskProgress)]
        assert progress and max(p.pct for p in progress) <= 100
        [row] = log.rows()
        assert (row.action, row.outcome) == ("compact", "ok")
        assert model.calls.count("Optimize-VHD") == len(paths)
        # Each file attached read-only first (Full mode's full effect), always detached.
        sent = [x for x in model.calls if x.endswith("-VHD") and x != "Get-VHD"]
        assert sent == ["Mount-VHD", "Optimize-VHD", "Dismount-VHD"] * len(paths)
        assert not model.mounted
        assert all(now[p] <= max(4 * 2**20, int(sizes[p] * model.compact_keep)) for p in paths)
    finally:
        log.close()
        await feed.close()


@pytest.mark.timeout(40)
async def test_compact_of_a_vm_running_on_the_host_is_refused_before_sending(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle, read_only=False, poll_interval=30.0, stream=False)
    feed = await connected(backend)
    paths = tuple(d.path for d in backend._vm_disks(vm.id) if not d.parent_path)
    model.set_power(vm.id, PowerState.RUNNING)  # started after the last poll
    result = await backend.executor().compact_vhdx(vm.id, "compact-run", paths)
    assert result.state is TaskState.FAILED
    assert "Running" in result.error and "nothing was sent" in result.error
    assert "Optimize-VHD" not in model.calls
    # Even if the pre-check were raced, the host itself refuses a file in use.
    action = backend._new_session(handle.host, handle.port)
    with pytest.raises(Exception, match="being used by another process"):
        await action.run(c.optimize_vhd(paths[0]))
    await action.close()
    # A path that is not one of the VM's files is refused too.
    other = next(d for d in model.disks.values() if d.vm_id != vm.id)
    model.set_power(vm.id, PowerState.OFF)
    result = await backend.executor().compact_vhdx(vm.id, "compact-x", (other.path,))
    assert result.state is TaskState.FAILED and f"used by {model.vms[other.vm_id].name}" in \
        result.error and "nothing was sent" in result.error
    await feed.close()


@pytest.mark.timeout(40)
async def test_delete_removes_the_vm_and_its_files_and_the_lun_gains_the_space(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path,  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model, checkpoints=True)
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = await connected(backend, store)
    await feed.until(lambda: store.vm(vm.id) is not None
                     and store.vm(vm.id).power is PowerState.OFF, 10, "the VM off")
    free_before = lun_free(feed, vm.lun_id)
    log = ActionLog.open(tmp_path / "actions.db")
    try:
        runner = ActionRunner(store, backend, log)
        plan = runner.plan("delete", vm.id)
        assert not plan.blocking, plan.blocking
        files = [f["path"] for f in plan.facts["files"]]
        assert len(files) > len(vm.disk_ids)  # base disks and the checkpoints' .avhdx
        total = sum(f["size"] for f in plan.facts["files"])
        others = {d.id for d in model.disks.values() if d.vm_id != vm.id}
        result = await runner.execute(plan, plan.target_name, confirmed_twice=True)
        assert result.state is TaskState.OK, result.error
        assert vm.id not in model.vms and vm.id not in model.clustered
        assert all(model.disk_by_path(p) is None for p in files)
        assert others <= set(model.disks)  # nothing else was touched
        sent = [x for x in model.calls if x in c.MUTATING_CMDLETS]
        assert sent == ["Remove-ClusterGroup", "Remove-VM", *["Remove-Item"] * len(files)]
        await feed.until(lambda: store.vm(vm.id) is None, 10, "the VM gone from the view")
        assert not store.disks_of(vm.id)
        await feed.until(lambda: lun_free(feed, vm.lun_id) >= free_before + total - 2**20,
                         10, "the CSV gained the space")
        [row] = log.rows()
        assert (row.action, row.outcome) == ("delete", "ok")
    finally:
        log.close()
        await feed.close()


@pytest.mark.timeout(40)
async def test_delete_reports_files_it_could_not_remove_and_refuses_foreign_paths(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle, read_only=False)
    feed = await connected(backend)
    await feed.until(lambda: feed.state[(Kind.VM, vm.id)].power is PowerState.OFF, 10, "off")
    files = tuple(d.path for d in backend._vm_disks(vm.id))
    foreign = next(d for d in model.disks.values() if d.vm_id != vm.id)
    ex = backend.executor()
    # A file of another VM, a wildcard, a folder: refused before anything is sent.
    for bad in (foreign.path, files[0].rsplit("\\", 1)[0] + "\\*.vhdx",
                files[0].rsplit("\\", 1)[0]):
        result = await ex.delete_vm(vm.id, "del-bad", (*files, bad))
        assert result.state is TaskState.FAILED and "nothing was sent" in result.error, bad
    assert not set(model.calls) & c.MUTATING_CMDLETS
    # One file held open on the host: the rest goes, that one is reported.
    model.locked.add(files[0].casefold())
    result = await ex.delete_vm(vm.id, "del-1", files)
    assert result.state is TaskState.WARNING
    assert files[0] in result.error and "being used by another process" in result.error
    assert result.final_state is FinalState.PENDING
    assert model.disk_by_path(files[0]) is not None
    assert all(model.disk_by_path(p) is None for p in files[1:])
    assert vm.id not in model.vms
    await feed.close()


@pytest.mark.timeout(40)
async def test_delete_is_refused_on_the_host_when_running_or_replicating(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle, read_only=False, poll_interval=30.0, stream=False)
    feed = await connected(backend)
    files = tuple(d.path for d in backend._vm_disks(vm.id))
    model.set_power(vm.id, PowerState.RUNNING)
    result = await backend.executor().delete_vm(vm.id, "del-run", files)
    assert result.state is TaskState.FAILED and "Running" in result.error
    with model.lock:
        model.vms[vm.id] = dataclasses.replace(model.vms[vm.id], power=PowerState.OFF,
                                               replication=ReplicationState.REPLICATING)
        model.changed()
    result = await backend.executor().delete_vm(vm.id, "del-repl", files)
    assert result.state is TaskState.FAILED and "replication Replicating" in result.error
    assert not set(model.calls) & c.MUTATING_CMDLETS and vm.id in model.vms
    await feed.close()


@pytest.mark.timeout(40)
async def test_compact_of_a_vm_with_checkpoints_is_refused_on_both_sides(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model, checkpoints=True)
    backend = backend_for(handle, read_only=False)
    feed = await connected(backend)
    base = model.disks[vm.disk_ids[0]].path
    result = await backend.executor().compact_vhdx(vm.id, "cp-1", (base,))
    assert result.state is TaskState.FAILED and "checkpoint(s)" in result.error
    assert "Optimize-VHD" not in model.calls
    action = backend._new_session(handle.host, handle.port)
    with pytest.raises(Exception, match="parent of a differencing disk"):
        await action.run(c.optimize_vhd(base))  # the host refuses it too
    await action.close()
    await feed.close()


@pytest.mark.timeout(30)
async def test_read_only_session_sends_neither_compact_nor_delete(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle)  # read-only is the default
    feed = await connected(backend)
    files = tuple(d.path for d in backend._vm_disks(vm.id))
    with pytest.raises(ReadOnlyError):
        await HyperVExecutor(backend).compact_vhdx(vm.id, "ro-1", files)
    with pytest.raises(ReadOnlyError):
        await HyperVExecutor(backend).delete_vm(vm.id, "ro-2", files)
    # Below the executor: the action code and the node session refuse too.
    assert (await Cleanup(backend.context).compact(vm.id, "ro-3", files)).state is TaskState.FAILED
    assert (await Cleanup(backend.context).delete(vm.id, "ro-4", files)).state is TaskState.FAILED
    session = backend.sessions()[0]
    for command in (c.optimize_vhd(files[0]), c.remove_vm(vm.id), c.remove_file(files[0]),
                    c.remove_cluster_group(vm.id)):
        with pytest.raises(ReadOnlyError):
            await session.run(command)
    assert not set(model.calls) & c.MUTATING_CMDLETS
    assert vm.id in model.vms and all(model.disk_by_path(p) for p in files)
    await asyncio.sleep(0)
    await feed.close()


def test_check_path_allows_only_plain_disk_files_under_the_vms_folders() -> None:
    roots = {"c:\\clusterstorage\\volume1\\app-01"}
    ok = "C:\\ClusterStorage\\Volume1\\APP-01\\app-01.vhdx"
    assert check_path(ok, roots) == ""
    assert check_path("C:\\ClusterStorage\\Volume1\\app-01\\a_1.avhdx", roots) == ""
    assert "wildcard" in check_path("C:\\ClusterStorage\\Volume1\\app-01\\*.vhdx", roots)
    assert "relative" in check_path(
        "C:\\ClusterStorage\\Volume1\\app-01\\..\\other\\x.vhdx", roots)
    assert "not a virtual disk" in check_path("C:\\ClusterStorage\\Volume1\\app-01", roots)
    assert "outside" in check_path("C:\\ClusterStorage\\Volume1\\app-012\\x.vhdx", roots)
    assert "absolute" in check_path("app-01.vhdx", roots)
    for root in ("c:", "c:\\", "c:\\clusterstorage", "c:\\clusterstorage\\volume1",
                 "c:\\clusterstorage\\volume1\\", "d:\\"):
        assert is_volume_root(root), root
    assert not is_volume_root("c:\\clusterstorage\\volume1\\app-01")
    assert not is_volume_root("d:\\hyper-v")


@pytest.mark.timeout(40)
async def test_a_base_disk_another_vm_depends_on_is_neither_compacted_nor_deleted(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    other = next(v for v in model.vms.values() if v.id != vm.id and v.disk_ids)
    base = model.disks[vm.disk_ids[0]]
    # Another VM's disk is a differencing child of this VM's base (a shared template).
    with model.lock:
        child = model.disks[other.disk_ids[0]]
        model.disks[child.id] = dataclasses.replace(child, parent_path=base.path)
        model.changed()
    backend = backend_for(handle, read_only=False)
    feed = await connected(backend)
    await feed.until(lambda: any(d.parent_path == base.path for d in feed.of(Kind.DISK).values()
                                 if d.vm_id == other.id), 10, "the shared parent read")
    files = tuple({d.path for d in backend._vm_disks(vm.id)} | {base.path})
    for result in (await backend.executor().compact_vhdx(vm.id, "sh-1", (base.path,)),
                   await backend.executor().delete_vm(vm.id, "sh-2", files)):
        assert result.state is TaskState.FAILED, result
        assert f"used by {other.name}" in result.error and "nothing was sent" in result.error
    assert not set(model.calls) & c.MUTATING_CMDLETS
    await feed.close()


def test_commands_md_documents_the_cleanup_commands() -> None:
    doc = (Path(c.__file__).parent / "COMMANDS.md").read_text()
    vm_id = "d3b0c9b2-8f2e-4a53-9d3c-6a7f0f6b2a11"
    path = "C:\\ClusterStorage\\Volume1\\app-01\\app-01.vhdx"
    for command in (c.get_vm_check(vm_id), c.get_vm_drives(vm_id), c.paths_present([path]),
                    c.mount_vhd_read_only(path), c.optimize_vhd(path), c.dismount_vhd(path),
                    c.remove_cluster_group(vm_id), c.remove_vm(vm_id), c.remove_file(path)):
        assert command.as_powershell() in doc, command.as_powershell()
    for command in (c.mount_vhd_read_only(path), c.optimize_vhd(path), c.dismount_vhd(path),
                    c.remove_cluster_group(vm_id), c.remove_vm(vm_id), c.remove_file(path)):
        assert command.mutating
        assert {n for x in command.pipeline() for n in x.commands} & c.MUTATING_CMDLETS
    for command in (c.get_vm_check(vm_id), c.get_vm_drives(vm_id), c.paths_present([path])):
        assert not command.mutating
        assert {n for x in command.pipeline() for n in x.commands} <= c.READ_CMDLETS


@pytest.mark.timeout(40)
async def test_connection_lost_during_a_compact_is_unknown(
    one_peer: tuple[ClusterModel, PeerHandle],  # noqa: F811
) -> None:
    model, handle = one_peer
    vm = off_vm(model)
    backend = backend_for(handle, read_only=False, operation_timeout=2)
    feed = await connected(backend)
    paths = tuple(d.path for d in backend._vm_disks(vm.id) if not d.parent_path)
    model.merge_step_s = 0.5  # Optimize-VHD's pace
    compact = asyncio.create_task(backend.executor().compact_vhdx(vm.id, "lost-1", paths))
    await feed.until(lambda: "Optimize-VHD" in model.calls, 10, "the compact running")
    await asyncio.to_thread(handle.peer.stop)
    result = await asyncio.wait_for(compact, 20)
    assert result.state is TaskState.UNKNOWN and "verify on the host" in result.error
    assert result.final_state is FinalState.PENDING
    await feed.close()
