"""How the simulated host compacts a VM's disks and deletes a VM.

Owns the two offline clean-up actions on the simulated clock, checked the
way Hyper-V checks them when they run (not only when planned):

- compact (Optimize-VHD -Mode Full): the VM must be off and have no
  checkpoints; each dynamic base disk shrinks by the blocks its guest no
  longer uses — a fixed, per-disk fraction (0-25 %) derived from the disk's id,
  so runs are repeatable — and the volume gains that space. It reads the
  whole file: about 20 simulated seconds per GB.
- delete (Remove-ClusterGroup, Remove-VM, Remove-Item): the VM must be off
  and not replicating; its configuration and checkpoints go, then exactly the
  files the confirmed plan listed. A file of the VM that was not listed stays
  on the volume (counted as orphaned space), as it would on a real host.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from ventana.state.model import FinalState, Kind, PowerState, ReplicationState, TaskState

from ..base import ActionResult
from .context import SimContext
from .hresults import COMPACT_PARENT, FILE_NOT_FOUND

COMPACT_S_PER_GB = 20.0
DELETE_S = 45.0


def reclaimable_fraction(disk_id: str) -> float:
    """The share of a disk file its guest no longer uses (0 to 0.25, fixed per disk)."""
    digest = hashlib.sha256(disk_id.encode()).digest()
    return (digest[0] % 26) / 100.0


async def _run(sim: SimContext, task_id: str, duration_s: float,
               finish: Callable[[], ActionResult]) -> ActionResult:
    future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()

    def done() -> None:
        result = finish()
        if not future.done():
            future.set_result(result)
        sim.wake()

    sim.sched.after(duration_s, done)
    return await sim.settle(task_id, future)  # resolved "unknown" if the session drops


def _not_sent(sim: SimContext, what: str) -> ActionResult | None:
    if not sim.connected:
        return ActionResult(TaskState.FAILED,
                            error=f"{sim.target} is not connected; the {what} was not sent")
    return None


async def run_compact(sim: SimContext, vm_id: str, task_id: str,
                      paths: tuple[str, ...]) -> ActionResult:
    refused = _not_sent(sim, "compact")
    if refused is not None:
        return refused
    sim.catch_up()
    world = sim.world
    vm = world.vms.get(vm_id)
    if vm is None:
        return ActionResult(TaskState.FAILED, error="the VM was not found on the host")
    by_path = {world.disks[d].path: d for d in vm.disk_ids if d in world.disks}
    disk_ids = [by_path[p] for p in paths if p in by_path]
    before = world.vm_bytes(vm_id)
    size = sum(world.disks[d].size_bytes for d in disk_ids)
    task = world.start_task(task_id, "compact", vm, f"Optimize-VHD on {len(disk_ids)} disk(s)")
    world.progress(task.id, 5.0, "reading the disk files")

    def finish() -> ActionResult:
        current = world.vms.get(vm_id)
        if current is None or current.power is not PowerState.OFF:
            error = ("Optimize-VHD: The process cannot access the file because it is being "
                     "used by another process. (the VM is not off)")
        elif world.chains.get(vm_id):
            error = ("Optimize-VHD: The virtual disk is the parent of a differencing disk "
                     f"and cannot be compacted. ({COMPACT_PARENT})")
        elif len(disk_ids) != len(paths):
            error = f"Optimize-VHD: The system cannot find the file specified. ({FILE_NOT_FOUND})"
        else:
            freed = 0
            for d in disk_ids:
                shrink = int(world.disks[d].size_bytes * reclaimable_fraction(d))
                freed -= world.grow_file(d, -shrink)
            world.finish_task(task.id, TaskState.OK, f"compacted; {freed} bytes freed",
                              pct=100.0)
            return ActionResult(TaskState.OK, size_before=before,
                                size_after=world.vm_bytes(vm_id),
                                final_state=FinalState.OPTIMIZED,
                                detail=f"{len(disk_ids)} disk(s) compacted, {freed} bytes freed")
        world.finish_task(task.id, TaskState.FAILED, error=error)
        return ActionResult(TaskState.FAILED, error=error, size_before=before,
                            final_state=FinalState.PENDING)

    return await _run(sim, task_id, max(30.0, COMPACT_S_PER_GB * size / 1024**3), finish)


async def run_delete(sim: SimContext, vm_id: str, task_id: str,
                     paths: tuple[str, ...]) -> ActionResult:
    refused = _not_sent(sim, "deletion")
    if refused is not None:
        return refused
    sim.catch_up()
    world = sim.world
    vm = world.vms.get(vm_id)
    if vm is None:
        return ActionResult(TaskState.FAILED, error="the VM was not found on the host")
    before = world.vm_bytes(vm_id)
    task = world.start_task(task_id, "delete", vm, "Remove-VM and its files")

    def finish() -> ActionResult:
        current = world.vms.get(vm_id)
        if current is None:
            error = "Remove-VM: the VM was not found on the host"
        elif current.power is not PowerState.OFF:
            error = ("Remove-VM: The operation cannot be performed while the virtual machine "
                     "is in its current state.")
        elif current.replication is not ReplicationState.DISABLED:
            error = "Remove-VM: the VM is enabled for replication; remove replication first."
        else:
            freed = _delete(sim, vm_id, set(paths))
            world.finish_task(task.id, TaskState.OK, f"deleted; {freed} bytes freed", pct=100.0)
            return ActionResult(TaskState.OK, size_before=before, size_after=0,
                                detail=f"VM removed, {freed} bytes of files deleted")
        world.finish_task(task.id, TaskState.FAILED, error=error)
        return ActionResult(TaskState.FAILED, error=error, size_before=before,
                            final_state=FinalState.PENDING)

    return await _run(sim, task_id, DELETE_S, finish)


def _delete(sim: SimContext, vm_id: str, paths: set[str]) -> int:
    """Remove the VM from the world; delete the listed files; returns bytes freed."""
    world = sim.world
    vm = world.vms[vm_id]
    files = list(vm.disk_ids)
    for cp_id in world.chains.pop(vm_id, []):
        files += world.files.pop(cp_id, [])
        world.remove(Kind.CHECKPOINT, cp_id)
    freed = 0
    for f in files:
        disk = world.disks.get(f)
        if disk is None:
            continue
        world.file_owner.pop(f, None)
        world.remove(Kind.DISK, f)
        if disk.path in paths:
            freed += disk.size_bytes
            world.adjust_free(disk.lun_id, disk.size_bytes)
        else:  # not confirmed for deletion: the file stays, owned by nobody
            world.orphaned_bytes[disk.lun_id] = (
                world.orphaned_bytes.get(disk.lun_id, 0) + disk.size_bytes)
    saved = world.saved_bytes.pop(vm_id, 0)
    if saved:
        world.adjust_free(vm.lun_id, saved)
    world.busy.pop(vm_id, None)
    sim.forget_vm(vm_id)
    world.remove(Kind.VM, vm_id)
    node = world.nodes.get(vm.node_id)
    if node is not None:
        world.update_node(node.id, vm_count=max(0, node.vm_count - 1))
    return freed + saved
