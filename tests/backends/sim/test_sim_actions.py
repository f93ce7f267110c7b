"""Actions on the simulated cluster: merges, their failures, read-only, links.

A pump task applies the backend's stream to a store while the executor
runs, as the console does; simulated time runs as fast as it is consumed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from test_sim import assert_store_matches, by_name, connect, no_sleep

from ventana.backends.base import ReadOnlyError
from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.derived import PAUSE_CRITICAL_MARGIN
from ventana.state.events import ConnectionChanged, Event, LinkState, Remove, TaskProgress, Upsert
from ventana.state.model import (
    VM,
    DiskFormat,
    FinalState,
    Kind,
    ReplicationState,
    Task,
    TaskState,
)
from ventana.state.store import Store, ref

EPOCH = datetime(2024, 10, 14, 8, 0, tzinfo=UTC)


class Session:
    """A connected backend whose stream is pumped into a store."""

    def __init__(self, backend: SimBackend) -> None:
        self.backend = backend
        self.store = Store()
        self.events: list[Event] = []
        self.hook: Callable[[Event], None] | None = None
        self._stream: AsyncIterator[Event] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Session:
        self._stream, _ = await connect(self.backend, self.store)
        self._task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        assert self._stream is not None
        async for event in self._stream:
            self.store.apply(event)
            self.events.append(event)
            if self.hook is not None:
                self.hook(event)

    async def settle(self) -> None:
        """Let the pump catch up with what the backend has already queued."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def __aexit__(self, *exc: object) -> None:
        await self.backend.close()
        assert self._task is not None
        await asyncio.wait_for(self._task, 5)


def quiet(*, realtime: bool = False, **overrides: object) -> SimBackend:
    """No churn, no random merge failures, finished tasks kept for inspection.

    ``realtime``: the simulated clock follows the wall at ``speed`` (by default
    it jumps from timer to timer as fast as the test runs).
    """
    values: dict[str, object] = {
        "epoch": EPOCH,
        "rate": 0,
        "speed": 100_000,
        "merge_failure_rate": 0.0,
        "task_retention_s": None,
    }
    values.update(overrides)
    return SimBackend(SimConfig(**values),  # type: ignore[arg-type]
                      sleep=None if realtime else no_sleep)


def roomy_vm(store: Store, min_checkpoints: int = 3) -> VM:
    """A VM with a chain on a CSV with plenty of room, not replicating."""
    for vm in sorted(store.vms(), key=lambda v: v.name):
        cps = store.checkpoints_of(vm.id)
        lun = store.lun(vm.lun_id)
        chain = sum(c.size_bytes for c in cps)
        if (
            len(cps) >= min_checkpoints
            and vm.replication is ReplicationState.DISABLED
            and lun is not None
            and lun.free_bytes > 2 * chain + 10 * PAUSE_CRITICAL_MARGIN
        ):
            return vm
    raise AssertionError("no suitable VM")


def vm_bytes(store: Store, vm_id: str) -> int:
    return sum(d.size_bytes for d in store.disks_of(vm_id))


# -- merge ---------------------------------------------------------------------------


