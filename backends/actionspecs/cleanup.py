"""Offline clean-up (Hyper-V): compact a VM's dynamic VHDX files, delete an obsolete VM.

Palette-only commands (no key). Planners in ``state/cleanup_plans.py``.
"""

from __future__ import annotations

from ventana.state.cleanup_plans import plan_compact, plan_delete
from ventana.state.plans import Plan

from ..base import ActionResult, Executor
from . import HYPERV, ActionSpec, Command

COMPACT = Command(
    "compact", "", "Compact VHDX (offline)", "Plan and run Optimize-VHD -Mode Full on the "
    "selected VM's dynamic disks (VM off, no checkpoints)", show=False,
    noun="Compacting a VHDX")
DELETE = Command(
    "delete_vm", "", "Delete obsolete VM", "Plan and run the removal of the selected VM and "
    "its disk files (VM off, not replicating; typed name and a second confirmation)",
    show=False, noun="Deleting a VM")


async def execute_compact(ex: Executor, vm_id: str, task_id: str, plan: Plan) -> ActionResult:
    return await ex.compact_vhdx(vm_id, task_id, tuple(d["path"] for d in plan.facts["disks"]))


async def execute_delete(ex: Executor, vm_id: str, task_id: str, plan: Plan) -> ActionResult:
    return await ex.delete_vm(vm_id, task_id, tuple(f["path"] for f in plan.facts["files"]))


SPECS = (
    ActionSpec("compact", plan_compact, execute_compact, HYPERV, (COMPACT,),
               heading="Compact the disks of "),
    ActionSpec("delete", plan_delete, execute_delete, HYPERV, (DELETE,),
               heading="Delete the VM "),
)
