"""The vSphere backend against the real vcsim peer (tools/vcsim).

Inventory, live changes through ``WaitForUpdatesEx`` (with a 30 s long-poll,
so a change seen in a few seconds proves it is pushed, not polled), TLS
refusal on 127.0.0.2, session expiry, a restart of the peer mid-stream, and
the rule that the password never appears in an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trustme
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(
        f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
        allow_module_level=True,
    )

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from ventana.backends.actions import ActionRunner
from ventana.backends.base import ReadOnlyError
from ventana.backends.vsphere import CredentialError, VSphereBackend, VSphereConfig
from ventana.backends.vsphere.credentials import resolve_password
from ventana.backends.vsphere.mapping import is_backup_snapshot, snapshot_size
from ventana.backends.vsphere.session import Session
from ventana.state.actionlog import ActionLog
from ventana.state.events import (
    ConnectionChanged,
    Event,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from ventana.state.model import VM, Checkpoint, CheckpointKind, Kind, PowerState, TaskState
from ventana.state.store import Store

PC = vmodl.query.PropertyCollector
SIZE = {"clusters": 1, "hosts": 2, "standalone_hosts": 1, "vms": 2, "datastores": 2}


# --- helpers -------------------------------------------------------------------


def connect(handle: VcsimHandle):
    ctx = ssl.create_default_context(cafile=str(handle.ca_path))
    return SmartConnect(
        host=handle.host,
        port=handle.port,
        user=handle.user,
        pwd=handle.password,
        sslContext=ctx,
        httpConnectionTimeout=20,
    )


def iso_cdrom(vm: vim.VirtualMachine, datastore_name: str) -> vim.vm.ConfigSpec:
    """A CD-ROM on an ISO in ``datastore_name``, added to ``vm``'s first IDE controller
    (the VM's ``datastore`` then lists that datastore too, first in vcsim)."""
    ide = next(d for d in vm.config.hardware.device
               if isinstance(d, vim.vm.device.VirtualIDEController))
    cdrom = vim.vm.device.VirtualCdrom(
        key=-1, controllerKey=ide.key, unitNumber=1,
        backing=vim.vm.device.VirtualCdrom.IsoBackingInfo(
            fileName=f"[{datastore_name}] iso/installer.iso"))
    return vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="add", device=cdrom)])


def config_for(handle: VcsimHandle, **kw: object) -> VSphereConfig:
    base: dict[str, object] = {
        "host": handle.host,
        "port": handle.port,
        "user": handle.user,
        "ca_file": handle.ca_path,
        "wait_s": 30,
        "backoff_initial_s": 0.2,
        "backoff_max_s": 1.0,
    }
    return VSphereConfig(**(base | kw))  # type: ignore[arg-type]


def retrieve(si, kind: type, paths: list[str]) -> dict[str, dict]:
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        spec = PC.FilterSpec(
            objectSet=[
                PC.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        PC.TraversalSpec(
                            name="traverseView", type=vim.view.ContainerView, path="view"
                        )
                    ],
                )
            ],
            propSet=[PC.PropertySpec(type=kind, pathSet=paths)],
        )
        result = content.propertyCollector.RetrievePropertiesEx([spec], PC.RetrieveOptions())
        out: dict[str, dict] = {}
        while result is not None:
            for oc in result.objects:
                out[oc.obj._moId] = {p.name: p.val for p in oc.propSet}
            if not result.token:
                break
            result = content.propertyCollector.ContinueRetrievePropertiesEx(result.token)
        return out
    finally:
        view.Destroy()