async def test_merge_removes_the_chain_and_gives_space_back() -> None:
    async with Session(quiet()) as s:
        vm = roomy_vm(s.store)
        lun_before = s.store.lun(vm.lun_id).free_bytes  # type: ignore[union-attr]
        size_before = vm_bytes(s.store, vm.id)
        n = len(s.store.checkpoints_of(vm.id))
        started = s.backend.now()
        result = await s.backend.executor().merge(vm.id, "merge-1")
        await s.settle()

        assert result.state is TaskState.OK and result.error == ""
        assert result.final_state is FinalState.OPERATIONAL
        assert result.size_before == size_before
        assert result.size_after == vm_bytes(s.store, vm.id) <= size_before
        assert s.store.checkpoints_of(vm.id) == []
        assert not [d for d in s.store.disks_of(vm.id) if d.format is DiskFormat.AVHDX]
        lun_after = s.store.lun(vm.lun_id).free_bytes  # type: ignore[union-attr]
        assert lun_after - lun_before == size_before - result.size_after
        task = s.store.task("merge-1")
        assert task is not None and task.state is TaskState.OK and task.pct == 100.0
        assert task.kind == "merge" and task.target == ref(Kind.VM, vm.id)
        assert task.target_name == vm.name and task.started == started and task.ended

        first = next(
            e.entity
            for e in s.events
            if isinstance(e, Upsert) and isinstance(e.entity, Task) and e.entity.id == "merge-1"
        )
        assert first.state is TaskState.RUNNING and first.started == started
        steps = [
            e.message for e in s.events if isinstance(e, TaskProgress) and e.task_id == "merge-1"
        ]
        assert any(m.startswith("Merging ") and "into parent (1 of " in m for m in steps)
        assert any(".avhdx into parent" in m for m in steps)
        pcts = [e.pct for e in s.events if isinstance(e, TaskProgress) and e.task_id == "merge-1"]
        assert pcts == sorted(pcts)
        assert_store_matches(s.store, s.backend.world)
        # Time follows the chain: hours of simulated time for a chain of several.
        assert (task.ended - task.started).total_seconds() > 25 * 60 * n * 0.8  # type: ignore[operator]


async def test_merge_on_the_full_csv_fails_and_keeps_the_chain() -> None:
    async with Session(quiet()) as s:
        data1 = next(x for x in s.store.luns() if x.name == "CSV-DATA1")
        vm = next(v for v in s.store.vms() if v.lun_id == data1.id and s.store.checkpoints_of(v.id))
        before = {c.id for c in s.store.checkpoints_of(vm.id)}
        result = await s.backend.executor().merge(vm.id, "merge-full")
        await s.settle()

        assert result.state is TaskState.FAILED
        assert result.final_state is FinalState.FAILED
        assert "Not enough free space on CSV-DATA1" in result.error
        assert {c.id for c in s.store.checkpoints_of(vm.id)} == before
        assert result.size_after == result.size_before
        task = s.store.task("merge-full")
        assert task is not None and task.state is TaskState.FAILED and task.error
        assert any(f.code == "CSV_FULL" for f in s.store.all(Kind.FINDING))  # type: ignore[attr-defined]
        assert_store_matches(s.store, s.backend.world)


async def test_merge_stops_part_way_when_the_csv_fills_up() -> None:
    async with Session(quiet()) as s:
        vm = roomy_vm(s.store)
        n = len(s.store.checkpoints_of(vm.id))
        world = s.backend.world

        def another_vm_fills_the_csv(event: Event) -> None:
            if isinstance(event, Remove) and event.kind is Kind.CHECKPOINT:
                lun = world.luns[vm.lun_id]
                world.orphaned_bytes[lun.id] += lun.free_bytes - PAUSE_CRITICAL_MARGIN
                world.adjust_free(lun.id, PAUSE_CRITICAL_MARGIN - lun.free_bytes)
                s.hook = None

        s.hook = another_vm_fills_the_csv
        result = await s.backend.executor().merge(vm.id, "merge-partial")
        await s.settle()

        assert result.state is TaskState.FAILED
        assert result.final_state is FinalState.PARTIAL
        assert "1 of" in result.error and "intact" in result.error
        left = s.store.checkpoints_of(vm.id)
        assert len(left) == n - 1
        root = next(c for c in left if c.parent_id is None)
        avhdx = next(d for d in s.store.disks_of(vm.id) if d.path == root.disk_path)
        assert s.store.get(Kind.DISK, vm.disk_ids[0]).path == avhdx.parent_path  # type: ignore[union-attr]
        assert s.store.lun(vm.lun_id).free_bytes >= PAUSE_CRITICAL_MARGIN  # type: ignore[union-attr]
        assert_store_matches(s.store, s.backend.world)


