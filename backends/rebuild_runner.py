"""Runs a confirmed rebuild, step by step, through the guarded path.

"rebuild" is a registered action: the operator's plan (state/rebuild.py's
``plan_rebuild``) goes through the same plan → pre-flight → typed
confirmation → intent row → executor → outcome row as a merge. The executor
part is ``execute_rebuild``: it creates (or, when resuming, takes over) the
workflow in the action-log file, then runs the steps not yet done. Each step
writes its own action-log row (``rebuild.<step>``: intent before anything is
sent, outcome after; the capture lands in its row's detail as JSON) and its
state, progress and times in the rebuild tables. A pause request takes
effect between steps. A failure stops the rebuild with the step's known
state and what to do by hand; resuming plans again and needs a new typed
confirmation.

Every read and write of the log's database here runs in a worker thread (``_db``):
a team's PostgreSQL round trip — or its connect timeout when it does not answer —
never holds the UI loop. Each is awaited before the next step, so the order stays
the one above (the intent row is committed before anything is sent). Only the
write made when the console closes mid-step (``_fail_quietly``) stays on the loop:
the loop may be gone before a thread's write would land.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.model import FinalState, Kind, TaskState
from ventana.state.plans import Plan
from ventana.state.rebuild import (
    STEP_NAMES,
    STEP_TITLES,
    Rebuild,
    RebuildState,
    RebuildStore,
    StepState,
    manual_steps,
    step_commands,
)
from ventana.state.sanitize import clean

from .base import ActionResult, Executor, ReadOnlyError, StepResult

T = TypeVar("T")


async def _db(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """One call to the log's database, in a worker thread (see the module's docstring)."""
    return await asyncio.to_thread(call, *args, **kwargs)


def _iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class RebuildRun:
    """One run of a rebuild's remaining steps, in one console."""

    def __init__(self, executor: Executor, log: ActionLog, rs: RebuildStore, wf: Rebuild,
                 plan: Plan, task_id: str) -> None:
        self.ex = executor
        self.log = log
        self.rs = rs
        self.id = wf.id
        self.plan = plan
        self.task_id = task_id
        self.target_system = executor.target
        self.flags: list[str] = []
        self.size_after: int | None = None

    async def _wf(self) -> Rebuild:
        wf = await _db(self.rs.get, self.id)
        assert wf is not None
        return wf

    async def run(self) -> ActionResult:
        await _db(self.rs.claim, self.id)
        wf = await self._wf()
        for step in wf.steps:  # a step left "running" by a console that is gone
            if step.state is StepState.RUNNING:
                await _db(self.rs.step_update, self.id, step.name, state=StepState.FAILED,
                          ended=_iso(), error="interrupted: the console stopped during this "
                          "step — verify on the host", manual=manual_steps(step.name, wf))
        ran = 0
        for name in STEP_NAMES:
            wf = await self._wf()
            step = wf.step(name)
            if step.state in (StepState.DONE, StepState.SKIPPED):
                continue
            if ran and wf.pause_requested:
                await _db(self.rs.set_state, self.id, RebuildState.PAUSED,
                          pause_requested=False)
                left = len(STEP_NAMES) - wf.done_count
                return ActionResult(
                    TaskState.OK, final_state=FinalState.PENDING,
                    detail=f"paused before '{STEP_TITLES[name]}'; {left} step(s) left — "
                    "resume with b")
            if name == "services" and not (wf.capture or {}).get("guest_reachable"):
                await _db(self.rs.step_update, self.id, name, state=StepState.SKIPPED,
                          ended=_iso(), message="skipped: the guest was not reachable at "
                          "capture time, so there is nothing to compare with")
                self.flags.append("guest services not compared (not captured)")
                continue
            failure = await self._step(wf, name)
            ran += 1
            if failure is not None:
                return failure
        return await self._complete()

    # -- one step ------------------------------------------------------------------
    async def _step(self, wf: Rebuild, name: str) -> ActionResult | None:
        commands = self.plan.facts.get("step_commands") or {}
        if wf.capture is not None and name != "capture":
            commands = step_commands(
                {"name": wf.vm_name, "node": wf.node, "vm_id": wf.vm_id,
                 "old_name": wf.old_vm_name}, wf.capture, wf.to_last_parent)
        task_id = f"{self.task_id}-{name}"
        row = await _db(
            self.log.begin, action=f"rebuild.{name}", target_system=self.target_system,
            mode="read-write",
            target_object=f"{Kind.VM.value}:{wf.vm_id}", target_name=wf.vm_name,
            plan={"workflow": self.id, "step": name, "title": STEP_TITLES[name],
                  "command": commands.get(name, ""), "to_last_parent": wf.to_last_parent,
                  "new_vm_id": wf.new_vm_id},
            findings=[], override=False, confirmed=True, task_id=task_id,
        )
        await _db(self.rs.step_update, self.id, name, state=StepState.RUNNING, started=_iso(),
                  ended=None, pct=0.0, error="", manual="", log_row=row, task_id=task_id,
                  message=STEP_TITLES[name])
        try:
            result = await self._call(wf, name, task_id)
        except ReadOnlyError as exc:
            result = StepResult(TaskState.FAILED, error=f"refused: {exc}")
        except asyncio.CancelledError:
            why = "the console closed while this step was running — verify on the host"
            self._fail_quietly(wf, name, row, why)
            raise
        except Exception as exc:  # the request may have reached the host
            result = StepResult(TaskState.UNKNOWN, error=clean(f"{type(exc).__name__}: {exc}")
                                + " — outcome unknown, verify on the host")
        return await self._after(name, row, result)

    async def _call(self, wf: Rebuild, name: str, task_id: str) -> StepResult:
        ex = self.ex
        if name == "capture":
            return await ex.capture(wf.vm_id, task_id)
        if name == "merge":
            # How to stop it is the operator's choice on this run's plan (never stored: a
            # resumed rebuild asks again, and defaults to a guest shutdown).
            return await ex.rebuild_merge(wf.vm_id, task_id, to_last_parent=wf.to_last_parent,
                                          turn_off=bool(self.plan.params.get("turn_off")))
        capture = wf.capture or {}
        if name == "create":
            return await ex.create_from_capture(capture, task_id)
        if name == "verify_boot":
            return await ex.verify_boot(wf.new_vm_id, capture, task_id)
        if name == "services":
            return await ex.guest_services(wf.new_vm_id, task_id)
        if name == "keep_old":
            return await ex.retire_old(wf.vm_id, wf.old_vm_name, task_id)
        raise ValueError(f"unknown rebuild step {name!r}")

    async def _after(self, name: str, row: int, result: StepResult) -> ActionResult | None:
        wf = await self._wf()
        detail: dict[str, Any] = {"workflow": self.id, "step": name}
        outcome = "ok"
        message = result.detail or "done"
        error = result.error
        if result.state is TaskState.OK:
            if name == "capture":
                detail["capture"] = result.data
                gen2 = int(result.data.get("generation", 0)) == 2
                if gen2 and not (result.data.get("firmware") or {}).get("boot_order"):
                    result = StepResult(TaskState.FAILED, error="the capture holds no boot order "
                                        "for this Gen2 VM; the new VM would not find its boot "
                                        "device")
                    error = result.error
                else:
                    await _db(self.rs.update, self.id, capture=result.data)
            elif name == "create":
                await _db(self.rs.update, self.id, new_vm_id=str(result.data.get("vm_id", "")))
                detail.update(result.data)
                self.size_after = result.data.get("size_bytes")
            elif name == "services":
                before = set((wf.capture or {}).get("services") or [])
                after = set(result.data.get("services") or [])
                missing = sorted(before - after)
                detail.update(services=sorted(after), missing=missing)
                if missing:
                    outcome = "warning"
                    message = (f"missing after the rebuild: {', '.join(missing)} — reinstall or "
                               "re-register them in the guest (an agent tied to the old VM's "
                               "hardware id does not start on the new one)")
                    error = message
                    self.flags.append(f"missing services: {', '.join(missing)}")
            else:
                detail.update({k: v for k, v in result.data.items() if v is not None})
        if result.state is not TaskState.OK:
            return await self._failed(name, row, result, detail)
        await _db(self.rs.step_update, self.id, name, state=StepState.DONE, pct=100.0,
                  ended=_iso(), message=message, error=error if outcome == "warning" else "")
        await _db(self.log.finish, row, outcome=outcome,
                  error=error if outcome == "warning" else "", detail=detail)
        return None

    async def _failed(self, name: str, row: int, result: StepResult,
                      detail: dict[str, Any]) -> ActionResult:
        unknown = result.state is TaskState.UNKNOWN
        manual = manual_steps(name, await self._wf(), result.error)
        error = clean(result.error) or "the step failed"
        await _db(self.rs.step_update, self.id, name, state=StepState.FAILED, ended=_iso(),
                  error=error, manual=manual)
        await _db(self.rs.set_state, self.id, RebuildState.FAILED)
        final = FinalState.PENDING if name in ("services", "keep_old") else (
            FinalState.PARTIAL if name == "merge" else FinalState.FAILED)
        if name == "capture":
            final = FinalState.PENDING
        with_manual = f"{STEP_TITLES[name]} failed: {error} What to do: {manual}"
        # If this fails, the intent row stays and reads "interrupted — verify".
        with contextlib.suppress(ActionLogError):
            await _db(self.log.finish, row, outcome="unknown" if unknown else "failed",
                      error=with_manual, final_state=final, detail=detail)
        return ActionResult(TaskState.UNKNOWN if unknown else TaskState.FAILED,
                            error=with_manual, final_state=final)

    def _fail_quietly(self, wf: Rebuild, name: str, row: int, why: str) -> None:
        with contextlib.suppress(ActionLogError):
            self.rs.step_update(self.id, name, state=StepState.FAILED, ended=_iso(), error=why,
                                manual=manual_steps(name, wf))
            self.rs.set_state(self.id, RebuildState.FAILED)
            self.log.finish(row, outcome="unknown", error=why,
                            final_state=FinalState.PENDING.value)

    async def _complete(self) -> ActionResult:
        wf = await self._wf()
        if wf.to_last_parent:
            self.flags.append("replication is not set up for the new VM: re-establish it "
                              "(Enable-VMReplication, then the initial copy)")
        summary = (f"rebuilt as a new VM ({wf.new_vm_id}); the old VM is kept, off, as "
                   f"{wf.old_vm_name} until you remove it")
        await _db(self.rs.set_state, self.id, RebuildState.DONE,
                  result={"flags": self.flags, "new_vm_id": wf.new_vm_id})
        sizes = {"size_before": self.plan.size_before, "size_after": self.size_after}
        if self.flags:
            return ActionResult(TaskState.WARNING, error="; ".join(self.flags),
                                final_state=FinalState.PENDING, detail=summary, **sizes)
        return ActionResult(TaskState.OK, final_state=FinalState.OPERATIONAL, detail=summary,
                            **sizes)