class Stream:
    """Consumes a backend's events into a Store in the background."""

    def __init__(self, backend: VSphereBackend, secret: str) -> None:
        self.backend = backend
        self.secret = secret
        self.store = Store()
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.backend.events():
            assert self.secret not in repr(event), "the password leaked into an event"
            self.events.append(event)
            self.store.apply(event)
            self._changed.set()

    def links(self) -> list[ConnectionChanged]:
        return [e for e in self.events if isinstance(e, ConnectionChanged)]

    async def until(self, pred: Callable[[], object], timeout: float, what: str) -> float:
        """Wait until ``pred()`` holds; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        while not pred():
            if self.task.done():
                self.task.result()  # surface a crash
                raise AssertionError(f"stream ended before: {what}; links {self.links()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for: {what}; links {self.links()[-4:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return time.monotonic() - start

    def state(self) -> LinkState | None:
        links = self.links()
        return links[-1].state if links else None

    async def close(self, timeout: float = 5.0) -> None:
        await self.backend.close()
        await asyncio.wait_for(self.task, timeout)
        assert self.state() is LinkState.DISCONNECTED


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, **SIZE)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def si(vcsim: VcsimHandle):
    si = connect(vcsim)
    yield si
    Disconnect(si)


@pytest.fixture
async def stream(vcsim: VcsimHandle) -> AsyncIterator[Stream]:
    s = Stream(VSphereBackend(config_for(vcsim), password=vcsim.password), vcsim.password)
    await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected")
    yield s
    await s.close()


def vm_by_name(store: Store, name: str) -> VM:
    [vm] = [v for v in store.vms() if v.name == name]
    return vm


# --- inventory -------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_inventory_matches_what_pyvmomi_reads(stream: Stream, si, vcsim) -> None:
    links = stream.links()
    assert [link.state for link in links] == [LinkState.CONNECTING, LinkState.CONNECTED]
    assert stream.events[0] == links[0] and "password from the caller" in links[0].reason
    first_connected = stream.events.index(links[1])
    assert all(isinstance(e, Upsert) for e in stream.events[1:first_connected])

    store = stream.store
    vms = retrieve(si, vim.VirtualMachine, ["name", "runtime.host", "config.version"])
    hosts = retrieve(si, vim.HostSystem, ["name", "parent"])
    dss = retrieve(si, vim.Datastore, ["name", "summary.capacity", "summary.freeSpace"])
    crs = retrieve(si, vim.ComputeResource, ["name"])
    size = vcsim.size
    assert len(vms) == store.count(Kind.VM) == size.total_vms
    assert len(hosts) == store.count(Kind.NODE) == size.total_hosts
    assert len(dss) == store.count(Kind.LUN) == size.total_datastores
    assert len(crs) == store.count(Kind.CLUSTER) == size.total_clusters + size.standalone_hosts

    for moid, props in vms.items():
        vm = store.vm(moid)
        assert vm is not None and vm.name == props["name"]
        assert vm.node_id == props["runtime.host"]._moId
        assert vm.cluster_id == hosts[vm.node_id]["parent"]._moId
        assert vm.config_version == props["config.version"]
        assert vm.disk_ids and all(store.get(Kind.DISK, d) for d in vm.disk_ids)
    for moid, props in hosts.items():
        node = store.node(moid)
        assert node is not None and node.name == props["name"] and node.vm_count == size.vms
    for moid, props in dss.items():
        lun = store.lun(moid)
        assert lun is not None and lun.name == props["name"]
        assert lun.total_bytes == props["summary.capacity"]
        assert lun.free_bytes == props["summary.freeSpace"]
        assert lun.role == "datastore"
    clusters = {c.name for c in store.all(Kind.CLUSTER)}
    assert clusters == {p["name"] for p in crs.values()}

    with pytest.raises(ReadOnlyError):
        stream.backend.executor()


# --- live changes ------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_changes_by_a_second_client_arrive_without_polling(
    stream: Stream, vcsim: VcsimHandle
) -> None:
    store = stream.store
    target = vm_by_name(store, "DC0_C0_H1_VM0")
    reads = stream.backend.reads
    other = connect(vcsim)
    try:
        vm = vim.VirtualMachine(target.id, other._stub)
        await asyncio.to_thread(WaitForTask, vm.PowerOffVM_Task())
        # wait_s is 30: anything under that was pushed by WaitForUpdatesEx.
        took = await stream.until(
            lambda: store.vm(target.id).power is PowerState.OFF, 10, "power off seen"
        )
        assert took < 5

        task = await asyncio.to_thread(
            vm.CreateSnapshot_Task, "VEEAM BACKUP TEMPORARY SNAPSHOT", "", False, False
        )
        await asyncio.to_thread(WaitForTask, task)
        snap_id = task.info.result._moId
        took = await stream.until(
            lambda: store.get(Kind.CHECKPOINT, snap_id) is not None, 10, "snapshot seen"
        )
        assert took < 5
        cp = store.get(Kind.CHECKPOINT, snap_id)
        assert isinstance(cp, Checkpoint)
        assert cp.vm_id == target.id and cp.parent_id is None
        assert cp.kind is CheckpointKind.BACKUP
        layout = await asyncio.to_thread(lambda: vm.layoutEx)
        [snap_layout] = [s for s in layout.snapshot if s.key._moId == snap_id]
        files = {f.key: f for f in layout.file}
        assert cp.size_bytes == files[snap_layout.dataKey].size  # vcsim makes no delta disk
        assert cp.created.tzinfo is not None
        # The task shows as a task row for the VM, finished.
        await stream.until(lambda: store.task(task._moId), 10, "task row seen")
        task_row = store.task(task._moId)
        assert task_row is not None
        assert task_row.target == f"vm:{target.id}" and task_row.target_name == target.name
        assert task_row.state is TaskState.OK and task_row.pct == 100
        assert "snapshot" in task_row.kind.lower()

        task = await asyncio.to_thread(vm.CreateSnapshot_Task, "before-patch", "", False, False)
        await asyncio.to_thread(WaitForTask, task)
        child_id = task.info.result._moId
        await stream.until(lambda: store.get(Kind.CHECKPOINT, child_id), 10, "child seen")
        child = store.get(Kind.CHECKPOINT, child_id)
        assert isinstance(child, Checkpoint)
        assert child.parent_id == snap_id and child.kind is CheckpointKind.STANDARD

        snap = vim.vm.Snapshot(child_id, other._stub)
        await asyncio.to_thread(WaitForTask, snap.RemoveSnapshot_Task(removeChildren=False))
        await stream.until(
            lambda: Remove(Kind.CHECKPOINT, child_id) in stream.events, 10, "removal seen"
        )
        assert store.get(Kind.CHECKPOINT, snap_id) is not None

        spec = vim.vm.ConfigSpec(
            extraConfig=[vim.option.OptionValue(key="vcsim.consolidationNeeded", value="true")]
        )
        await asyncio.to_thread(WaitForTask, vm.ReconfigVM_Task(spec))
        await stream.until(
            lambda: store.vm(target.id).consolidation_needed, 10, "consolidationNeeded seen"
        )
        assert stream.backend.reads == reads  # no re-read: pushed updates only
    finally:
        Disconnect(other)


@pytest.mark.timeout(20)
async def test_failed_task_shows_the_fault_message(stream: Stream, vcsim: VcsimHandle) -> None:
    target = vm_by_name(stream.store, "DC0_H0_VM1")
    other = connect(vcsim)
    try:
        vm = vim.VirtualMachine(target.id, other._stub)
        spec = vim.vm.ConfigSpec(
            extraConfig=[
                vim.option.OptionValue(
                    key="vcsim.fail.ConsolidateVMDisks_Task", value="Device or resource busy"
                )
            ]
        )
        await asyncio.to_thread(WaitForTask, vm.ReconfigVM_Task(spec))
        task = await asyncio.to_thread(vm.ConsolidateVMDisks_Task)
        with pytest.raises(vim.fault.GenericVmConfigFault):
            await asyncio.to_thread(WaitForTask, task)
        await stream.until(lambda: stream.store.task(task._moId), 10, "failed task seen")
        row = stream.store.task(task._moId)
        assert row is not None and row.state is TaskState.FAILED
        assert "Device or resource busy" in row.error
        assert row.target == f"vm:{target.id}"
    finally:
        Disconnect(other)


@pytest.mark.timeout(60)
async def test_expired_session_logs_in_again_and_rereads(vcsim: VcsimHandle) -> None:
    admin = connect(vcsim)
    sm = admin.content.sessionManager
    before = {x.key for x in sm.sessionList}  # other tests' sessions stay alone
    s = Stream(VSphereBackend(config_for(vcsim, wait_s=1), password=vcsim.password), vcsim.password)
    try:
        await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected")
        ours = [x.key for x in sm.sessionList if x.key not in before]
        assert len(ours) == 1
        sm.TerminateSession(ours)  # as vCenter does to an idle session
        # Noticed by the next update wait's answer: at the latest the one in flight
        # times out (the socket timeout, 30 s) — once, in a full CI run, nothing came
        # within 10 s (no RECONNECTING either); see stop 12's note.
        config = s.backend.config
        bound = config.wait_s + config.http_timeout_s + 5
        await s.until(lambda: s.backend.reads >= 2, bound, "re-read after re-login")
        await s.until(lambda: s.state() is LinkState.CONNECTED, 10, "connected again")
        reasons = [c.reason for c in s.links() if c.state is LinkState.RECONNECTING]
        assert any("NotAuthenticated" in r for r in reasons)
        assert s.store.count(Kind.VM) == vcsim.size.total_vms
    finally:
        await s.close()
        Disconnect(admin)


# --- TLS, credentials, secrets -----------------------------------------------------


@pytest.mark.timeout(20)
async def test_unknown_ca_is_refused(tmp_path: Path) -> None:
    # 127.0.0.2: pyvmomi would skip verification for 127.0.0.1 without a context.
    with start_vcsim(
        tmp_path / "peer", clusters=0, standalone_hosts=1, vms=1, listen="127.0.0.2:0", quiet=True
    ) as handle:
        other_ca = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other_ca))
        s = Stream(
            VSphereBackend(config_for(handle, ca_file=other_ca), password=handle.password),
            handle.password,
        )
        await asyncio.wait_for(s.task, 10)
        states = [c.state for c in s.links()]
        assert states == [LinkState.CONNECTING, LinkState.DISCONNECTED]
        assert "not trusted" in s.links()[-1].reason
        assert not any(isinstance(e, Upsert) for e in s.events)

        # Control: the right CA is accepted by the same server.
        ok = Stream(VSphereBackend(config_for(handle), password=handle.password), handle.password)
        await ok.until(lambda: ok.state() is LinkState.CONNECTED, 10, "connected")
        await ok.close()


@pytest.mark.timeout(15)
async def test_wrong_password_is_not_retried(vcsim: VcsimHandle) -> None:
    s = Stream(VSphereBackend(config_for(vcsim), password="not-the-password"), "not-the-password")
    await asyncio.wait_for(s.task, 10)
    assert [c.state for c in s.links()] == [LinkState.CONNECTING, LinkState.DISCONNECTED]
    assert "login refused" in s.links()[-1].reason


@pytest.mark.timeout(15)
async def test_password_from_secret_file_or_environment(
    vcsim: VcsimHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    secret = tmp_path / "vsphere.secret"
    secret.write_text(vcsim.password + "\n")
    secret.chmod(0o644)
    with pytest.raises(CredentialError, match="0644"):
        resolve_password(secret_file=secret)
    s = Stream(VSphereBackend(config_for(vcsim, password_file=secret)), vcsim.password)
    await asyncio.wait_for(s.task, 5)  # refused before any network I/O
    assert s.links()[-1].state is LinkState.DISCONNECTED and "chmod 600" in s.links()[-1].reason

    secret.chmod(0o600)
    caplog.set_level(logging.INFO, logger="ventana.backends.vsphere")
    s = Stream(VSphereBackend(config_for(vcsim, password_file=secret)), vcsim.password)
    await s.until(lambda: s.state() is LinkState.CONNECTED, 10, "connected with the file")
    await s.close()
    assert f"secret file {secret}" in s.links()[0].reason

    monkeypatch.setenv("VENTANA_TEST_VSPHERE_PW", vcsim.password)
    s = Stream(
        VSphereBackend(config_for(vcsim, password_env="VENTANA_TEST_VSPHERE_PW")), vcsim.password
    )
    await s.until(lambda: s.state() is LinkState.CONNECTED, 10, "connected with the env var")
    await s.close()
    assert "environment variable VENTANA_TEST_VSPHERE_PW" in s.links()[0].reason
    assert "secret file" in caplog.text and "environment variable" in caplog.text
    assert vcsim.password not in caplog.text

    monkeypatch.delenv("VENTANA_TEST_VSPHERE_PW")
    s = Stream(
        VSphereBackend(config_for(vcsim, password_env="VENTANA_TEST_VSPHERE_PW")), vcsim.password
    )
    await asyncio.wait_for(s.task, 5)
    assert s.links()[-1].state is LinkState.DISCONNECTED and "no vSphere password" in (
        s.links()[-1].reason
    )
    assert os.environ.get("VENTANA_TEST_VSPHERE_PW") is None


# --- losing the server --------------------------------------------------------------


@pytest.mark.timeout(40)
async def test_server_restart_goes_stale_then_reconnects_and_rereads(tmp_path: Path) -> None:
    peer = tmp_path / "peer"
    handle = start_vcsim(peer, clusters=0, standalone_hosts=2, vms=1, datastores=1, quiet=True)
    s = Stream(VSphereBackend(config_for(handle), password=handle.password), handle.password)
    try:
        await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected")
        old_luns = {lun.id for lun in s.store.all(Kind.LUN)}
        assert len(old_luns) == 1 and s.store.count(Kind.VM) == 2

        handle.stop()
        await s.until(lambda: s.state() is LinkState.RECONNECTING, 10, "reconnecting")
        stale = [c for c in s.links() if c.state is LinkState.STALE]
        assert len(stale) == 1 and stale[0].reason.startswith("connection lost: ")
        assert s.store.stale and not s.task.done()
        await s.until(
            lambda: sum(c.state is LinkState.RECONNECTING for c in s.links()) >= 3,
            10,
            "several attempts with backoff",
        )

        # Same address, same password; the new certificate is signed by a new CA
        # written to the same ca_path, which each login reads again.
        handle = start_vcsim(
            peer,
            clusters=0,
            standalone_hosts=2,
            vms=1,
            datastores=1,
            listen=f"127.0.0.1:{handle.port}",
            password=handle.password,
            quiet=True,
        )
        await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected again")
        assert s.backend.reads == 2
        new_luns = {lun.id for lun in s.store.all(Kind.LUN)}
        # The simulator's datastore morefs are new paths: the old one is removed.
        assert len(new_luns) == 1 and new_luns != old_luns
        assert any(isinstance(e, Remove) and e.id in old_luns for e in s.events)
        assert s.store.count(Kind.VM) == 2 and not s.store.stale
    finally:
        await s.close()
        handle.stop()


# --- actions (writable sessions only) -------------------------------------------------


@pytest.fixture
async def writable(vcsim: VcsimHandle) -> AsyncIterator[Stream]:
    backend = VSphereBackend(config_for(vcsim, read_only=False), password=vcsim.password)
    s = Stream(backend, vcsim.password)
    await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected")
    yield s
    await s.close()


async def snapshot_via(other, vm_id: str, name: str) -> str:
    vm = vim.VirtualMachine(vm_id, other._stub)
    task = await asyncio.to_thread(vm.CreateSnapshot_Task, name, "", False, False)
    await asyncio.to_thread(WaitForTask, task)
    return task.info.result._moId


async def reconfig_via(other, vm_id: str, key: str, value: str) -> None:
    vm = vim.VirtualMachine(vm_id, other._stub)
    spec = vim.vm.ConfigSpec(extraConfig=[vim.option.OptionValue(key=key, value=value)])
    await asyncio.to_thread(WaitForTask, vm.ReconfigVM_Task(spec))


def recent_tasks(si) -> int:
    return len(si.content.taskManager.recentTask)


@pytest.mark.timeout(20)
async def test_read_only_refuses_before_any_request(writable: Stream, si) -> None:
    backend = writable.backend
    target = vm_by_name(writable.store, "DC0_H0_VM0")
    executor = backend.executor()
    backend.set_read_only(True)
    before = recent_tasks(si)
    for call in (
        executor.merge(target.id, "t-ro-1"),
        executor.consolidate(target.id, "t-ro-2"),
        executor.remove_snapshot("snapshot-1", "t-ro-3"),
        executor.cancel("t-ro-1"),
    ):
        with pytest.raises(ReadOnlyError):
            await call
    with pytest.raises(ReadOnlyError):
        backend.executor()
    assert recent_tasks(si) == before  # nothing reached the server
    assert writable.store.task("t-ro-1") is None


@pytest.mark.timeout(30)
async def test_merge_through_the_action_runner(
    writable: Stream, vcsim: VcsimHandle, tmp_path: Path
) -> None:
    store = writable.store
    target = vm_by_name(store, "DC0_C0_H0_VM0")
    other = connect(vcsim)
    try:
        # Removal "succeeds" but leaves consolidationNeeded: the merge consolidates.
        await reconfig_via(
            other, target.id, "vcsim.removeSnapshot.leavesConsolidationNeeded", "true"
        )
        first = await snapshot_via(other, target.id, "pre-upgrade")
        second = await snapshot_via(other, target.id, "post-upgrade")
        await writable.until(
            lambda: {c.id for c in store.checkpoints_of(target.id)} == {first, second},
            10,
            "both snapshots seen",
        )
    finally:
        Disconnect(other)

    with ActionLog.open(tmp_path / "actions.db") as log:
        runner = ActionRunner(store, writable.backend, log)
        plan = runner.plan("merge", target.id)
        assert not plan.blocking, plan.findings
        result = await asyncio.wait_for(runner.execute(plan, plan.target_name), 15)
        assert result.state is TaskState.OK, result.error

    await writable.until(lambda: not store.checkpoints_of(target.id), 10, "checkpoints gone")
    await writable.until(lambda: not store.vm(target.id).consolidation_needed, 10, "consolidated")

    def merge_rows() -> list:
        return [t for t in store.tasks() if t.kind == "merge" and t.target == f"vm:{target.id}"]

    await writable.until(lambda: merge_rows()[0].state.finished, 10, "merge row finished")
    rows = merge_rows()
    assert len(rows) == 1 and rows[0].state is TaskState.OK and rows[0].pct == 100
    assert rows[0].ended is not None and rows[0].target_name == target.name
    progress = [
        e for e in writable.events if isinstance(e, TaskProgress) and e.task_id == rows[0].id
    ]
    assert any("remove all snapshots" in e.message for e in progress)
    assert any("consolidate disks" in e.message for e in progress)
    # The vSphere tasks the action started feed its row; they are not shown twice.
    vsphere_kinds = {t.kind for t in store.tasks_for(f"vm:{target.id}")} - {"merge"}
    assert not any("removeallsnapshots" in k.lower() for k in vsphere_kinds), vsphere_kinds
    assert not any("consolidate" in k.lower() for k in vsphere_kinds), vsphere_kinds


@pytest.mark.timeout(20)
async def test_a_failed_removal_is_failed_with_the_fault_message(
    writable: Stream, vcsim: VcsimHandle
) -> None:
    store = writable.store
    target = vm_by_name(store, "DC0_C0_H0_VM1")
    other = connect(vcsim)
    try:
        snap = await snapshot_via(other, target.id, "held-by-backup-proxy")
        await reconfig_via(
            other, target.id, "vcsim.fail.RemoveAllSnapshots_Task", "msg.snapshot.error-DISKLOCKED"
        )
        await writable.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
        result = await asyncio.wait_for(writable.backend.executor().merge(target.id, "t-fail"), 10)
        assert result.state is TaskState.FAILED
        assert "msg.snapshot.error-DISKLOCKED" in result.error
        await writable.until(
            lambda: store.task("t-fail") and store.task("t-fail").state is TaskState.FAILED,
            10,
            "failed row",
        )
        assert store.get(Kind.CHECKPOINT, snap) is not None  # nothing was removed
        await reconfig_via(other, target.id, "vcsim.fail.RemoveAllSnapshots_Task", "")
    finally:
        Disconnect(other)


@pytest.mark.timeout(20)
async def test_remove_snapshot_that_leaves_consolidation_needed_is_a_warning(
    writable: Stream, vcsim: VcsimHandle
) -> None:
    store = writable.store
    target = vm_by_name(store, "DC0_C0_H1_VM1")
    other = connect(vcsim)
    try:
        await reconfig_via(
            other, target.id, "vcsim.removeSnapshot.leavesConsolidationNeeded", "true"
        )
        snap = await snapshot_via(other, target.id, "nightly")
        await writable.until(lambda: store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")
    finally:
        Disconnect(other)
    executor = writable.backend.executor()
    result = await asyncio.wait_for(executor.remove_snapshot(snap, "t-remove"), 10)
    assert result.state is TaskState.WARNING and "consolidation" in result.error
    await writable.until(lambda: store.vm(target.id).consolidation_needed, 10, "flag seen")
    assert store.get(Kind.CHECKPOINT, snap) is None

    result = await asyncio.wait_for(executor.consolidate(target.id, "t-consolidate"), 10)
    assert result.state is TaskState.OK, result.error
    await writable.until(lambda: not store.vm(target.id).consolidation_needed, 10, "flag cleared")
    assert await executor.cancel("t-consolidate") is False  # finished: nothing to cancel


class Pausable:
    """A vcsim of the test's own that it stops (SIGSTOP: the server answers nothing,
    its sockets stay open) and resumes."""

    def __init__(self, handle: VcsimHandle) -> None:
        self.handle = handle
        self.stopped = False

    def stop(self) -> None:
        os.kill(self.handle.process.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        if self.stopped:
            os.kill(self.handle.process.pid, signal.SIGCONT)
            self.stopped = False


@contextlib.asynccontextmanager
async def paused_peer(handle: VcsimHandle, backend: VSphereBackend
                      ) -> AsyncIterator[tuple[Stream, object, Pausable]]:
    """The backend's stream, a second client and the pausable peer; on the way out the
    peer is resumed, the client and the stream are closed and the peer stopped."""
    s = Stream(backend, handle.password)
    other = connect(handle)
    peer = Pausable(handle)
    try:
        yield s, other, peer
    finally:
        peer.resume()
        Disconnect(other)
        await s.close()
        handle.stop()


@pytest.mark.timeout(40)
async def test_no_answer_after_the_request_is_unknown_and_never_resent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = start_vcsim(tmp_path / "peer", clusters=0, standalone_hosts=1, vms=1, quiet=True)
    backend = VSphereBackend(
        config_for(handle, read_only=False, wait_s=1, http_timeout_s=1),  # 6 s socket timeout
        password=handle.password,
    )
    async with paused_peer(handle, backend) as (s, other, peer):
        await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected")
        [vm] = list(s.store.vms())
        snap = await snapshot_via(other, vm.id, "before-freeze")
        await s.until(lambda: s.store.get(Kind.CHECKPOINT, snap), 10, "snapshot seen")

        # The server goes silent right after the pre-send VM_BUSY check (a read),
        # so the removal request is the first call it does not answer.
        checked = Session.busy_tasks

        def then_silent(self: Session, vm_id: str) -> list:
            out = checked(self, vm_id)
            peer.stop()
            return out

        monkeypatch.setattr(Session, "busy_tasks", then_silent)
        result = await asyncio.wait_for(backend.executor().merge(vm.id, "t-unknown"), 15)
        assert result.state is TaskState.UNKNOWN and "verify on the host" in result.error
        await s.until(lambda: s.state() is LinkState.RECONNECTING, 10, "link down")

        peer.resume()
        await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected again")
        row = s.store.task("t-unknown")
        assert row is not None and row.state is TaskState.UNKNOWN
        # The state is re-read, not assumed; the removal was sent at most once.
        content = other.content
        server_vm = vim.VirtualMachine(vm.id, other._stub)
        on_server = {
            t.snapshot._moId for t in (getattr(server_vm.snapshot, "rootSnapshotList", None) or [])
        }
        await s.until(
            lambda: {c.id for c in s.store.checkpoints_of(vm.id)} == on_server, 10, "re-read"
        )
        removals = [
            t
            for t in content.taskManager.recentTask
            if "RemoveAllSnapshots" in str(t.info.descriptionId)
        ]
        assert len(removals) <= 1


@pytest.mark.timeout(60)
async def test_a_slow_server_is_not_a_lost_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update wait that gets no answer within the socket timeout from a server that
    still answers a cheap call is asked again: the link stays CONNECTED (its reason
    says the server is slow, until the next answer), nothing is read again in full,
    and a change made meanwhile arrives. (A server that answers nothing at all is a
    lost connection: ``test_no_answer_after_the_request_is_unknown_and_never_resent``.)
    """
    handle = start_vcsim(tmp_path / "peer", clusters=0, standalone_hosts=1, vms=2, quiet=True)
    backend = VSphereBackend(config_for(handle, wait_s=1, http_timeout_s=1),  # 6 s timeout
                             password=handle.password)
    probed = Session.keep_alive

    answered = 0
    waited = Session.wait

    def counted(self: Session, max_wait_s: int) -> object:
        nonlocal answered
        out = waited(self, max_wait_s)
        answered += 1
        return out

    monkeypatch.setattr(Session, "wait", counted)
    async with paused_peer(handle, backend) as (s, other, peer):

        def back_when_probed(self: Session) -> None:
            # The server resumes as the backend asks whether it answers: slow, not gone.
            peer.resume()
            probed(self)

        await s.until(lambda: s.state() is LinkState.CONNECTED, 15, "connected")
        # Stopped while a wait is pending at the server: one empty wait (wait_s) has
        # come back and the next has had time to reach vcsim. vcsim keeps no version
        # history, so a change handed to a request it reads only after it resumes —
        # one the client has given up — would be lost there (a vCenter returns every
        # change since the version asked: pyvmomi docs/vmodl/query/PropertyCollector.rst).
        await s.until(lambda: answered >= 2, 15, "an empty update wait")
        await asyncio.sleep(0.5)
        monkeypatch.setattr(Session, "keep_alive", back_when_probed)
        peer.stop()
        await s.until(lambda: backend.slow_waits >= 1, 20, "a wait timed out")
        [said] = [e for e in s.links() if "slow" in e.reason]
        assert said.state is LinkState.CONNECTED and "still connected" in said.reason
        vm = sorted(s.store.vms(), key=lambda v: v.name)[0]
        assert vm.power is PowerState.RUNNING
        WaitForTask(vim.VirtualMachine(vm.id, other._stub).PowerOffVM_Task(), si=other)
        await s.until(lambda: s.store.vm(vm.id).power is PowerState.OFF, 15, "change seen")
        await s.until(lambda: s.state() is LinkState.CONNECTED and "slow" not in
                      s.links()[-1].reason, 15, "the slow note cleared")
        states = [e.state for e in s.links()]
        assert LinkState.STALE not in states and LinkState.RECONNECTING not in states
        assert backend.reads == 1  # never read again in full


