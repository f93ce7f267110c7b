"""The simulated cluster's authoritative state (the "host side").

Owns the current entities, the checkpoint chains and their .avhdx files, and
the rules that keep them consistent: a file growing takes the same bytes off
its CSV's free space and adds them to its checkpoint's size; a checkpoint
retired merges nothing by itself but deletes its files, gives their space
back and re-parents the next checkpoint; a VM moving updates both nodes'
counts. Every change is appended to ``out`` as the event a real backend
would report, so the stream and this state can never disagree. Churn and
actions change the world only through these methods.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Mapping
from datetime import datetime

from ventana.state.events import Event, FindingRaised, Remove, TaskProgress, Upsert
from ventana.state.model import (
    VM,
    Checkpoint,
    CheckpointKind,
    DiskFormat,
    Entity,
    Finding,
    IntegrationState,
    Key,
    Kind,
    Lun,
    LunRole,
    Node,
    PowerState,
    Task,
    TaskState,
    VirtualDisk,
)

from ..tasks import ended_task, running_task
from .clock import Scheduler, Timer
from .inventory import Inventory, VmProfile
from .steps import Steps, finish


class World:
    def __init__(self, inv: Inventory, sched: Scheduler, retention_s: float | None) -> None:
        finish(self._take(inv, sched, retention_s))

    @classmethod
    def building(cls, inv: Inventory, sched: Scheduler,
                 retention_s: float | None) -> Steps[World]:
        """``World(inv, sched, retention_s)`` as a stepped build (``steps``)."""
        world = cls.__new__(cls)
        yield from world._take(inv, sched, retention_s)  # noqa: SLF001 - its own class
        return world

    def _take(self, inv: Inventory, sched: Scheduler, retention_s: float | None) -> Steps[None]:
        """Take the inventory's entities into this world's tables (a pause per table)."""
        self.sched = sched
        self.clock = sched.clock
        self.retention_s = retention_s  # simulated seconds a finished task stays (None: ever)
        self.cluster = inv.cluster
        self.nodes: dict[str, Node] = {n.id: n for n in inv.nodes}
        self.luns: dict[str, Lun] = {x.id: x for x in inv.luns}
        self.vms: dict[str, VM] = {v.id: v for v in inv.vms}
        yield
        self.disks: dict[str, VirtualDisk] = {d.id: d for d in inv.disks}
        yield
        self.checkpoints: dict[str, Checkpoint] = {c.id: c for c in inv.checkpoints}
        self.tasks: dict[str, Task] = {}
        self.findings: dict[str, Finding] = {}
        yield
        self.chains: dict[str, list[str]] = {k: list(v) for k, v in inv.chains.items()}
        yield
        self.files: dict[str, list[str]] = {k: list(v) for k, v in inv.checkpoint_files.items()}
        yield
        self.file_owner: dict[str, str] = {f: cp for cp, fs in self.files.items() for f in fs}
        yield
        # VMs whose first .avhdx points at a parent that is not there (a broken chain).
        self.broken_chains: set[str] = set(inv.broken_chains)
        self.profiles: dict[str, VmProfile] = inv.profiles
        self.saved_bytes: dict[str, int] = dict(inv.saved_bytes)
        self.orphaned_bytes: dict[str, int] = dict(inv.orphaned_bytes)
        self.busy: dict[str, str] = {}  # VM id -> id of the task holding its files
        self.out: deque[Event] = deque()
        self._task_timers: dict[str, Timer] = {}
        self._tables: dict[Kind, dict[str, Entity]] = {
            Kind.NODE: self.nodes,  # type: ignore[dict-item]
            Kind.LUN: self.luns,  # type: ignore[dict-item]
            Kind.VM: self.vms,  # type: ignore[dict-item]
            Kind.DISK: self.disks,  # type: ignore[dict-item]
            Kind.CHECKPOINT: self.checkpoints,  # type: ignore[dict-item]
            Kind.TASK: self.tasks,  # type: ignore[dict-item]
            Kind.FINDING: self.findings,  # type: ignore[dict-item]
        }

    # -- basics ------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def put(self, entity: Entity) -> None:
        if entity.KIND is Kind.CLUSTER:
            self.cluster = entity  # type: ignore[assignment]
        else:
            self._tables[entity.KIND][entity.id] = entity
        if isinstance(entity, Finding):
            self.out.append(FindingRaised(entity))
        else:
            self.out.append(Upsert(entity))

    def remove(self, kind: Kind, id_: str) -> None:
        if self._tables[kind].pop(id_, None) is not None:
            self.out.append(Remove(kind, id_))

    def snapshot(self) -> Iterator[Entity]:
        """Every entity, as a full re-read after a reconnect reports them."""
        yield self.cluster
        for kind in (
            Kind.NODE,
            Kind.LUN,
            Kind.VM,
            Kind.DISK,
            Kind.CHECKPOINT,
            Kind.TASK,
            Kind.FINDING,
        ):
            yield from list(self._tables[kind].values())

    def table(self, kind: Kind) -> Mapping[str, Entity]:
        if kind is Kind.CLUSTER:
            return {self.cluster.id: self.cluster}
        return self._tables[kind]

    def keys(self) -> set[Key]:
        keys: set[Key] = {(Kind.CLUSTER, self.cluster.id)}
        for kind, table in self._tables.items():
            keys.update((kind, id_) for id_ in table)
        return keys

    # -- tasks -------------------------------------------------------------------
    def start_task(self, task_id: str, kind: str, vm: VM, message: str) -> Task:
        task = running_task(task_id, kind, vm, message, self.now())
        self.put(task)
        return task

    def progress(self, task_id: str, pct: float, message: str = "") -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        pct = max(0.0, min(100.0, pct))
        self.tasks[task_id] = dataclasses.replace(task, pct=pct, message=message or task.message)
        self.out.append(TaskProgress(task_id, pct, message))

    def finish_task(
        self,
        task_id: str,
        state: TaskState,
        message: str = "",
        error: str = "",
        pct: float | None = None,
    ) -> None:
        """End a task; it stays visible ``retention_s`` simulated seconds."""
        task = self.tasks.get(task_id)
        if task is None:
            return
        done = ended_task(task, state, self.now(), message=message, error=error,
                          pct=task.pct if pct is None else pct)
        self.put(done)
        if self.retention_s is None:
            return
        self._task_timers[task_id] = self.sched.after(
            self.retention_s, lambda: self._expire_task(task_id)
        )

    def _expire_task(self, task_id: str) -> None:
        self._task_timers.pop(task_id, None)
        task = self.tasks.get(task_id)
        if task is not None and task.state.finished:
            self.remove(Kind.TASK, task_id)

    def running_task(self, vm_id: str, kind: str | None = None) -> Task | None:
        task_id = self.busy.get(vm_id)
        task = self.tasks.get(task_id) if task_id else None
        if task is None or task.state.finished or (kind and task.kind != kind):
            return None
        return task

    # -- space -------------------------------------------------------------------
    def adjust_free(self, lun_id: str, delta: int) -> None:
        lun = self.luns.get(lun_id)
        if lun is None or delta == 0:
            return
        free = max(0, min(lun.total_bytes, lun.free_bytes + delta))
        self.put(dataclasses.replace(lun, free_bytes=free))

    def grow_file(self, disk_id: str, delta: int) -> int:
        """Grow (or shrink) a disk file; returns the bytes actually applied.

        A file cannot grow past its virtual size. The bytes come off the CSV's
        free space, and an .avhdx's growth adds to its checkpoint's size.
        """
        disk = self.disks[disk_id]
        new = max(0, min(disk.max_bytes, disk.size_bytes + delta))
        applied = new - disk.size_bytes
        if applied == 0:
            return 0
        self.put(dataclasses.replace(disk, size_bytes=new))
        cp_id = self.file_owner.get(disk_id)
        if cp_id is not None:
            cp = self.checkpoints[cp_id]
            self.put(dataclasses.replace(cp, size_bytes=cp.size_bytes + applied))
        self.adjust_free(disk.lun_id, -applied)
        return applied

    def vm_bytes(self, vm_id: str) -> int:
        """Every disk file of a VM: base disks and their .avhdx chains."""
        vm = self.vms[vm_id]
        total = sum(self.disks[d].size_bytes for d in vm.disk_ids)
        for cp_id in self.chains.get(vm_id, ()):
            total += sum(self.disks[f].size_bytes for f in self.files[cp_id])
        return total

    # -- chains ------------------------------------------------------------------
    def leaf_file(self, vm_id: str, j: int) -> str:
        """The file the running VM writes to for its ``j``-th drive."""
        chain = self.chains.get(vm_id)
        if chain:
            return self.files[chain[-1]][j]
        return self.vms[vm_id].disk_ids[j]

    def parent_file(self, cp_id: str, j: int) -> str:
        """The file a checkpoint's ``j``-th .avhdx merges into."""
        cp = self.checkpoints[cp_id]
        if cp.parent_id is None:
            return self.vms[cp.vm_id].disk_ids[j]
        return self.files[cp.parent_id][j]

    def add_checkpoint(
        self,
        cp_id: str,
        file_ids: list[str],
        vm_id: str,
        name: str,
        kind: CheckpointKind,
        sizes: list[int],
    ) -> Checkpoint:
        """Take a checkpoint: each drive gets a new .avhdx as its running file."""
        vm = self.vms[vm_id]
        chain = self.chains.setdefault(vm_id, [])
        parent = chain[-1] if chain else None
        paths = []
        for j, (file_id, size) in enumerate(zip(file_ids, sizes, strict=True)):
            leaf = self.disks[self.leaf_file(vm_id, j)]
            base = self.disks[vm.disk_ids[j]]
            folder, _, filename = base.path.rpartition("\\")
            stem = filename.rsplit(".", 1)[0]
            path = f"{folder}\\{stem}_{file_id.upper()}.avhdx"
            self.put(
                VirtualDisk(
                    file_id,
                    vm_id,
                    path,
                    DiskFormat.AVHDX,
                    size,
                    base.max_bytes,
                    leaf.path,
                    base.lun_id,
                )
            )
            self.file_owner[file_id] = cp_id
            paths.append(path)
        cp = Checkpoint(cp_id, vm_id, name, parent, kind, self.now(), paths[0], sum(sizes))
        self.files[cp_id] = list(file_ids)
        chain.append(cp_id)
        self.put(cp)
        self.adjust_free(vm.lun_id, -sum(sizes))
        return cp

    def retire_checkpoint(self, cp_id: str) -> int:
        """Delete a checkpoint whose files were merged into their parents.

        Deletes its .avhdx files (their space comes back), removes the
        checkpoint and re-parents the next one in the chain. Returns the
        bytes freed.
        """
        cp = self.checkpoints[cp_id]
        chain = self.chains[cp.vm_id]
        idx = chain.index(cp_id)
        files = self.files.pop(cp_id)
        parent_paths = [self.disks[f].parent_path for f in files]
        freed = 0
        lun_id = ""
        for f in files:
            disk = self.disks[f]
            freed += disk.size_bytes
            lun_id = disk.lun_id
            self.file_owner.pop(f, None)
            self.remove(Kind.DISK, f)
        self.remove(Kind.CHECKPOINT, cp_id)
        chain.pop(idx)
        if idx < len(chain):
            child_id = chain[idx]
            child = self.checkpoints[child_id]
            self.put(dataclasses.replace(child, parent_id=cp.parent_id))
            for f, parent_path in zip(self.files[child_id], parent_paths, strict=True):
                self.put(dataclasses.replace(self.disks[f], parent_path=parent_path))
        self.adjust_free(lun_id, freed)
        return freed

    # -- VMs and nodes -----------------------------------------------------------
    def update_vm(self, vm_id: str, **changes: object) -> VM:
        vm = dataclasses.replace(self.vms[vm_id], **changes)  # type: ignore[arg-type]
        self.put(vm)
        return vm

    def set_power(self, vm_id: str, power: PowerState) -> None:
        """Change a VM's power state; a saved state occupies its memory on the CSV."""
        vm = self.vms[vm_id]
        if power is PowerState.SAVED and vm_id not in self.saved_bytes:
            size = vm.memory_mb * 1024 * 1024
            self.saved_bytes[vm_id] = size
            self.adjust_free(vm.lun_id, -size)
        elif power is PowerState.RUNNING and vm_id in self.saved_bytes:
            self.adjust_free(vm.lun_id, self.saved_bytes.pop(vm_id))
        integration = vm.integration
        if power in (PowerState.OFF, PowerState.SAVED):
            integration = IntegrationState.OFF
        elif power is PowerState.RUNNING and integration in (
            IntegrationState.OFF,
            IntegrationState.UNKNOWN,
        ):
            integration = IntegrationState.OK
        guest: dict[str, object] = {}
        if power is PowerState.RUNNING and vm.vss_capable is None:
            # A guest that comes up reports what the inventory could not read while it was off.
            guest = {"vss_capable": not vm.name.startswith("fw-"), "dynamic_disks": False}
        self.update_vm(vm_id, power=power, integration=integration, **guest)

    def move_vm(self, vm_id: str, node_id: str) -> None:
        vm = self.vms[vm_id]
        if vm.node_id == node_id:
            return
        self.update_vm(vm_id, node_id=node_id)
        for nid, step in ((vm.node_id, -1), (node_id, 1)):
            node = self.nodes.get(nid)
            if node is not None:
                self.put(dataclasses.replace(node, vm_count=max(0, node.vm_count + step)))

    def vms_on(self, node_id: str) -> list[str]:
        return [v.id for v in self.vms.values() if v.node_id == node_id]

    def move_csv(self, lun_id: str, node_id: str) -> None:
        """Move a cluster disk to another node (a CSV's coordinator role)."""
        lun = self.luns[lun_id]
        if lun.owner_node_id == node_id:
            return
        if lun.role is LunRole.CSV:
            old = self.nodes.get(lun.owner_node_id)
            if old is not None:
                owned = tuple(x for x in old.csv_owned if x != lun_id)
                self.put(dataclasses.replace(old, csv_owned=owned))
            new = self.nodes[node_id]
            self.put(dataclasses.replace(new, csv_owned=(*new.csv_owned, lun_id)))
        self.put(dataclasses.replace(lun, owner_node_id=node_id))

    def update_node(self, node_id: str, **changes: object) -> None:
        self.put(dataclasses.replace(self.nodes[node_id], **changes))  # type: ignore[arg-type]

    # -- self-check ----------------------------------------------------------------
    def audit(self) -> list[str]:
        """Every broken invariant, in words (empty when the world is consistent).

        Free space = total - VM files - saved states - orphaned bytes; node VM
        counts and CSV ownership match; chains link file to file; a checkpoint's
        size is the sum of its .avhdx files.
        """
        problems: list[str] = []
        used: dict[str, int] = dict.fromkeys(self.luns, 0)
        for disk in self.disks.values():
            used[disk.lun_id] = used.get(disk.lun_id, 0) + disk.size_bytes
        for vm_id, size in self.saved_bytes.items():
            used[self.vms[vm_id].lun_id] += size
        for lun in self.luns.values():
            expected = lun.total_bytes - used[lun.id] - self.orphaned_bytes.get(lun.id, 0)
            if expected != lun.free_bytes:
                problems.append(f"{lun.name}: free {lun.free_bytes} != expected {expected}")
        counts: dict[str, int] = dict.fromkeys(self.nodes, 0)
        for vm in self.vms.values():
            counts[vm.node_id] += 1
        for node in self.nodes.values():
            if node.vm_count != counts[node.id]:
                problems.append(f"{node.name}: vm_count {node.vm_count} != {counts[node.id]}")
            for lun_id in node.csv_owned:
                if self.luns[lun_id].owner_node_id != node.id:
                    problems.append(f"{node.name}: owns {lun_id} whose owner differs")
        for lun in self.luns.values():
            owner = self.nodes.get(lun.owner_node_id)
            if lun.role is LunRole.CSV and (owner is None or lun.id not in owner.csv_owned):
                problems.append(f"{lun.name}: not in its owner's csv_owned")
        for vm_id, chain in self.chains.items():
            if vm_id in self.broken_chains:
                continue  # broken on purpose: its first .avhdx names a missing parent
            vm = self.vms[vm_id]
            leaf = [self.disks[d].path for d in vm.disk_ids]
            parent: str | None = None
            for cp_id in chain:
                cp = self.checkpoints[cp_id]
                files = [self.disks[f] for f in self.files[cp_id]]
                if cp.parent_id != parent:
                    problems.append(f"{vm.name}: checkpoint {cp.name!r} has the wrong parent")
                if cp.size_bytes != sum(f.size_bytes for f in files):
                    problems.append(f"{vm.name}: checkpoint {cp.name!r} size != its files")
                if cp.disk_path != files[0].path:
                    problems.append(f"{vm.name}: checkpoint {cp.name!r} disk_path is wrong")
                for j, f in enumerate(files):
                    if f.parent_path != leaf[j]:
                        problems.append(f"{vm.name}: {f.path} has the wrong parent")
                    leaf[j] = f.path
                parent = cp_id
        return problems
