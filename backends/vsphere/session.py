"""One pyvmomi session, driven from asyncio through a private worker thread.

``Session`` holds the blocking side: login with an explicit SSL context
(pyvmomi silently skips certificate checks for loopback hosts without one —
RELIABILITY.md), one private PropertyCollector, one ContainerView over the
inventory (plus the TaskManager's ``recentTask`` list), the paged
``RetrievePropertiesEx`` read, the filter for ``WaitForUpdatesEx`` and a cheap
keep-alive call. ``Worker`` runs those calls
on one thread (pyvmomi blocks) so the event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector
T = TypeVar("T")

VM_PATHS = [
    "name",
    "runtime.powerState",
    "runtime.host",
    "runtime.connectionState",
    "runtime.consolidationNeeded",
    "config.hardware",
    "config.version",
    "config.firmware",
    "snapshot",
    "layoutEx",
    "datastore",
    "guest.toolsRunningStatus",
]
HOST_PATHS = ["name", "runtime.connectionState", "runtime.inMaintenanceMode", "parent"]
DATASTORE_PATHS = ["name", "summary.capacity", "summary.freeSpace", "summary.accessible", "host"]
COMPUTE_PATHS = ["name", "host"]
TASK_PATHS = ["info"]

PATHS: dict[type, list[str]] = {
    vim.VirtualMachine: VM_PATHS,
    vim.HostSystem: HOST_PATHS,
    vim.Datastore: DATASTORE_PATHS,
    vim.ComputeResource: COMPUTE_PATHS,  # includes ClusterComputeResource
}


@dataclass(frozen=True, slots=True)
class ObjectUpdate:
    """One object's change from ``WaitForUpdatesEx`` (or a full read: ``enter``)."""

    kind: str  # "enter" | "modify" | "leave"
    type_name: str  # "VirtualMachine", "HostSystem", ...
    moid: str
    assigned: dict[str, Any]
    removed: tuple[str, ...] = ()


def ssl_context(ca_file: Path | None, *, insecure: bool = False) -> ssl.SSLContext:
    """A verifying context (the named CA bundle, else the system store).

    Built anew for every login so a renewed CA bundle is picked up.
    ``insecure`` turns verification off — an explicit, visible choice only.
    """
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def type_name(obj: Any) -> str:
    return type(obj).__name__.rsplit(".", 1)[-1]


def _filter_spec(view: vim.view.ContainerView, task_manager: Any) -> Any:
    """The inventory through the view, plus ``info`` of every task in ``recentTask``."""
    traverse = PC.TraversalSpec(name="traverseView", type=vim.view.ContainerView, path="view")
    tasks = PC.TraversalSpec(name="recentTasks", type=vim.TaskManager, path="recentTask")
    return PC.FilterSpec(
        objectSet=[
            PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse]),
            PC.ObjectSpec(obj=task_manager, skip=True, selectSet=[tasks]),
        ],
        propSet=[
            *(PC.PropertySpec(type=kind, pathSet=paths) for kind, paths in PATHS.items()),
            PC.PropertySpec(type=vim.Task, pathSet=TASK_PATHS),
        ],
    )


class Session:
    """A logged-in pyvmomi session with its collector, view and update filter.

    Every method blocks; call them through ``Worker``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        ca_file: Path | None,
        insecure: bool = False,
        http_timeout: float = 30.0,
    ) -> None:
        self.si = SmartConnect(
            host=host,
            port=port,
            user=user,
            pwd=password,
            sslContext=ssl_context(ca_file, insecure=insecure),
            httpConnectionTimeout=http_timeout,
        )
        try:
            content = self.si.RetrieveContent()
            self.about = f"{content.about.fullName}"
            self.pc = content.propertyCollector.CreatePropertyCollector()
            self.view = content.viewManager.CreateContainerView(
                content.rootFolder, list(PATHS), True
            )
            self.spec = _filter_spec(self.view, content.taskManager)
        except BaseException:
            with contextlib.suppress(Exception):
                Disconnect(self.si)
            raise
        self.filter: Any = None
        self.version = ""
        self.last_call = time.monotonic()

    # -- reading -------------------------------------------------------------
    def read_all(self, page_size: int) -> list[ObjectUpdate]:
        """Every object of the view, paged with ``maxObjects`` and tokens."""
        out: list[ObjectUpdate] = []
        result = self.pc.RetrievePropertiesEx([self.spec], PC.RetrieveOptions(maxObjects=page_size))
        while result is not None:
            for oc in result.objects:
                props = {p.name: p.val for p in oc.propSet}
                out.append(ObjectUpdate("enter", type_name(oc.obj), oc.obj._moId, props))
            if not result.token:
                break
            result = self.pc.ContinueRetrievePropertiesEx(result.token)
        self.last_call = time.monotonic()
        return out

    def wait(self, max_wait_s: int) -> list[ObjectUpdate] | None:
        """Block until something changed (or ``max_wait_s`` passed: None).

        The first call after the filter is created returns every object as
        ``enter``; the backend diffs it against what it already emitted.
        """
        if self.filter is None:
            self.filter = self.pc.CreateFilter(self.spec, partialUpdates=True)
            self.version = ""
        update = self.pc.WaitForUpdatesEx(self.version, PC.WaitOptions(maxWaitSeconds=max_wait_s))
        self.last_call = time.monotonic()
        if update is None:
            return None
        self.version = update.version
        out: list[ObjectUpdate] = []
        for fs in update.filterSet or ():
            for obj in fs.objectSet or ():
                assigned: dict[str, Any] = {}
                removed: list[str] = []
                for change in obj.changeSet or ():
                    if change.op in ("remove", "indirectRemove") or change.val is None:
                        removed.append(change.name)
                    else:
                        assigned[change.name] = change.val
                out.append(
                    ObjectUpdate(
                        str(obj.kind), type_name(obj.obj), obj.obj._moId, assigned, tuple(removed)
                    )
                )
        return out

    def keep_alive(self) -> None:
        """A cheap authenticated call, so an idle session does not expire."""
        self.si.CurrentTime()
        self.last_call = time.monotonic()

    def cancel_wait(self) -> None:
        """Make a blocked ``WaitForUpdatesEx`` return (called from another thread)."""
        self.pc.CancelWaitForUpdates()

    def close(self) -> None:
        """Destroy the collector and view and log out (best effort)."""
        for step in (
            lambda: self.pc.Destroy(),
            lambda: self.view.Destroy(),
            lambda: Disconnect(self.si),
        ):
            with contextlib.suppress(Exception):
                step()


class Worker:
    """Runs blocking pyvmomi calls on one private thread."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ventana-vsphere"
        )

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
