"""The Hyper-V backend's read path against the WinRM/PSRP test peer.

Each test starts real endpoints (HTTPS with a trustme CA the client verifies,
NTLM) serving the Hyper-V/FailoverClusters commands from a simulated
cluster (tests/peers/winrm/hyperv.py), and drives ``HyperVBackend`` through
its event stream: the inventory matches what the endpoints serve, a change
on the server side arrives within the poll interval, wrong credentials and
an untrusted CA are refused with a clear reason, a stopped endpoint makes
its node stale and the backend reconnects when it is back, the password
never appears in an event or a log record; a merge reports progress and
ends OK, FAILED (part-way, with the reason) or UNKNOWN (connection lost),
and a read-only session never sends a mutating command. Every test is
bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from peers.winrm.cmdlets import CommandWriter
from peers.winrm.fixture import PeerHandle, generate_password, start_winrm_peer
from peers.winrm.hyperv import (
    BACKUP_SERVICE,
    BACKUP_VERSION_KEY,
    ClusterModel,
    build_hyperv_registry,
)
from peers.winrm.hyperv.profile import MODES

from ventana.backends.actions import ActionRunner
from ventana.backends.base import ReadOnlyError
from ventana.backends.hyperv import (
    Credential,
    CredentialError,
    HyperVBackend,
    HyperVConfig,
    resolve_password,
)
from ventana.backends.hyperv import mapping as m
from ventana.backends.hyperv.backend import HyperVExecutor
from ventana.backends.hyperv.commands import (
    MUTATING_CMDLETS,
    READ_CMDLETS,
    remove_all_snapshots,
)
from ventana.backends.sim import SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.events import (
    ConnectionChanged,
    Event,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from ventana.state.model import (
    MB,
    CheckpointKind,
    Entity,
    FinalState,
    IntegrationState,
    Key,
    Kind,
    LunRole,
    NodeState,
    PowerState,
    ServiceState,
    TaskState,
    key_of,
)
from ventana.state.store import Store

POLL = 0.3


#: The endpoint's host profiles (tests/peers/winrm/hyperv/profile.py): the console's
#: Hyper-V tests marked with it run against each.
ALL_MODES = list(MODES)


def make_model(mode: str = "server2019") -> ClusterModel:
    return ClusterModel(SimConfig(vms=12, nodes=2, rate=0), profile=MODES[mode])


class Feed:
    """Consumes a backend's events in the background; tests wait on conditions."""

    def __init__(self, backend: HyperVBackend, store: Store | None = None) -> None:
        self.backend = backend
        self.store = store
        self.events: list[Event] = []
        self.state: dict[Key, Entity] = {}
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        stream: AsyncIterator[Event] = self.backend.events()
        async for event in stream:
            self.events.append(event)
            if self.store is not None:
                self.store.apply(event)
            if isinstance(event, Upsert):
                self.state[key_of(event.entity)] = event.entity
            elif isinstance(event, Remove):
                self.state.pop((event.kind, event.id), None)
            self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out waiting for {what}; last events: {self.events[-5:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def links(self, source: str | None = None) -> list[ConnectionChanged]:
        return [
            e
            for e in self.events
            if isinstance(e, ConnectionChanged) and (source is None or e.source == source)
        ]

    def last_state(self, source: str) -> LinkState | None:
        links = self.links(source)
        return links[-1].state if links else None

    def of(self, kind: Kind) -> dict[str, Any]:
        return {k[1]: v for k, v in self.state.items() if k[0] is kind}

    async def close(self) -> None:
        await self.backend.close()
        try:
            await asyncio.wait_for(self._task, 10)
        except TimeoutError:
            self._task.cancel()
        # Let pools being discarded in the background finish before a peer stops.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            t.name.startswith("psrp-") for t in threading.enumerate()
        ):
            await asyncio.sleep(0.05)


def config_for(handles: list[PeerHandle], ca: str, **kwargs: Any) -> HyperVConfig:
    options: dict[str, Any] = {
        "nodes": tuple(f"127.0.0.1:{h.port}" for h in handles),
        "auth": "ntlm",
        "ca_bundle": ca,
        "poll_interval": POLL,
        "command_timeout": 10.0,
        "connection_timeout": 5.0,
        "backoff_initial": 0.2,
        "backoff_max": 1.0,
        "backup_service": BACKUP_SERVICE,
        "backup_version_key": BACKUP_VERSION_KEY,
    }
    options.update(kwargs)
    return HyperVConfig("HVCLUSTER01", handles[0].user, **options)


@pytest.fixture
def one_peer(request: pytest.FixtureRequest) -> Iterator[tuple[ClusterModel, PeerHandle]]:
    """One endpoint for the whole cluster (parametrize indirectly with a host mode)."""
    model = make_model(getattr(request, "param", "server2019"))
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        yield model, handle
    finally:
        handle.stop()


def backend_for(handle: PeerHandle, **kwargs: Any) -> HyperVBackend:
    password = kwargs.pop("password", handle.password)
    config = config_for([handle], kwargs.pop("ca", handle.ca_path), **kwargs)
    return HyperVBackend(config, Credential(handle.user, password, "given"))


# -- inventory -------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ALL_MODES)
async def test_inventory_matches_what_the_nodes_serve(tmp_path: Path, mode: str) -> None:
    model = make_model(mode)
    node_names = sorted(model.nodes)
    password = generate_password()
    handles = [
        start_winrm_peer(registry=build_hyperv_registry(model, name), password=password)
        for name in node_names
    ]
    try:
        bundle = tmp_path / "cas.pem"
        bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
        backend = HyperVBackend(
            config_for(handles, str(bundle)), Credential(handles[0].user, handles[0].password, "t")
        )
        feed = Feed(backend)
        start = time.monotonic()
        await feed.until(
            lambda: all(feed.last_state(s) is LinkState.CONNECTED for s in backend.sources),
            20,
            "both nodes connected",
        )
        elapsed = time.monotonic() - start
        for source in backend.sources:
            states = [e.state for e in feed.links(source)]
            assert states[:2] == [LinkState.CONNECTING, LinkState.CONNECTED]
        # Every upsert of the first read came before that node's CONNECTED.
        first_connected = next(
            i for i, e in enumerate(feed.events) if getattr(e, "state", None) is LinkState.CONNECTED
        )
        assert any(isinstance(e, Upsert) for e in feed.events[:first_connected])

        # VMs
        vms = feed.of(Kind.VM)
        assert set(vms) == set(model.vms)
        for vm_id, want in model.vms.items():
            got = vms[vm_id]
            assert (got.name, got.node_id, got.power) == (want.name, want.node_id, want.power)
            assert (got.generation, got.config_version, got.vcpus, got.memory_mb) == (
                want.generation,
                want.config_version,
                want.vcpus,
                want.memory_mb,
            )
            assert got.disk_ids == want.disk_ids
            assert got.lun_id == want.lun_id
            assert (got.replication, got.replication_health, got.replica_target) == (
                want.replication,
                want.replication_health,
                want.replica_target,
            )
            assert got.integration == want.integration
        # Disks: every file of every chain, with sizes and parents.
        disks = feed.of(Kind.DISK)
        assert set(disks) == set(model.disks)
        for disk_id, want in model.disks.items():
            got = disks[disk_id]
            assert (got.vm_id, got.path, got.format, got.parent_path, got.lun_id) == (
                want.vm_id,
                want.path,
                want.format,
                want.parent_path,
                want.lun_id,
            )
            assert (got.size_bytes, got.max_bytes) == (want.size_bytes, want.max_bytes)
        # Checkpoints: ids, names, parents, times, kinds (production reads as standard).
        cps = feed.of(Kind.CHECKPOINT)
        assert set(cps) == set(model.checkpoints)
        for cp_id, want in model.checkpoints.items():
            got = cps[cp_id]
            assert (got.vm_id, got.name, got.parent_id) == (want.vm_id, want.name, want.parent_id)
            assert abs((got.created - want.created).total_seconds()) < 1
            kind = CheckpointKind.STANDARD if want.kind is CheckpointKind.PRODUCTION else want.kind
            assert got.kind == kind
            assert (got.disk_path, got.size_bytes) == (want.disk_path, want.size_bytes)
        # CSVs: names, owners and space (MSCluster_DiskPartition reports whole MB).
        luns = feed.of(Kind.LUN)
        csvs = {x.id: x for x in model.luns.values() if x.role is LunRole.CSV}
        assert set(luns) == set(csvs)
        for lun_id, want in csvs.items():
            got = luns[lun_id]
            assert (got.name, got.owner_node_id, got.state) == (
                want.name,
                want.owner_node_id,
                want.state,
            )
            assert got.total_bytes == want.total_bytes // MB * MB
            assert got.free_bytes == want.free_bytes // MB * MB
        # The backup agent is read right after the first inventory (it does not hold the
        # picture up): until then "not checked" (state unknown, no version), never a guess.
        for event in feed.events[:first_connected]:
            if isinstance(event, Upsert) and event.entity.KIND is Kind.NODE:
                assert event.entity.backup_agent_state is ServiceState.UNKNOWN
                assert event.entity.backup_agent_version is None
        await feed.until(
            lambda: all(
                (n := feed.of(Kind.NODE).get(name)) is not None
                and n.backup_agent_state is want.backup_agent_state
                for name, want in model.nodes.items()
            ),
            10,
            "the backup agents read after the inventory",
        )
        # Nodes: state, VM count, CSVs owned, backup agent.
        nodes = feed.of(Kind.NODE)
        assert sorted(nodes) == node_names
        for name, want in model.nodes.items():
            got = nodes[name]
            assert got.state is NodeState.UP
            assert got.vm_count == want.vm_count
            assert set(got.csv_owned) == set(want.csv_owned)
            assert (got.backup_agent_state, got.backup_agent_version) == (
                want.backup_agent_state,
                want.backup_agent_version,
            )
        [cluster] = feed.of(Kind.CLUSTER).values()
        assert (cluster.name, cluster.nodes) == ("HVCLUSTER01", 2)
        # Only read commands went out.
        sent = {name for s in backend.sessions() for name in s.sent}
        assert sent <= READ_CMDLETS
        assert elapsed < 15, f"first full inventory took {elapsed:.1f} s"
        await feed.close()
    finally:
        for h in handles:
            h.stop()


# -- live changes ------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_server_side_changes_arrive_within_the_poll_interval(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = one_peer
    backend = backend_for(handle)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    # One endpoint answers for the whole cluster: VMs still count on their own hosts.
    counts = {n.id: n.vm_count for n in feed.of(Kind.NODE).values()}
    assert counts == {n.id: n.vm_count for n in model.nodes.values()}
    # The VMs' backup facts come with the second poll (the first poll reads only the
    # agent, so they never delay the first inventory): wait for them, then settle.
    await feed.until(lambda: all(v.storage_paths for v in feed.of(Kind.VM).values()), 20,
                     "the VMs' backup facts (second poll)")
    await asyncio.sleep(POLL * 3)
    settled = len(feed.events)
    await asyncio.sleep(POLL * 3)
    assert feed.events[settled:] == []  # nothing changed: nothing emitted

    vm = next(v for v in model.vms.values() if v.power is PowerState.RUNNING)
    start = time.monotonic()
    model.set_power(vm.id, PowerState.OFF)
    await feed.until(
        lambda: feed.state[(Kind.VM, vm.id)].power is PowerState.OFF, 5, "the VM powered off"
    )
    latency = time.monotonic() - start
    assert feed.state[(Kind.VM, vm.id)].integration is IntegrationState.OFF
    changed = [e for e in feed.events[settled:] if isinstance(e, Upsert)]
    assert {key_of(e.entity) for e in changed} <= {(Kind.VM, vm.id), (Kind.NODE, vm.node_id)}
    # One poll interval, plus the time one poll takes against the peer.
    assert latency < POLL + 2.0, f"change took {latency:.2f} s"

    cp_id = model.add_checkpoint(vm.id, "before patching", CheckpointKind.STANDARD)
    new_files = set(model.files[cp_id])
    await feed.until(
        lambda: (
            (Kind.CHECKPOINT, cp_id) in feed.state
            and all((Kind.DISK, f) in feed.state for f in new_files)
        ),
        5,
        "the new checkpoint and its files",
    )
    cp = feed.state[(Kind.CHECKPOINT, cp_id)]
    assert cp.name == "before patching" and cp.vm_id == vm.id

    model.remove_checkpoint(cp_id)
    await feed.until(
        lambda: (
            (Kind.CHECKPOINT, cp_id) not in feed.state
            and not any((Kind.DISK, f) in feed.state for f in new_files)
        ),
        5,
        "the checkpoint removed",
    )
    removed = {(e.kind, e.id) for e in feed.events if isinstance(e, Remove)}
    assert (Kind.CHECKPOINT, cp_id) in removed

    lun = next(x for x in model.luns.values() if x.role is LunRole.CSV)
    model.set_free(lun.id, 26 * MB)
    await feed.until(
        lambda: feed.state[(Kind.LUN, lun.id)].free_bytes == 26 * MB, 5, "CSV free space"
    )
    await feed.close()
    assert feed.last_state(source) is LinkState.DISCONNECTED


# -- failures ------------------------------------------------------------------------------


@pytest.mark.timeout(20)
async def test_wrong_password_is_a_clear_error_and_not_retried(
    one_peer: tuple[ClusterModel, PeerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, handle = one_peer
    wrong = "not-" + handle.password
    backend = backend_for(handle, password=wrong)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.DISCONNECTED, 15, "refused login")
    reason = feed.links(source)[-1].reason
    assert "password was refused" in reason and "authentication failed" in reason
    await asyncio.sleep(0.5)
    assert feed.last_state(source) is LinkState.DISCONNECTED  # no retry loop
    assert not feed.state
    await feed.close()
    text = "\n".join(repr(e) for e in feed.events) + "\n".join(
        r.getMessage() for r in caplog.records
    )
    assert wrong not in text and handle.password not in text
    assert wrong not in repr(backend)


@pytest.mark.timeout(20)
async def test_unknown_ca_is_refused_retried_and_recovers_once_fixed(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path
) -> None:
    """Nothing is sent over an untrusted connection; the node is retried with backoff
    and recovers when its certificate (here: the CA bundle) is fixed."""
    _, handle = one_peer
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))  # not the endpoint's CA
    backend = backend_for(handle, ca=str(bundle))
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: any("signed by a CA not trusted here" in e.reason
                                 for e in feed.links(source)), 15, "refused TLS")
    assert feed.last_state(source) is not LinkState.CONNECTED
    assert not feed.state
    assert handle.peer.service.shell_count() == 0
    bundle.write_text(Path(handle.ca_path).read_text())  # the right CA now
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 15, "recovered")
    assert feed.of(Kind.VM)
    await feed.close()


