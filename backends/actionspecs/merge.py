"""The checkpoint merge (Hyper-V): ``m`` on a Hyper-V VM.

The same key on a vSphere VM removes all its snapshots (``vsphere_snapshots``
registers that spec under this module's ``MERGE`` command).
"""

from __future__ import annotations

from ventana.state.plans import Plan, plan_merge

from ..base import ActionResult, Executor
from . import HYPERV, ActionSpec, Command

MERGE = Command(
    "merge", "m", "Merge checkpoints / remove all snapshots", "Plan and run a merge of the "
    "selected VM's checkpoints (Hyper-V) or the removal of all its snapshots (vSphere) "
    "(plan → pre-flight → typed confirmation → log)", "Merge")


async def execute_merge(ex: Executor, vm_id: str, task_id: str, plan: Plan) -> ActionResult:
    return await ex.merge(vm_id, task_id)


SPECS = (ActionSpec("merge", plan_merge, execute_merge, HYPERV, (MERGE,),
                    heading="Merge checkpoints of "),)
