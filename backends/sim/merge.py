"""How the simulated Hyper-V host merges a VM's checkpoint chain.

Owns one merge from start to outcome, on the simulated clock: checks that
Hyper-V would do first (VM exists, no backup holding its files, nothing else
running on it), then each .avhdx merged into its parent oldest first — the
parent grows by the blocks that are new to it, taking that space off the
CSV, and when all the files of a checkpoint are merged they are deleted
(space back) and the checkpoint disappears. Time follows the chain, not the
size (the campaign saw 40 min to 13 h 30 min). It fails like the real thing:
the CSV would fall below Hyper-V's pause margin (the merge stops, what was
merged stays merged, the rest of the chain is intact), a file held by a
backup, a broken chain (an .avhdx whose parent file is not there: nothing is
merged), or a seeded random disk error. A merge cannot be cancelled.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass

from ventana.state.derived import (
    PAUSE_CRITICAL_MARGIN,
    MergeSpace,
    broken_chain,
    human_bytes,
    merge_space,
    path_key,
)
from ventana.state.events import Upsert
from ventana.state.model import (
    FinalState,
    Finding,
    Health,
    Kind,
    ReplicationState,
    Severity,
    Task,
    TaskState,
    VirtualDisk,
)
from ventana.state.store import Store, ref

from ..base import ActionResult
from .config import SimConfig
from .hresults import (
    FILE_NOT_FOUND,
    SHARING_VIOLATION,
    VHD_CHILD_PARENT_ID_MISMATCH,
    VHD_PARENT_VHD_NOT_FOUND,
    VIRTUAL_DISK_LIMITATION,
)
from .world import World

TICK_S = 1.0  # real seconds between progress updates
MAX_TICKS_PER_FILE = 40
MINUTES_PER_GB = 0.3  # size still counts a little

RANDOM_ERRORS: tuple[str, ...] = (
    "The chain of virtual hard disks is corrupted. There is a mismatch in the identifiers "
    f"of the parent virtual hard disk and differencing disk. ({VHD_CHILD_PARENT_ID_MISMATCH})",
    f"The system cannot find the file specified. ({FILE_NOT_FOUND})",
    "The requested operation could not be completed due to a virtual disk system "
    f"limitation. ({VIRTUAL_DISK_LIMITATION})",
)


def _name(path: str) -> str:
    return path.rpartition("\\")[2]


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def space_for(world: World, vm_id: str) -> MergeSpace:
    """``derived.merge_space`` over a throwaway store holding just this VM."""
    store = Store()
    vm = world.vms[vm_id]
    events: list[Upsert] = [Upsert(vm)]
    events += [Upsert(world.disks[d]) for d in vm.disk_ids]
    for cp_id in world.chains.get(vm_id, ()):
        events.append(Upsert(world.checkpoints[cp_id]))
        events += [Upsert(world.disks[f]) for f in world.files[cp_id]]
    store.apply_many(events)
    return merge_space(store, vm_id)


@dataclass(slots=True)
class _Unit:
    """One .avhdx merged into its parent."""

    cp_id: str
    j: int  # drive index
    file_id: str
    growth: int  # bytes its parent gains
    duration: float  # simulated seconds
    ticks: int
    last_of_checkpoint: bool
    done_ticks: int = 0
    grown: int = 0


class MergeJob:
    def __init__(
        self,
        world: World,
        config: SimConfig,
        vm_id: str,
        task_id: str,
        future: asyncio.Future[ActionResult],
        attempt: int,
        *,
        keep_last: bool = False,
        force_fail: bool = False,
    ) -> None:
        self.world = world
        self.keep_last = keep_last  # merge to the last parent (the newest checkpoint stays)
        self.force_fail = force_fail  # test hook: stop part-way with a disk error
        self.sched = world.sched
        self.config = config
        self.vm_id = vm_id
        self.task_id = task_id
        self.future = future
        self.rng = random.Random(f"merge:{config.seed}:{vm_id}:{attempt}")
        self.units: list[_Unit] = []
        self.index = 0
        self.total_s = 0.0
        self.elapsed_s = 0.0
        self.checkpoints = 0
        self.merged = 0
        self.size_before = 0
        self.free_before = 0
        self.fail_at: int | None = None
        self.finished = False

    # -- outcome -------------------------------------------------------------------
    def resolve(self, result: ActionResult) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def _end(self, state: TaskState, final: FinalState, message: str, error: str = "") -> None:
        world = self.world
        self.finished = True
        if world.busy.get(self.vm_id) == self.task_id:
            del world.busy[self.vm_id]
        pct = 100.0 if state in (TaskState.OK, TaskState.WARNING) else None
        world.finish_task(self.task_id, state, message, error, pct=pct)
        vm = world.vms.get(self.vm_id)
        after = world.vm_bytes(self.vm_id) if vm else None
        lun = world.luns.get(vm.lun_id) if vm else None
        detail = (
            f"{self.merged} of {self.checkpoints} checkpoint(s) merged in {_hm(self.elapsed_s)}"
        )
        if lun is not None:
            detail += (
                f"; {lun.name} free {human_bytes(self.free_before)} → {human_bytes(lun.free_bytes)}"
            )
        self.resolve(
            ActionResult(state, error, self.size_before if vm else None, after, final, detail)
        )

    def _fail_soon(self, error: str, low: float, high: float) -> None:
        def fail() -> None:
            self._end(TaskState.FAILED, FinalState.FAILED, "Failed", error)

        self.sched.after(self.rng.uniform(low, high), fail)

    # -- start ---------------------------------------------------------------------
    def begin(self) -> None:
        world, rng = self.world, self.rng
        vm = world.vms.get(self.vm_id)
        if vm is None:
            world.put(
                Task(
                    self.task_id,
                    "merge",
                    ref(Kind.VM, self.vm_id),
                    self.vm_id,
                    0.0,
                    TaskState.RUNNING,
                    started=world.now(),
                )
            )
            self._end(
                TaskState.FAILED,
                FinalState.FAILED,
                "Failed",
                f"Hyper-V was unable to find a virtual machine with ID {self.vm_id}.",
            )
            return
        chain = list(world.chains.get(self.vm_id, ()))
        if self.keep_last:
            chain = chain[:-1]
        self.checkpoints = len(chain)
        self.size_before = world.vm_bytes(self.vm_id)
        lun = world.luns[vm.lun_id]
        self.free_before = lun.free_bytes
        world.start_task(
            self.task_id, "merge", vm, f"Preparing to merge {len(chain)} checkpoint(s)"
        )
        other = world.running_task(self.vm_id)
        if other is not None and other.kind == "backup":
            leaf = world.disks[world.leaf_file(self.vm_id, 0)].path
            self._fail_soon(
                f"The process cannot access the file '{leaf}' because it is being used by "
                f"another process. ({SHARING_VIOLATION}) — backup task {other.id} holds it.",
                3,
                15,
            )
            return
        if other is not None:
            self._fail_soon(
                "The operation cannot be performed while the object is in use: "
                f"{other.kind} task {other.id} is running on this virtual machine.",
                1,
                5,
            )
            return
        if not chain:
            self.sched.after(
                rng.uniform(2, 6),
                lambda: self._end(TaskState.OK, FinalState.OPERATIONAL, "No checkpoints to merge"),
            )
            return
        missing = self._missing_parent(chain)
        if missing is not None:
            self._fail_soon(
                "The chain of virtual hard disks is broken. The system cannot locate the "
                f"parent virtual hard disk for the differencing disk '{missing.path}' "
                f"(it names {missing.parent_path}). ({VHD_PARENT_VHD_NOT_FOUND}) Nothing was "
                "merged; the chain is as it was.",
                2,
                8,
            )
            return
        world.busy[self.vm_id] = self.task_id
        space = space_for(world, self.vm_id)
        self._plan(chain)
        if rng.random() < self.config.merge_failure_rate:
            self.fail_at = rng.randrange(len(self.units))
        if self.force_fail:
            self.fail_at = len(self.units) // 2
        world.progress(
            self.task_id,
            0.0,
            f"Merge in progress: {len(chain)} checkpoint(s), {len(self.units)} file(s), "
            f"{human_bytes(space.chain_bytes)} of differencing disks on {lun.name}; "
            f"may need up to {human_bytes(space.needed)} free",
        )
        self.sched.after(rng.uniform(5, 20), self._unit_start)

    def _missing_parent(self, chain: list[str]) -> VirtualDisk | None:
        """The first .avhdx of the chain whose parent file is not there (a broken chain).

        The same rule as the findings and the merge pre-flight
        (``derived.broken_chain``), over the host's own files.
        """
        world = self.world
        files = [world.disks[f] for cp_id in chain for f in world.files[cp_id]]
        paths = {path_key(d.path) for d in world.disks.values()}
        for disk in files:
            if broken_chain((disk,), (), paths.__contains__):
                return disk
        return None

    def _plan(self, chain: list[str]) -> None:
        world, rng = self.world, self.rng
        vm = world.vms[self.vm_id]
        profile = world.profiles[self.vm_id]
        headroom = [
            max(0, world.disks[d].max_bytes - world.disks[d].size_bytes) for d in vm.disk_ids
        ]
        tick_sim = self.config.speed * TICK_S
        for cp_id in chain:
            files = world.files[cp_id]
            sizes = [world.disks[f].size_bytes for f in files]
            minutes = profile.minutes_per_checkpoint * rng.uniform(0.8, 1.2)
            minutes += MINUTES_PER_GB * sum(sizes) / 1024**3
            weight_total = sum(sizes) or 1
            for j, (f, size) in enumerate(zip(files, sizes, strict=True)):
                growth = min(int(size * profile.growth), headroom[j])
                headroom[j] -= growth
                share = (size / weight_total) if sum(sizes) else 1 / len(files)
                duration = max(30.0, minutes * 60 * share)
                ticks = max(1, min(MAX_TICKS_PER_FILE, math.ceil(duration / tick_sim)))
                self.units.append(_Unit(cp_id, j, f, growth, duration, ticks, j == len(files) - 1))
                self.total_s += duration

    # -- progress ------------------------------------------------------------------
    def _unit_start(self) -> None:
        if self.finished:
            return
        unit = self.units[self.index]
        if self.fail_at == self.index:
            file = _name(self.world.disks[unit.file_id].path)
            self._stop(f"Failed to merge '{file}': {self.rng.choice(RANDOM_ERRORS)}")
            return
        self._report(unit)
        self.sched.after(unit.duration / unit.ticks, self._tick)

    def _report(self, unit: _Unit) -> None:
        pct = (
            100.0
            * (self.elapsed_s + unit.duration * unit.done_ticks / unit.ticks)
            / max(self.total_s, 1.0)
        )
        file = _name(self.world.disks[unit.file_id].path)
        self.world.progress(
            self.task_id,
            min(99.0, pct),
            f"Merging {file} into parent ({self.index + 1} of {len(self.units)})",
        )

    def _tick(self) -> None:
        if self.finished:
            return
        world = self.world
        unit = self.units[self.index]
        unit.done_ticks += 1
        want = unit.growth * unit.done_ticks // unit.ticks - unit.grown
        parent = world.parent_file(unit.cp_id, unit.j)
        lun = world.luns[world.disks[parent].lun_id]
        room = lun.free_bytes - PAUSE_CRITICAL_MARGIN
        if want > room:
            if room > 0:
                unit.grown += world.grow_file(parent, room)
            self._stop_for_space(unit, want - max(room, 0))
            return
        unit.grown += world.grow_file(parent, want)
        if unit.done_ticks < unit.ticks:
            self._report(unit)
            self.sched.after(unit.duration / unit.ticks, self._tick)
            return
        self.elapsed_s += unit.duration
        if unit.last_of_checkpoint:
            world.retire_checkpoint(unit.cp_id)
            self.merged += 1
        self.index += 1
        if self.index < len(self.units):
            self._unit_start()
        else:
            self._succeed()

    # -- endings -------------------------------------------------------------------
    def _partial_text(self) -> str:
        left = self.checkpoints - self.merged
        return (
            f"{self.merged} of {self.checkpoints} checkpoint(s) were merged; the remaining "
            f"{left} and their .avhdx files are intact."
        )

    def _stop(self, error: str) -> None:
        final = FinalState.PARTIAL if self.merged else FinalState.FAILED
        self._end(TaskState.FAILED, final, "Merge stopped", f"{error} {self._partial_text()}")

    def _stop_for_space(self, unit: _Unit, short: int) -> None:
        world = self.world
        disk = world.disks[unit.file_id]
        lun = world.luns[disk.lun_id]
        volume = disk.path.rpartition("\\")[0].rsplit("\\", 2)[0]
        error = (
            f"Not enough free space on {lun.name} ({volume}) to merge '{_name(disk.path)}': "
            f"{human_bytes(lun.free_bytes)} free, {human_bytes(short)} more needed, and "
            f"Hyper-V pauses the VMs on a volume below {human_bytes(PAUSE_CRITICAL_MARGIN)}. "
            "The merge was stopped."
        )
        world.put(
            Finding(
                f"sim:csv-full:{lun.id}",
                Severity.CRITICAL,
                ref(Kind.LUN, lun.id),
                "CSV_FULL",
                f"{lun.name} is at {human_bytes(lun.free_bytes)} free after a merge "
                "stopped for lack of space; free space before retrying.",
            )
        )
        self._stop(error)

    def _succeed(self) -> None:
        world = self.world
        vm = world.vms[self.vm_id]
        lun = world.luns[vm.lun_id]
        message = (
            f"Merged {self.checkpoints} checkpoint(s); {lun.name} free "
            f"{human_bytes(self.free_before)} → {human_bytes(lun.free_bytes)}"
        )
        if vm.replication is not ReplicationState.DISABLED and not self.keep_last:
            world.update_vm(
                self.vm_id, replication=ReplicationState.ERROR, replication_health=Health.CRITICAL
            )
            warning = (
                f"Replication to {vm.replica_target or 'the replica site'} is in error: "
                "the merged disks no longer match the replica (the replication identity "
                "changed). Resynchronize, or rebuild the VM and keep the old one as fallback."
            )
            world.put(
                Finding(
                    f"sim:replication:{vm.id}",
                    Severity.CRITICAL,
                    ref(Kind.VM, vm.id),
                    "REPLICATION_BROKEN",
                    warning,
                )
            )
            self._end(TaskState.WARNING, FinalState.DEGRADED, message, warning)
            return
        self._end(TaskState.OK, FinalState.OPERATIONAL, message)
