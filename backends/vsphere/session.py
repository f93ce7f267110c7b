"""One pyvmomi session, driven from asyncio through a private worker thread.

``Session`` holds the blocking side: login with an explicit SSL context
(pyvmomi silently skips certificate checks for loopback hosts without one —
RELIABILITY.md), one private PropertyCollector, one ContainerView over the
inventory (plus the TaskManager's ``recentTask`` list, for display only), the
filter for ``WaitForUpdatesEx`` (whole properties: ``partialUpdates=False``),
whose first answer — in pages — is the inventory (its VMs read lean:
``leanxml``), direct reads (one object's
properties, a VM's storage after ``RefreshStorageInfo``, a datastore after
``RefreshDatastore``, the tasks running on a VM), one task followed through a
filter of its own (``watch_task``) and a cheap keep-alive call. ``Worker`` runs those calls
on one thread (pyvmomi blocks) so the event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import http.client
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl
from pyVmomi.SoapAdapter import SoapResponseDeserializer

from ventana.state.model import VM, PowerState
from ventana.state.plans_vsphere import snapshot_limitations

from .. import gcpause
from . import leanxml
from .lean import compact_vm, intern
from .mapping import POWER, device_facts

PC = vmodl.query.PropertyCollector
log = logging.getLogger("ventana.backends.vsphere")
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
    # Backup and snapshot-limitation facts (issue 15; docs/vsphere.md "Facts read"):
    # pyvmomi docs/vim/vm/GuestInfo.rst (toolsVersionStatus2), docs/vim/vm/ConfigInfo.rst
    # (changeTrackingEnabled, template), docs/vim/vm/RuntimeInfo.rst (faultToleranceState).
    "guest.toolsVersionStatus2",
    "config.changeTrackingEnabled",
    "config.template",
    "runtime.faultToleranceState",
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
# The paths asked for, by the type name an update carries.
PATHS_BY_NAME: dict[str, list[str]] = {
    "VirtualMachine": VM_PATHS,
    "HostSystem": HOST_PATHS,
    "Datastore": DATASTORE_PATHS,
    "ComputeResource": COMPUTE_PATHS,
    "ClusterComputeResource": COMPUTE_PATHS,
    "Task": TASK_PATHS,
}
# What a VM's storage re-read brings (after RefreshStorageInfo, see refresh_storage).
STORAGE_PATHS = ["layoutEx", "snapshot", "runtime.consolidationNeeded", "datastore"]


def enclosing_path(name: str, paths: list[str]) -> str:
    """The requested path a (possibly nested) change name falls under.

    ``config.hardware.device[2000].capacityInKB`` → ``config.hardware``;
    a name asked for, or one under no requested path, is returned as is.
    """
    if name in paths:
        return name
    for path in paths:
        if name.startswith(path) and name[len(path) : len(path) + 1] in (".", "["):
            return path
    return name


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


def _set_timeout(conn: Any, seconds: float) -> None:
    """One HTTP(S) connection's socket timeout, connected or not yet."""
    conn.timeout = seconds
    if conn.sock is not None:
        conn.sock.settimeout(seconds)


def type_name(obj: Any) -> str:
    return type(obj).__name__.rsplit(".", 1)[-1]


def _filter_spec(
    view: vim.view.ContainerView, task_manager: Any, paths: dict[type, list[str]] = PATHS
) -> Any:
    """The inventory through the view, plus ``info`` of every task in ``recentTask``."""
    traverse = PC.TraversalSpec(name="traverseView", type=vim.view.ContainerView, path="view")
    tasks = PC.TraversalSpec(name="recentTasks", type=vim.TaskManager, path="recentTask")
    return PC.FilterSpec(
        objectSet=[
            PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse]),
            PC.ObjectSpec(obj=task_manager, skip=True, selectSet=[tasks]),
        ],
        propSet=[
            *(PC.PropertySpec(type=kind, pathSet=paths) for kind, paths in paths.items()),
            PC.PropertySpec(type=vim.Task, pathSet=TASK_PATHS),
        ],
    )


