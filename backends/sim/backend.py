"""The built-in simulated Hyper-V failover cluster, as a backend.

Owns the wiring: the event stream (connecting, the full inventory, connected,
then live changes until ``close()``), the loop that runs the simulated
clock's timers at ``speed`` simulated seconds per real second, actions
started through the executor, and the test hooks that drop and restore the
connection. Events come from one place — the world's outgoing queue — so
churn, merges and re-reads after a reconnect reach the store in the order
they happened on the simulated host.

The sleep function is injectable: with ``sleep=`` a no-op, the simulation
runs as fast as the stream is consumed, which is how tests drive hours of
simulated time without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from ventana.state.events import ConnectionChanged, Event, LinkState, Remove, Upsert
from ventana.state.model import FinalState, Key, Kind, Platform, PowerState, TaskState

from .. import gcpause
from ..base import ActionResult, Backend, let_keys_in
from .churn import Churn
from .clock import Scheduler, SimClock
from .config import SimConfig
from .construct import constructor
from .context import SimContext
from .executor import SimExecutor
from .inventory import building_inventory
from .merge import MergeJob
from .rebuild import SimRebuild
from .steps import Steps, finish
from .world import World

Sleep = Callable[[float], Awaitable[object]]
WORLD_SLICE_S = 0.008  # the world is built this much at a time (``_build_world``) ...
STREAM_SLICE_S = 0.008  # ... and the inventory streamed out (with its consumer's work),
# the loop turning between slices (``base.let_keys_in``)
MAX_LAG_S = 2.0  # a consumer this far behind real time is not flooded with the backlog
_new_upsert = constructor(Upsert)  # ~48,000 of them at 10,000 VMs: construct.py


class SimBackend(Backend):
    """A simulated cluster shaped like the source campaign (see ``SimConfig``)."""

    name = "sim"
    platform = Platform.HYPERV

    def __init__(self, config: SimConfig | None = None, *, sleep: Sleep | None = None) -> None:
        config = config or SimConfig()
        super().__init__(f"sim://{config.cluster_name}", read_only=config.read_only)
        self.config = config
        self.epoch = config.start_time()
        self.clock = SimClock(self.epoch)
        self.sched = Scheduler(self.clock)
        self._sleep: Sleep = sleep or asyncio.sleep
        self._realtime = sleep is None
        self._world: World | None = None
        self._churn: Churn | None = None
        self._wake = asyncio.Event()
        self._started = False
        self._connected = False
        self._closed = False
        self._link_down = False
        # One node's link lost (``drop_node``): what it owns stops reaching the client.
        self._nodes_down: set[str] = set()
        self._node_sources: set[str] = set()  # nodes given a source of their own so far
        self._control: deque[Event] = deque()
        self._client_keys: set[Key] = set()
        self._jobs: dict[str, MergeJob] = {}
        # Short operations in flight (upgrade, compact, delete, rebuild steps), by task
        # id: resolved UNKNOWN when the session closes or the link drops.
        self._in_flight: dict[str, asyncio.Future[Any]] = {}
        self._rebuild: SimRebuild | None = None
        self._attempts: Counter[str] = Counter()
        self._restore: asyncio.Task[None] | None = None
        self._anchor_real = 0.0  # loop time at which ...
        self._anchor_t = 0.0  # ... the simulated clock read this
        #: What the workflows (compact, delete, upgrade, rebuild) may use of this backend.
        self.context = SimContext(
            target=self.target,
            world=lambda: self.world,
            sched=self.sched,
            is_connected=lambda: self.connected,
            catch_up=self._catch_up,
            wake=self._wake.set,
            in_flight=self._in_flight,
            merge=self.run_merge,
            forget_vm=self._forget_vm,
        )

    # -- state -------------------------------------------------------------------
    @property
    def world(self) -> World:
        """The simulated host's state (built on first use)."""
        if self._world is None:
            with gcpause.paused():  # ~100,000 acyclic objects at 10,000 VMs: build_inventory
                finish(self._building_world())
        assert self._world is not None
        return self._world

    def _building_world(self) -> Steps[World]:
        """The world (and its churn) as a stepped build (``steps``)."""
        inventory = yield from building_inventory(self.config, self.epoch)
        keep = self.config.task_retention_s
        retention = None if keep is None else keep * self.config.speed
        world = yield from World.building(inventory, self.sched, retention)
        if self._world is None:  # not built meanwhile by a plain ``world`` read
            self._world = world
            self._churn = Churn(world, self.config)
        return self._world

    async def _build_world(self) -> World:
        """The world built on the loop, ``WORLD_SLICE_S`` of work at a time.

        Between slices the loop turns (``let_keys_in``): a key takes about ten
        turns from the terminal to the widget that handles it, so it never waits
        for more than one slice. (In a worker thread the build held the GIL against
        the UI loop for 5 ms at a time, once for each of those turns.)
        """
        steps = self._building_world()
        while True:
            if self._world is not None:  # a plain ``world`` read built it meanwhile
                steps.close()
                return self._world
            try:
                with gcpause.paused():  # see ``world``
                    deadline = time.perf_counter() + WORLD_SLICE_S
                    while time.perf_counter() < deadline:
                        next(steps)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            await let_keys_in()

    def now(self) -> datetime:
        """The simulated clock (it runs ``speed`` times faster than the wall)."""
        return self.clock.now()

    @property
    def clock_rate(self) -> float:  # type: ignore[override]
        return self.config.speed

    @property
    def connected(self) -> bool:
        return self._connected and not self._link_down and not self._closed

    def set_read_only(self, value: bool) -> None:
        """Flip the session's mode; executors already handed out re-check it."""
        self._read_only = value

    @property
    def rebuild(self) -> SimRebuild:
        """The simulated host's side of VM rebuilds (guest facts, new VMs)."""
        if self._rebuild is None:
            self._rebuild = SimRebuild(self.context, seed=self.config.seed,
                                       failures=self.config.rebuild_failures)
        return self._rebuild

    def _make_executor(self) -> SimExecutor:
        return SimExecutor(self)

    # -- the stream ----------------------------------------------------------------
    async def events(self) -> AsyncIterator[Event]:
        """CONNECTING, the whole inventory as upserts, CONNECTED, then live changes.

        Runs until ``close()`` (then ends with DISCONNECTED). Can be consumed
        once. Merges started through the executor report on this stream, so
        it must be consumed while they run.
        """
        if self._started:
            raise RuntimeError("SimBackend.events() can be consumed once")
        self._started = True
        source = self.name
        if self._closed:
            yield ConnectionChanged(source, LinkState.DISCONNECTED, "closed")
            return
        cluster = self.config.cluster_name
        yield ConnectionChanged(source, LinkState.CONNECTING, f"connecting to {cluster}")
        # Building a big world takes a while: in slices, so the UI loop stays responsive.
        world = self._world or await self._build_world()
        deadline = time.perf_counter() + STREAM_SLICE_S
        for n, entity in enumerate(world.snapshot(), start=1):
            yield _new_upsert(entity)
            if n % 64 == 0 and time.perf_counter() >= deadline:  # as _build_world
                await let_keys_in()
                deadline = time.perf_counter() + STREAM_SLICE_S
        self._client_keys.update(world.keys())  # what the client has now: all of it
        self._connected = True
        self._anchor()
        yield ConnectionChanged(source, LinkState.CONNECTED)
        assert self._churn is not None
        self._churn.start()
        try:
            while not self._closed:
                if self._control:
                    event = self._control.popleft()
                    self._track(event)
                    yield event
                    continue
                if world.out:
                    event = world.out.popleft()
                    if self._link_down:
                        continue  # nothing reaches the client while the link is down
                    if self._nodes_down and self._owner_node(event) in self._nodes_down:
                        continue  # nor what a node whose link is down owns
                    self._track(event)
                    yield event
                    continue
                due = self.sched.next_due()
                if due is None:
                    await self._pause(None)
                    continue
                delay = self._delay_until(due)
                if delay > 0 and await self._pause(delay):
                    continue  # woken early: an action or a hook changed something
                self.sched.run_next()
        finally:
            self._connected = False
            self._closed = True
            self._unknown_all("the session was closed while the merge was running")
        yield ConnectionChanged(source, LinkState.DISCONNECTED, "closed")

    def _track(self, event: Event) -> None:
        if isinstance(event, Upsert):
            self._client_keys.add((event.entity.KIND, event.entity.id))
        elif isinstance(event, Remove):
            self._client_keys.discard((event.kind, event.id))

    def _anchor(self) -> None:
        """Tie the simulated clock to the wall clock from now on (real time only)."""
        if self._realtime:
            self._anchor_real = asyncio.get_running_loop().time()
            self._anchor_t = self.clock.t

    def _delay_until(self, due: float) -> float:
        """Real seconds until simulated time ``due``.

        In real time this is measured from a fixed anchor, so the time spent
        producing and consuming events does not slow the simulation down; a
        consumer that fell more than ``MAX_LAG_S`` behind is not flooded with
        the backlog: the clock is re-anchored instead.
        """
        speed = self.config.speed
        if not self._realtime:
            return (due - self.clock.t) / speed
        now = asyncio.get_running_loop().time()
        delay = self._anchor_real + (due - self._anchor_t) / speed - now
        if delay < -MAX_LAG_S:
            self._anchor_real, self._anchor_t = now, self.clock.t
            delay = (due - self.clock.t) / speed
        return delay

    async def _pause(self, delay: float | None) -> bool:
        """Sleep ``delay`` real seconds (None: until woken); True if woken early."""
        self._wake.clear()
        waiter = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self._sleep(delay)) if delay is not None else None
        try:
            pending = {waiter} if sleeper is None else {waiter, sleeper}
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if sleeper is not None:
                sleeper.cancel()
        woke = sleeper is None or sleeper not in done
        if woke:
            self._catch_up()
        return woke

    def _catch_up(self) -> None:
        """In real time, move the clock to where the wall says it is now."""
        if not self._realtime or not self._connected:
            return
        elapsed = asyncio.get_running_loop().time() - self._anchor_real
        self.sched.advance(self._anchor_t + elapsed * self.config.speed - self.clock.t)

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._restore is not None:
            self._restore.cancel()
            self._restore = None
        self._unknown_all("the session was closed while the merge was running")

    # -- actions -------------------------------------------------------------------
    async def run_merge(self, vm_id: str, task_id: str, *, keep_last: bool = False,
                        force_fail: bool = False) -> ActionResult:
        """Start a merge on the simulated host and wait for its outcome.

        ``keep_last`` merges to the last parent (the newest checkpoint stays,
        replication is not broken); ``force_fail`` is the rebuild tests' hook.
        """
        if not self.connected:
            why = "closed" if self._closed else "not connected"
            return ActionResult(
                TaskState.FAILED,
                error=f"{self.target} is {why}; the merge was not sent",
            )
        if task_id in self.world.tasks or task_id in self._jobs:
            return ActionResult(TaskState.FAILED, error=f"task id {task_id!r} is already in use")
        self._catch_up()
        self._attempts[vm_id] += 1
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()
        job = MergeJob(self.world, self.config, vm_id, task_id, future, self._attempts[vm_id],
                       keep_last=keep_last, force_fail=force_fail)
        self._jobs[task_id] = job
        job.begin()
        self._wake.set()
        try:
            return await future
        finally:
            self._jobs.pop(task_id, None)

    async def run_upgrade(self, vm_id: str, task_id: str, version: str) -> ActionResult:
        """Raise a VM's configuration version, as Update-VMVersion does on a host."""
        if not self.connected:
            return ActionResult(TaskState.FAILED, error=f"{self.target} is not connected; "
                                                        "the upgrade was not sent")
        self._catch_up()
        world = self.world
        vm = world.vms.get(vm_id)
        if vm is None:
            return ActionResult(TaskState.FAILED, error="the VM was not found on the host")
        before = vm.config_version
        task = world.start_task(task_id, "upgrade", vm, f"Update-VMVersion {before} → {version}")
        future: asyncio.Future[ActionResult] = asyncio.get_running_loop().create_future()

        def finish() -> None:
            current = world.vms.get(vm_id)
            if current is None or current.power is not PowerState.OFF:
                error = ("Update-VMVersion: The operation cannot be performed while the "
                         "virtual machine is in its current state.")
                world.finish_task(task.id, TaskState.FAILED, error=error)
                result = ActionResult(TaskState.FAILED, error=error,
                                      final_state=FinalState.PENDING)
            else:
                world.update_vm(vm_id, config_version=version)
                world.finish_task(task.id, TaskState.OK, f"configuration version {version}",
                                  pct=100.0)
                result = ActionResult(TaskState.OK, final_state=FinalState.OPERATIONAL,
                                      detail=f"configuration version {before} → {version}")
            if not future.done():
                future.set_result(result)
            self._wake.set()

        world.progress(task.id, 40.0, "updating the configuration")
        self.sched.after(4.0, finish)  # a few simulated seconds
        return await self.context.settle(task_id, future)

    def _forget_vm(self, vm_id: str) -> None:
        """A deleted VM leaves the churn's plans."""
        if self._churn is not None:
            self._churn.forget_vm(vm_id)

    def cancel_task(self, task_id: str) -> bool:
        world = self.world
        task = world.tasks.get(task_id)
        if task is None or task.state.finished or not self.connected:
            return False
        if task.kind == "merge":
            world.progress(
                task_id,
                task.pct,
                "Cancel refused: Hyper-V cannot cancel a merge in progress; it runs to the end",
            )
            self._wake.set()
        return False

    def _unknown_all(self, why: str) -> None:
        for job in list(self._jobs.values()):
            job.resolve(
                ActionResult(
                    TaskState.UNKNOWN,
                    error=f"{why}; its outcome is unknown — verify on the host",
                    size_before=job.size_before or None,
                    final_state=None,
                )
            )
        for future in list(self._in_flight.values()):
            if not future.done():
                future.set_result(ActionResult(
                    TaskState.UNKNOWN, error=f"{why}; its outcome is unknown — verify on the host"
                ))

    # -- test hooks ----------------------------------------------------------------
    def drop_connection(self, seconds: float | None = None, reason: str = "") -> None:
        """Lose the link: STALE now, RECONNECTING, then a full re-read and CONNECTED.

        With ``seconds`` the link comes back by itself after that many real
        seconds (through the injected sleep); with None it stays down until
        ``restore_connection()``. Changes on the host continue meanwhile; a
        merge in flight returns UNKNOWN, as a real client cannot know its end.
        """
        if not self.connected:
            return
        self._link_down = True
        reason = reason or (
            "WinRM: no answer from the cluster for 30 s (read timeout); data may be stale"
        )
        self._control.append(ConnectionChanged(self.name, LinkState.STALE, reason))
        self._control.extend(ConnectionChanged(self._node_source(n), LinkState.STALE, reason)
                             for n in sorted(self._node_sources))
        self.world.out.clear()
        self._unknown_all("the connection was lost while the merge was running")
        self._wake.set()
        if seconds is not None:
            self._restore = asyncio.get_running_loop().create_task(
                self._restore_after(seconds, reason)
            )

    async def _restore_after(self, seconds: float, reason: str) -> None:
        await self._sleep(seconds / 2)
        if self._link_down and not self._closed:
            self._control.append(
                ConnectionChanged(
                    self.name, LinkState.RECONNECTING, f"reconnecting (attempt 2): {reason}"
                )
            )
            self._wake.set()
        await self._sleep(seconds / 2)
        self._restore = None
        self.restore_connection()

    def restore_connection(self) -> None:
        """Reconnect: re-read everything, drop what vanished, then CONNECTED."""
        if not self._link_down or self._closed:
            return
        self._link_down = False
        world = self.world
        world.out.clear()
        if not any(
            isinstance(e, ConnectionChanged) and e.state is LinkState.RECONNECTING
            for e in self._control
        ):
            self._control.append(
                ConnectionChanged(self.name, LinkState.RECONNECTING, "reconnecting: re-reading")
            )
        self._resync()
        self._control.append(ConnectionChanged(self.name, LinkState.CONNECTED))
        self._control.extend(ConnectionChanged(self._node_source(n), LinkState.CONNECTED)
                             for n in sorted(self._node_sources - self._nodes_down))
        self._wake.set()

    def _resync(self) -> None:
        """Queue a full re-read: every entity as it is now, removals for what vanished."""
        world = self.world
        current = world.keys()
        self._control.extend(map(_new_upsert, world.snapshot()))
        gone = sorted(self._client_keys - current)
        self._control.extend(Remove(kind, id_) for kind, id_ in gone if kind is not Kind.CLUSTER)

    # -- one node's link (partial failure) -------------------------------------------------
    def _node_source(self, node_id: str) -> str:
        return f"{self.name} {node_id}"

    def _owner_node(self, event: Event) -> str | None:
        """The node whose link carries this change (None: the cluster's)."""
        if not isinstance(event, Upsert):
            return None
        entity = event.entity
        world = self.world
        match entity.KIND:
            case Kind.NODE:
                return entity.id
            case Kind.VM:
                return entity.node_id  # type: ignore[union-attr]
            case Kind.LUN:  # the CSV's coordinator reports its space
                return entity.owner_node_id or None  # type: ignore[union-attr]
            case Kind.CHECKPOINT | Kind.DISK:
                vm = world.vms.get(entity.vm_id)  # type: ignore[union-attr]
                return vm.node_id if vm is not None else None
            case Kind.TASK:
                target = entity.target  # type: ignore[union-attr]
                vm = world.vms.get(target.partition(":")[2]) if target.startswith("vm:") else None
                return vm.node_id if vm is not None else None
        return None

    def drop_node(self, node_id: str, reason: str = "") -> None:
        """Lose one node's link while the others stay live (issue 14's partial failure):
        the node's own source (``"<name> <node>"``, naming it) goes STALE, the
        cluster's source names the other nodes, and nothing the node owns (its row,
        its VMs with their checkpoints, disks and tasks, the CSVs it coordinates)
        reaches the client until ``restore_node``. Actions are refused by pre-flight
        (STALE_DATA on that node only), as against a real cluster."""
        if not self.connected or node_id not in self.world.nodes or node_id in self._nodes_down:
            return
        self._nodes_down.add(node_id)
        self._node_sources.add(node_id)
        reason = reason or f"WinRM: no answer from {node_id} for 30 s (read timeout)"
        live = tuple(sorted(set(self.world.nodes) - self._nodes_down))
        self._control.append(ConnectionChanged(self.name, LinkState.CONNECTED, "", live))
        self._control.append(
            ConnectionChanged(self._node_source(node_id), LinkState.STALE, reason, (node_id,)))
        self._wake.set()

    def restore_node(self, node_id: str) -> None:
        """The node answers again: re-read everything, then its source is CONNECTED."""
        if node_id not in self._nodes_down or self._closed:
            return
        self._nodes_down.discard(node_id)
        if self._link_down:
            return  # the whole link's restore reconnects it
        self._control.append(ConnectionChanged(
            self._node_source(node_id), LinkState.RECONNECTING, "reconnecting: re-reading"))
        self._resync()
        self._control.append(ConnectionChanged(self._node_source(node_id), LinkState.CONNECTED))
        self._wake.set()