async def test_merge_of_a_broken_chain_fails_and_merges_nothing() -> None:
    """An .avhdx whose parent is not where it says: Hyper-V cannot merge it."""
    async with Session(quiet()) as s:
        world = s.backend.world
        vm_id = min(world.broken_chains, key=lambda v: world.vms[v].name)
        before = sorted(c.id for c in s.store.checkpoints_of(vm_id))
        free = s.store.lun(world.vms[vm_id].lun_id).free_bytes  # type: ignore[union-attr]
        result = await s.backend.executor().merge(vm_id, "merge-broken")
        await s.settle()

        assert result.state is TaskState.FAILED and result.final_state is FinalState.FAILED
        assert "The chain of virtual hard disks is broken" in result.error
        assert "(0xC03A000D)" in result.error and "D:\\Hyper-V\\" in result.error
        assert sorted(c.id for c in s.store.checkpoints_of(vm_id)) == before
        assert s.store.lun(world.vms[vm_id].lun_id).free_bytes == free  # type: ignore[union-attr]
        task = s.store.task("merge-broken")
        assert task is not None and task.state is TaskState.FAILED
        assert vm_id not in world.busy
        assert_store_matches(s.store, world)
        # Mended by hand (Set-VHD -ParentPath): the same merge goes through.
        for cp_id in world.chains[vm_id][:1]:
            for f in world.files[cp_id]:
                disk = world.disks[f]
                base = world.disks[world.vms[vm_id].disk_ids[world.files[cp_id].index(f)]]
                world.put(dataclasses.replace(disk, parent_path=base.path))
        world.broken_chains.discard(vm_id)
        s.backend._wake.set()  # a change made behind the backend's back: let it stream
        mended = await s.backend.executor().merge(vm_id, "merge-mended")
        await s.settle()
        assert "chain of virtual hard disks is broken" not in mended.error
        assert mended.state is TaskState.OK or "Not enough free space" in mended.error
        assert_store_matches(s.store, world)


async def test_merge_refuses_files_held_by_a_running_backup() -> None:
    backend = SimBackend(SimConfig(epoch=EPOCH, seed=5, merge_failure_rate=0.0), sleep=no_sleep)
    async with Session(backend) as s:
        started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_backup_checkpoint(event: Event) -> None:
            if (
                isinstance(event, TaskProgress)
                and event.message.startswith("Creating VM")
                and not started.done()
            ):
                task = s.store.task(event.task_id)
                assert task is not None
                started.set_result(task.target.split(":", 1)[1])

        s.hook = on_backup_checkpoint
        vm_id = await asyncio.wait_for(started, 5)
        s.hook = None
        n = len(s.store.checkpoints_of(vm_id))
        result = await s.backend.executor().merge(vm_id, "merge-busy")

        assert result.state is TaskState.FAILED and result.final_state is FinalState.FAILED
        assert "being used by another process" in result.error
        assert len(s.backend.world.chains[vm_id]) >= n - 1  # nothing merged by us


async def test_merging_a_replicating_vm_breaks_its_replica() -> None:
    async with Session(quiet()) as s:
        vm = next(
            v
            for v in s.store.vms()
            if v.replication is ReplicationState.REPLICATING and s.store.checkpoints_of(v.id)
        )
        result = await s.backend.executor().merge(vm.id, "merge-replica")
        await s.settle()
        assert result.state is TaskState.WARNING
        assert result.final_state is FinalState.DEGRADED
        assert "replication" in result.error.lower()
        assert s.store.vm(vm.id).replication is ReplicationState.ERROR  # type: ignore[union-attr]
        assert s.store.checkpoints_of(vm.id) == []


async def test_random_failure_is_seeded_and_leaves_a_consistent_chain() -> None:
    outcomes = []
    for _ in range(2):
        async with Session(quiet(merge_failure_rate=1.0)) as s:
            vm = roomy_vm(s.store)
            result = await s.backend.executor().merge(vm.id, "merge-unlucky")
            await s.settle()
            outcomes.append((result.state, result.final_state, result.error))
            assert result.state is TaskState.FAILED
            assert result.final_state in (FinalState.FAILED, FinalState.PARTIAL)
            assert "Failed to merge" in result.error
            assert_store_matches(s.store, s.backend.world)
    assert outcomes[0] == outcomes[1]