# --- mapping (no network) ------------------------------------------------------------


def test_snapshot_size_joins_the_tree_with_layout_ex() -> None:
    def f(key: int, name: str, kind: str, size: int) -> SimpleNamespace:
        return SimpleNamespace(key=key, name=name, type=kind, size=size)

    def chain(*units: tuple[int, ...]) -> SimpleNamespace:
        return SimpleNamespace(key=2000, chain=[SimpleNamespace(fileKey=list(u)) for u in units])

    def ref(moid: str) -> SimpleNamespace:
        return SimpleNamespace(_moId=moid)

    layout = SimpleNamespace(
        file=[
            f(1, "[ds] vm/vm.vmdk", "diskDescriptor", 1),
            f(2, "[ds] vm/vm-flat.vmdk", "diskExtent", 100),
            f(3, "[ds] vm/vm-000001.vmdk", "diskDescriptor", 1),
            f(4, "[ds] vm/vm-000001-delta.vmdk", "diskExtent", 30),
            f(5, "[ds] vm/vm-000002.vmdk", "diskDescriptor", 1),
            f(6, "[ds] vm/vm-000002-delta.vmdk", "diskExtent", 7),
            f(7, "[ds] vm/vm-Snapshot1.vmsn", "snapshotData", 5),
            f(8, "[ds] vm/vm-Snapshot2.vmsn", "snapshotData", 6),
            f(9, "[ds] vm/vm-Snapshot2.vmem", "snapshotMemory", 50),
        ],
        disk=[chain((1, 2), (3, 4), (5, 6))],
        snapshot=[
            SimpleNamespace(key=ref("s1"), dataKey=7, memoryKey=-1, disk=[chain((1, 2))]),
            SimpleNamespace(key=ref("s2"), dataKey=8, memoryKey=9, disk=[chain((1, 2), (3, 4))]),
        ],
    )
    # As the vSphere Client / PowerCLI / govc count: s1 (a root) its state file
    # only (the base disk is not its own); s2 (current) state + memory + the
    # delta written since s1 (000001) + the running delta (000002).
    assert snapshot_size(layout, "s1") == (5, "[ds] vm/vm-000001.vmdk")
    assert snapshot_size(layout, "s2", parent="s1", current=True) == (
        6 + 50 + 1 + 30 + 1 + 7, "[ds] vm/vm-000002.vmdk")
    assert snapshot_size(layout, "missing") == (0, "")
    # The sizes add up to the files beyond the base disk: nothing counted twice.
    total = snapshot_size(layout, "s1")[0] + snapshot_size(layout, "s2", parent="s1",
                                                           current=True)[0]
    assert total == sum(x.size for x in layout.file) - 1 - 100
    # Memory kept in the state file (memoryKey == dataKey): that file counts once.
    layout.snapshot[1].memoryKey = 8
    assert snapshot_size(layout, "s2", parent="s1", current=True)[0] == 6 + 1 + 30 + 1 + 7

    # Revert to s1 (current again), then run on a new delta (000003): the running
    # delta is s1's; s2 keeps the delta of its own branch (000001), not the new one.
    layout.file.append(f(10, "[ds] vm/vm-000003.vmdk", "diskDescriptor", 1))
    layout.file.append(f(11, "[ds] vm/vm-000003-delta.vmdk", "diskExtent", 4))
    layout.file = [x for x in layout.file if x.key not in (5, 6)]  # 000002 discarded
    layout.disk = [chain((1, 2), (10, 11))]
    assert snapshot_size(layout, "s1", current=True) == (5 + 1 + 4, "[ds] vm/vm-000001.vmdk")
    assert snapshot_size(layout, "s2", parent="s1") == (6 + 1 + 30, "[ds] vm/vm-Snapshot2.vmsn")


def test_backup_markers() -> None:
    assert is_backup_snapshot("VEEAM BACKUP TEMPORARY SNAPSHOT", "")
    assert is_backup_snapshot("__GX_BACKUP__", "")
    assert is_backup_snapshot("snap", "Created by Commvault job 1234")
    assert not is_backup_snapshot("before-patch", "operator snapshot")
