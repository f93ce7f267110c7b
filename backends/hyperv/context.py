"""What the Hyper-V workflows (merge, upgrade, ``cleanup``, ``rebuild``) may use of their backend.

``HyperVBackend`` builds one ``HyperVContext`` and hands it to every
workflow instead of itself, so a workflow sees only:

- the inventory as last read (``vm``, ``entity``, ``vm_disks``, ``disks``,
  ``checkpoint_count``) — read-only;
- **the** node lookup (``node_for``: by the VM's host name, else the node
  whose last read reported the VM — one endpoint may answer for several
  nodes — else a name the caller knows, for a VM not read yet);
- ``emit`` and ``tasks`` (the task rows and progress events, ``backends.tasks``);
- ``reread(node)``: poll that node now and publish the differences;
- ``reread_vm(node, vm_id, session=…, gone=…)``: re-read one VM (settings,
  checkpoints, drives, disk files) and the CSVs' free space in one round
  trip and publish the differences — what compact, delete and merge do when
  they end, so the new sizes show at once, not with the next poll;
- ``action_session(node)``: a PowerShell pool of its own for a long mutating
  command (a merge can run for hours while the polls go on), closed after;
- ``read_only`` and ``target`` (every workflow re-checks the mode below the
  executor) and ``command_timeout``.

``HyperVNode`` is one node as the backend tracks it (its read session, its
link source, the computer name it reported, whether it answers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, MutableSet
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ventana.state.events import Event
from ventana.state.model import VM, Checkpoint, Entity, Key, Kind, VirtualDisk

from ..tasks import TaskReporter
from .session import NodeSession, SessionError


def lost(exc: BaseException, what: str) -> str:
    """The error of a mutating command whose answer never came: outcome unknown."""
    reason = str(exc) if isinstance(exc, SessionError) else type(exc).__name__
    return f"{reason} — {what}; outcome unknown, verify on the host"


@dataclass(slots=True)
class HyperVNode:
    """One node the backend reads: where it is, its read session, its link source."""

    index: int
    host: str
    port: int
    session: NodeSession
    source: str
    computer: str = ""
    healthy: bool = False
    #: Get-VMHostSupportedVersion -Default, read once per node (None: not read yet; "":
    #: the host did not answer it).
    default_version: str | None = None


class HyperVContext:
    """A Hyper-V backend as its workflows see it (see the module docstring)."""

    def __init__(
        self,
        *,
        target: str,
        is_read_only: Callable[[], bool],
        inventory: Mapping[Key, Entity],
        owners: Mapping[Key, str],
        nodes: Callable[[], list[HyperVNode]],
        emit: Callable[[Event], None],
        reread: Callable[[HyperVNode], Awaitable[None]],
        new_session: Callable[[str, int], NodeSession],
        actions: MutableSet[NodeSession],
        command_timeout: float,
        poll_interval: float = 15.0,
        reread_vm: Callable[..., Awaitable[None]] | None = None,
    ) -> None:
        self.target = target
        self._is_read_only = is_read_only
        self._inventory = inventory
        self._owners = owners
        self._nodes = nodes
        self._emit = emit
        self._reread = reread
        self._reread_vm = reread_vm
        self._new_session = new_session
        self._actions = actions
        self.command_timeout = command_timeout
        self.poll_interval = poll_interval  # how often a workflow re-asks a host
        self.tasks = TaskReporter(emit)

    @property
    def read_only(self) -> bool:
        return self._is_read_only()

    # -- the inventory as last read -------------------------------------------------
    def entity(self, kind: Kind, obj_id: str) -> Entity | None:
        return self._inventory.get((kind, obj_id))

    def vm(self, vm_id: str) -> VM | None:
        vm = self._inventory.get((Kind.VM, vm_id))
        return vm if isinstance(vm, VM) else None

    def disks(self) -> Iterator[VirtualDisk]:
        return (e for e in self._inventory.values() if isinstance(e, VirtualDisk))

    def vm_disks(self, vm_id: str) -> list[VirtualDisk]:
        return [d for d in self.disks() if d.vm_id == vm_id]

    def checkpoint_count(self, vm_id: str) -> int:
        return sum(1 for e in self._inventory.values()
                   if isinstance(e, Checkpoint) and e.vm_id == vm_id)

    # -- nodes -----------------------------------------------------------------------
    def node_for(self, vm: VM | None, node_name: str = "") -> HyperVNode | None:
        """The connected node hosting ``vm`` (None: not connected) — the one lookup
        every action uses: by the VM's computer name, else the session whose last
        read reported the VM (one endpoint may answer for several nodes), else —
        for a VM not in the inventory yet (a rebuild's new VM) — ``node_name``."""
        if vm is not None:
            node = self._healthy(vm.node_id)
            if node is not None:
                return node
            scope = self._owners.get((Kind.VM, vm.id))
            node = next((n for n in self._nodes() if n.healthy and n.source == scope), None)
            if node is not None:
                return node
        return self._healthy(node_name) if node_name else None

    def _healthy(self, computer: str) -> HyperVNode | None:
        return next((n for n in self._nodes()
                     if n.healthy and n.computer.casefold() == computer.casefold()), None)

    async def reread(self, node: HyperVNode) -> None:
        """Read ``node`` now and publish what changed (raises what the read raises)."""
        await self._reread(node)

    async def reread_vm(self, node: HyperVNode, vm_id: str, *,
                        session: NodeSession | None = None, gone: bool = False) -> None:
        """Re-read one VM and the CSVs' free space now, on ``session`` (else the node's);
        ``gone``: the VM was removed (its rows go). Without a targeted re-read (a
        context built without one): the whole node (raises what the read raises)."""
        if self._reread_vm is None:
            await self._reread(node)
        else:
            await self._reread_vm(node, vm_id, session=session, gone=gone)

    @asynccontextmanager
    async def action_session(self, node: HyperVNode) -> AsyncIterator[NodeSession]:
        """A pool of its own on ``node`` for a long command; closed on the way out
        (and by the backend's close while still open)."""
        session = self._new_session(node.host, node.port)
        self._actions.add(session)
        try:
            yield session
        finally:
            self._actions.discard(session)
            await session.close()

    # -- the stream ------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self._emit(event)