async def test_a_vm_without_checkpoints_merges_to_nothing() -> None:
    async with Session(quiet()) as s:
        vm = next(v for v in s.store.vms() if not s.store.checkpoints_of(v.id))
        result = await s.backend.executor().merge(vm.id, "merge-empty")
        assert result.state is TaskState.OK
        assert result.size_before == result.size_after
        unknown = await s.backend.executor().merge("no-such-vm", "merge-ghost")
        assert unknown.state is TaskState.FAILED and "unable to find" in unknown.error


async def test_a_merge_cannot_be_cancelled() -> None:
    async with Session(quiet(speed=60.0)) as s:
        vm = roomy_vm(s.store)
        executor = s.backend.executor()
        merge = asyncio.create_task(executor.merge(vm.id, "merge-2"))
        while not any(isinstance(e, TaskProgress) and e.task_id == "merge-2" for e in s.events):
            await asyncio.sleep(0)
        assert await executor.cancel("merge-2") is False
        assert await executor.cancel("no-such-task") is False
        await s.settle()
        assert any("cannot cancel" in e.message for e in s.events if isinstance(e, TaskProgress))
        result = await merge
        assert result.state is TaskState.OK


# -- read-only -----------------------------------------------------------------------


async def test_read_only_session_gets_no_executor() -> None:
    backend = quiet(read_only=True)
    with pytest.raises(ReadOnlyError):
        backend.executor()


async def test_executor_refuses_once_the_session_turns_read_only() -> None:
    async with Session(quiet()) as s:
        executor = s.backend.executor()
        s.backend.set_read_only(True)
        vm = roomy_vm(s.store)
        with pytest.raises(ReadOnlyError):
            await executor.merge(vm.id, "merge-ro")
        with pytest.raises(ReadOnlyError):
            await executor.cancel("merge-ro")
        await s.settle()
        assert s.backend.world.tasks == {}
        assert s.store.task("merge-ro") is None


# -- the link ------------------------------------------------------------------------


async def test_dropped_link_goes_stale_then_re_reads_everything() -> None:
    async with Session(quiet(speed=60.0)) as s:
        vm = roomy_vm(s.store)
        executor = s.backend.executor()

        def drop_mid_merge(event: Event) -> None:
            if isinstance(event, TaskProgress) and event.task_id == "merge-3":
                s.hook = None
                s.backend.drop_connection(reason="WinRM read timeout")

        s.hook = drop_mid_merge
        result = await executor.merge(vm.id, "merge-3")
        assert result.state is TaskState.UNKNOWN and "verify on the host" in result.error
        await s.settle()
        assert s.store.stale and "WinRM read timeout" in s.store.link_reason()
        refused = await executor.merge(vm.id, "merge-4")
        assert refused.state is TaskState.FAILED and "not sent" in refused.error

        # The merge goes on at the host while the console sees nothing.
        world = s.backend.world
        while world.running_task(vm.id, "merge"):
            await asyncio.sleep(0)
        assert s.store.checkpoints_of(vm.id)  # still the stale picture
        s.backend.restore_connection()
        await s.settle()
        states = [e.state for e in s.events if isinstance(e, ConnectionChanged)]
        assert states[-3:] == [LinkState.STALE, LinkState.RECONNECTING, LinkState.CONNECTED]
        assert not s.store.stale
        assert s.store.checkpoints_of(vm.id) == []
        assert s.store.task("merge-3").state is TaskState.OK  # type: ignore[union-attr]
        assert_store_matches(s.store, world)


async def test_drop_for_a_while_reconnects_by_itself() -> None:
    async with Session(quiet()) as s:
        s.backend.drop_connection(seconds=0.5)
        for _ in range(200):
            await asyncio.sleep(0)
            if not s.backend._link_down:
                break
        await s.settle()
        states = [e.state for e in s.events if isinstance(e, ConnectionChanged)]
        assert states == [LinkState.STALE, LinkState.RECONNECTING, LinkState.CONNECTED]
        assert by_name(s.store, "app-04") is not None


async def test_merge_before_connecting_is_not_sent() -> None:
    backend = quiet()
    result = await backend.executor().merge("any", "merge-5")
    assert result.state is TaskState.FAILED and "not sent" in result.error
    assert backend.world.tasks == {}
