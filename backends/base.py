"""The one adapter protocol every backend implements.

A backend has a read side (``events()``: an async stream of state events) and,
only for writable sessions, a mutating handle (``executor()``). Read-only is
enforced here, below the UI: a read-only backend refuses to hand out an
executor, and every executor re-checks its backend's mode before any I/O.
Backends import asyncio, their protocol library and ``ventana.state`` only.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ventana.state.events import Event
from ventana.state.model import FinalState, Platform, TaskState

from .capabilities import PerTargetModes

#: How often the loop turns between two slices of a long piece of work on it (the
#: simulator's world build and inventory stream, the console applying an inventory):
#: a key takes about ten turns from the terminal to the widget that handles it
#: (driver, app, screen, widget, bindings: each a message queue), so it waits for
#: one slice, not for ten.
LOOP_TURNS = 10


async def let_keys_in() -> None:
    """Between two slices of work on the UI loop: turn it ``LOOP_TURNS`` times."""
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)


class ReadOnlyError(PermissionError):
    """A mutating call was attempted on a read-only session."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    state: TaskState  # OK, WARNING, FAILED, CANCELLED or UNKNOWN
    error: str = ""
    size_before: int | None = None
    size_after: int | None = None
    final_state: FinalState | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one rebuild step on a host: ``data`` carries what it
    produced (the capture, the new VM's id, the guest's services)."""

    state: TaskState  # OK, WARNING, FAILED or UNKNOWN
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


REBUILD_UNAVAILABLE = "rebuild is not available on this target; nothing was sent"


class Executor(abc.ABC):
    """The mutating handle. Only a writable backend gives one out."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _guard(self, action: str) -> None:
        if self._backend.read_only:
            raise ReadOnlyError(f"{action} refused: {self._backend.target} is read-only")

    @property
    def target(self) -> str:
        """The target system this executor acts on (the action log's ``target_system``)."""
        return self._backend.target

    def guard_vm(self, action: str, vm_id: str) -> None:
        """Refuse (``ReadOnlyError``) when the backend — or, when it holds several
        targets, the VM's own target — is read-only; call before any I/O."""
        self._guard(action)
        backend = self._backend
        if isinstance(backend, PerTargetModes) and backend.read_only_for(vm_id):
            raise ReadOnlyError(f"{action} refused: the target of {vm_id} is read-only")

    @abc.abstractmethod
    async def merge(self, vm_id: str, task_id: str) -> ActionResult:
        """Merge every checkpoint of a VM into its base disks.

        Progress goes out as events on the backend's stream under ``task_id``;
        the return value is the outcome. A lost connection after the request
        was sent must return ``TaskState.UNKNOWN``, never OK.
        """

    async def upgrade_version(self, vm_id: str, task_id: str, version: str) -> ActionResult:
        """Raise a VM's configuration version (irreversible; the VM is off).

        Backends that can do it override this; the default refuses before
        anything is sent.
        """
        self._guard("upgrade")
        return ActionResult(
            TaskState.FAILED,
            error=f"configuration-version upgrade is not available on {self._backend.target}; "
            "nothing was sent",
        )

    # -- the rebuild workflow's steps (state/rebuild.py) ---------------------------
    # Backends that can rebuild override these; the defaults refuse before
    # anything is sent. Each returns a StepResult; progress goes out on the
    # backend's stream under ``task_id``.

    def _no_rebuild(self) -> StepResult:
        self._guard("rebuild")
        return StepResult(TaskState.FAILED, error=f"{REBUILD_UNAVAILABLE} ({self._backend.target})")

    async def capture(self, vm_id: str, task_id: str) -> StepResult:
        """Read the VM's configuration and guest facts; ``data`` is the capture."""
        return self._no_rebuild()

    async def rebuild_merge(self, vm_id: str, task_id: str, *, to_last_parent: bool,
                            turn_off: bool = False) -> StepResult:
        """Stop the VM and merge its chain (all of it, or all but the newest). The stop is
        a guest shutdown unless the operator chose ``turn_off`` on the plan (a power-off,
        like pulling the plug)."""
        return self._no_rebuild()

    async def create_from_capture(self, capture: dict[str, Any], task_id: str) -> StepResult:
        """Copy the consolidated disks and create a new VM; ``data['vm_id']`` is its id."""
        return self._no_rebuild()

    async def verify_boot(self, vm_id: str, capture: dict[str, Any], task_id: str
                          ) -> StepResult:
        """Check the boot device against the capture, start the VM, wait for its guest."""
        return self._no_rebuild()

    async def guest_services(self, vm_id: str, task_id: str) -> StepResult:
        """The guest's running services (``data['services']``)."""
        return self._no_rebuild()

    async def retire_old(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        """Keep the old VM as fallback: off, renamed, no automatic start."""
        return self._no_rebuild()

    async def compact_vhdx(self, vm_id: str, task_id: str, paths: tuple[str, ...]
                           ) -> ActionResult:
        """Optimize-VHD -Mode Full on the given disk files of a VM that is off.

        Backends that can do it override this; the default refuses before
        anything is sent.
        """
        self._guard("compact")
        return ActionResult(
            TaskState.FAILED,
            error=f"compacting a VHDX is not available on {self._backend.target}; "
            "nothing was sent",
        )

    async def delete_vm(self, vm_id: str, task_id: str, paths: tuple[str, ...]) -> ActionResult:
        """Remove a VM (it is off, not replicating) and delete the given files.

        Backends that can do it override this; the default refuses before
        anything is sent.
        """
        self._guard("delete")
        return ActionResult(
            TaskState.FAILED,
            error=f"deleting a VM is not available on {self._backend.target}; "
            "nothing was sent",
        )

    @abc.abstractmethod
    async def cancel(self, task_id: str) -> bool:
        """Ask the system to cancel a running task; False if it cannot."""


class Backend(abc.ABC):
    name: str = "backend"
    platform: Platform = Platform.HYPERV

    def __init__(self, target: str, *, read_only: bool) -> None:
        self.target = target
        self._read_only = read_only

    @property
    def read_only(self) -> bool:
        return self._read_only

    @abc.abstractmethod
    def events(self) -> AsyncIterator[Event]:
        """The live event stream; runs until ``close()``."""

    def executor(self) -> Executor:
        if self.read_only:
            raise ReadOnlyError(f"{self.target} is read-only: no mutating handle")
        return self._make_executor()

    @abc.abstractmethod
    def _make_executor(self) -> Executor: ...

    #: Source seconds per wall second (a simulator runs faster); recordings keep
    #: it so a replay can show ages as they were.
    clock_rate: float = 1.0

    def now(self) -> datetime:
        """The source's current time (a simulator's clock may run faster)."""
        return datetime.now(UTC)

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass
