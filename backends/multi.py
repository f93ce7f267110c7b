"""``MultiBackend``: several targets in one console (a Hyper-V cluster next to
a vCenter, two simulators, ...).

Each child keeps its own stream, executor, read-only mode and connection.
The composite:

- **merges the streams**: one task per child pumps its events into a queue;
  a child that ends or fails ends only its own part (its failure becomes
  that child's ``DISCONNECTED`` link), the composite stream runs until every
  child's has ended;
- **namespaces every id** with the child's label (``"<label>/<id>"``) so two
  sources can never collide in the store — moref values of two vCenters,
  node and cluster names of two Hyper-V clusters, a simulator's ids next to
  anything. Every reference field moves with it: ``id``, every ``*_id``
  (``cluster_id``, ``node_id``, ``vm_id``, ``lun_id``, ``parent_id``,
  ``owner_node_id`` ...), every ``*_ids`` tuple (``disk_ids``), ``csv_owned``,
  and the ``kind:id`` ``target`` of tasks and findings; ``Remove`` and
  ``TaskProgress`` ids too. Task ids the console itself gave an executor
  (``merge-<hex>``, unique already) stay as they are so the runner finds its
  own task;
- **routes executor calls** to the child that owns the VM (or task) and
  strips the namespace from every id argument on the way down;
- **keeps read-only per target**: the composite is read-only only when every
  child is (then it gives out no executor at all); otherwise a call for a
  read-only child's VM is refused by that child's own ``executor()`` before
  anything is sent — a writable sibling never lends it its executor;
- **reports link state per target**: a child's ``ConnectionChanged`` source
  becomes its label (Hyper-V's per-node sources: ``"<label> <node>"``), so the
  store keeps one link per target and the header can show each; its ``scope``
  is the child's prefix, so a target's link down makes stale only what that
  target owns (``Store.staleness``), not its siblings' rows;
- **closes every child** on ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Container, Sequence
from datetime import datetime
from typing import Any

from ventana.state.events import (
    ConnectionChanged,
    Event,
    FindingRaised,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from ventana.state.model import Entity, TaskState

from .base import ActionResult, Backend, Executor, ReadOnlyError, StepResult
from .capabilities import ConsolidationEstimator, SnapshotActions

log = logging.getLogger("ventana.backends.multi")

SEP = "/"


@dataclasses.dataclass(eq=False)
class Child:
    label: str
    backend: Backend

    @property
    def prefix(self) -> str:
        return f"{self.label}{SEP}"

    def source(self, source: str) -> str:
        """A child's link source as the composite reports it."""
        if source in (self.backend.target, self.backend.name, ""):
            return self.label
        return f"{self.label} {source}"


def _ref_fields(cls: type) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    """(single id fields, tuple-of-id fields, has a ``kind:id`` target) of an entity class."""
    single, many = [], []
    for f in dataclasses.fields(cls):
        if f.name == "id" or f.name.endswith("_id"):
            single.append(f.name)
        elif f.name.endswith("_ids") or f.name == "csv_owned":
            many.append(f.name)
    has_target = any(f.name == "target" for f in dataclasses.fields(cls))
    return tuple(single), tuple(many), has_target


_FIELDS: dict[type, tuple[tuple[str, ...], tuple[str, ...], bool]] = {}


def namespace_entity(entity: Entity, prefix: str, keep: Container[str] = frozenset()) -> Entity:
    """``entity`` with every id and reference field prefixed (``keep``: ids left alone)."""
    cls = type(entity)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = _ref_fields(cls)
    single, many, has_target = fields
    changes: dict[str, Any] = {}
    for name in single:
        value = getattr(entity, name)
        if value and value not in keep:
            changes[name] = prefix + value
    for name in many:
        value = getattr(entity, name)
        if value:
            changes[name] = tuple(prefix + v for v in value)
    if has_target:
        target = getattr(entity, "target", "")
        kind, sep, obj = str(target).partition(":")
        if sep and obj:
            changes["target"] = f"{kind}:{prefix}{obj}"
    return dataclasses.replace(entity, **changes) if changes else entity  # type: ignore[type-var]


class MultiBackend(Backend):
    """Several backends as one event stream with namespaced ids."""

    name = "multi"

    def __init__(self, children: Sequence[tuple[str, Backend]]) -> None:
        if len(children) < 2:
            raise ValueError("a composite needs at least two targets")
        labels = [label for label, _ in children]
        if len(set(labels)) != len(labels):
            raise ValueError(f"target labels must be unique: {labels}")
        for label in labels:
            if not label or SEP in label or ":" in label:
                raise ValueError(f"bad target label {label!r} (no '/' or ':')")
        self.children = [Child(label, backend) for label, backend in children]
        super().__init__(
            " + ".join(c.label for c in self.children),
            read_only=all(c.backend.read_only for c in self.children),
        )
        self.platform = self.children[0].backend.platform
        self.clock_rate = self.children[0].backend.clock_rate
        self._own_tasks: dict[str, Child] = {}  # task ids handed to executors
        self._closed = False

    # -- what the console asks ---------------------------------------------------
    @property
    def read_only(self) -> bool:
        """Read-only only when every child is (a child may change its mode)."""
        return all(c.backend.read_only for c in self.children)

    def now(self) -> datetime:
        return self.children[0].backend.now()

    def owner(self, obj_id: str) -> Child | None:
        """The child a namespaced id (or a task id given to an executor) belongs to."""
        if obj_id in self._own_tasks:
            return self._own_tasks[obj_id]
        label, sep, _ = obj_id.partition(SEP)
        if sep:
            for child in self.children:
                if child.label == label:
                    return child
        return None

    def claim_task(self, task_id: str, child: Child) -> None:
        """``task_id`` (given by the console to an executor) belongs to ``child``: its
        events keep the id un-namespaced and ``owner``/``cancel`` find the child."""
        self._own_tasks[task_id] = child

    def is_own_task(self, task_id: str) -> bool:
        return task_id in self._own_tasks

    def read_only_for(self, obj_id: str) -> bool:
        child = self.owner(obj_id)
        return child is None or child.backend.read_only

    def read_only_of_link(self, source: str) -> bool:
        """The mode of the target a (composite) link source belongs to."""
        label = source.split(" ", 1)[0]
        return next((c.backend.read_only for c in self.children if c.label == label), True)

    # -- the stream --------------------------------------------------------------
    def wrap(self, child: Child, event: Event) -> Event:
        prefix = child.prefix
        keep = self._own_tasks
        match event:
            case Upsert(entity):
                return Upsert(namespace_entity(entity, prefix, keep))
            case Remove(kind, id_):
                return Remove(kind, id_ if id_ in keep else prefix + id_)
            case TaskProgress(task_id, pct, message, state):
                tid = task_id if task_id in keep else prefix + task_id
                return TaskProgress(tid, pct, message, state)
            case FindingRaised(finding):
                return FindingRaised(namespace_entity(finding, prefix, keep))  # type: ignore[arg-type]
            case ConnectionChanged(source, state, reason, nodes, scope):
                # The link speaks for this child's ids only (its scope: the prefix; a
                # nested composite's target: the prefix and its own scope).
                return ConnectionChanged(child.source(source), state, reason,
                                         tuple(prefix + n for n in nodes), prefix + scope)
        return event

    async def events(self) -> AsyncIterator[Event]:
        queue: asyncio.Queue[tuple[Child, Event | None]] = asyncio.Queue()

        async def pump(child: Child) -> None:
            stream = child.backend.events()
            try:
                async for event in stream:
                    await queue.put((child, event))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await stream.aclose()  # the child's own clean-up runs now, not at GC
                raise
            except Exception as exc:  # one target failing leaves the others running
                log.exception("target %s failed", child.label)
                await queue.put((child, ConnectionChanged(
                    child.backend.target, LinkState.DISCONNECTED,
                    f"{type(exc).__name__}: {exc}")))
            finally:
                queue.put_nowait((child, None))

        tasks = [asyncio.ensure_future(pump(c)) for c in self.children]
        running = len(tasks)
        try:
            while running:
                child, event = await queue.get()
                if event is None:
                    running -= 1
                    continue
                yield self.wrap(child, event)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    async def close(self) -> None:
        """Close every child (one failing to close does not keep the others open)."""
        if self._closed:
            return
        self._closed = True
        results = await asyncio.gather(
            *(c.backend.close() for c in self.children), return_exceptions=True
        )
        for child, result in zip(self.children, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("closing %s: %s", child.label, result)

    def _make_executor(self) -> Executor:
        return MultiExecutor(self)


def _strip(value: Any, prefix: str) -> Any:
    if isinstance(value, str):
        return value[len(prefix):] if value.startswith(prefix) else value
    if isinstance(value, tuple):
        return tuple(_strip(v, prefix) for v in value)
    if isinstance(value, list):
        return [_strip(v, prefix) for v in value]
    if isinstance(value, dict):
        return {k: _strip(v, prefix) for k, v in value.items()}
    return value


class MultiExecutor(Executor):
    """Routes each call to the executor of the child that owns the VM.

    The first argument of every executor method is the (namespaced) VM id
    (``cancel``: the task id). The owning child's ``executor()`` is asked
    for each call, so a read-only child refuses before anything is sent.
    The capabilities some children add (``capabilities.SnapshotActions``,
    ``ConsolidationEstimator``) are routed the same way; a child without them
    refuses, nothing sent.
    """

    def __init__(self, backend: MultiBackend) -> None:
        super().__init__(backend)
        self._multi = backend

    def _child_executor(self, obj_id: str, action: str) -> tuple[Child, Executor]:
        child = self._multi.owner(obj_id)
        if child is None:
            raise ReadOnlyError(f"{action} refused: no target owns {obj_id!r}; nothing was sent")
        try:
            return child, child.backend.executor()
        except ReadOnlyError as exc:
            raise ReadOnlyError(f"{action} refused: {exc}") from None

    def _route(self, vm_id: str, task_id: str, action: str) -> tuple[Child, Executor, str]:
        """The owning child, its executor (refusing when read-only) and the VM id as
        the child knows it; ``task_id`` is claimed for the child."""
        child, executor = self._child_executor(vm_id, action)
        self._multi.claim_task(task_id, child)
        return child, executor, _strip(vm_id, child.prefix)

    @staticmethod
    def _named(child: Child, result: StepResult) -> StepResult:
        """A step's result with the VM id in its data (a capture, the new VM)
        namespaced, so the next step finds its target."""
        vm = result.data.get("vm_id")
        if isinstance(vm, str) and vm and not vm.startswith(child.prefix):
            result = dataclasses.replace(result, data={**result.data,
                                                       "vm_id": child.prefix + vm})
        return result

    async def merge(self, vm_id: str, task_id: str) -> ActionResult:
        _, ex, vm = self._route(vm_id, task_id, "merge")
        return await ex.merge(vm, task_id)

    async def upgrade_version(self, vm_id: str, task_id: str, version: str) -> ActionResult:
        _, ex, vm = self._route(vm_id, task_id, "upgrade_version")
        return await ex.upgrade_version(vm, task_id, version)

    # The base class's optional steps (rebuild, compact, delete) would refuse as
    # "not available" without asking the owning child: route them too.
    async def compact_vhdx(self, vm_id: str, task_id: str, paths: tuple[str, ...]
                           ) -> ActionResult:
        child, ex, vm = self._route(vm_id, task_id, "compact_vhdx")
        return await ex.compact_vhdx(vm, task_id, _strip(paths, child.prefix))

    async def delete_vm(self, vm_id: str, task_id: str, paths: tuple[str, ...]) -> ActionResult:
        child, ex, vm = self._route(vm_id, task_id, "delete_vm")
        return await ex.delete_vm(vm, task_id, _strip(paths, child.prefix))

    async def capture(self, vm_id: str, task_id: str) -> StepResult:
        child, ex, vm = self._route(vm_id, task_id, "capture")
        return self._named(child, await ex.capture(vm, task_id))

    async def rebuild_merge(self, vm_id: str, task_id: str, *, to_last_parent: bool,
                            turn_off: bool = False) -> StepResult:
        child, ex, vm = self._route(vm_id, task_id, "rebuild_merge")
        return self._named(child, await ex.rebuild_merge(vm, task_id,
                                                         to_last_parent=to_last_parent,
                                                         turn_off=turn_off))

    async def create_from_capture(self, capture: dict[str, Any], task_id: str) -> StepResult:
        vm_id = str(capture.get("vm_id") or "")
        child, ex, _ = self._route(vm_id, task_id, "create_from_capture")
        return self._named(child, await ex.create_from_capture(_strip(capture, child.prefix),
                                                               task_id))

    async def verify_boot(self, vm_id: str, capture: dict[str, Any], task_id: str
                          ) -> StepResult:
        child, ex, vm = self._route(vm_id, task_id, "verify_boot")
        return await ex.verify_boot(vm, _strip(capture, child.prefix), task_id)

    async def guest_services(self, vm_id: str, task_id: str) -> StepResult:
        child, ex, vm = self._route(vm_id, task_id, "guest_services")
        return self._named(child, await ex.guest_services(vm, task_id))

    async def retire_old(self, vm_id: str, new_name: str, task_id: str) -> StepResult:
        _, ex, vm = self._route(vm_id, task_id, "retire_old")
        return await ex.retire_old(vm, new_name, task_id)

    # -- capabilities.SnapshotActions and ConsolidationEstimator: vSphere's, routed
    # to the owning child; a child without them refuses, nothing sent.
    def _snapshots(self, vm_id: str, task_id: str, action: str
                   ) -> tuple[Child, SnapshotActions | ActionResult]:
        child, executor, _ = self._route(vm_id, task_id, action)
        if not isinstance(executor, SnapshotActions):
            return child, ActionResult(TaskState.FAILED, error=f"{action} is not available on "
                                       f"{child.label}; nothing was sent")
        return child, executor

    async def remove_snapshot_of(self, vm_id: str, snapshot_id: str, task_id: str,
                                 remove_children: bool = False) -> ActionResult:
        """vSphere: the task id is the third argument here, not the second; the
        console must know it as its own (cancel, the task strip)."""
        child, ex = self._snapshots(vm_id, task_id, "remove snapshot")
        if isinstance(ex, ActionResult):
            return ex
        return await ex.remove_snapshot_of(_strip(vm_id, child.prefix),
                                           _strip(snapshot_id, child.prefix), task_id,
                                           remove_children)

    async def remove_all_snapshots(self, vm_id: str, task_id: str) -> ActionResult:
        child, ex = self._snapshots(vm_id, task_id, "remove all snapshots")
        if isinstance(ex, ActionResult):
            return ex
        return await ex.remove_all_snapshots(_strip(vm_id, child.prefix), task_id)

    async def consolidate(self, vm_id: str, task_id: str) -> ActionResult:
        child, ex = self._snapshots(vm_id, task_id, "consolidate")
        if isinstance(ex, ActionResult):
            return ex
        return await ex.consolidate(_strip(vm_id, child.prefix), task_id)

    async def create_snapshot(self, vm_id: str, task_id: str, name: str,
                              quiesce: bool = False, memory: bool = False,
                              pre_freeze: str = "", post_thaw: str = "") -> ActionResult:
        child, ex = self._snapshots(vm_id, task_id, "create snapshot")
        if isinstance(ex, ActionResult):
            return ex
        return await ex.create_snapshot(_strip(vm_id, child.prefix), task_id, name, quiesce,
                                        memory, pre_freeze, post_thaw)

    async def estimate_consolidation(self, vm_id: str, timeout: float = 15.0
                                     ) -> dict[str, int]:
        """vCenter's storage estimate, its datastore ids namespaced like the store's."""
        child, executor = self._child_executor(vm_id, "estimate")
        if not isinstance(executor, ConsolidationEstimator):
            raise NotImplementedError(f"no storage estimate on {child.label}")
        by_lun = await executor.estimate_consolidation(
            _strip(vm_id, child.prefix), timeout=timeout)
        return {child.prefix + lun: size for lun, size in by_lun.items()}

    async def cancel(self, task_id: str) -> bool:
        child = self._multi.owner(task_id)
        if child is None or child.backend.read_only:
            return False
        task = task_id if self._multi.is_own_task(task_id) else _strip(task_id, child.prefix)
        return await child.backend.executor().cancel(task)
