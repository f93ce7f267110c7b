"""The vSphere snapshot actions (planners in ``state/plans_vsphere.py``).

- ``remove-snapshot`` (``x``; ``X`` with its children) — params ``snapshot``
  (id) and ``children`` (bool);
- ``remove-all-snapshots`` — what ``m`` (merge) is on a vSphere VM; then
  consolidate if still needed;
- ``consolidate`` (``c``) — when vSphere reports ``consolidationNeeded``;
- ``create-snapshot`` (``n``) — params ``name``, ``quiesce``, ``memory``;
  guest freeze/thaw hooks from the config run around it.

Removing all snapshots and consolidating first ask vCenter for its storage
estimate (``opens="estimate"``). Each execute function calls the executor's
``capabilities.SnapshotActions``: an executor without them (another platform) refuses
before anything is sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ventana.state.model import TaskState
from ventana.state.plans import Plan
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

from ..base import ActionResult, Executor
from ..capabilities import SnapshotActions
from . import VSPHERE, ActionSpec, Command, ExecuteFn
from .merge import MERGE

REMOVE_SNAPSHOT_CMD = Command(
    "remove_snapshot", "x", "Remove snapshot", "vSphere: plan and run the removal of the "
    "snapshot selected in the Checkpoints pane", "Rm snap", show=False,
    params={"children": False}, selects_snapshot=True)
REMOVE_TREE_CMD = Command(
    "remove_snapshot_tree", "X", "Remove snapshot and children", "vSphere: plan and run the "
    "removal of the selected snapshot with all its children", show=False,
    params={"children": True}, selects_snapshot=True)
CONSOLIDATE_CMD = Command(
    "consolidate", "c", "Consolidate disks", "vSphere: plan and run disk consolidation of the "
    "selected VM (when vSphere says it is needed)", "Consolidate", show=False)
CREATE_SNAPSHOT_CMD = Command(
    "create_snapshot", "n", "Create snapshot", "vSphere: plan and take a snapshot of the "
    "selected VM, with the guest's freeze/thaw hooks when configured", "Snap", show=False)


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


SPECS = (
    ActionSpec(
        REMOVE_SNAPSHOT, plan_remove_snapshot,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.remove_snapshot_of(
            vm_id, str(plan.params["snapshot"]), task_id, bool(plan.params.get("children"))
        )),
        VSPHERE, (REMOVE_SNAPSHOT_CMD, REMOVE_TREE_CMD), heading="Remove a snapshot of ",
    ),
    ActionSpec(
        REMOVE_ALL, plan_remove_all,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.remove_all_snapshots(vm_id,
                                                                                  task_id)),
        VSPHERE, (MERGE,), heading="Remove all snapshots of ", opens="estimate",
    ),
    ActionSpec(
        CONSOLIDATE, plan_consolidate,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.consolidate(vm_id, task_id)),
        VSPHERE, (CONSOLIDATE_CMD,), heading="Consolidate the disks of ", opens="estimate",
    ),
    ActionSpec(
        CREATE_SNAPSHOT, plan_create_snapshot,
        _snapshot_action(lambda ex, vm_id, task_id, plan: ex.create_snapshot(
            vm_id, task_id, str(plan.params["name"]), bool(plan.params.get("quiesce")),
            bool(plan.params.get("memory")), str(plan.facts.get("pre_freeze") or ""),
            str(plan.facts.get("post_thaw") or ""),
        )),
        VSPHERE, (CREATE_SNAPSHOT_CMD,), heading="Create a snapshot of ",
    ),
)