async def execute_rebuild(executor: Executor, vm_id: str, task_id: str, plan: Plan
                          ) -> ActionResult:
    """The registered executor call for "rebuild": start or resume, run, report."""
    executor.guard_vm("rebuild", vm_id)  # read-only: no workflow, no step row, nothing sent
    db = str(plan.params.get("db") or "")
    if not db:
        return ActionResult(TaskState.FAILED, error="no action log to keep the rebuild's "
                            "state in; nothing was sent")
    try:
        log = await _db(ActionLog.open, db)
    except ActionLogError as exc:  # e.g. locked past the busy timeout: nothing went out
        return ActionResult(TaskState.FAILED, error=f"the rebuild's state cannot be kept: "
                            f"{exc}; nothing was sent")
    try:
        rs = await _db(RebuildStore.open, db)
    except ActionLogError as exc:
        log.close()
        return ActionResult(TaskState.FAILED, error=f"the rebuild's state cannot be kept: "
                            f"{exc}; nothing was sent")
    try:
        workflow = plan.params.get("workflow")
        wf = await _db(rs.get, str(workflow)) if workflow else None
        if wf is None:
            wf = await _db(
                rs.create, rebuild_id=f"rb-{uuid.uuid4().hex[:10]}", vm_id=vm_id,
                vm_name=plan.target_name,
                target_system=executor.target,
                node=str(plan.facts.get("node") or ""),
                to_last_parent=bool(plan.facts.get("to_last_parent")),
                old_vm_name=str(plan.facts.get("old_name") or f"{plan.target_name}-old"),
            )
        run = RebuildRun(executor, log, rs, wf, plan, task_id)
        try:
            return await run.run()
        except ActionLogError as exc:  # a step's intent row could not be written
            with contextlib.suppress(ActionLogError):
                await _db(rs.set_state, wf.id, RebuildState.FAILED)
            return ActionResult(TaskState.FAILED, error="the action log cannot be written, so "
                                f"the next step was not started: {exc}",
                                final_state=FinalState.PENDING)
        except Exception:
            with contextlib.suppress(ActionLogError):
                await _db(rs.set_state, wf.id, RebuildState.FAILED)
            raise
    finally:  # no round trip: closing drops the connections
        rs.close()
        log.close()