class TaskTimeout(Exception):
    """A watched task did not end in time (its outcome is unknown)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no end within {timeout_s:g} s")
        self.timeout_s = timeout_s


def object_updates(update: Any, read_props: Callable[[Any, list[str]], dict[str, Any]]
                   | None = None) -> list[ObjectUpdate]:
    """A deserialized ``UpdateSet``'s object updates, VMs' properties in the lean
    forms. A nested change (a server ignoring ``partialUpdates=False``) is never kept
    under its nested path: ``read_props`` reads the enclosing property again; without
    it (a capture read back offline) the nested change is left out."""
    out: list[ObjectUpdate] = []
    for fs in getattr(update, "filterSet", None) or ():
        for obj in fs.objectSet or ():
            assigned: dict[str, Any] = {}
            removed: list[str] = []
            nested: set[str] = set()
            paths = PATHS_BY_NAME.get(type_name(obj.obj), [])
            for change in obj.changeSet or ():
                name = intern(change.name) or ""  # a PropertyPath object each, else
                top = enclosing_path(name, paths)
                if top != name:  # a nested change: read the whole property
                    nested.add(top)
                elif change.op in ("remove", "indirectRemove") or change.val is None:
                    removed.append(name)
                else:
                    assigned[name] = change.val
            if nested and read_props is not None and str(obj.kind) != "leave":
                fresh = read_props(obj.obj, sorted(nested))
                for name in nested:
                    if fresh.get(name) is None:
                        removed.append(name)
                    else:
                        assigned[name] = fresh[name]
            kind = type_name(obj.obj)
            if kind == "VirtualMachine":
                compact_vm(assigned)
            out.append(ObjectUpdate(str(obj.kind), kind, obj.obj._moId, assigned, tuple(removed)))
    return out


class ReadAheadMismatch(http.client.HTTPException):
    """A page asked for ahead carried another version than the page before it gave
    (never seen; a server that writes its answers otherwise than we read them)."""


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
        max_object_updates: int = 0,
        inventory_timeout: float = 0.0,
        read_ahead: bool = True,
    ) -> None:
        #: The socket timeout of the calls whose answer is the whole inventory (the
        #: update filter's first answer and its pages): the server
        #: builds all of it before the first byte (vcsim: every object's properties),
        #: which at 45,000 VMs on a loaded host takes longer than ``http_timeout``.
        #: 0: ``http_timeout``. Every other call keeps ``http_timeout``.
        self.http_timeout = http_timeout
        self.inventory_timeout = max(inventory_timeout, http_timeout)
        #: WaitOptions.maxObjectUpdates: a large inventory's first WaitForUpdatesEx
        #: arrives in pieces ("truncated"), each well within the socket timeout,
        #: instead of one answer that overruns it and loops into full re-reads.
        self.max_object_updates = max_object_updates
        self.truncated = 0  # answers that said more was to come (for tests and the log)
        self.si = SmartConnect(
            host=host,
            port=port,
            user=user,
            pwd=password,
            sslContext=ssl_context(ca_file, insecure=insecure),
            httpConnectionTimeout=http_timeout,
        )
        try:
            self.content = content = self.si.RetrieveContent()
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
        self._more = False  # the last answer was truncated: the next completes it
        #: The inventory's next page, asked for while this one is read (``_whole_answer``).
        self.read_ahead = read_ahead
        self._next_page: tuple[str, concurrent.futures.Future[bytes]] | None = None
        self._pager = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ventana-vsphere-page")
        self.last_call = time.monotonic()

    @property
    def caught_up(self) -> bool:
        """The filter's first answer (every object) has arrived in full: every
        page of it when ``maxObjectUpdates`` cut it (``truncated``)."""
        return bool(self.version) and not self._more

    #: ``CreateFilter(partialUpdates=...)``. False: a change to a nested property
    #: is reported as the whole property named in the filter (pyvmomi
    #: docs/vmodl/query/PropertyCollector.rst, CreateFilter), so the cache always
    #: holds whole values. A nested change that arrives anyway (a server that
    #: ignores the flag, or this set True) is never stored under its nested path:
    #: the enclosing property is read again (``wait``).
    partial_updates = False

    # -- reading -------------------------------------------------------------
    def post_raw(self, mo: Any, method: str, args: list[Any], *,
                 timeout: float | None = None) -> bytes:
        """Call ``method`` through the session's stub; the raw 200 response body.

        ``timeout``: this call's socket timeout (else ``http_timeout``), set on the
        connection it takes and put back before the connection returns to the
        pool, so no other call ever inherits it.
        """
        stub = self.si._stub
        info = mo._GetMethodInfo(method)
        request = stub.SerializeRequest(mo, info, args)
        headers = {"Cookie": stub.cookie, "SOAPAction": stub.versionId,
                   "Content-Type": "text/xml; charset=UTF-8"}
        conn = stub.GetConnection()
        try:
            if timeout is not None:
                _set_timeout(conn, timeout)
            conn.request("POST", stub.path, request, headers)
            resp = conn.getresponse()
            data = resp.read()
        except BaseException:
            conn.close()
            raise
        if timeout is not None:
            _set_timeout(conn, self.http_timeout)
        stub.ReturnConnection(conn)
        if resp.status == 500 and resp.getheader("Content-Encoding", "identity") == "identity":
            fault = SoapResponseDeserializer(stub).Deserialize(data, info.result)
            if isinstance(fault, BaseException):
                raise fault  # as pyvmomi raises it (NotAuthenticated, RequestCanceled, ...)
        if resp.status != 200 or resp.getheader("Content-Encoding", "identity") != "identity":
            raise http.client.HTTPException(
                f"{method}: HTTP {resp.status} {resp.reason} "
                f"({resp.getheader('Content-Encoding', 'identity')})")
        return data

    def wait(self, max_wait_s: int) -> list[ObjectUpdate] | None:
        """Block until something changed (or ``max_wait_s`` passed: None).

        The first call after the filter is created returns every object as
        ``enter`` — the backend's inventory, in pages of ``maxObjectUpdates``
        (``caught_up`` once the last is in); later calls bring what changed.
        """
        if self.filter is None:
            self.filter = self.pc.CreateFilter(self.spec, partialUpdates=self.partial_updates)
            self.version = ""
        options = PC.WaitOptions(maxWaitSeconds=max_wait_s)
        if self.max_object_updates > 0:
            options.maxObjectUpdates = self.max_object_updates
        vms: list[leanxml.VmUpdate] = []
        if not self.version or self._more:
            # The inventory (a page of it): read lean, waited for patiently — the
            # server builds the whole first answer before its first byte.
            with gcpause.paused():  # shared with the console's pause (a worker thread)
                update, vms = self._whole_answer(self.version, options)
        else:  # a few changes: pyvmomi
            update = self.pc.WaitForUpdatesEx(self.version, options)
        self.last_call = time.monotonic()
        if update is None:
            return None
        self.version = update.version
        self._more = bool(update.truncated)
        if update.truncated:  # the rest comes with the next call, at once
            self.truncated += 1
        out = [ObjectUpdate(kind, "VirtualMachine", oid, assigned, removed)
               for kind, oid, assigned, removed in vms]
        out.extend(object_updates(update, self.read_props))
        return out

    def _whole_answer(self, version: str, options: Any) -> tuple[Any, list[leanxml.VmUpdate]]:
        """The filter's first answer (every object) or a page that completes it, its
        VMs read lean (``leanxml``), the rest by pyvmomi; an answer the lean reader
        does not expect is read whole by pyvmomi — it is never asked for twice (a
        page once answered is not sent again). Waits up to ``inventory_timeout``.

        A truncated page's successor is asked for as soon as its raw body is in,
        while this one is read (the server writes the next page while we parse
        this one: on two cores, its time and ours overlap instead of adding up).
        """
        asked, self._next_page = self._next_page, None
        if asked is not None and asked[0] == version:
            body = asked[1].result()
        else:
            body = self._page(version, options)
        following = leanxml.continuation(body) if self.read_ahead else None
        if following is not None:
            self._next_page = (following, self._pager.submit(self._page, following, options))
        info = self.pc._GetMethodInfo("WaitForUpdatesEx")
        deserialize = SoapResponseDeserializer(self.si._stub).Deserialize
        try:
            vms, rest = leanxml.split_answer(body)
            update = deserialize(rest, info.result)
        except Exception as exc:  # Unreadable, or what was left after the cut was not
            log.info("lean WaitForUpdatesEx answer not read (%s); using pyvmomi", exc)
            update, vms = deserialize(body, info.result), []
        if following is not None and (update.version != following or not update.truncated):
            # Never expected: the next page was asked for with another version than
            # the answer holds. Its answer is not used; the backend logs in again and
            # reads without asking ahead (VSphereBackend).
            raise ReadAheadMismatch(
                f"WaitForUpdatesEx: page version {following!r} read as {update.version!r}")
        return update, vms

    def _page(self, version: str, options: Any) -> bytes:
        return self.post_raw(self.pc, "WaitForUpdatesEx", [version, options],
                             timeout=self.inventory_timeout)

    def read_props(self, obj: Any, paths: list[str]) -> dict[str, Any]:
        """``paths`` of one object, read now (an unset property is absent)."""
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
            propSet=[PC.PropertySpec(type=type(obj), pathSet=list(paths))],
        )
        result = self.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        props: dict[str, Any] = {}
        for oc in getattr(result, "objects", None) or ():
            props.update({intern(p.name) or "": p.val for p in oc.propSet or ()})
        return props

    def refresh_storage(self, vm_id: str) -> dict[str, Any]:
        """``RefreshStorageInfo`` on the VM, then its storage properties read again.

        VirtualMachine.layoutEx (and ``storage``) "might not generate property
        collector update notifications"; RefreshStorageInfo updates them
        (pyvmomi docs/vim/VirtualMachine.rst). The values are read, not
        awaited as updates.
        """
        vm = vim.VirtualMachine(vm_id, self.si._stub)
        vm.RefreshStorageInfo()
        return compact_vm(self.read_props(vm, STORAGE_PATHS))

    def refresh_datastore(self, ds_id: str) -> dict[str, Any]:
        """``RefreshDatastore`` (free space is otherwise refreshed only
        periodically by the server: docs/vim/Datastore.rst), then re-read."""
        ds = vim.Datastore(ds_id, self.si._stub)
        ds.RefreshDatastore()
        return self.read_props(ds, DATASTORE_PATHS)

    def snapshot_limits(self, vm_id: str, *, memory: bool) -> tuple[list[str], list[str]]:
        """(refusals, warnings) for a new snapshot of the VM, read now.

        vSphere's snapshot limitations (vSphere documentation, "Snapshot
        Limitations"; ``config.template``, VirtualDiskRawDiskMappingVer1
        BackingInfo.compatibilityMode, VirtualSCSIController.sharedBus,
        VirtualPCIPassthrough, runtime.faultToleranceState), read from the
        server and judged by the rule the create plan shows
        (``plans_vsphere.snapshot_limitations``) on the facts the mapping reads
        (``mapping.device_facts``).
        """
        vm = vim.VirtualMachine(vm_id, self.si._stub)
        props = self.read_props(vm, ["config.template", "config.hardware.device",
                                     "runtime.faultToleranceState", "runtime.powerState"])
        facts = device_facts(props.get("config.hardware.device") or ())
        assert facts is not None
        model = VM(
            vm_id, vm_id, "", "",
            power=POWER.get(str(props.get("runtime.powerState") or ""), PowerState.UNKNOWN),
            template=bool(props.get("config.template")),
            fault_tolerance=str(props.get("runtime.faultToleranceState") or "notConfigured"),
            independent_disks=facts.independent_disks,
            physical_rdms=facts.physical_rdms,
            shared_buses=facts.shared_buses,
            passthrough_devices=facts.passthrough_devices,
        )
        return snapshot_limitations(model, memory=memory)

    def busy_tasks(self, vm_id: str) -> list[Any]:
        """TaskInfo of queued or running tasks on the VM, from ``recentTask`` read
        now (TaskManager.recentTask may not be pushed as updates:
        docs/vim/TaskManager.rst; it is read with RetrievePropertiesEx instead)."""
        tm = self.content.taskManager
        tasks = PC.TraversalSpec(name="recentTasks", type=vim.TaskManager, path="recentTask")
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=tm, skip=True, selectSet=[tasks])],
            propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info"])],
        )
        result = self.content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        out = []
        while result is not None:
            for oc in result.objects or ():
                for prop in oc.propSet or ():
                    info = prop.val
                    if (getattr(getattr(info, "entity", None), "_moId", None) == vm_id
                            and str(info.state) in ("queued", "running")):
                        out.append(info)
            if not result.token:
                break
            result = self.content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
        return out

    def watch_task(
        self,
        task_id: str,
        timeout_s: float,
        on_info: Callable[[Any], None],
        *,
        wait_s: int = 10,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Any:
        """Follow one task until it ends: its own collector with a filter on the
        task's ``info`` (TaskManager.recentTask "should not be used for tracking
        Task completion": docs/vim/TaskManager.rst). Returns the final TaskInfo;
        raises ``TaskTimeout`` after ``timeout_s`` and ``ConnectionError`` when
        ``stopped()``; a lost connection raises what pyvmomi raises."""
        task = vim.Task(task_id, self.si._stub)
        pc = self.content.propertyCollector.CreatePropertyCollector()
        try:
            pc.CreateFilter(
                PC.FilterSpec(
                    objectSet=[PC.ObjectSpec(obj=task, skip=False)],
                    propSet=[PC.PropertySpec(type=vim.Task, pathSet=["info"])],
                ),
                partialUpdates=False,
            )
            deadline = time.monotonic() + timeout_s
            version = ""
            while True:
                if stopped():
                    raise ConnectionError("the session closed while the task ran")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskTimeout(timeout_s)
                wait = max(1, min(wait_s, int(remaining + 0.999)))
                update = pc.WaitForUpdatesEx(version, PC.WaitOptions(maxWaitSeconds=wait))
                if update is None:
                    continue
                version = update.version
                info = None
                for fs in update.filterSet or ():
                    for obj in fs.objectSet or ():
                        for change in obj.changeSet or ():
                            if change.name == "info" and change.val is not None:
                                info = change.val
                            elif change.name.startswith("info"):
                                info = self.read_props(task, ["info"]).get("info")
                if info is None:
                    continue
                on_info(info)
                if str(info.state) in ("success", "error"):
                    return info
        finally:
            with contextlib.suppress(Exception):
                pc.Destroy()

    def keep_alive(self) -> None:
        """A cheap authenticated call, so an idle session does not expire."""
        self.si.CurrentTime()
        self.last_call = time.monotonic()

    def cancel_wait(self) -> None:
        """Make a blocked ``WaitForUpdatesEx`` return (called from another thread)."""
        self.pc.CancelWaitForUpdates()

    def close(self) -> None:
        """Destroy the collector and view and log out (best effort)."""
        self._pager.shutdown(wait=False, cancel_futures=True)
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
