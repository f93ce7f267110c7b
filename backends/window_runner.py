"""Runs a maintenance window's queue through the one guarded action path.

Owns the queue's execution. The operator confirms the whole queue once, by
typing the window's name after seeing every item's plan (``confirm``); each
item then goes through ``ActionRunner.execute`` like any other action: it is
re-planned from the live store at its start and refused — the item is
*skipped*, with the reason, in the action log — when a blocking finding
stands then, or when new warnings appeared or its checkpoint count changed
since the plan the operator saw. Each item's row carries the window's name
(plan params and facts ``queue_window``). There is no override from a queue:
a blocked item must be run on its own. An action that needs a second
confirmation (deleting a VM) is never run from a queue.

Rules while running:

- at most ``window.parallel`` items at once; never two on one VM; never two
  on one LUN unless the window allows it (``same_lun``) — a VM's LUNs are its
  plan's and those of all its disk files: items wait, and a later item on
  other LUNs may start first;
- **pause**: running items finish, nothing new starts;
- **skip**: a queued item is not run (a "cancelled" row says so); a running
  one cannot be skipped (a merge cannot be stopped);
- **a failed step stops only what depends on it**: later items on the *same
  VM* are skipped (the VM is in an unknown or partial state); items on other
  VMs go on — on the same LUN too, but each is re-planned at its start, so a
  LUN a failure left short of space refuses them by pre-flight;
- while the connection is stale nothing new starts (the queue waits rather
  than skipping everything on STALE_DATA); when only some nodes are stale,
  only items on VMs of those nodes wait (saying which node), the rest run;
- **team mode**: an item whose VM another console holds (a live lease, read in
  a worker each round) waits, its reason naming the holder, and starts once
  the lease is gone; while the team's log cannot be read nothing new starts
  (the queue waits rather than skipping everything on a refused intent row);
- items added after the run was confirmed stay queued for the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ventana.state.actionlog import ActionLogError
from ventana.state.model import Kind, TaskState
from ventana.state.plans import Plan
from ventana.state.sanitize import clean
from ventana.state.window import (
    NOT_OK,
    QUEUED,
    RUNNING,
    SKIPPED,
    MaintenanceWindow,
    Projection,
    QueueItem,
    WindowError,
    project,
)

from .actions import QUEUE_PARAM, ActionRefused, ActionRunner
from .base import ReadOnlyError

POLL_S = 0.5


class WindowRunner:
    def __init__(self, runner: ActionRunner, window: MaintenanceWindow, *,
                 on_change: Callable[[], None] | None = None) -> None:
        self.runner = runner
        self.window = window
        self.on_change = on_change
        self.paused = False
        self.save_error = ""
        self.confirmed: dict[str, Plan] = {}  # item id -> the plan the operator saw
        self.started_plans: dict[str, Plan] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Future[None]] = set()  # skipped items' log rows (_skip)
        #: Team mode: VMs ("vm:<id>") other consoles hold now → who holds them.
        self.held: dict[str, str] = {}

    # -- planning ---------------------------------------------------------------
    def plan_item(self, item: QueueItem) -> Plan:
        return self.runner.plan(item.action, item.vm_id,
                                **{**item.params, QUEUE_PARAM: self.window.name})

    def projection(self) -> Projection:
        return project(self.window, self.plan_item, self.runner.clock(), self.started_plans)

    @property
    def active(self) -> bool:
        return self._loop_task is not None and not self._loop_task.done()

    @property
    def running_ids(self) -> set[str]:
        return set(self._tasks)

    # -- control ------------------------------------------------------------------
    def confirm(self, typed: str, plans: dict[str, Plan] | None = None) -> int:
        """Accept the queue: ``typed`` must be the window's name.

        ``plans`` are the plans the operator saw (default: planned now); only
        the items queued now are confirmed. Returns how many.
        """
        if self.runner.read_only:
            raise ReadOnlyError(f"{self.runner.backend.target} is read-only; the queue cannot run")
        if typed != self.window.name:
            raise ActionRefused("the typed name does not match the window's name; nothing runs")
        confirmed: dict[str, Plan] = {}
        for item in self.window.items:
            if item.status != QUEUED:
                continue
            plan = (plans or {}).get(item.id)
            if plan is None:
                try:
                    plan = self.plan_item(item)
                except (KeyError, ValueError) as exc:
                    self._set(item, status=SKIPPED, reason=clean(str(exc)))
                    continue
            confirmed[item.id] = plan
        self.confirmed = confirmed
        return len(confirmed)

    def start(self) -> asyncio.Task[None]:
        """Run the confirmed items in the background (``confirm`` first)."""
        if self.active:
            assert self._loop_task is not None
            return self._loop_task
        self.paused = False
        self._loop_task = asyncio.get_running_loop().create_task(self.run())
        return self._loop_task

    def pause(self) -> None:
        self.paused = True
        self._wake.set()
        self._changed()

    def skip(self, item_id: str, reason: str = "skipped by the operator") -> bool:
        item = self.window.item(item_id)
        if item is None or item.status != QUEUED:
            return False
        self._skip(item, f"{reason} (window {self.window.name})")
        self._wake.set()
        return True

    async def stop(self) -> None:
        """Cancel the loop and running items (the console is closing)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    # -- the loop -------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                if not self.paused:
                    held = await self._held_elsewhere() if self._waiting() else {}
                    if held is not None:  # None: the team's log is out of reach, wait
                        self.held = held
                        self._start_eligible()
                if not self._tasks and (self.paused or not self._waiting()):
                    break
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)
        finally:
            for task in list(self._tasks.values()):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            if self._writes:  # skipped items' rows
                await asyncio.gather(*self._writes, return_exceptions=True)
            self._changed()

    async def _held_elsewhere(self) -> dict[str, str] | None:
        """What other consoles hold on a team's log (a round trip: in a worker); None
        when it cannot be read now."""
        log = self.runner.log
        if log is None or not log.shared:
            return {}
        try:
            leases = await asyncio.to_thread(log.leases)
        except ActionLogError:
            return None
        return {le.target_object: le.who() for le in leases if le.console != log.console}

    def _waiting(self) -> bool:
        return any(i.status == QUEUED and i.id in self.confirmed for i in self.window.items)

    def _start_eligible(self) -> None:
        store = self.runner.store
        staleness = store.staleness()
        if staleness.everything:
            return  # wait for the link: every plan would be blocked by STALE_DATA
        busy_vms: set[str] = set()
        busy_luns: set[str] = set()
        for item_id in self._tasks:
            plan = self.started_plans.get(item_id)
            item = self.window.item(item_id)
            if item is not None:
                busy_vms.add(item.vm_id)
                busy_luns |= self._luns_of(item.vm_id, plan)
        failed_vms = {i.vm_id for i in self.window.items if i.status in NOT_OK}
        earlier_vms: set[str] = set()
        for item in list(self.window.items):
            if len(self._tasks) >= self.window.parallel:
                return
            if item.status != QUEUED or item.id not in self.confirmed:
                continue  # added after the run was confirmed: the next run's
            if item.vm_id in failed_vms:
                self._skip(item, "an earlier step on this VM did not succeed "
                                 f"(window {self.window.name})")
                continue
            if item.vm_id in busy_vms or item.vm_id in earlier_vms:
                earlier_vms.add(item.vm_id)
                continue
            holder = self.held.get(f"{Kind.VM.value}:{item.vm_id}")
            if holder:  # another console acts on the VM: wait for it, saying who
                earlier_vms.add(item.vm_id)
                why = f"waiting: held from another console by {holder}"
                if item.reason != why:
                    self._set(item, reason=why)
                continue
            vm = store.vm(item.vm_id)
            node = vm.node_id if vm is not None else ""
            not_live = staleness.who(node, item.vm_id) if staleness.any else None
            if not_live is not None:
                # Its node's link, or its own target's, is down (others are fine): wait
                # rather than be skipped on STALE_DATA; the VM's later items wait behind it.
                earlier_vms.add(item.vm_id)
                what, name = not_live
                link = name if what == "target" else f"node {name or node or '?'}"
                why = f"waiting: the link to {link} is not live"
                if item.reason != why:
                    self._set(item, reason=why)
                continue
            shown = self.confirmed[item.id]
            luns = self._luns_of(item.vm_id, shown)
            if not self.window.same_lun and luns & busy_luns:
                earlier_vms.add(item.vm_id)
                continue
            busy_vms.add(item.vm_id)
            busy_luns |= luns
            self.started_plans[item.id] = shown
            self._tasks[item.id] = asyncio.get_running_loop().create_task(
                self._run_item(item.id, shown))
            self._set(item, status=RUNNING, reason="", started=self.runner.clock(), ended=None)

    async def _run_item(self, item_id: str, shown: Plan) -> None:
        status, reason = "unknown", ""
        try:
            # "running" is written before the action is sent (written behind, in the
            # writer thread): a restart then finds it cut off, never still queued. A write
            # that fails does not stop the run (save_error; the action log has its rows).
            await asyncio.wrap_future(self.window.flushed())
            result = await self.runner.execute(shown, shown.target_name)
            status, reason = result.state.value, result.error
        except (ActionRefused, ReadOnlyError) as exc:
            status, reason = SKIPPED, f"refused: {exc}"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never lose an outcome: say unknown
            status = TaskState.UNKNOWN.value
            reason = clean(f"{type(exc).__name__}: {exc}") + " — verify on the host"
        finally:
            self._tasks.pop(item_id, None)
            self.started_plans.pop(item_id, None)
            self._wake.set()
        item = self.window.item(item_id)
        if item is not None:
            self._set(item, status=status, reason=clean(reason), ended=self.runner.clock())

    # -- helpers ----------------------------------------------------------------------
    def _luns_of(self, vm_id: str, plan: Plan | None) -> set[str]:
        """Every LUN the item touches: its plan's and those of all the VM's disk files."""
        luns = {d.lun_id for d in self.runner.store.disks_of(vm_id) if d.lun_id}
        if plan is not None and plan.lun_id:
            luns.add(plan.lun_id)
        return luns

    def _skip(self, item: QueueItem, reason: str) -> None:
        plan = self.confirmed.get(item.id)
        if plan is not None:
            # The log says the item was not run, and why (written in a worker; the run's
            # end waits for it).
            write = asyncio.ensure_future(self._log_skipped(plan, reason))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
        self._set(item, status=SKIPPED, reason=reason, ended=self.runner.clock())

    async def _log_skipped(self, plan: Plan, reason: str) -> None:
        with contextlib.suppress(ActionRefused):  # the item stays skipped either way
            await self.runner.cancelled(plan, reason)

    def saved(self, error: str) -> None:
        """A write of the queue ended ('' or why it failed); on the loop."""
        if error != self.save_error:
            self.save_error = error
            self._changed()

    def _set(self, item: QueueItem, **changes: object) -> None:
        try:
            self.window.update(item.id, **changes)
        except WindowError as exc:
            # The queue's file is unwritable: the run goes on (every action
            # still has its action-log row); the screen says the queue is unsaved.
            self.save_error = str(exc)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
