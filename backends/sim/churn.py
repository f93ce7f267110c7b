"""Live changes of the simulated cluster while the operator watches.

Owns everything that happens without the operator: running VMs writing into
their disks or newest .avhdx (CSV free space goes down by exactly what the
files grow), VMs stopped, saved and started, replication falling behind and
catching up, CSV coordinators rebalancing, nightly-style backup jobs (a
task, a backup-created checkpoint, progress, then the checkpoint merged
away — or left behind, as real backup software sometimes does), and a node
drained for patching (DRAINING → PAUSED → rebooted → UP, its VMs live-migrated
off and back). Timing and choices come from one seeded generator on the
simulated clock, so the same seed gives the same churn. ``rate`` scales how
often things happen; ``events_per_s`` replaces all of it with a steady
stream of VM changes for benchmarks.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field

from ventana.state.derived import PAUSE_CRITICAL_MARGIN, human_bytes
from ventana.state.model import (
    GB,
    MB,
    CheckpointKind,
    Health,
    LunRole,
    NodeState,
    PowerState,
    ReplicationState,
    ServiceState,
    TaskState,
)

from . import lab
from .config import SimConfig
from .hresults import DISK_FULL
from .specs import guid
from .world import World

ACTIONS_PER_S = 1.1  # churn actions per real second at rate 1.0 (1-4 events each)
BURST_ODDS = 0.02
MAX_BACKUPS = 3
BACKUP_GAP_S = 8.0  # mean real seconds between backup job starts at rate 1.0
FIRST_DRAIN_S = (60.0, 180.0)  # real seconds
NEXT_DRAIN_S = (240.0, 600.0)
BACKUP_TICK_S = 2.0  # real seconds between progress updates of a backup job
DEEP_CHAIN = 8
BACKUP_EVERY_S = 12 * 3600.0  # a VM is backed up at most twice a (simulated) day
FORGET_ODDS = 0.03  # the backup software leaves its checkpoint behind


@dataclass(slots=True)
class _Backup:
    task_id: str
    vm_id: str
    lun_id: str
    full: bool
    to_read: int
    rate: float  # bytes per simulated second
    ticks: int
    forget: bool
    cp_id: str = ""
    done_ticks: int = 0


@dataclass(slots=True)
class _Drain:
    node_id: str
    queue: list[str]
    moved: list[str] = field(default_factory=list)
    agent: ServiceState = ServiceState.UNKNOWN


class Churn:
    def __init__(self, world: World, config: SimConfig) -> None:
        self.world = world
        self.sched = world.sched
        self.config = config
        self.rng = random.Random(f"churn:{config.seed}")
        self.vm_ids = list(world.vms)
        self.replicas = [v.id for v in world.vms.values() if v.replica_target]
        self._stopped: list[str] = []
        self._burst = 0
        self._backups: dict[str, _Backup] = {}
        self._backup_seq = 0
        self._last_backup: dict[str, float] = {}  # VM id -> simulated start time
        self._lun_backups: dict[str, int] = {}
        self._drain: _Drain | None = None

    def sim(self, real_seconds: float) -> float:
        """Simulated seconds for a span of real seconds."""
        return real_seconds * self.config.speed

    def start(self) -> None:
        cfg = self.config
        if not self.vm_ids:
            return
        if cfg.events_per_s:
            self.sched.after(self.sim(1.0 / cfg.events_per_s), self._bench)
            return
        if cfg.rate <= 0:
            return
        rng = self.rng
        self.sched.after(self.sim(rng.expovariate(ACTIONS_PER_S * cfg.rate)), self._arrive)
        self.sched.after(self.sim(rng.uniform(2.0, 10.0) / cfg.rate), self._backup_window)
        if len(self.world.nodes) > 1:
            self.sched.after(self.sim(rng.uniform(*FIRST_DRAIN_S) / cfg.rate), self._drain_begin)

    # -- arrivals ------------------------------------------------------------------
    def _arrive(self) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.62:
            self._grow()
        elif r < 0.82:
            self._power()
        elif r < 0.9:
            self._replication()
        elif r < 0.93:
            self._csv_balance()
        else:
            self._grow()
            self._grow()
        mean_gap = 1.0 / ACTIONS_PER_S
        if self._burst > 0:
            self._burst -= 1
            mean_gap /= 3
        elif rng.random() < BURST_ODDS:
            self._burst = rng.randint(5, 20)
        gap = rng.expovariate(1.0 / mean_gap) / self.config.rate
        self.sched.after(self.sim(gap), self._arrive)

    def _pick_vm(self, power: PowerState | None = None, tries: int = 6) -> str | None:
        for _ in range(tries):
            vm_id = self.rng.choice(self.vm_ids)
            vm = self.world.vms[vm_id]
            if (power is None or vm.power is power) and vm_id not in self.world.busy:
                return vm_id
        return None

    def _grow(self) -> bool:
        """A running VM writes: its newest file grows, its CSV loses as much."""
        rng = self.rng
        vm_id = rng.choice(self.vm_ids)
        world = self.world
        vm = world.vms[vm_id]
        if vm.power is not PowerState.RUNNING or world.running_task(vm_id, "merge"):
            return False
        j = 0 if len(vm.disk_ids) == 1 or rng.random() < 0.6 else rng.randrange(len(vm.disk_ids))
        amount = int(math.exp(rng.uniform(math.log(1 * MB), math.log(256 * MB))))
        lun = world.luns.get(vm.lun_id)
        if lun is None or lun.free_bytes - amount < PAUSE_CRITICAL_MARGIN:
            return False  # a full CSV: the guest's writes land in blocks it already has
        return world.grow_file(world.leaf_file(vm_id, j), amount) > 0

    def _power(self) -> None:
        rng, world = self.rng, self.world
        if self._stopped and (len(self._stopped) >= 3 or rng.random() < 0.55):
            k = rng.randrange(len(self._stopped))
            vm_id = self._stopped[k]
            if world.vms[vm_id].power in (PowerState.OFF, PowerState.SAVED):
                del self._stopped[k]
                world.set_power(vm_id, PowerState.STARTING)
                self.sched.after(
                    rng.uniform(20, 90),
                    lambda: self._settle(vm_id, PowerState.STARTING, PowerState.RUNNING),
                )
            return
        vm_id = self._pick_vm(PowerState.RUNNING)
        if vm_id is None or world.vms[vm_id].replica_target:
            return
        vm = world.vms[vm_id]
        lun = world.luns[vm.lun_id]
        if rng.random() < 0.35 and lun.free_bytes > vm.memory_mb * MB + 2 * PAUSE_CRITICAL_MARGIN:
            world.set_power(vm_id, PowerState.SAVED)
        else:
            world.set_power(vm_id, PowerState.STOPPING)
            self.sched.after(
                rng.uniform(15, 120),
                lambda: self._settle(vm_id, PowerState.STOPPING, PowerState.OFF),
            )
        self._stopped.append(vm_id)

    def forget_vm(self, vm_id: str) -> None:
        """A VM was deleted: churn no longer picks it, starts it or moves it."""
        for ids in (self.vm_ids, self.replicas, self._stopped):
            while vm_id in ids:
                ids.remove(vm_id)
        if self._drain is not None:
            for ids in (self._drain.queue, self._drain.moved):
                while vm_id in ids:
                    ids.remove(vm_id)

    def _settle(self, vm_id: str, was: PowerState, now: PowerState) -> None:
        vm = self.world.vms.get(vm_id)
        if vm is not None and vm.power is was:
            self.world.set_power(vm_id, now)

    def _replication(self) -> None:
        if not self.replicas:
            return
        vm_id = self.rng.choice(self.replicas)
        vm = self.world.vms[vm_id]
        if vm.replication is not ReplicationState.REPLICATING:
            return
        lagging = vm.replication_health is Health.NORMAL
        self.world.update_vm(vm_id, replication_health=Health.WARNING if lagging else Health.NORMAL)

    def _csv_balance(self) -> None:
        world = self.world
        ups = sorted(n.id for n in world.nodes.values() if n.state is NodeState.UP)
        if len(ups) < 2 or len(ups) < len(world.nodes):
            return
        csvs = sorted(x.id for x in world.luns.values() if x.role is LunRole.CSV)
        lun_id = self.rng.choice(csvs)
        target = self.rng.choice([n for n in ups if n != world.luns[lun_id].owner_node_id])
        world.move_csv(lun_id, target)

    # -- benchmark stream ----------------------------------------------------------
    def _bench(self) -> None:
        """One VM change; the next comes after exactly as many events as this made."""
        world, rng = self.world, self.rng
        before = len(world.out)
        r = rng.random()
        if r < 0.35 and self._grow():
            pass
        elif r > 0.8 and len(world.nodes) > 1:
            vm_id = rng.choice(self.vm_ids)
            others = [n for n in world.nodes if n != world.vms[vm_id].node_id]
            world.move_vm(vm_id, rng.choice(others))
        else:
            vm_id = rng.choice(self.vm_ids)
            power = world.vms[vm_id].power
            world.set_power(
                vm_id, PowerState.OFF if power is PowerState.RUNNING else PowerState.RUNNING
            )
        made = max(1, len(world.out) - before)
        self.sched.after(self.sim(made / (self.config.events_per_s or 1.0)), self._bench)

    # -- backups -------------------------------------------------------------------
    def _backup_window(self) -> None:
        rng = self.rng
        starts = rng.randint(2, 3) if rng.random() < 0.1 else 1
        for _ in range(starts):
            self._backup_begin()
        gap = rng.expovariate(1.0 / BACKUP_GAP_S) / self.config.rate
        self.sched.after(self.sim(gap), self._backup_window)

    def _backup_begin(self) -> None:
        if len(self._backups) >= MAX_BACKUPS:
            return
        rng, world = self.rng, self.world
        vm_id = None
        now = world.clock.t
        for _ in range(6):
            cand = rng.choice(self.vm_ids)
            power = world.vms[cand].power
            recent = now - self._last_backup.get(cand, -BACKUP_EVERY_S) < BACKUP_EVERY_S
            if (
                not recent
                and cand not in world.busy
                and power in (PowerState.RUNNING, PowerState.OFF)
            ):
                vm_id = cand
                break
        if vm_id is None:
            return
        self._last_backup[vm_id] = now
        vm = world.vms[vm_id]
        self._backup_seq += 1
        task_id = f"sim-backup-{self._backup_seq:05d}"
        world.start_task(task_id, "backup", vm, "Waiting for backup infrastructure resources")
        world.busy[vm_id] = task_id
        size = world.vm_bytes(vm_id)
        node = world.nodes.get(vm.node_id)
        depth = len(world.chains.get(vm_id, ()))
        lun = world.luns[vm.lun_id]
        error = ""
        if node is not None and node.backup_agent_state is not ServiceState.RUNNING:
            error = (
                f"Cannot connect to the backup agent on {node.name} (TCP "
                f"{lab.BACKUP_AGENT_PORTS[0]}): the service is not running"
            )
        elif size > lab.BACKUP_MAX_BYTES_GB * GB:
            error = (
                f"VM size {human_bytes(size)} exceeds the 2 TB per-VM limit of the backup "
                "policy; the VM was skipped"
            )
        elif depth >= DEEP_CHAIN and rng.random() < 0.7:
            error = (
                "Virtual machine does not have valid vhd chains and will not be backed up "
                "with image level backup"
            )
        elif lun.free_bytes < PAUSE_CRITICAL_MARGIN:
            error = (
                "Failed to create VM recovery checkpoint: There is not enough space on the "
                f"disk. ({DISK_FULL})"
            )
        if error:
            self.sched.after(rng.uniform(20, 90), lambda: self._backup_end(task_id, vm_id, error))
            return
        full = rng.random() < 1 / 7
        to_read = size if full else int(size * rng.uniform(0.01, 0.08))
        rate = rng.uniform(80, 250) * MB
        duration = to_read / rate
        ticks = max(2, min(30, math.ceil(duration / self.sim(BACKUP_TICK_S))))
        job = _Backup(
            task_id, vm_id, vm.lun_id, full, to_read, rate, ticks, rng.random() < FORGET_ODDS
        )
        self._backups[task_id] = job
        self.sched.after(rng.uniform(30, 120), lambda: self._backup_checkpoint(job))

    def _backup_checkpoint(self, job: _Backup) -> None:
        rng, world = self.rng, self.world
        vm = world.vms[job.vm_id]
        job.cp_id = guid(rng)
        files = [guid(rng) for _ in vm.disk_ids]
        pattern = rng.choice(lab.BACKUP_CHECKPOINT_NAMES)
        name = pattern.format(vm=vm.name, stamp=world.now().strftime("%d/%m/%Y - %H:%M:%S"))
        world.add_checkpoint(
            job.cp_id, files, job.vm_id, name, CheckpointKind.BACKUP, [4 * MB] * len(files)
        )
        count = self._lun_backups.get(job.lun_id, 0) + 1
        self._lun_backups[job.lun_id] = count
        if count == 1:
            self._set_in_backup(job.lun_id, True)
        world.progress(job.task_id, 5.0, "Creating VM recovery checkpoint")
        self.sched.after(job.to_read / job.rate / job.ticks, lambda: self._backup_tick(job))

    def _set_in_backup(self, lun_id: str, value: bool) -> None:
        lun = self.world.luns.get(lun_id)
        if lun is not None and lun.in_backup != value:
            self.world.put(dataclasses.replace(lun, in_backup=value))

    def _backup_tick(self, job: _Backup) -> None:
        rng, world = self.rng, self.world
        job.done_ticks += 1
        read = job.to_read * job.done_ticks // job.ticks
        kind = "Full" if job.full else "Incremental"
        world.progress(
            job.task_id,
            5.0 + 85.0 * job.done_ticks / job.ticks,
            f"{kind}: {human_bytes(read)} of {human_bytes(job.to_read)} read at "
            f"{job.rate / MB:.0f} MB/s",
        )
        vm = world.vms[job.vm_id]
        if vm.power is PowerState.RUNNING and job.cp_id in world.files:
            lun = world.luns[vm.lun_id]
            amount = int(rng.uniform(0, 24) * MB)
            if lun.free_bytes - amount > PAUSE_CRITICAL_MARGIN:
                world.grow_file(world.files[job.cp_id][0], amount)
        if job.done_ticks < job.ticks:
            self.sched.after(job.to_read / job.rate / job.ticks, lambda: self._backup_tick(job))
            return
        world.progress(job.task_id, 92.0, "Removing VM recovery checkpoint")
        self.sched.after(rng.uniform(20, 120), lambda: self._backup_release(job))

    def _backup_release(self, job: _Backup) -> None:
        world = self.world
        self._backups.pop(job.task_id, None)
        count = self._lun_backups.get(job.lun_id, 1) - 1
        self._lun_backups[job.lun_id] = count
        if count <= 0:
            self._set_in_backup(job.lun_id, False)
        moved = human_bytes(job.to_read)
        if job.forget or job.cp_id not in world.checkpoints:
            cp = world.checkpoints.get(job.cp_id)
            name = cp.name if cp else "recovery checkpoint"
            self._backup_end(
                job.task_id,
                job.vm_id,
                "",
                TaskState.WARNING,
                f"{moved} transferred; failed to remove VM checkpoint {name!r}: timed out "
                "waiting for the merge to start. Remove it manually.",
            )
            return
        # The backup checkpoint's writes merge back into the file before it
        # (accounted after the delete, so a nearly full CSV never goes negative).
        growth = max(world.profiles[job.vm_id].growth, 0.5)
        files = world.files[job.cp_id]
        grow = [
            (world.parent_file(job.cp_id, j), int(world.disks[f].size_bytes * growth))
            for j, f in enumerate(files)
        ]
        world.retire_checkpoint(job.cp_id)
        for parent, amount in grow:
            world.grow_file(parent, amount)
        vm = world.vms[job.vm_id]
        node = world.nodes.get(vm.node_id)
        if node is not None and node.backup_agent_version != lab.BACKUP_AGENT_CURRENT:
            self._backup_end(
                job.task_id,
                job.vm_id,
                "",
                TaskState.WARNING,
                f"{moved} transferred. Backup agent {node.backup_agent_version} on {node.name} "
                f"is older than the backup server ({lab.BACKUP_AGENT_CURRENT}); upgrade it.",
            )
            return
        self._backup_end(job.task_id, job.vm_id, "", TaskState.OK, f"Success: {moved} transferred")

    def _backup_end(
        self,
        task_id: str,
        vm_id: str,
        error: str,
        state: TaskState = TaskState.FAILED,
        message: str = "",
    ) -> None:
        world = self.world
        if world.busy.get(vm_id) == task_id:
            del world.busy[vm_id]
        if error:
            world.finish_task(task_id, TaskState.FAILED, "Failed", error)
        else:
            world.finish_task(task_id, state, message, pct=100.0)

    # -- node drain for patching ---------------------------------------------------
    def _drain_begin(self) -> None:
        world, rng = self.world, self.rng
        ups = sorted(n.id for n in world.nodes.values() if n.state is NodeState.UP)
        if len(ups) < len(world.nodes) or len(ups) < 2:
            self.sched.after(self.sim(60.0 / self.config.rate), self._drain_begin)
            return
        node_id = rng.choice(ups)
        world.update_node(node_id, state=NodeState.DRAINING)
        self._drain = _Drain(node_id, world.vms_on(node_id))
        self.sched.after(rng.uniform(5, 20), self._drain_step)

    def _least_loaded(self, exclude: str) -> str | None:
        ups = [n for n in self.world.nodes.values() if n.state is NodeState.UP and n.id != exclude]
        if not ups:
            return None
        return min(ups, key=lambda n: (n.vm_count, n.id)).id

    def _drain_step(self) -> None:
        world, rng, drain = self.world, self.rng, self._drain
        if drain is None:
            return
        while drain.queue:
            vm_id = drain.queue.pop(0)
            if world.vms[vm_id].node_id != drain.node_id:
                continue
            dest = self._least_loaded(drain.node_id)
            if dest is None:
                break
            world.move_vm(vm_id, dest)
            drain.moved.append(vm_id)
            memory_gb = world.vms[vm_id].memory_mb / 1024
            self.sched.after(rng.uniform(10, 40) + memory_gb * 1.5, self._drain_step)
            return
        owned = sorted(x.id for x in world.luns.values() if x.owner_node_id == drain.node_id)
        for lun_id in owned:
            ups = [
                n for n in world.nodes.values() if n.state is NodeState.UP and n.id != drain.node_id
            ]
            if ups:
                world.move_csv(lun_id, min(ups, key=lambda n: (len(n.csv_owned), n.id)).id)
        world.update_node(drain.node_id, state=NodeState.PAUSED)
        self.sched.after(rng.uniform(600, 2400), self._node_reboot)  # installing updates

    def _node_reboot(self) -> None:
        drain = self._drain
        if drain is None:
            return
        drain.agent = self.world.nodes[drain.node_id].backup_agent_state
        self.world.update_node(
            drain.node_id, state=NodeState.DOWN, backup_agent_state=ServiceState.UNKNOWN
        )
        self.sched.after(self.rng.uniform(180, 480), self._node_joining)

    def _node_joining(self) -> None:
        if self._drain is None:
            return
        self.world.update_node(self._drain.node_id, state=NodeState.JOINING)
        self.sched.after(self.rng.uniform(30, 90), self._node_paused_again)

    def _node_paused_again(self) -> None:
        drain = self._drain
        if drain is None:
            return
        self.world.update_node(
            drain.node_id, state=NodeState.PAUSED, backup_agent_state=drain.agent
        )
        self.sched.after(self.rng.uniform(60, 300), self._node_resume)

    def _node_resume(self) -> None:
        if self._drain is None:
            return
        self.world.update_node(self._drain.node_id, state=NodeState.UP)
        self.sched.after(self.rng.uniform(5, 20), self._failback_step)

    def _failback_step(self) -> None:
        world, rng, drain = self.world, self.rng, self._drain
        if drain is None:
            return
        home = world.nodes[drain.node_id]
        while drain.moved and home.state is NodeState.UP:
            vm_id = drain.moved.pop(0)
            if world.vms[vm_id].node_id == drain.node_id:
                continue
            world.move_vm(vm_id, drain.node_id)
            self.sched.after(rng.uniform(10, 60), self._failback_step)
            return
        self._drain = None
        gap = rng.uniform(*NEXT_DRAIN_S) / self.config.rate
        self.sched.after(self.sim(gap), self._drain_begin)
