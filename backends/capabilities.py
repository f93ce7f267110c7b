"""What a backend or executor can do beyond ``base.Backend``/``base.Executor``, as Protocols.

Code that needs an optional capability asks ``isinstance(obj, Capability)``
(each Protocol here is ``runtime_checkable``) instead of probing attribute
names with ``getattr``; a type checker then sees the call's signature, and a
renamed method breaks loudly instead of silently turning a feature off.
``isinstance`` on a runtime-checkable Protocol only checks that the members
exist, so each Protocol names every member its callers use.

Backends (what the console asks of the handle it holds):

- ``PerTargetModes``: several targets behind one handle (``multi.MultiBackend``),
  each with its own read-only mode — per object id and per link source.
- ``Composite``: the targets themselves (``children``, each with its ``label``
  and ``backend``), e.g. to wire a side channel onto every vSphere child.
- ``RecordedActions``: a replay (``replay.ReplayBackend``): what the operator
  did in the recording up to the current position.
- ``SideChannelHost``: a vSphere backend that runs SSH side channels beside
  its stream (``ssh.wiring.attach``): the stun watcher, the stun probe after a
  snapshot action, the guest shells for freeze/thaw hooks.

Executors (what an action may call on ``backend.executor()``):

- ``ConsolidationEstimator``: vCenter's storage estimate for consolidating a
  VM's snapshots, per datastore id.
- ``SnapshotActions``: the vSphere snapshot actions (remove one, remove all,
  consolidate, create) — ``vsphere.executor.VSphereExecutor`` and the
  composite's executor, which routes them to the owning child.

The base ``Executor`` holds everything every executor has (``target``,
``guard_vm``); only what some backends lack is a capability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # base imports this module: only annotations refer back to it
    from ventana.state.recording import ActionRecord

    from .base import ActionResult, Backend

__all__ = [
    "Composite",
    "CompositeChild",
    "ConsolidationEstimator",
    "PerTargetModes",
    "RecordedActions",
    "SideChannel",
    "SideChannelHost",
    "SnapshotActions",
]


# -- backends ----------------------------------------------------------------------


@runtime_checkable
class PerTargetModes(Protocol):
    """Several targets behind one backend, each read-only or not on its own."""

    def read_only_for(self, obj_id: str) -> bool:
        """Whether the target owning ``obj_id`` (a VM id, a task id) is read-only;
        True when no target owns it."""
        ...

    def read_only_of_link(self, source: str) -> bool:
        """The mode of the target a link source (``ConnectionChanged.source``) belongs to."""
        ...


class CompositeChild(Protocol):
    """One target of a composite: its label (the id namespace) and its backend."""

    @property
    def label(self) -> str: ...

    @property
    def backend(self) -> Backend: ...


@runtime_checkable
class Composite(Protocol):
    """A backend made of several others."""

    @property
    def children(self) -> Sequence[CompositeChild]: ...


@runtime_checkable
class RecordedActions(Protocol):
    """A replay: the operator's actions recorded up to the current position."""

    def actions_so_far(self) -> list[ActionRecord]: ...


class SideChannel(Protocol):
    """Something that runs beside a backend's stream (the SSH stun watcher)."""

    def start(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class SideChannelHost(Protocol):
    """A backend the SSH side channel hangs on (``ssh.wiring.attach``).

    ``stun_probe(vm_id, since)`` reports the stun seen after an action (None:
    no watcher); ``guest_shell(vm_name)`` gives a guest's verified shell for
    its freeze/thaw hooks (None: no guest configured).
    """

    side_channels: list[Any]
    stun_probe: Callable[[str, datetime], Any] | None
    guest_shell: Callable[[str], Any] | None


# -- executors ---------------------------------------------------------------------


@runtime_checkable
class ConsolidationEstimator(Protocol):
    """vCenter's storage estimate for consolidating a VM's snapshots."""

    async def estimate_consolidation(self, vm_id: str, timeout: float = 15.0
                                     ) -> dict[str, int]:
        """Bytes needed per datastore id; raises on any failure (callers fall back)."""
        ...


@runtime_checkable
class SnapshotActions(Protocol):
    """The vSphere snapshot actions (state/plans_vsphere.py plans them)."""

    async def remove_snapshot_of(self, vm_id: str, snapshot_id: str, task_id: str,
                                 remove_children: bool = False) -> ActionResult: ...

    async def remove_all_snapshots(self, vm_id: str, task_id: str) -> ActionResult: ...

    async def consolidate(self, vm_id: str, task_id: str) -> ActionResult: ...

    async def create_snapshot(self, vm_id: str, task_id: str, name: str,
                              quiesce: bool = False, memory: bool = False,
                              pre_freeze: str = "", post_thaw: str = "") -> ActionResult: ...