@pytest.mark.timeout(40)
async def test_stopped_endpoint_goes_stale_then_reconnects(
    one_peer: tuple[ClusterModel, PeerHandle], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    model, handle = one_peer
    backend = backend_for(handle)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    count = len(feed.state)

    await feed.until(lambda: backend.streaming.get(source) is True, 10, "the stream up")
    killed = time.monotonic()
    await asyncio.to_thread(handle.peer.stop)
    await feed.until(lambda: feed.last_state(source) is not LinkState.CONNECTED, 15, "stale")
    # Within one poll interval (plus the stop itself), naming the node and why.
    assert time.monotonic() - killed < POLL + 2.0
    stale = [e for e in feed.links(source) if e.state is LinkState.STALE]
    assert stale and stale[0].reason and stale[0].reason.startswith("HV-NODE-01")
    assert len(feed.state) == count  # entities stay (shown stale), nothing removed
    await asyncio.sleep(1.0)
    assert any(e.state is LinkState.RECONNECTING for e in feed.links(source))

    vm = next(v for v in model.vms.values() if v.power is PowerState.RUNNING)
    model.set_power(vm.id, PowerState.SAVED)  # changed while the node was away
    await asyncio.to_thread(handle.peer.start)
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 15, "reconnected")
    await feed.until(
        lambda: feed.state[(Kind.VM, vm.id)].power is PowerState.SAVED, 5, "the missed change"
    )
    assert len(feed.state) == count
    await feed.close()

    text = "\n".join(repr(e) for e in feed.events) + "\n".join(
        r.getMessage() for r in caplog.records
    )
    assert handle.password not in text


