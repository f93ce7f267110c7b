"""The one path from an operator's confirmed plan to a backend mutation.

plan → pre-flight → typed confirmation → intent row committed → backend call
→ outcome appended. Every attempt lands in the action log, including
cancelled and refused ones. The runner re-plans from the live store at
confirmation time (the world may have moved while the operator read the
plan), refuses while a blocking finding stands unless the operator overrode
it, refuses in read-only sessions before any I/O, and refuses when the log
cannot be written (fail closed). An exception after the request went out is
an *unknown* outcome, never a success.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.estimates import LearnedEstimator
from ventana.state.leases import ActionBusy
from ventana.state.model import FinalState, Kind, TaskState
from ventana.state.plans import Plan, findings_to_log
from ventana.state.sanitize import clean
from ventana.state.store import Store
from ventana.state.team import claim_for, shared_preflight

from . import actionspecs
from .base import ActionResult, Backend, ReadOnlyError
from .capabilities import PerTargetModes


class ActionRefused(Exception):
    """The action was not started; the reason is safe to show."""


def _what_changed(shown: Plan, fresh: Plan) -> str:
    """What the operator did not see and must: '' when the plan still stands."""
    def warned(plan: Plan) -> set[str]:
        return {f.code for f in plan.findings if f.severity.rank >= 1} - {
            f.code for f in plan.blocking
        }

    new = warned(fresh) - warned(shown)
    if new:
        return f"new warnings ({', '.join(sorted(new))})"
    for fact, what in (("target_version", "the target version"),
                       ("checkpoints", "the number of checkpoints")):
        if shown.facts.get(fact) != fresh.facts.get(fact):
            return f"{what} changed ({shown.facts.get(fact)} → {fresh.facts.get(fact)})"
    return ""


SETTLE_S = 1.0
#: How long opening or re-checking a plan waits for a team's leases (``read_leases``).
LEASES_WAIT_S = 5.0


def where_now(store: Store, vm_id: str, when: str) -> dict[str, Any]:
    """The VM's disks and LUN as the store shows them now, for the report.

    Written into the plan at the intent (``when="before"``) and into the
    outcome's detail at finish (``"after"``): ``disks_<when>`` lists each
    base disk's id, path, size with its differencing chain, and file count;
    ``lun_<when>`` the LUN's id, name, total and free bytes. Empty when the VM
    is gone from the store.
    """
    vm = store.vm(vm_id)
    if vm is None:
        return {}
    files = store.disks_of(vm_id)
    by_path = {d.path: d for d in files}
    disks: dict[str, dict[str, Any]] = {}
    for d in files:  # each .avhdx counts towards the base disk at the root of its chain
        root, seen = d, 0
        while root.parent_path and root.parent_path in by_path and seen < len(files):
            root, seen = by_path[root.parent_path], seen + 1
        entry = disks.setdefault(root.id, {"id": root.id, "path": root.path, "size": 0,
                                           "files": 0})
        entry["size"] += d.size_bytes
        entry["files"] += 1
    data: dict[str, Any] = {f"disks_{when}": sorted(disks.values(), key=lambda e: e["path"])}
    lun = store.lun(vm.lun_id) if vm.lun_id else None
    if lun is not None:
        data[f"lun_{when}"] = {"id": lun.id, "name": lun.name, "total": lun.total_bytes,
                               "free": lun.free_bytes}
    return data


class ActionRecorder(Protocol):
    def write_action(self, data: dict[str, Any]) -> None: ...


class PlanEstimator(Protocol):
    def refine(self, plan: Plan) -> Plan: ...


#: The plan param a queued item carries: the maintenance window it ran from.
#: Planners never see it; it lands in the plan's params and facts (and so in
#: the action log row).
QUEUE_PARAM = "queue_window"
_DEFAULT: Any = object()


def _now() -> datetime:
    return datetime.now(UTC)


class ActionRunner:
    def __init__(
        self,
        store: Store,
        backend: Backend,
        log: ActionLog | None,
        *,
        log_error: str = "",
        recorder: ActionRecorder | None = None,
        clock: Callable[[], datetime] = _now,
        mode: str | None = None,
        flags: str = "",
        estimator: PlanEstimator | None = _DEFAULT,
    ) -> None:
        self.store = store
        self.backend = backend
        self.log = log
        self.log_error = log_error
        self.recorder = recorder
        self.clock = clock
        self.mode = mode or ("read-only" if backend.read_only else "read-write")
        self.flags = flags  # e.g. "TLS NOT VERIFIED": kept in every row's plan
        #: Brings the store up to date with the backend's last events before the
        #: outcome row reads the disks and LUN "after" (the app applies its event
        #: buffer); bounded by SETTLE_S. None: read the store as it is.
        self.settle: Callable[[], Awaitable[None]] | None = None
        # Merge estimates learned from this cluster's past merges in the log.
        if estimator is _DEFAULT:
            estimator = LearnedEstimator(log, backend.target) if log is not None else None
        self.estimator = estimator

    @property
    def read_only(self) -> bool:
        return self.backend.read_only

    async def read_leases(self) -> None:
        """On a team's log: what other consoles hold, read now in a worker, for the next
        ``plan`` (which only reads the latest reading: state/team.py). Nothing on SQLite,
        where ``plan`` reads the file itself. Waited for at most ``LEASES_WAIT_S``: a
        database that holds the query leaves the plan with the last reading (its age is
        said there) and the intent row's lease check decides."""
        if self.log is not None and self.log.shared:
            reading = asyncio.ensure_future(asyncio.to_thread(self.log.leases))
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())
            with contextlib.suppress(ActionLogError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(reading), LEASES_WAIT_S)

    def plan(self, action: str, vm_id: str, **params: Any) -> Plan:
        spec = actionspecs.get(action)  # UnknownAction (a ValueError) if there is none
        queue = params.pop(QUEUE_PARAM, None)
        plan = spec.planner(self.store, vm_id, self.clock(), **params)
        if self.estimator is not None:
            plan = self.estimator.refine(plan)
        # Team mode: what other consoles hold (the VM, LUN space) blocks before the name.
        plan = shared_preflight(plan, self.store, self.log)
        if queue is not None:
            params[QUEUE_PARAM] = queue
            plan = dataclasses.replace(plan, facts={**plan.facts, QUEUE_PARAM: queue})
        if params and plan.params != params:
            plan = dataclasses.replace(plan, params=dict(params))
        return plan

    # -- rows that end where they start ------------------------------------
    def _one_shot_row(self, plan: Plan, outcome: str, error: str, *,
                      override: bool = False) -> dict[str, Any] | None:
        """Recorded, and the row read from the store (on the loop, which owns the store);
        None without a log."""
        self._record({"action": plan.action, "target": plan.target, "outcome": outcome})
        if self.log is None:
            return None
        return {
            "action": plan.action,
            "target_system": self.backend.target,
            "mode": self.mode,
            "target_object": plan.target,
            "target_name": plan.target_name,
            "plan": {**plan.to_log(), "session_flags": self.flags,
                     **where_now(self.store, plan.target.partition(":")[2], "before")},
            "findings": findings_to_log(plan.findings),
            "override": override,
            "confirmed": False,
            "outcome": outcome,
            "error": error,
        }

    def _write_one_shot(self, row: dict[str, Any] | None) -> None:
        """Write the row (blocking: ``_one_shot`` runs it in a worker)."""
        if row is None or self.log is None:
            return
        try:
            self.log.record(**row)
        except ActionLogError as exc:
            raise ActionRefused(f"The action log cannot be written: {exc}") from exc

    async def _one_shot(self, plan: Plan, outcome: str, error: str, *,
                        override: bool = False) -> None:
        """The row read on the loop, written in a worker (see ``_begin``); ActionRefused
        when the log cannot be written."""
        row = self._one_shot_row(plan, outcome, error, override=override)
        await asyncio.to_thread(self._write_one_shot, row)

    async def cancelled(self, plan: Plan, reason: str = "cancelled by the operator") -> None:
        """Log a plan closed without confirming."""
        await self._one_shot(plan, "cancelled", reason)

    async def refused(self, plan: Plan, reason: str) -> None:
        """Log a confirmation refused on screen (e.g. a name mismatch); nothing was sent."""
        await self._one_shot(plan, "refused", reason)

    async def _refuse(self, plan: Plan, reason: str, *, override: bool = False
                      ) -> ActionRefused:
        """The refused row written; the error to raise."""
        try:
            await self._one_shot(plan, "refused", reason, override=override)
        except ActionRefused as exc:
            return ActionRefused(f"{reason} ({exc})")
        return ActionRefused(reason)

    def _record(self, data: dict[str, Any]) -> None:
        if self.recorder is not None:
            self.recorder.write_action(data)

    # -- the guarded path ---------------------------------------------------
    async def execute(
        self,
        plan: Plan,
        typed: str,
        *,
        override: bool = False,
        overridden: frozenset[str] | None = None,
        confirmed_twice: bool = False,
    ) -> ActionResult:
        """Run a confirmed plan.

        ``override`` covers exactly the blocking codes the operator saw
        (``overridden``, default: the plan's own blocking codes). A blocking
        finding that appeared since the plan was shown refuses the action, as
        does a target that vanished or was renamed.
        """
        if self.backend.read_only:
            err = await self._refuse(plan, f"{self.backend.target} is read-only; nothing was sent")
            raise ReadOnlyError(str(err))
        if self.log is None:
            raise ActionRefused(
                "The action log cannot be written, so destructive actions are refused: "
                + (self.log_error or "no log open")
            )
        if not plan.confirmed_by(typed):  # as shown (or vCenter's escaped form)
            raise await self._refuse(plan, "the typed name does not match the target; nothing "
                                           "was sent")

        kind, _, obj_id = plan.target.partition(":")
        if kind != Kind.VM.value:
            raise await self._refuse(plan, f"unsupported target {plan.target!r}")
        backend = self.backend
        if isinstance(backend, PerTargetModes) and backend.read_only_for(obj_id):  # several
            err = await self._refuse(plan, f"the target of {plan.target_name} is read-only; "
                                     "nothing was sent")
            raise ReadOnlyError(str(err))
        # Re-check against the live state: the plan on screen may be old. A team's leases
        # are read afresh first, in a worker (the intent row's lease check decides anyway).
        await self.read_leases()
        try:
            fresh = self.plan(plan.action, obj_id, **plan.params)
        except KeyError:
            raise await self._refuse(
                plan, "the target is no longer in the inventory; nothing was sent"
            ) from None
        if not fresh.confirmed_by(typed):
            raise await self._refuse(fresh, "the target was renamed since the plan was shown; "
                                      "review it again")
        seen = overridden if overridden is not None else frozenset(f.code for f in plan.blocking)
        blocking = {f.code for f in fresh.blocking}
        if blocking and not override:
            why = "; ".join(f"{f.code}: {f.message}" for f in fresh.blocking)
            raise await self._refuse(fresh, f"blocked by pre-flight: {', '.join(sorted(blocking))} "
                                      f"({why})")
        if blocking - seen:
            raise await self._refuse(
                fresh,
                "new blocking findings since the plan was shown: "
                f"{', '.join(sorted(blocking - seen))}; review the plan again",
                override=override,
            )
        changed = _what_changed(plan, fresh)
        if changed:
            raise await self._refuse(fresh, f"{changed} since the plan was shown; review it again",
                               override=override)
        if fresh.double_confirm and not confirmed_twice:
            raise await self._refuse(fresh, f"{fresh.action} needs a second explicit confirmation "
                                      "after the typed name; nothing was sent", override=override)

        try:
            executor = self.backend.executor()
        except ReadOnlyError as exc:
            raise await self._refuse(fresh, str(exc)) from exc

        task_id = f"{plan.action}-{uuid.uuid4().hex[:12]}"
        try:
            row = await self._begin(
                action=fresh.action,
                target_system=self.backend.target,
                mode=self.mode,
                target_object=fresh.target,
                target_name=fresh.target_name,
                plan={
                    **fresh.to_log(),
                    "overridden": sorted(blocking) if override else [],
                    "session_flags": self.flags,
                    **where_now(self.store, obj_id, "before"),
                    # Source seconds per wall second: learned estimates undo it.
                    "clock_rate": self.backend.clock_rate,
                    **({"second_confirmation": True} if fresh.double_confirm else {}),
                },
                findings=findings_to_log(fresh.findings),
                override=bool(override and blocking),
                confirmed=True,
                task_id=task_id,
                # team mode: the VM's lease and the LUN space, with the intent (state/team.py)
                claim=claim_for(self.store, fresh, self.backend, self.log.lease_ttl),
            )
        except ActionBusy as exc:  # another console holds the VM or the LUN's space
            raise await self._refuse(fresh, str(exc), override=override) from exc
        except ActionLogError as exc:
            raise ActionRefused(
                f"The action log cannot be written, so the action was refused: {exc}"
            ) from exc
        self._record(
            {"action": fresh.action, "target": fresh.target, "phase": "start", "task": task_id}
        )

        try:
            result = await actionspecs.get(fresh.action).execute(executor, obj_id, task_id, fresh)
        except ReadOnlyError as exc:
            result = ActionResult(TaskState.FAILED, error=f"refused: {exc}")
        except asyncio.CancelledError:
            # The console is closing with the action in flight: say so in the row.
            self._finish_quietly(row, "the console closed while the action was running")
            raise
        except Exception as exc:  # the request may have reached the cluster
            result = ActionResult(
                TaskState.UNKNOWN,
                error=clean(f"{type(exc).__name__}: {exc}")
                + " — outcome unknown, verify on the host",
                final_state=FinalState.PENDING,
            )

        closing = False
        if self.settle is not None:
            try:
                await asyncio.wait_for(self.settle(), SETTLE_S)
            except asyncio.CancelledError:
                closing = True  # log the outcome first, then let the console close
            except Exception:  # a stale "after" is better than a lost outcome
                pass
        if not result.state.finished:  # a backend must not report "still running" here
            result = dataclasses.replace(result, state=TaskState.UNKNOWN,
                                         error=result.error or "the backend gave no outcome")
        outcome = result.state.value
        try:
            closing = await self._finish(
                row,
                outcome=outcome,
                error=result.error,
                size_before=result.size_before,
                size_after=result.size_after,
                final_state=result.final_state.value if result.final_state else None,
                detail={**({"detail": result.detail} if result.detail else {}),
                        **where_now(self.store, obj_id, "after")},
            ) or closing
        except ActionLogError as exc:
            # The intent row stays; it reads "interrupted — verify" later.
            result = ActionResult(
                result.state,
                error=(result.error + f" (could not log the outcome: {exc})").strip(),
                size_before=result.size_before,
                size_after=result.size_after,
                final_state=result.final_state,
                detail=result.detail,
            )
        self._record(
            {
                "action": fresh.action,
                "target": fresh.target,
                "phase": "end",
                "task": task_id,
                "outcome": outcome,
                "error": result.error,
            }
        )
        if closing:
            raise asyncio.CancelledError
        return result

    # -- the log's commits in a worker, never on the UI loop ---------------------
    # A team's database is a round trip (or a connect timeout); a local SQLite file is
    # an fsync (synchronous=FULL) and, when another process holds its write lock, up to
    # the busy timeout (10 s): neither may hold a key or a frame.
    async def _begin(self, **intent: Any) -> int:
        """``log.begin``: committed when this returns (nothing is sent before), in a
        worker; cancelled meanwhile, a row it still commits is closed as cancelled
        (nothing was sent) and its lease dropped."""
        assert self.log is not None
        log = self.log
        begin = asyncio.ensure_future(asyncio.to_thread(log.begin, **intent))
        try:
            return await asyncio.shield(begin)
        except asyncio.CancelledError:
            def abandon(done: asyncio.Future[int]) -> None:
                if done.cancelled() or done.exception() is not None:
                    return
                threading.Thread(target=self._close_unsent, args=(log, done.result()),
                                 daemon=True, name="ventana-unsent").start()

            begin.add_done_callback(abandon)
            raise

    @staticmethod
    def _close_unsent(log: ActionLog, row: int) -> None:
        with contextlib.suppress(ActionLogError):
            log.finish(row, outcome="cancelled",
                       error="the console closed before anything was sent")

    async def _finish(self, row: int, **outcome: Any) -> bool:
        """``log.finish``, in a worker; True when the console began closing meanwhile
        (the worker writes the outcome all the same)."""
        assert self.log is not None
        finish = asyncio.ensure_future(asyncio.to_thread(self.log.finish, row, **outcome))
        try:
            await asyncio.shield(finish)
        except asyncio.CancelledError:
            finish.add_done_callback(lambda done: done.cancelled() or done.exception())
            return True
        return False

    def _finish_quietly(self, row: int, why: str) -> None:
        if self.log is None:
            return
        # If even this fails, the intent row stays and reads "interrupted — verify".
        with contextlib.suppress(ActionLogError):
            self.log.finish(row, outcome="unknown", error=f"{why} — verify on the host",
                            final_state=FinalState.PENDING.value)

    async def cancel(self, task_id: str) -> bool:
        if self.backend.read_only:
            return False
        return await self.backend.executor().cancel(task_id)

