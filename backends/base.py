"""The one adapter protocol every backend implements.

A backend has a read side (``events()``: an async stream of state events) and,
only for writable sessions, a mutating handle (``executor()``). Read-only is
enforced here, below the UI: a read-only backend refuses to hand out an
executor, and every executor re-checks its backend's mode before any I/O.
Backends import asyncio, their protocol library and ``ventana.state`` only.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from ventana.state.events import Event
from ventana.state.model import FinalState, Platform, TaskState


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


class Executor(abc.ABC):
    """The mutating handle. Only a writable backend gives one out."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def _guard(self, action: str) -> None:
        if self._backend.read_only:
            raise ReadOnlyError(f"{action} refused: {self._backend.target} is read-only")

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