@pytest.mark.timeout(30)
async def test_a_command_past_its_time_limit_is_stopped_and_the_pool_replaced(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    _, handle = one_peer
    registry = handle.peer.registry
    real = registry.get("Get-VMReplication")
    assert real is not None
    slow = {"on": False}

    def maybe_slow(params: dict[str, Any], writer: CommandWriter) -> None:
        if slow["on"] and writer.wait(20):
            return  # stopped by the client
        real(params, writer)

    registry.register("Get-VMReplication", maybe_slow)
    backend = backend_for(handle, command_timeout=1.0)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    creates = handle.peer.service.stats["Create"]
    slow["on"] = True
    await feed.until(lambda: feed.last_state(source) is not LinkState.CONNECTED, 10, "stale")
    stale = next(e for e in feed.links(source) if e.state is LinkState.STALE)
    assert "took longer than 1 s" in stale.reason
    slow["on"] = False
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 15, "reconnected")
    assert handle.peer.service.stats["Create"] > creates  # the stuck pool was replaced
    await feed.close()


# -- merge and read-only ---------------------------------------------------------------


def vm_with_checkpoints(model: ClusterModel, least: int = 2) -> str:
    return next(v for v, chain in model.chains.items() if len(chain) >= least)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("one_peer", ALL_MODES, indirect=True)
