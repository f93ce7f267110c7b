"""The simulated cluster's mutating handle.

Owns the guarded entry points: every call checks the backend's read-only
mode first (before anything reaches the simulated host), then hands the work
to the backend, whose event stream carries the task's progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import ActionResult, Executor, StepResult
from .cleanup import run_compact, run_delete

if TYPE_CHECKING:
    from .backend import SimBackend


class SimExecutor(Executor):
    def __init__(self, backend: SimBackend) -> None:
        super().__init__(backend)
        self._sim = backend

    async def merge(self, vm_id: str, task_id: str) -> ActionResult:
        """Merge every checkpoint of a VM into its base disks (Remove-VMSnapshot).

        The task (``task_id``, kind ``merge``) and its progress appear on the
        backend's event stream, which must be consumed while this runs. The
        result is OK (operational), WARNING (merged, but the VM replicates and
        its replica broke: degraded), FAILED (nothing merged, or the merge
        stopped part-way: partially consolidated, with the rest of the chain
        intact) or UNKNOWN (the connection dropped or the session closed while
        the merge ran; it may still be running on the host).
        """
        self._guard("merge")
        return await self._sim.run_merge(vm_id, task_id)

    async def upgrade_version(self, vm_id: str, task_id: str, version: str) -> ActionResult:
        """Update-VMVersion: refused unless the VM is off; takes a few seconds."""
        self._guard("upgrade")
        return await self._sim.run_upgrade(vm_id, task_id, version)

    # -- rebuild steps (sim/rebuild.py) ----------------------------------------------
    async def capture(self, vm_id: str, task_id: str) -> StepResult:
        self._guard("rebuild")
        return await self._sim.rebuild.capture(vm_id, task_id)

    async def rebuild_merge(self, vm_id: str, task_id: str, *, to_last_parent: bool,
                            turn_off: bool = False) -> StepResult:
        self._guard("rebuild")
        return await self._sim.rebuild.merge(vm_id, task_id, to_last_parent, turn_off)

    async def create_from_capture(self, capture: dict[str, Any], task_id: str) -> StepResult:
        self._guard("rebuild")
        return await self._sim.rebuild.create(capture, task_id)

    async def verify_boot(self, vm_id: str, capture: dict[str, Any], task_id: str
                          ) -> StepResult:
        self._guard("rebuild")
        return await self._sim.rebuild.verify_boot(vm_id, capture, task_id)

    async def guest_services(self, vm_id: str, task_id: str) -> StepResult:
        self._guard("rebuild")
        return await self._sim.rebuild.services(vm_id, task_id)

    async def retire_old(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        self._guard("rebuild")
        return await self._sim.rebuild.retire(vm_id, new_name, task_id)

    async def compact_vhdx(self, vm_id: str, task_id: str, paths: tuple[str, ...]
                           ) -> ActionResult:
        """Optimize-VHD -Mode Full: refused unless the VM is off and has no checkpoints."""
        self._guard("compact")
        return await run_compact(self._sim.context, vm_id, task_id, paths)

    async def delete_vm(self, vm_id: str, task_id: str, paths: tuple[str, ...]) -> ActionResult:
        """Remove-VM and its files: refused while the VM is not off or replicates."""
        self._guard("delete")
        return await run_delete(self._sim.context, vm_id, task_id, paths)

    async def cancel(self, task_id: str) -> bool:
        """Always False for a merge: Hyper-V cannot cancel a merge in progress.

        Like the real host, the merge runs to its end (or its failure); the
        task's message says the request was refused. Backup jobs belong to
        the backup software and cannot be cancelled from here either.
        """
        self._guard("cancel")
        return self._sim.cancel_task(task_id)
