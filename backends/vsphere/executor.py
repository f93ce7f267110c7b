"""The vSphere mutating handle: remove snapshots, consolidate disks, create a
snapshot (inside the guest's freeze/thaw hooks), ask for the storage estimate.

Only a writable ``VSphereBackend`` hands one out, and every call re-checks the
backend's mode before anything reaches the server (``Executor._guard``).
Each action is one task row (the id the caller gives) on the backend's event
stream, fed by the vSphere tasks it starts (which the backend then does not
show as rows of their own: ``own_task``). Each vSphere task is followed
through a property filter on its own ``info`` (``Session.watch_task``):
TaskManager.recentTask is not for tracking completion and may never list it.
Before a task is sent the VM must not be busy (an action of ours still runs
on it, or the server lists a queued/running task for it, read then). After
every action the VM's storage is refreshed (``RefreshStorageInfo``, then
layoutEx read back) and its datastores too (``RefreshDatastore``).

Outcomes (RELIABILITY.md):

- OK — done, and the VM no longer needs consolidation (re-read from the
  server after the task, not assumed);
- WARNING — the snapshots are gone but ``consolidationNeeded`` stays (a
  backup proxy still holds a disk, or space ran out): not done;
- FAILED — the server refused or the task failed, with the fault's message;
  or nothing was sent because the session was not connected;
- CANCELLED — the task was cancelled on the server;
- UNKNOWN — the connection was lost after the request went out, or the task
  did not end within ``task_timeout_s`` (the VM is then re-read, and stays
  busy for this console until the task ends): the outcome must be verified
  on the host; nothing is ever re-sent automatically.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyVmomi import vim, vmodl

from ventana.state.derived import human_age, human_bytes
from ventana.state.events import TaskProgress, Upsert
from ventana.state.model import FinalState, Task, TaskState
from ventana.state.sanitize import clean

from ..base import ActionResult, Executor
from .lean import NOT_DATA
from .mapping import fault_message, moid, task_entity
from .session import TaskTimeout

if TYPE_CHECKING:
    from .backend import VSphereBackend
    from .session import Session

log = logging.getLogger("ventana.backends.vsphere")
UNKNOWN_TAIL = " — outcome unknown, verify on the host"


@dataclass(frozen=True, slots=True)
class _Step:
    label: str
    start: Callable[[Session], Any]  # runs in a worker thread; returns a vim.Task
    lo: float  # the action's progress range this step covers
    hi: float


class _Stop(Exception):
    def __init__(self, result: ActionResult, *, task_failed: bool = False) -> None:
        super().__init__(result.error)
        self.result = result
        self.task_failed = task_failed  # a task ran on the server and ended in error


class VSphereExecutor(Executor):
    def __init__(self, backend: VSphereBackend) -> None:
        super().__init__(backend)
        self._vs = backend
        self._running: dict[str, str] = {}  # our task id -> vSphere task moref
        self._pct: dict[str, float] = {}  # our task id -> last progress
        self._infos: dict[str, Any] = {}  # vSphere task moref -> its last TaskInfo
        self._timed_out: set[str] = set()  # our task ids whose vSphere task did not end

    # -- the actions ---------------------------------------------------------------
    async def merge(self, vm_id: str, task_id: str) -> ActionResult:
        """Remove every snapshot of the VM (their data goes into the base disks),
        then consolidate if the server still reports ``consolidationNeeded``."""
        return await self.remove_all_snapshots(vm_id, task_id, kind="merge")

    async def remove_all_snapshots(
        self, vm_id: str, task_id: str, *, kind: str = "remove-all-snapshots"
    ) -> ActionResult:
        """``RemoveAllSnapshots_Task`` then, if still needed, ``ConsolidateVMDisks_Task``."""
        self._guard(kind)
        steps: list[_Step] = []
        props = self._vs.cached("vm", vm_id) or {}
        if props.get("snapshot") is not None:
            steps.append(
                _Step(
                    "remove all snapshots",
                    lambda s: _vm(s, vm_id).RemoveAllSnapshots_Task(consolidate=True),
                    0,
                    80,
                )
            )
        return await self._run(kind, vm_id, task_id, steps, consolidate_after=True)

    async def remove_snapshot(
        self, snapshot_id: str, task_id: str, *, remove_children: bool = False
    ) -> ActionResult:
        """Remove one snapshot (optionally with its subtree)."""
        self._guard("remove snapshot")
        vm_id = self._vm_of_snapshot(snapshot_id)
        if vm_id is None:
            return ActionResult(
                TaskState.FAILED, error=f"snapshot {snapshot_id} is not in the current view"
            )
        step = _Step(
            "remove snapshot" + (" and its children" if remove_children else ""),
            lambda s: vim.vm.Snapshot(snapshot_id, s.si._stub).RemoveSnapshot_Task(
                removeChildren=remove_children, consolidate=True
            ),
            0,
            100,
        )
        return await self._run("remove-snapshot", vm_id, task_id, [step])


    async def remove_snapshot_of(
        self, vm_id: str, snapshot_id: str, task_id: str, remove_children: bool = False
    ) -> ActionResult:
        """Remove one snapshot of ``vm_id``; refuses a snapshot of another VM."""
        self._guard("remove snapshot")
        owner = self._vm_of_snapshot(snapshot_id)
        if owner != vm_id:
            return ActionResult(
                TaskState.FAILED,
                error=f"snapshot {snapshot_id} is not a snapshot of this VM in the current "
                "view; nothing was sent",
            )
        return await self.remove_snapshot(snapshot_id, task_id, remove_children=remove_children)

    async def estimate_consolidation(self, vm_id: str, timeout: float = 15.0) -> dict[str, int]:
        """vCenter's ``EstimateStorageForConsolidateSnapshots_Task``: bytes needed per
        datastore id. Starts a (read-only) server task, so a read-only session
        refuses it like any other; raises on any failure (the caller falls
        back to the delta sizes)."""
        self._guard("estimate")
        vs = self._vs
        session = vs.session
        if session is None:
            raise ConnectionError(f"{vs.target} is not connected")
        task = await vs.action_worker.call(
            lambda: _vm(session, vm_id).EstimateStorageForConsolidateSnapshots_Task()
        )
        oid = task._moId
        vs.own_task(oid)
        info = await self._watch(session, oid, timeout, lambda _info: None)
        end = task_entity(oid, info)
        if end is None or end.state is not TaskState.OK:
            raise RuntimeError(end.error if end is not None else "no task information")
        result = getattr(info, "result", None)
        if result is None:  # the filter may not carry the result: read it once
            result = await vs.action_worker.call(lambda: task.info.result)
        return {
            moid(r.datastore): int(r.freeSpaceRequiredInKb or 0) * 1024 for r in result or ()
        }

    async def create_snapshot(
        self,
        vm_id: str,
        task_id: str,
        name: str,
        quiesce: bool = False,
        memory: bool = False,
        pre_freeze: str = "",
        post_thaw: str = "",
    ) -> ActionResult:
        """``CreateSnapshot_Task``, inside the guest's freeze/thaw hooks when given.

        The hooks run over SSH in the guest (``backend.guest_shell(vm_name)``)
        through ``ssh.hooks.frozen``: the thaw runs whatever happens after the
        freeze; both outcomes go into the result's detail.
        """
        self._guard("create snapshot")
        # Snapshot limitations, read from the server before anything is sent and
        # before a guest pre-freeze hook runs.
        limits_warning = ""
        session = self._vs.session
        if session is not None:
            try:
                refuse, warn = await self._vs.action_worker.call(
                    lambda: session.snapshot_limits(vm_id, memory=memory))
            except Exception as exc:
                return ActionResult(TaskState.FAILED, error=self._vs.scrub(clean(
                    f"snapshot limitations not read ({type(exc).__name__}: {exc}); "
                    "nothing was sent")))
            if refuse:
                return ActionResult(TaskState.FAILED, error=clean(
                    "vSphere cannot snapshot this VM: " + "; ".join(refuse)
                    + "; nothing was sent"))
            limits_warning = clean("; ".join(warn))
        result = await self._create_snapshot(vm_id, task_id, name, quiesce, memory,
                                             pre_freeze, post_thaw)
        if limits_warning:
            detail = "; ".join(d for d in (result.detail, limits_warning) if d)
            result = dataclasses.replace(result, detail=detail)
        return result

    async def _create_snapshot(
        self, vm_id: str, task_id: str, name: str, quiesce: bool, memory: bool,
        pre_freeze: str, post_thaw: str,
    ) -> ActionResult:
        step = _Step(
            "create snapshot",
            lambda s: _vm(s, vm_id).CreateSnapshot_Task(
                name=name, description="created by Ventana", memory=memory, quiesce=quiesce
            ),
            0,
            100,
        )
        if not (pre_freeze or post_thaw):
            return await self._run("create-snapshot", vm_id, task_id, [step], check=False)
        from ..ssh.client import SshError
        from ..ssh.hooks import FreezeFailed, ThawFailed, frozen

        vm_name = str((self._vs.cached("vm", vm_id) or {}).get("name") or vm_id)
        factory = self._vs.guest_shell  # capabilities.SideChannelHost
        try:
            shell = factory(vm_name) if factory is not None else None
        except Exception as exc:  # no password, bad key path: nothing ran yet
            return ActionResult(
                TaskState.FAILED, error=f"guest hooks: {clean(str(exc))}; nothing was sent"
            )
        if shell is None:
            return ActionResult(
                TaskState.FAILED,
                error=f"guest hooks are configured for {vm_name} but no guest SSH connection "
                "is; nothing was sent",
            )
        hooks: list[str] = []
        result: ActionResult | None = None
        try:
            async with shell, frozen(
                shell, pre_freeze or "true", post_thaw or "true",
                log=lambda o: hooks.append(o.describe()),
            ):
                result = await self._run("create-snapshot", vm_id, task_id, [step], check=False)
        except FreezeFailed as exc:
            result = ActionResult(TaskState.FAILED, error=clean(str(exc)) + "; no snapshot taken")
        except ThawFailed as exc:
            done = (f"snapshot {result.state.value}{': ' + result.error if result.error else ''}; "
                    if result is not None else "no snapshot taken; ")
            result = ActionResult(
                TaskState.FAILED,
                error=done + clean(str(exc)),
                final_state=FinalState.DEGRADED,
            )
        except SshError as exc:
            result = ActionResult(
                TaskState.FAILED, error=f"guest hooks: {clean(str(exc))}; no snapshot taken"
            )
        detail = "; ".join(["guest hooks: " + ", ".join(hooks)] if hooks else [])
        if result.detail:
            detail = f"{result.detail}; {detail}" if detail else result.detail
        return dataclasses.replace(result, detail=detail)

    async def consolidate(self, vm_id: str, task_id: str) -> ActionResult:
        """Consolidate the VM's disks (``ConsolidateVMDisks_Task``)."""
        self._guard("consolidate")
        step = _Step("consolidate disks", lambda s: _vm(s, vm_id).ConsolidateVMDisks_Task(), 0, 100)
        return await self._run("consolidate", vm_id, task_id, [step])

    async def cancel(self, task_id: str) -> bool:
        """Ask vCenter to cancel the running vSphere task of an action.

        False when the task is not running or not cancellable (removing a
        snapshot usually is not).
        """
        self._guard("cancel")
        oid = self._running.get(task_id)
        session = self._vs.session
        info = None
        if oid:
            info = self._infos.get(oid) or (self._vs.cached("task", oid) or {}).get("info")
        if oid is None or session is None or info is None or not info.cancelable:
            return False
        try:
            await self._vs.action_worker.call(lambda: vim.Task(oid, session.si._stub).CancelTask())
        except Exception:
            return False
        return True

    # -- the one path ------------------------------------------------------------
    async def _run(
        self,
        kind: str,
        vm_id: str,
        task_id: str,
        steps: list[_Step],
        *,
        consolidate_after: bool = False,
        check: bool = True,
    ) -> ActionResult:
        vs = self._vs
        session = vs.session
        if session is None:
            return ActionResult(
                TaskState.FAILED, error=f"{vs.target} is not connected; nothing was sent"
            )
        props = vs.cached("vm", vm_id)
        name = str((props or {}).get("name") or vm_id)
        row = Task(
            id=task_id,
            kind=kind,
            target=f"vm:{vm_id}",
            target_name=name,
            state=TaskState.RUNNING,
            started=datetime.now(UTC),
            message=steps[0].label if steps else "checking consolidation",
        )
        vs.emit(Upsert(row))
        size_before = _files_bytes((props or {}).get("layoutEx"))
        busy = await self._busy(session, vm_id, task_id) if steps or consolidate_after else ""
        if busy:
            vs.emit(Upsert(dataclasses.replace(row, state=TaskState.FAILED,
                                               ended=datetime.now(UTC), message="failed",
                                               error=busy)))
            return ActionResult(TaskState.FAILED, error=busy)
        if steps or consolidate_after:
            vs.busy_vms[vm_id] = task_id
        try:
            for step in steps:
                await self._step(session, task_id, step)
            needed = check and await self._consolidation_needed(session, vm_id)
            if needed and consolidate_after:
                step = _Step(
                    "consolidate disks",
                    lambda s: _vm(s, vm_id).ConsolidateVMDisks_Task(),
                    80 if steps else 0,
                    100,
                )
                await self._step(session, task_id, step)
                needed = await self._consolidation_needed(session, vm_id)
            if needed:
                result = ActionResult(
                    TaskState.WARNING,
                    error="the task succeeded but the VM still needs consolidation "
                    "(a backup proxy may hold a disk, or the datastore ran out of space)",
                    final_state=FinalState.PARTIAL,
                )
            else:
                result = ActionResult(TaskState.OK, final_state=FinalState.OPERATIONAL)
        except _Stop as stop:
            result = stop.result
            if stop.task_failed and kind in _REMOVALS:
                result = await self._after_failed_removal(session, vm_id, result)
        finally:
            self._running.pop(task_id, None)
            if vs.busy_vms.get(vm_id) == task_id and task_id not in self._timed_out:
                del vs.busy_vms[vm_id]  # (a task past its timeout keeps the VM busy)
        if task_id in self._timed_out:
            self._timed_out.discard(task_id)
            # The task may still run: show what the server says now; never re-send.
            reread = await self._reread(vm_id)
            result = dataclasses.replace(result, detail="; ".join(
                d for d in (result.detail, reread) if d))
        if result.state is not TaskState.UNKNOWN:
            after = await self._files_now(session, vm_id)
            details = [result.detail, _sizes_text(size_before, after)]
            if steps and result.state in (TaskState.OK, TaskState.WARNING):
                details.append(await self._stun_after(vm_id, row.started))
            result = dataclasses.replace(
                result,
                size_before=size_before,
                size_after=after,
                detail="; ".join(d for d in details if d),
            )
        finished = result.state in (TaskState.OK, TaskState.WARNING)
        vs.emit(
            Upsert(
                dataclasses.replace(
                    row,
                    state=result.state,
                    pct=100.0 if finished else self._pct.get(task_id, 0.0),
                    ended=datetime.now(UTC),
                    message="done" if result.state is TaskState.OK else result.state.value,
                    error=result.error,
                )
            )
        )
        self._pct.pop(task_id, None)
        return result

    async def _step(self, session: Session, task_id: str, step: _Step) -> None:
        vs = self._vs
        vs.emit(TaskProgress(task_id, step.lo, step.label))
        try:
            task = await vs.action_worker.call(step.start, session)
        except vmodl.MethodFault as exc:  # the server answered: nothing started
            raise _Stop(
                ActionResult(TaskState.FAILED, error=clean(f"{step.label}: {_fault(exc)}"))
            ) from None
        except Exception as exc:  # the request may have reached the server
            raise _Stop(self._unknown(step.label, exc)) from None
        oid = task._moId
        self._running[task_id] = oid
        vs.own_task(oid)  # one row per action in the task strip: ours

        def forward(info: Any) -> None:
            self._infos[oid] = info
            t = task_entity(oid, info)
            if t is None:
                return
            pct = step.lo + (step.hi - step.lo) * t.pct / 100
            self._pct[task_id] = pct
            vs.emit(TaskProgress(task_id, pct, f"{step.label}: {t.state.value} ({t.pct:.0f}%)"))

        try:
            info = await self._watch(session, oid, vs.config.task_timeout_s, forward)
        except TaskTimeout as exc:
            self._timed_out.add(task_id)
            self._follow_late(session, task_id, oid)
            raise _Stop(
                ActionResult(
                    TaskState.UNKNOWN,
                    error=f"{step.label}: the task did not end within "
                    f"{human_age(timedelta(seconds=exc.timeout_s))}; it may still be running "
                    "on the server"
                    + UNKNOWN_TAIL,
                    final_state=FinalState.PENDING,
                )
            ) from None
        except Exception as exc:
            raise _Stop(
                ActionResult(
                    TaskState.UNKNOWN,
                    error=f"{step.label}: the connection was lost while the task ran "
                    f"({self._vs.scrub(clean(f'{type(exc).__name__}: {exc}'))})"
                    + UNKNOWN_TAIL,
                    final_state=FinalState.PENDING,
                )
            ) from None
        finally:
            self._infos.pop(oid, None)
        end = task_entity(oid, info)
        assert end is not None
        if end.state is TaskState.CANCELLED:
            raise _Stop(ActionResult(TaskState.CANCELLED, error=f"{step.label}: cancelled"))
        if end.state is not TaskState.OK:
            raise _Stop(
                ActionResult(
                    TaskState.FAILED,
                    error=f"{step.label}: {end.error or end.state.value}",
                ),
                task_failed=True,
            )

    async def _watch(
        self, session: Session, oid: str, timeout_s: float, on_info: Callable[[Any], None]
    ) -> Any:
        """Follow one vSphere task directly (its own filter on ``info``, in a thread
        of its own so that actions on several VMs do not wait on each other);
        ``on_info`` runs on the event loop for every change."""
        vs = self._vs
        loop = asyncio.get_running_loop()

        def seen(info: Any) -> None:
            loop.call_soon_threadsafe(on_info, info)

        fut: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, exc: BaseException | None) -> None:
            if fut.done():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        def run() -> None:
            try:
                info = session.watch_task(
                    oid, timeout_s, seen, wait_s=max(1, min(int(vs.config.wait_s), 10)),
                    stopped=lambda: vs.session is not session,
                )
            except BaseException as exc:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(settle, None, exc)
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, info, None)

        # A thread of its own, not the loop's shared executor: a task can run for
        # hours, and several actions (or late tasks) may be followed at once.
        threading.Thread(target=run, daemon=True, name=f"ventana-vsphere-{oid}").start()
        return await fut

    def _follow_late(self, session: Session, task_id: str, oid: str) -> None:
        """A task past the action's timeout may still run: the VM stays busy for this
        console until the task ends (or the session goes), then it is re-read."""
        vs = self._vs
        vm_id = next((v for v, t in vs.busy_vms.items() if t == task_id), None)

        async def follow() -> None:
            try:
                await self._watch(session, oid, 7 * 24 * 3600.0, lambda _info: None)
            except Exception as exc:
                log.info("vSphere task %s no longer followed: %s", oid, type(exc).__name__)
            finally:
                if vm_id is not None and vs.busy_vms.get(vm_id) == task_id:
                    del vs.busy_vms[vm_id]
            if vm_id is not None:
                await vs.refresh_vm_storage(vm_id)

        vs.spawn(follow())

    async def _busy(self, session: Session, vm_id: str, task_id: str) -> str:
        """Why the VM must not get another task now ('' when it may): an action of
        this console still runs on it, or the server lists a queued/running task
        for it (read now, not taken from the update feed). Nothing is sent then."""
        vs = self._vs
        other = vs.busy_vms.get(vm_id)
        if other is not None and other != task_id:
            return (f"VM_BUSY: another action of this console ({other}) is still running "
                    "on this VM; nothing was sent")
        try:
            running = await vs.action_worker.call(session.busy_tasks, vm_id)
        except Exception as exc:
            return (f"VM_BUSY check failed ({vs.scrub(clean(f'{type(exc).__name__}: {exc}'))});"
                    " nothing was sent")
        if running:
            info = running[0]
            what = str(getattr(info, "descriptionId", "") or getattr(info, "key", "a task"))
            return (f"VM_BUSY: the server reports {clean(what)} {info.state} on this VM; "
                    "nothing was sent")
        return ""

    async def _reread(self, vm_id: str) -> str:
        """The VM's storage and snapshots re-read after an unfinished task."""
        props = await self._vs.refresh_vm_storage(vm_id)
        if props is None:
            return "the VM could not be re-read"
        trees = list(getattr(props.get("snapshot"), "rootSnapshotList", None) or ())
        count = 0
        while trees:
            tree = trees.pop()
            count += 1
            trees.extend(tree.childSnapshotList or ())
        needed = "yes" if props.get("runtime.consolidationNeeded") else "no"
        return f"re-read from the server: {count} snapshot(s), consolidation needed: {needed}"

    async def _after_failed_removal(
        self, session: Session, vm_id: str, failed: ActionResult
    ) -> ActionResult:
        """A removal task that ended in error may still have removed the snapshots
        and failed only in their consolidation (a locked disk): the snapshots leave
        the tree and ``consolidationNeeded`` turns true. Re-read the flag: then the
        outcome is "removed, consolidation failed" and Consolidate is the next step,
        not a plain failure."""
        try:
            needed = await self._consolidation_needed(session, vm_id)
        except _Stop:
            return failed
        if not needed:
            return failed
        return ActionResult(
            TaskState.WARNING,
            error=f"removed, consolidation failed ({failed.error}): the VM now needs "
            "consolidation — run Consolidate once the disk is released (a backup proxy or "
            "another host may hold it)",
            final_state=FinalState.PARTIAL,
            detail="consolidation needed: yes (re-read from the server)",
        )

    async def _consolidation_needed(self, session: Session, vm_id: str) -> bool:
        """Re-read ``runtime.consolidationNeeded`` from the server, not the cache."""
        try:
            return bool(
                await self._vs.action_worker.call(
                    lambda: _vm(session, vm_id).runtime.consolidationNeeded
                )
            )
        except Exception as exc:
            raise _Stop(self._unknown("re-reading consolidationNeeded", exc)) from None

    async def _stun_after(self, vm_id: str, since: datetime | None) -> str:
        """The stun the SSH side channel saw for this action, if one is configured."""
        probe = self._vs.stun_probe  # capabilities.SideChannelHost
        if probe is None or since is None:
            return ""
        try:
            return str(await asyncio.wait_for(probe(vm_id, since), 20) or "")
        except Exception as exc:
            return f"stun not read over SSH: {clean(f'{type(exc).__name__}: {exc}')}"

    async def _files_now(self, session: Session, vm_id: str) -> int | None:
        """The VM's disk and snapshot files after an action: ``RefreshStorageInfo``,
        then layoutEx re-read (and folded into the view, since vCenter may never
        push it); the datastores of its files refreshed too. None if unreadable."""
        props = await self._vs.refresh_vm_storage(vm_id)
        if props is None:
            try:
                layout = await self._vs.action_worker.call(lambda: _vm(session, vm_id).layoutEx)
            except Exception:
                return None
            return _files_bytes(layout)
        await self._vs.refresh_datastores([moid(d) for d in props.get("datastore") or ()])
        return _files_bytes(props.get("layoutEx"))

    def _unknown(self, label: str, exc: BaseException) -> ActionResult:
        return ActionResult(
            TaskState.UNKNOWN,
            error=self._vs.scrub(clean(f"{label}: {type(exc).__name__}: {exc}")) + UNKNOWN_TAIL,
            final_state=FinalState.PENDING,
        )

    def _vm_of_snapshot(self, snapshot_id: str) -> str | None:
        for (cat, oid), props in list(self._vs.cached_items()):
            if cat != "vm":
                continue
            info = props.get("snapshot")
            stack = list(getattr(info, "rootSnapshotList", None) or ())
            while stack:
                tree = stack.pop()
                if moid(tree.snapshot) == snapshot_id:
                    return oid
                stack.extend(tree.childSnapshotList or ())
        return None


_REMOVALS = frozenset({"merge", "remove-all-snapshots", "remove-snapshot"})


def _vm(session: Session, vm_id: str) -> Any:
    return vim.VirtualMachine(vm_id, session.si._stub)


_NOT_DATA = NOT_DATA  # what the cache keeps of a layout depends on it (lean.kept_files)


def _files_bytes(layout: Any) -> int | None:
    """Bytes in a VM's disk and snapshot files (``layoutEx``); None if unknown."""
    if layout is None:
        return None
    return sum(int(f.size or 0) for f in layout.file or () if str(f.type) not in _NOT_DATA)


def _sizes_text(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return ""
    return f"disk and snapshot files {human_bytes(before)} → {human_bytes(after)}"


def _fault(exc: vmodl.MethodFault) -> str:
    return fault_message(exc) or type(exc).__name__
