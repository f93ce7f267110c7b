"""The guarded path below the UI: what the runner refuses, and what it logs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from factories import NOW, small_cluster

from ventana.backends.actions import ActionRefused, ActionRunner
from ventana.backends.base import ActionResult, Backend, Executor
from ventana.state.actionlog import ActionLog
from ventana.state.events import Event, Remove, Upsert
from ventana.state.model import Kind, Task, TaskState
from ventana.state.store import Store, ref


class FaultyExecutor(Executor):
    """Fault injection at the edge: what a real cluster does on a bad night."""

    def __init__(self, backend: Backend, behaviour: str) -> None:
        super().__init__(backend)
        self.behaviour = behaviour
        self.calls = 0

    async def merge(self, vm_id: str, task_id: str) -> ActionResult:
        self._guard("merge")
        self.calls += 1
        if self.behaviour == "raise":
            raise ConnectionResetError("connection reset by peer after the request was sent")
        if self.behaviour == "running":
            return ActionResult(TaskState.RUNNING)
        if self.behaviour == "hang":
            await asyncio.sleep(3600)
        return ActionResult(TaskState.OK, size_before=10, size_after=5)

    async def cancel(self, task_id: str) -> bool:
        return False


class FaultyBackend(Backend):
    name = "faulty"

    def __init__(self, behaviour: str, read_only: bool = False) -> None:
        super().__init__("faulty://lab", read_only=read_only)
        self.handle = FaultyExecutor(self, behaviour)

    async def events(self) -> AsyncIterator[Event]:  # pragma: no cover - not streamed here
        return
        yield

    def _make_executor(self) -> Executor:
        return self.handle


def runner(tmp_path: Path, behaviour: str = "ok", store: Store | None = None) -> ActionRunner:
    return ActionRunner(store or small_cluster(free_gb=50), FaultyBackend(behaviour),
                        ActionLog.open(tmp_path / "a.db"), clock=lambda: NOW)


async def test_override_covers_only_the_findings_the_operator_saw(tmp_path: Path) -> None:
    r = runner(tmp_path)
    plan = r.plan("merge", "a")
    assert {f.code for f in plan.blocking} == {"NO_SPACE"}
    # While the operator reads, a backup starts on the VM.
    r.store.apply(Upsert(Task("bk", "backup", ref(Kind.VM, "a"), "app-01", 1.0,
                              TaskState.RUNNING, NOW)))
    with pytest.raises(ActionRefused, match=r"new blocking findings.*BACKUP_RUNNING"):
        await r.execute(plan, "app-01", override=True, overridden=frozenset({"NO_SPACE"}))
    assert r.backend.handle.calls == 0
    (row,) = r.log.rows()
    assert row.outcome == "refused" and "BACKUP_RUNNING" in row.error


async def test_override_of_what_was_seen_runs_and_is_logged(tmp_path: Path) -> None:
    r = runner(tmp_path)
    plan = r.plan("merge", "a")
    with pytest.raises(ActionRefused, match="blocked by pre-flight: NO_SPACE"):
        await r.execute(plan, "app-01")
    result = await r.execute(plan, "app-01", override=True,
                             overridden=frozenset({"NO_SPACE"}))
    assert result.state is TaskState.OK
    done, refused = r.log.rows()
    assert refused.outcome == "refused" and not refused.override
    assert done.outcome == "ok" and done.override and done.confirmed
    assert done.plan_data()["overridden"] == ["NO_SPACE"]


async def test_vanished_or_renamed_target_is_refused_and_logged(tmp_path: Path) -> None:
    r = runner(tmp_path, store=small_cluster())
    plan = r.plan("merge", "a")
    import dataclasses

    r.store.apply(Upsert(dataclasses.replace(r.store.vm("a"), name="app-01-old")))
    with pytest.raises(ActionRefused, match="renamed"):
        await r.execute(plan, "app-01")
    r.store.apply(Remove(Kind.VM, "a"))
    with pytest.raises(ActionRefused, match="no longer in the inventory"):
        await r.execute(plan, "app-01")
    assert [row.outcome for row in r.log.rows()] == ["refused", "refused"]
    assert r.backend.handle.calls == 0


@pytest.mark.parametrize("behaviour", ["raise", "running"])
async def test_a_lost_or_missing_outcome_is_unknown_never_ok(
    tmp_path: Path, behaviour: str
) -> None:
    r = runner(tmp_path, behaviour, store=small_cluster())
    result = await r.execute(r.plan("merge", "a"), "app-01")
    assert result.state is TaskState.UNKNOWN
    (row,) = r.log.rows()
    assert row.outcome == "unknown" and "verify" in row.status
    assert r.backend.handle.calls == 1  # sent once, never resent


async def test_console_closing_mid_action_records_unknown(tmp_path: Path) -> None:
    r = runner(tmp_path, "hang", store=small_cluster())
    job = asyncio.ensure_future(r.execute(r.plan("merge", "a"), "app-01"))
    await asyncio.sleep(0.05)
    assert r.log.rows()[0].outcome == "running"  # intent committed before the call
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    (row,) = r.log.rows()
    assert row.outcome == "unknown" and "console closed" in row.error


async def test_no_log_means_no_action(tmp_path: Path) -> None:
    r = ActionRunner(small_cluster(), FaultyBackend("ok"), None, log_error="disk full")
    with pytest.raises(ActionRefused, match="disk full"):
        await r.execute(r.plan("merge", "a"), "app-01")
    assert r.backend.handle.calls == 0


async def test_what_the_operator_confirmed_must_still_stand(tmp_path: Path) -> None:
    from datetime import timedelta

    from ventana.state.model import Checkpoint, CheckpointKind

    r = runner(tmp_path, store=small_cluster())
    plan = r.plan("merge", "a")
    # A backup job leaves a checkpoint behind while the plan is on screen: the
    # merge would now take one more checkpoint, with a new warning.
    r.store.apply(Upsert(Checkpoint("a-bk", "a", "Veeam backup", "a-cp2",
                                    CheckpointKind.BACKUP, NOW - timedelta(hours=1))))
    with pytest.raises(ActionRefused, match=r"new warnings \(BACKUP_CHECKPOINT\)"):
        await r.execute(plan, "app-01")
    assert r.backend.handle.calls == 0
    assert r.log.rows()[0].outcome == "refused"


async def test_an_upgrade_goes_only_to_the_version_confirmed(tmp_path: Path) -> None:
    import dataclasses

    from ventana.state.model import PowerState

    store = small_cluster()
    store.apply(Upsert(dataclasses.replace(store.vm("b"), config_version="9.0")))
    store.apply(Upsert(dataclasses.replace(store.vm("c"), config_version="5.0",
                                           power=PowerState.OFF)))
    for cp in list(store.checkpoints_of("c")):
        store.apply(Remove(Kind.CHECKPOINT, cp.id))
    r = runner(tmp_path, store=store)
    plan = r.plan("upgrade", "c")
    assert not plan.blocking and plan.facts["target_version"] == "9.0"
    # A VM at a newer version joins the cluster before the operator confirms.
    store.apply(Upsert(dataclasses.replace(store.vm("b"), config_version="10.0")))
    with pytest.raises(ActionRefused, match=r"target version changed \(9.0 → 10.0\)"):
        await r.execute(plan, "dc-03")
    assert r.backend.handle.calls == 0


async def test_shared_log_cancelled_while_the_intent_commit_waits_sends_nothing(
        pg_url: str) -> None:
    """On a team's log the intent commit runs in a worker. The console closing while it
    waits (a lock held by another connection): nothing is sent, and the row the worker
    still commits is closed as cancelled, its lease dropped."""
    import time

    import psycopg

    from ventana.state.schema import LEASE_LOCK_KEY

    r = ActionRunner(small_cluster(), FaultyBackend("ok"), ActionLog.open(pg_url),
                     clock=lambda: NOW)
    holder = psycopg.connect(pg_url, autocommit=True)
    try:
        holder.execute("select pg_advisory_lock(%s)", (LEASE_LOCK_KEY,))
        job = asyncio.ensure_future(r.execute(r.plan("merge", "a"), "app-01"))

        def waiting() -> bool:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if holder.execute("select 1 from pg_stat_activity where wait_event = "
                                  "'advisory' and wait_event_type = 'Lock'").fetchall():
                    return True
                time.sleep(0.05)
            return False

        assert await asyncio.to_thread(waiting)
        assert not job.done()  # the loop is free while the commit waits
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        holder.execute("select pg_advisory_unlock(%s)", (LEASE_LOCK_KEY,))
        for _ in range(200):
            rows = r.log.rows()
            if rows and rows[0].outcome != "running":
                break
            await asyncio.sleep(0.05)
        (row,) = r.log.rows()
        assert row.outcome == "cancelled" and "before anything was sent" in row.error
        assert r.log.leases() == []
        assert r.backend.handle.calls == 0
    finally:
        holder.close()
        r.log.close()