async def test_merge_reports_progress_and_removes_every_checkpoint(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = one_peer
    backend = backend_for(handle, read_only=False)
    feed = Feed(backend)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    vm_id = vm_with_checkpoints(model)
    cps = list(model.chains[vm_id])
    result = await backend.executor().merge(vm_id, "merge-t1")
    assert result.state is TaskState.OK, result.error
    assert result.final_state is FinalState.OPERATIONAL
    assert result.size_before and result.size_after and result.size_after <= result.size_before
    await feed.until(
        lambda: feed.state[(Kind.TASK, "merge-t1")].state is TaskState.OK, 5, "task finished"
    )
    progress = [e for e in feed.events if isinstance(e, TaskProgress) and e.task_id == "merge-t1"]
    assert len(progress) >= 3
    assert [p.pct for p in progress] == sorted(p.pct for p in progress)
    assert "checkpoint 1 of" in progress[0].message
    await feed.until(
        lambda: not any((Kind.CHECKPOINT, c) in feed.state for c in cps), 5, "checkpoints gone"
    )
    task = feed.state[(Kind.TASK, "merge-t1")]
    assert (task.state, task.pct) == (TaskState.OK, 100.0)
    assert model.chains[vm_id] == [] and "Remove-VMSnapshot" in model.calls
    assert await backend.executor().cancel("merge-t1") is False
    await feed.close()


@pytest.mark.timeout(30)
async def test_merge_failing_half_way_is_failed_with_the_reason(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = one_peer
    backend = backend_for(handle, read_only=False)
    feed = Feed(backend)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    vm_id = vm_with_checkpoints(model)
    before = len(model.chains[vm_id])
    model.merge_fail_after = 1
    result = await backend.executor().merge(vm_id, "merge-t2")
    assert result.state is TaskState.FAILED
    assert "being used by another process" in result.error
    assert result.final_state is FinalState.PARTIAL
    assert len(model.chains[vm_id]) == before - 1
    await feed.until(
        lambda: feed.state[(Kind.TASK, "merge-t2")].state is TaskState.FAILED, 5, "task failed"
    )
    task = feed.state[(Kind.TASK, "merge-t2")]
    assert task.state is TaskState.FAILED and "another process" in task.error
    # The row keeps the last progress seen (the first checkpoint merged: 25 % or more).
    assert task.pct >= 25.0 and "checkpoint" in task.message
    left = [c for c in feed.of(Kind.CHECKPOINT).values() if c.vm_id == vm_id]
    assert len(left) == before - 1  # re-read after the failure
    await feed.close()


@pytest.mark.timeout(30)
async def test_connection_lost_mid_merge_is_unknown(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = one_peer
    backend = backend_for(handle, read_only=False, operation_timeout=2)
    feed = Feed(backend)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    vm_id = vm_with_checkpoints(model)
    model.merge_step_s = 0.5
    merge = asyncio.create_task(backend.executor().merge(vm_id, "merge-t3"))
    await feed.until(
        lambda: any(isinstance(e, TaskProgress) for e in feed.events), 10, "merge running"
    )
    await asyncio.to_thread(handle.peer.stop)
    result = await asyncio.wait_for(merge, 20)
    assert result.state is TaskState.UNKNOWN
    assert "outcome unknown" in result.error
    assert result.final_state is FinalState.PENDING
    await feed.close()


@pytest.mark.timeout(30)
async def test_merge_through_the_action_runner_is_logged_and_polls_go_on(
    one_peer: tuple[ClusterModel, PeerHandle], tmp_path: Path
) -> None:
    model, handle = one_peer
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = Feed(backend, store)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    # Settled first (the event stream up, the backup agent read after the inventory): what
    # is measured below is a poll beside the merge, not the reads that follow connecting.
    await feed.until(
        lambda: bool(backend.streaming.get(backend.sources[0])) and any(  # the node reached
            n.backup_agent_state is not ServiceState.UNKNOWN for n in feed.of(Kind.NODE).values()),
        20, "the stream up and the backup agent read")
    log = ActionLog.open(tmp_path / "actions.db")
    try:
        runner = ActionRunner(store, backend, log)
        vm_id = vm_with_checkpoints(model)
        plan = runner.plan("merge", vm_id)
        model.merge_step_s = 0.08
        merge = asyncio.create_task(
            runner.execute(plan, plan.target_name, override=bool(plan.blocking))
        )
        # The merge runs on its own pool: the node's polls keep the panes live meanwhile.
        other = next(
            v for v in model.vms.values() if v.id != vm_id and v.power is PowerState.RUNNING
        )
        model.set_power(other.id, PowerState.OFF)
        await feed.until(
            lambda: feed.state[(Kind.VM, other.id)].power is PowerState.OFF, 5, "a poll mid-merge"
        )
        assert not merge.done()
        result = await asyncio.wait_for(merge, 20)
        assert result.state is TaskState.OK, result.error
        [row] = log.rows()
        assert (row.action, row.outcome, row.target_object) == ("merge", "ok", f"vm:{vm_id}")
        assert row.size_before == result.size_before and row.size_after == result.size_after
        assert row.target_system == "hyperv://HVCLUSTER01"
        assert handle.password not in repr(row)
    finally:
        log.close()
        await feed.close()


@pytest.mark.timeout(20)
async def test_read_only_never_sends_a_mutating_command(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = one_peer
    backend = backend_for(handle)  # read-only is the default
    assert backend.read_only
    with pytest.raises(ReadOnlyError):
        backend.executor()
    feed = Feed(backend)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    vm_id = vm_with_checkpoints(model)
    # Bypassing the UI and the base class: the executor re-checks ...
    with pytest.raises(ReadOnlyError):
        await HyperVExecutor(backend).merge(vm_id, "merge-ro")
    # ... and the node session refuses a mutating command outright.
    with pytest.raises(ReadOnlyError):
        await backend.sessions()[0].run(remove_all_snapshots(vm_id))
    assert (await backend.run_merge(vm_id, "merge-ro")).state is TaskState.FAILED
    assert "Remove-VMSnapshot" not in model.calls
    sent = {name for s in backend.sessions() for name in s.sent}
    assert sent <= READ_CMDLETS and not sent & MUTATING_CMDLETS
    await feed.close()


@pytest.mark.timeout(10)
def test_writable_backend_hands_out_an_executor_and_hides_the_password() -> None:
    config = HyperVConfig("HVCLUSTER01", "LAB\\operator", read_only=False)
    backend = HyperVBackend(config, Credential("LAB\\operator", "secret-x", "given"))
    assert isinstance(backend.executor(), HyperVExecutor)
    assert "secret-x" not in repr(backend) and "secret-x" not in repr(backend.sessions()[0])


# -- credentials ---------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_password_sources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "pw"
    secret.write_text("file-secret-1\n")
    os.chmod(secret, 0o600)
    cred = resolve_password("LAB\\op", password_file=secret, environ={})
    assert (cred.password, cred.source) == ("file-secret-1", "file")
    assert "file-secret-1" not in repr(cred)

    os.chmod(secret, 0o644)
    with pytest.raises(CredentialError, match="readable by others"):
        resolve_password("LAB\\op", password_file=secret, environ={})

    env = {"VENTANA_HYPERV_PASSWORD": "env-secret-2"}
    cred = resolve_password("LAB\\op", environ=env, use_keyring=False)
    assert (cred.password, cred.source) == ("env-secret-2", "environment")

    with pytest.raises(CredentialError, match="VENTANA_HYPERV_PASSWORD"):
        resolve_password("LAB\\op", environ={}, use_keyring=False)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "environment" in logged or "VENTANA_HYPERV_PASSWORD" in logged
    assert "file-secret-1" not in logged and "env-secret-2" not in logged


# -- mapping of odd values ------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_mapping_never_crashes_on_odd_values() -> None:
    assert m.power_state("SomethingNew") is PowerState.UNKNOWN
    assert m.power_state(None) is PowerState.UNKNOWN
    assert m.power_state("PausedCritical") is PowerState.PAUSED_CRITICAL
    assert m.node_state("Paused", "InProgress") is NodeState.DRAINING
    assert m.node_state(42, None) is NodeState.UNKNOWN
    assert m.service_state("Weird") is ServiceState.UNKNOWN
    assert m.as_datetime("not a date") == m.EPOCH
    assert m.as_datetime("2024-05-01T10:00:00.1234567Z").microsecond == 123456
    assert m.as_int("x") == 0 and m.as_int(None) == 0
    assert (
        m.as_id("{6F1B7A52-1B7E-4D53-9A4E-2F4D1E0C9B11}") == "6f1b7a52-1b7e-4d53-9a4e-2f4d1e0c9b11"
    )
    read = m.NodeRead(vms=[{"Id": "not-a-guid", "Name": None, "State": object()}])
    vm, finding = m.node_entities(read, "C", "N", [])
    assert vm.power is PowerState.UNKNOWN and vm.name == "" and vm.node_id == "N"
    # A value Ventana does not know is shown carefully AND said out loud.
    assert finding.code == "UNKNOWN_VALUE" and finding.target == f"vm:{vm.id}"
    assert m.checkpoint_kind("SomethingNew") is CheckpointKind.RECOVERY  # never "mergeable"
    assert m.checkpoint_kind(7) is CheckpointKind.RECOVERY  # a number is never decoded


# -- CSV backup state -------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_csv_in_backup_reaches_the_lun_and_the_merge_preflight(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    from ventana.state.plans import plan_merge

    model, handle = one_peer
    backend = backend_for(handle)
    store = Store()
    feed = Feed(backend, store)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    vm = next(v for v in model.vms.values() if v.lun_id and model.chains.get(v.id))
    assert feed.state[(Kind.LUN, vm.lun_id)].in_backup is False
    plan = plan_merge(store, vm.id, store_now())
    assert "CSV_IN_BACKUP" not in {f.code for f in plan.findings}

    model.set_in_backup(vm.lun_id, True)  # MSCluster_ClusterSharedVolume.BackupState = 1
    await feed.until(lambda: store.lun(vm.lun_id).in_backup, 5, "the CSV in backup")
    plan = plan_merge(store, vm.id, store_now())
    [finding] = [f for f in plan.findings if f.code == "CSV_IN_BACKUP"]
    assert store.lun(vm.lun_id).name in finding.message

    model.set_in_backup(vm.lun_id, False)
    await feed.until(lambda: not store.lun(vm.lun_id).in_backup, 5, "the backup ended")
    assert "Get-CimInstance mscluster_clustersharedvolume" in model.calls
    await feed.close()


def store_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# -- node discovery ------------------------------------------------------------------------------


@pytest.mark.timeout(40)
async def test_nodes_are_discovered_from_the_cluster_name_and_a_dead_node_is_no_crash(
    tmp_path: Path,
) -> None:
    """``--hyperv HVCLUSTER01`` with no nodes: Get-ClusterNode through the cluster name,
    then one session per node by name. Every name is 127.0.0.1 on its own port here,
    given to the backend as ``resolve``; as with ``curl --resolve``, each certificate is
    checked against the NAME (the certificates carry node names only, as the contract
    requires; the first node also answers as the cluster name)."""
    model = ClusterModel(SimConfig(vms=12, nodes=3, rate=0))
    names = sorted(model.nodes)
    password = generate_password()
    handles = {
        name: start_winrm_peer(registry=build_hyperv_registry(model, name), password=password,
                               cert_names=[name, "HVCLUSTER01"] if i == 0 else [name])
        for i, name in enumerate(names)
    }
    try:
        bundle = tmp_path / "cas.pem"
        bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles.values()))
        dead = names[-1]
        handles[dead].peer.stop()  # this node does not answer
        first = handles[names[0]]
        resolve = tuple((n, f"127.0.0.1:{h.port}") for n, h in handles.items())
        # The cluster name answers from its current owner (the first node).
        resolve += (("HVCLUSTER01", f"127.0.0.1:{first.port}"),)
        config = config_for(list(handles.values()), str(bundle), nodes=(), resolve=resolve)
        backend = HyperVBackend(config, Credential(first.user, password, "t"))
        feed = Feed(backend)
        alive = [f"hyperv:{n}" for n in names[:-1]]
        await feed.until(
            lambda: all(feed.last_state(s) is LinkState.CONNECTED for s in alive),
            30, "the live nodes connected",
        )
        assert backend.sources == ["hyperv:HVCLUSTER01", *(f"hyperv:{n}" for n in names)]
        assert feed.last_state("hyperv:HVCLUSTER01") is LinkState.CONNECTED
        await feed.until(
            lambda: feed.last_state(f"hyperv:{dead}") is LinkState.RECONNECTING,
            10, "the dead node retrying",
        )
        # Every node is known (from Get-ClusterNode); the VMs of the live ones are in.
        assert sorted(feed.of(Kind.NODE)) == names
        live_vms = {v.id for v in model.vms.values() if v.node_id != dead}
        await feed.until(lambda: live_vms <= set(feed.of(Kind.VM)), 10, "the live nodes' VMs")
        # The dead node comes back: its VMs arrive, nothing restarted by hand.
        handles[dead].peer.start()
        await feed.until(
            lambda: feed.last_state(f"hyperv:{dead}") is LinkState.CONNECTED,
            20, "the node back",
        )
        await feed.until(lambda: set(model.vms) <= set(feed.of(Kind.VM)), 10, "every VM")
        # Errors name the node, not the address it was reached at.
        reasons = " ".join(e.reason for e in feed.links(f"hyperv:{dead}")
                           if e.state is not LinkState.CONNECTING)
        assert dead in reasons and "127.0.0.1" not in reasons, reasons
        await feed.close()
    finally:
        for h in handles.values():
            h.stop()


@pytest.mark.timeout(30)
async def test_resolve_checks_the_certificate_against_the_name(tmp_path: Path) -> None:
    """A certificate for another name is refused even at the right address."""
    model = make_model()
    handle = start_winrm_peer(registry=build_hyperv_registry(model), cert_names=["HV-OTHER"])
    try:
        config = config_for([handle], handle.ca_path, nodes=(), discover=False,
                            resolve=(("HVCLUSTER01", f"127.0.0.1:{handle.port}"),))
        backend = HyperVBackend(config, Credential(handle.user, handle.password, "t"))
        feed = Feed(backend)
        source = backend.sources[0]
        await feed.until(lambda: any("wrong name: the certificate is for hv-other, not "
                                     "HVCLUSTER01" in e.reason
                                     for e in feed.links(source)), 15, "refused")
        assert "HVCLUSTER01" in feed.links(source)[-1].reason
        assert not feed.of(Kind.VM)
        await feed.close()
    finally:
        handle.stop()


def test_commands_md_shows_every_read_as_sent() -> None:
    """The operator's copy of the contract carries each read line exactly as it is sent."""
    from ventana.backends.hyperv import commands as c

    doc = (Path(c.__file__).parent / "COMMANDS.md").read_text()
    reads = [c.get_cluster_nodes(), c.get_csvs(), c.get_csv_states(), c.get_disk_partitions(),
             c.get_csv_backup_states(), c.get_computer_system(), c.get_vms(), c.get_snapshots(),
             c.get_hard_disk_drives(), c.get_attached_vhds(), c.get_checkpoint_vhds(),
             c.get_replication()]
    for command in reads:
        assert command.as_powershell() in doc, command.as_powershell()
        assert {n for x in command.pipeline() for n in x.commands} <= READ_CMDLETS


def test_convert_to_json_quirks_are_undone() -> None:
    from ventana.backends.hyperv import commands as c

    rows = c.decode_json(
        c.get_snapshots(),
        '{"Id":"8c2d3b1e-0000-4000-8000-000000000001","VMId":"8c2d3b1e-0000-4000-8000-0000000000'
        '02","Name":"x","ParentSnapshotId":null,"SnapshotType":"Recovery",'
        '"CreationTime":"\\/Date(1736150400000)\\/"}',
    )
    [row] = rows  # one object arrives unwrapped
    assert row["SnapshotType"] == "Recovery"
    assert row["CreationTime"].isoformat() == "2025-01-06T08:00:00+00:00"
    assert c.decode_json(c.get_vms(), "") == []
    # A number is never decoded (the numbering differs between Windows versions): it
    # stays its digits, which mapping treats as unknown.
    assert c.decode_json(c.get_vms(), '[{"State":"Running"},{"State":32789}]') == [
        {"State": "Running"}, {"State": "32789"}]
    assert m.power_state("32789") is PowerState.UNKNOWN


# -- streaming ---------------------------------------------------------------------------------


@pytest.mark.timeout(40)
async def test_power_changes_stream_well_before_the_poll(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """Register-CimIndicationEvent + Wait-Event on a session of its own: a VM powered
    off on the server is on the stream in about a second, with a 30 s poll."""
    model, handle = one_peer
    backend = backend_for(handle, poll_interval=30.0, stream_wait_s=5)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    await feed.until(lambda: backend.streaming.get(source) is True, 10, "the stream up")
    await asyncio.sleep(0.5)  # the first Wait-Event is in
    latencies = []
    for vm in [v for v in model.vms.values() if v.power is PowerState.RUNNING][:3]:
        start = time.monotonic()
        model.set_power(vm.id, PowerState.OFF)
        await feed.until(
            lambda vm=vm: feed.state[(Kind.VM, vm.id)].power is PowerState.OFF,
            10, "the streamed power change",
        )
        latencies.append(time.monotonic() - start)
        assert feed.state[(Kind.VM, vm.id)].integration is IntegrationState.OFF
    assert max(latencies) < 3.0, latencies  # the poll would take 30 s
    assert {"Register-CimIndicationEvent", "Wait-Event", "Get-Event", "Remove-Event"} <= set(
        model.calls
    )
    # Subscribed to state changes only, not to every modification (OnTimeInMilliseconds).
    power = [q for q in model.queries if "'Msvm_ComputerSystem'" in q]
    assert power and all("PreviousInstance.EnabledState" in q for q in power)
    started = time.monotonic()
    await feed.close()  # the waiting pipeline is stopped, its session closed
    assert time.monotonic() - started < 8
    assert feed.last_state(source) is LinkState.DISCONNECTED


@pytest.mark.timeout(40)
async def test_a_refused_subscription_falls_back_to_polling(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    model, handle = one_peer
    model.indications = False  # the server refuses Register-CimIndicationEvent
    backend = backend_for(handle)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    await feed.until(lambda: backend.streaming.get(source) is False, 10, "the stream refused")
    vm = next(v for v in model.vms.values() if v.power is PowerState.RUNNING)
    model.set_power(vm.id, PowerState.SAVED)
    await feed.until(
        lambda: feed.state[(Kind.VM, vm.id)].power is PowerState.SAVED, 5, "the polled change"
    )
    assert "Wait-Event" not in model.calls
    await feed.close()


def test_commands_md_shows_the_stream_as_sent() -> None:
    from ventana.backends.hyperv import commands as c

    doc = (Path(c.__file__).parent / "COMMANDS.md").read_text()
    from ventana.backends.hyperv import subscriptions as s

    sources = [s.VM_STATE, s.CHECKPOINTS, s.CSV_SPACE]
    for command in [c.subscribe_vm_events(), *map(s.subscribe, sources[1:]),
                    *s.wait_changes(sources, 20)]:
        assert command.as_powershell() in doc, command.as_powershell()
        assert {n for x in command.pipeline() for n in x.commands} <= READ_CMDLETS


@pytest.mark.timeout(30)
async def test_finished_pipelines_are_released(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """pypsrp keeps every PowerShell (and its output) in the pool until close():
    polls release theirs, so a long session does not grow by every answer."""
    _model, handle = one_peer
    backend = backend_for(handle)
    feed = Feed(backend)
    source = backend.sources[0]
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "connected")
    await asyncio.sleep(POLL * 4)  # a few polls
    [session] = backend.sessions()
    pool = session._pool
    assert pool is not None and len(pool.pipelines) <= 1  # at most the poll under way
    await feed.close()


# -- what real hosts send (the endpoint's host modes) ------------------------------------------


async def raw_json(handle: PeerHandle, *cmdlets: Any) -> Any:
    """One pipeline ending in ConvertTo-Json -Compress, sent as cmdlets; the parsed JSON."""
    import json

    from ventana.backends.hyperv.commands import SWITCH, Cmdlet, Command
    from ventana.backends.hyperv.session import NodeSession

    session = NodeSession("127.0.0.1", port=handle.port, username=handle.user,
                          password=handle.password, auth="ntlm", cert_validation=handle.ca_path)
    command = Command("raw", (*cmdlets, Cmdlet("ConvertTo-Json", (("Compress", SWITCH),))),
                      tolerate_errors=True)
    try:
        answer = await session.run(command)
    finally:
        await session.close()
    return [json.loads(s) for s in answer.output], answer.errors


@pytest.mark.timeout(30)
@pytest.mark.parametrize("one_peer", ["server2019", "server2016"], indirect=True)
async def test_enum_numbers_differ_by_windows_version_and_names_do_not(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """VMState PausedCritical is 32789 on module 2.0.0.0 and 32787 on Server 2016: the
    console reads names converted on the host, so both read Paused-Critical."""
    from ventana.backends.hyperv.commands import Cmdlet

    model, handle = one_peer
    vm = next(v for v in model.vms.values() if v.node_id == next(iter(model.nodes)))
    model.set_power(vm.id, PowerState.PAUSED_CRITICAL)
    [doc], _ = await raw_json(handle, Cmdlet("Get-VM", (("Name", vm.name),)),
                              Cmdlet("Select-Object", (("Property", ["Name", "State"]),)))
    assert doc["State"] == (32787 if model.profile.server2016 else 32789)
    backend = backend_for(handle)
    feed = Feed(backend)
    await feed.until(lambda: (Kind.VM, vm.id) in feed.state, 20, "the inventory")
    assert feed.state[(Kind.VM, vm.id)].power is PowerState.PAUSED_CRITICAL
    assert not feed.of(Kind.FINDING)  # every name is known
    await feed.close()


@pytest.mark.timeout(30)
async def test_nested_objects_follow_convert_to_json_depth(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """ConvertTo-Json's default -Depth 2: a nested object within it is a JSON object,
    beyond it its ToString; several objects are one array, one level deeper."""
    from ventana.backends.hyperv.commands import Cmdlet

    model, handle = one_peer
    select = Cmdlet("Select-Object", (("Property", ["Name", "Cluster"]),))
    [nodes], _ = await raw_json(handle, Cmdlet("Get-ClusterNode"), select)
    assert len(nodes) == 2 and nodes[0]["Cluster"]["Name"] == "HVCLUSTER01"
    select = Cmdlet("Select-Object", (("Property", ["Name", "OwnerNode"]),))
    [csvs], _ = await raw_json(handle, Cmdlet("Get-ClusterSharedVolume"), select)
    owner = csvs[0]["OwnerNode"]  # array (0) → CSV (1) → OwnerNode (2): an object …
    assert owner["Name"] in model.nodes and isinstance(owner["State"], int)  # enum: a number
    assert owner["Cluster"] == "HVCLUSTER01"  # … whose Cluster (3) is beyond: its ToString


@pytest.mark.timeout(30)
@pytest.mark.parametrize("one_peer", ["german"], indirect=True)
async def test_a_german_host_reports_the_heartbeat_without_its_english_name(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    from ventana.backends.hyperv.commands import Cmdlet

    model, handle = one_peer
    [], errors = await raw_json(handle, Cmdlet("Get-VMIntegrationService", (
        ("VMName", "*"), ("Name", "Heartbeat"))))
    assert errors  # the name is "Takt" here
    backend = backend_for(handle)
    feed = Feed(backend)
    mine = [v for v in model.vms.values() if v.power is PowerState.RUNNING]
    await feed.until(lambda: all((Kind.VM, v.id) in feed.state for v in mine), 20, "VMs")
    for vm in mine:
        assert feed.state[(Kind.VM, vm.id)].integration is vm.integration
    await feed.close()


@pytest.mark.timeout(30)
async def test_a_replica_checkpoint_never_looks_mergeable(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    from ventana.state.plans import plan_merge

    model, handle = one_peer
    vm_id = vm_with_checkpoints(model, 1)
    cp_id = model.chains[vm_id][-1]
    model.snapshot_types[cp_id] = "AppConsistentReplica"  # SnapshotType 7
    backend = backend_for(handle)
    store = Store()
    feed = Feed(backend, store)
    await feed.until(lambda: (Kind.CHECKPOINT, cp_id) in feed.state
                     and feed.of(Kind.FINDING), 20, "the checkpoint and its finding")
    assert feed.state[(Kind.CHECKPOINT, cp_id)].kind is CheckpointKind.RECOVERY
    [finding] = feed.of(Kind.FINDING).values()
    assert finding.code == "REPLICA_CHECKPOINT" and finding.target == f"vm:{vm_id}"
    plan = plan_merge(store, vm_id, datetime.now(UTC))
    assert plan.blocking and "REPORTED_REPLICA_CHECKPOINT" in {f.code for f in plan.findings}
    await feed.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("one_peer", ALL_MODES, indirect=True)
async def test_the_upgrade_targets_the_hosts_default_version(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """Update-VMVersion has no target parameter: each node's default version is read
    (Get-VMHostSupportedVersion -Default; 8.0 on a Server 2016 host, 9.0 on 2019), the
    plan states it as the target (current → target), and the upgrade reaches it."""
    import dataclasses

    from ventana.state.plans import plan_upgrade

    model, handle = one_peer
    vm_id = next(v for v in sorted(model.vms) if not model.chains.get(v))
    with model.lock:
        model.vms[vm_id] = dataclasses.replace(model.vms[vm_id], config_version="5.0")
        model.version += 1
    model.set_power(vm_id, PowerState.OFF)
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = Feed(backend, store)
    def ready() -> bool:
        vm = store.vm(vm_id)
        return (vm is not None and vm.power is PowerState.OFF and vm.config_version == "5.0"
                and any(n.default_config_version for n in store.nodes()))

    await feed.until(ready, 20, "the nodes' default versions and the VM off at 5.0")
    want = "8.0" if model.profile.server2016 else "9.0"
    vm = store.vm(vm_id)
    assert vm is not None and store.node(vm.node_id).default_config_version == want
    plan = plan_upgrade(store, vm_id, datetime.now(UTC))
    assert not plan.blocking, plan.blocking
    assert plan.facts["target_version"] == want and plan.facts["target_basis"] == "host default"
    assert f"from 5.0 to {want} (the default of host {vm.node_id}" in plan.steps[0]
    result = await backend.executor().upgrade_version(vm_id, "upgrade-default", want)
    assert result.state is TaskState.OK, result.error
    assert result.detail == f"configuration version 5.0 → {want}"
    await feed.close()


def test_commands_md_shows_the_action_reads_as_sent() -> None:
    """The reads issue 14 added: the host's default version, and the merge's own check
    for Hyper-V Replica checkpoints — each exactly as sent, and read-only."""
    from ventana.backends.hyperv import commands as c

    doc = (Path(c.__file__).parent / "COMMANDS.md").read_text()
    for command in (c.get_default_version(),
                    c.get_vm_snapshots("d3b0c9b2-8f2e-4a53-9d3c-6a7f0f6b2a11")):
        assert command.as_powershell() in doc, command.as_powershell()
        assert {n for x in command.pipeline() for n in x.commands} <= READ_CMDLETS


@pytest.mark.timeout(30)
@pytest.mark.parametrize("one_peer", ALL_MODES, indirect=True)
async def test_the_executor_itself_refuses_a_replica_checkpoint(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """Defence in depth (issue 14): called directly, with no plan (or one made before the
    replica checkpoint appeared), the merge reads the VM's checkpoints on the host first
    and sends nothing when one is a Hyper-V Replica checkpoint."""
    model, handle = one_peer
    backend = backend_for(handle, read_only=False)
    feed = Feed(backend)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    vm_id = vm_with_checkpoints(model, 2)
    chain = list(model.chains[vm_id])
    model.snapshot_types[chain[0]] = "SyncedReplica"  # appears after the last poll
    result = await backend.executor().merge(vm_id, "merge-replica")
    assert result.state is TaskState.FAILED
    assert "Replica checkpoint" in result.error and "SyncedReplica" in result.error
    assert "Nothing was sent" in result.error
    assert "Remove-VMSnapshot" not in model.calls and model.chains[vm_id] == chain
    # Without it the same call merges: the refusal is the replica checkpoint's doing.
    del model.snapshot_types[chain[0]]
    result = await backend.executor().merge(vm_id, "merge-plain")
    assert result.state is TaskState.OK, result.error
    assert "Remove-VMSnapshot" in model.calls and not model.chains.get(vm_id)
    await feed.close()


@pytest.mark.timeout(40)
@pytest.mark.parametrize("one_peer", ["spellings"], indirect=True)
async def test_node_spellings_are_one_node_everywhere(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """hv-node-01 (cluster), HV-NODE-01 (WMI), hv-node-01.lab.example (Get-VM): one node;
    the merge plan names it and the merge is sent there."""
    from ventana.backends.hyperv import commands as c
    from ventana.state.plans import plan_merge

    model, handle = one_peer
    backend = backend_for(handle, read_only=False)
    store = Store()
    feed = Feed(backend, store)
    await feed.until(lambda: len(feed.of(Kind.VM)) == len(model.vms)
                     and len(feed.of(Kind.NODE)) == 2, 20, "the inventory")
    assert sorted(feed.of(Kind.NODE)) == sorted(model.nodes)
    for vm in model.vms.values():
        assert feed.state[(Kind.VM, vm.id)].node_id == vm.node_id
    for lun in feed.of(Kind.LUN).values():
        assert lun.owner_node_id in model.nodes
    first = next(iter(model.nodes))
    vm_id = next(v for v, chain in model.chains.items()
                 if len(chain) >= 1 and model.vms[v].node_id == first)
    plan = plan_merge(store, vm_id, datetime.now(UTC))
    assert plan.facts["node"] == first
    assert plan.command == c.remove_all_snapshots(vm_id).as_powershell()  # exactly what is sent
    result = await backend.executor().merge(vm_id, "merge-sp")
    assert result.state is TaskState.OK, result.error
    await feed.close()


# -- partial failure: one node down is not the cluster down ----------------------------------


@pytest.mark.timeout(60)
async def test_one_node_down_leaves_the_healthy_nodes_actionable(tmp_path: Path) -> None:
    """Staleness is per node (and what it owns): the healthy node's VMs still plan and
    merge; the header's reason says "1/2 nodes"; the dead node's VMs are blocked."""
    from ventana.state.plans import plan_merge

    model = make_model()
    names = sorted(model.nodes)
    password = generate_password()
    handles = [start_winrm_peer(registry=build_hyperv_registry(model, name), password=password)
               for name in names]
    try:
        bundle = tmp_path / "cas.pem"
        bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
        backend = HyperVBackend(config_for(handles, str(bundle), read_only=False),
                                Credential(handles[0].user, password, "t"))
        store = Store()
        feed = Feed(backend, store)
        await feed.until(lambda: all(feed.last_state(s) is LinkState.CONNECTED
                                     for s in backend.sources), 20, "both nodes")
        await asyncio.to_thread(handles[1].peer.stop)  # the second node dies
        await feed.until(lambda: store.stale_for(names[1]), 15, "the dead node stale")
        assert not store.stale_for(names[0])
        assert store.nodes_live() == (1, 2) and store.link_reason().startswith("1/2 nodes")
        assert names[1] in store.link_reason()  # which node, and why

        def vm_on(node: str) -> str:
            return next(v for v, chain in model.chains.items()
                        if chain and model.vms[v].node_id == node)

        now = datetime.now(UTC)
        healthy, dead = vm_on(names[0]), vm_on(names[1])
        assert "STALE_DATA" not in {f.code for f in plan_merge(store, healthy, now).findings}
        assert "STALE_DATA" in {f.code for f in plan_merge(store, dead, now).findings}
        result = await backend.executor().merge(healthy, "merge-partial")
        assert result.state is TaskState.OK, result.error
        await feed.close()
    finally:
        for h in handles:
            h.stop()


@pytest.mark.timeout(40)
async def test_a_merge_is_done_only_when_the_background_merge_has_ended(
    one_peer: tuple[ClusterModel, PeerHandle],
) -> None:
    """Remove-VMSnapshot returns; the disks merge on ("Merging disks"): the outcome is OK
    only once Get-VM no longer reports MergingDisks, with its progress shown meanwhile."""
    model, handle = one_peer
    model.background_merge_s = 1.5
    backend = backend_for(handle, read_only=False)
    feed = Feed(backend)
    await feed.until(lambda: feed.last_state(backend.sources[0]) is LinkState.CONNECTED, 20, "up")
    vm_id = vm_with_checkpoints(model)
    result = await backend.executor().merge(vm_id, "merge-bg")
    assert result.state is TaskState.OK, result.error
    assert vm_id not in model.merging  # it had ended when OK was reported
    progress = [e.message for e in feed.events
                if isinstance(e, TaskProgress) and e.task_id == "merge-bg"]
    assert any(m.startswith("Merging disks (") for m in progress), progress
    await feed.close()
