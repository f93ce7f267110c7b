"""The vSphere actions on the guarded path (plan → pre-flight → typed confirm → log).

Registered by ``backends/registry.register_all`` (``register()`` here):

- ``remove-snapshot`` — params ``snapshot`` (id) and ``children`` (bool);
- ``remove-all-snapshots`` — then consolidate if still needed;
- ``consolidate`` — when vSphere reports ``consolidationNeeded``;
- ``create-snapshot`` — params ``name``, ``quiesce``, ``memory``; guest
  freeze/thaw hooks from the config run around it.

The planners live in ``ventana.state.plans_vsphere``. Each execute function
calls the executor's ``capabilities.SnapshotActions``: an executor without
them (another platform) refuses before anything is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ventana.state.model import TaskState
from ventana.state.plans import PLANNERS, Plan
from ventana.state.plans_vsphere import (
    CONSOLIDATE,
    CREATE_SNAPSHOT,
    REMOVE_ALL,
    REMOVE_SNAPSHOT,
    plan_consolidate,
    plan_create_snapshot,
    plan_remove_all,
    plan_remove_snapshot,
)

from ..actions import EXECUTE, ExecuteFn, register_action
from ..base import ActionResult, Executor
from ..capabilities import SnapshotActions

SnapshotCall = Callable[[SnapshotActions, str, str, Plan], Awaitable[ActionResult]]


def _snapshot_action(call: SnapshotCall) -> ExecuteFn:
    async def run(ex: Executor, vm_id: str, task_id: str, plan: Plan) -> ActionResult:
        ex.guard_vm(plan.action, vm_id)  # read-only refuses first, whatever the platform
        if not isinstance(ex, SnapshotActions):
            return ActionResult(
                TaskState.FAILED,
                error=f"{plan.action} is not available on this target; nothing was sent",
            )
        return await call(ex, vm_id, task_id, plan)

    return run


_ACTIONS = {
    REMOVE_SNAPSHOT: (
        plan_remove_snapshot,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.remove_snapshot_of(
            vm_id, str(plan.params["snapshot"]), task_id, bool(plan.params.get("children"))
        )),
    ),
    REMOVE_ALL: (
        plan_remove_all,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.remove_all_snapshots(vm_id, task_id)),
    ),
    CONSOLIDATE: (
        plan_consolidate,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.consolidate(vm_id, task_id)),
    ),
    CREATE_SNAPSHOT: (
        plan_create_snapshot,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.create_snapshot(
            vm_id, task_id, str(plan.params["name"]), bool(plan.params.get("quiesce")),
            bool(plan.params.get("memory")), str(plan.facts.get("pre_freeze") or ""),
            str(plan.facts.get("post_thaw") or ""),
        )),
    ),
}


def register() -> None:
    """Idempotent: registering twice (a re-import) is a no-op."""
    for action, (planner, execute) in _ACTIONS.items():
        if PLANNERS.get(action) is planner and action in EXECUTE:
            continue
        register_action(action, planner, execute)

