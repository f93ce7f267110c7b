"""The configuration-version upgrade (Hyper-V, irreversible): ``u``."""

from __future__ import annotations

from ventana.state.plans import Plan, plan_upgrade

from ..base import ActionResult, Executor
from . import HYPERV, ActionSpec, Command

UPGRADE = Command(
    "upgrade", "u", "Upgrade configuration version", "Plan and run the irreversible "
    "configuration-version upgrade of the selected VM (it must be off)", "Upgrade",
    noun="A configuration-version upgrade")


async def execute_upgrade(ex: Executor, vm_id: str, task_id: str, plan: Plan) -> ActionResult:
    return await ex.upgrade_version(vm_id, task_id, str(plan.facts["target_version"]))


SPECS = (ActionSpec("upgrade", plan_upgrade, execute_upgrade, HYPERV, (UPGRADE,),
                    heading="Upgrade the configuration version of "),)
