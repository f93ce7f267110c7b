"""The maintenance-window queue on the simulator: projection, run, pause, skip.

A real SimBackend is pumped into a store (simulated time runs as fast as it
is consumed), a real ActionLog file holds the rows and the queue's tables.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from test_sim import by_name
from test_sim_actions import Session, quiet

from ventana.backends.actions import ActionRefused, ActionRunner
from ventana.backends.base import ReadOnlyError
from ventana.backends.window_runner import WindowRunner
from ventana.state.actionlog import ActionLog
from ventana.state.events import TaskProgress, Upsert
from ventana.state.model import PowerState, Task
from ventana.state.window import MaintenanceWindow, QueueItem, WindowStore, _schedule

# Two LUNs with room, five VMs each whose merge is not blocked.
CSV04 = ("git-01", "intranet-01", "kms-01")
CSV07 = ("av-01", "cafeteria-01", "jump-01")


def setup(s: Session, tmp_path: Path, name: str = "sat-night") -> tuple[ActionRunner, ActionLog,
                                                                         MaintenanceWindow]:
    log = ActionLog.open(tmp_path / "actions.db")
    runner = ActionRunner(s.store, s.backend, log, clock=s.backend.now)
    window = WindowStore.open(log.path).load(name, default_name=name)
    return runner, log, window


def queue(s: Session, window: MaintenanceWindow, names: tuple[str, ...],
          action: str = "merge") -> list[str]:
    return [window.add(by_name(s.store, n).id, n, action).id for n in names]


class Watch:
    """Records, at every change, which items run and on which LUN."""

    def __init__(self, wr: WindowRunner) -> None:
        self.wr = wr
        self.max_running = 0
        self.lun_clash = False
        wr.on_change = self.seen

    def seen(self) -> None:
        running = [self.wr.started_plans[i] for i in self.wr.running_ids
                   if i in self.wr.started_plans]
        self.max_running = max(self.max_running, len(running))
        luns = [p.lun_id for p in running]
        self.lun_clash |= len(luns) != len(set(luns))


def test_schedule_honours_parallel_lun_and_vm() -> None:
    # a, b on L1; c on L2; d on a's VM: N=2 runs a+c, then b, then d after a.
    plan = _schedule([("a", "v1", "L1", 10, None), ("b", "v2", "L1", 10, None),
                      ("c", "v3", "L2", 5, None), ("d", "v1", "L2", 1, None)], 2, False)
    assert plan == {"a": (0, 10), "c": (0, 5), "b": (10, 20), "d": (10, 11)}
    assert _schedule([("a", "v1", "L1", 10, None), ("b", "v2", "L1", 10, None)], 2, True) == {
        "a": (0, 10), "b": (0, 10)}
    # A running item keeps its slot for what is left of it.
    assert _schedule([("a", "v1", "L1", 10, 3.0), ("b", "v2", "L1", 4, None)], 1, False) == {
        "a": (0, 3.0), "b": (3.0, 7.0)}


async def test_projection_cumulates_space_and_says_whether_it_fits(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, _log, window = setup(s, tmp_path)
        ids = queue(s, window, ("git-01", "intranet-01", "av-01"))
        wr = WindowRunner(runner, window)
        proj = wr.projection()
        items = {p.item.id: p for p in proj.items}
        first, second, other = (items[i] for i in ids)
        assert first.lun_id == second.lun_id != other.lun_id
        p1, p2 = first.plan, second.plan
        assert p1 and p2 and p1.free_now is not None and p2.free_now is not None
        # Cumulative on the shared LUN: the second adds its own change to the first's.
        assert first.lun_free_after_worst == p1.free_after_worst
        assert second.lun_free_after_worst == (
            p1.free_after_worst + p2.free_after_worst - p2.free_now)  # type: ignore[operator]
        assert second.lun_free_after_best == (
            p1.free_after_best + p2.free_after_best - p2.free_now)  # type: ignore[operator]
        # One at a time: end of the queue = sum of the likely estimates.
        total = sum(p.estimate.likely_s for p in proj.items)
        assert proj.end_likely == proj.now + timedelta(seconds=total)
        assert proj.fits_likely is None  # no end time yet
        window.set_end(proj.now + timedelta(seconds=total + 60))
        proj = wr.projection()
        assert proj.fits_likely is True and proj.fits_worst is False
        assert proj.items[-1].fits_likely is True and proj.items[-1].fits_worst is False
        window.set_end(proj.now + timedelta(seconds=proj.items[0].estimate.likely_s + 1))
        proj = wr.projection()
        assert proj.fits_likely is False and proj.items[0].fits_likely is True
        # Two in parallel on two LUNs: shorter.
        window.set_parallel(2)
        assert wr.projection().end_likely < proj.end_likely
        # Each plan says it comes from this window.
        assert p1.params["queue_window"] == "sat-night" == p1.facts["queue_window"]


async def test_queue_runs_two_at_a_time_never_two_on_one_lun(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, log, window = setup(s, tmp_path)
        ids = queue(s, window, CSV04 + CSV07)
        window.set_parallel(2)
        wr = WindowRunner(runner, window)
        watch = Watch(wr)
        with pytest.raises(ActionRefused):
            wr.confirm("sat night")  # not the window's exact name
        assert wr.confirm("sat-night") == 6
        await asyncio.wait_for(wr.start(), 30)

        assert [window.item(i).status for i in ids] == ["ok"] * 6  # type: ignore[union-attr]
        assert watch.max_running == 2 and not watch.lun_clash
        rows = [r for r in log.rows(newest_first=False) if r.action == "merge"]
        assert len(rows) == 6 and all(r.outcome == "ok" for r in rows)
        for row in rows:
            plan = row.plan_data()
            assert plan["params"] == {"queue_window": "sat-night"}
            assert plan["facts"]["queue_window"] == "sat-night"
        assert {r.target_name for r in rows} == set(CSV04 + CSV07)
        assert s.backend.world.audit() == []


async def test_pause_finishes_running_and_starts_nothing_new(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, log, window = setup(s, tmp_path)
        ids = queue(s, window, CSV04)
        wr = WindowRunner(runner, window)

        def pause_on_first_start() -> None:
            if wr.running_ids and not wr.paused:
                wr.pause()

        wr.on_change = pause_on_first_start
        wr.confirm("sat-night")
        await asyncio.wait_for(wr.start(), 30)
        statuses = [window.item(i).status for i in ids]  # type: ignore[union-attr]
        assert statuses == ["ok", "queued", "queued"]
        assert not wr.active
        # Resuming needs the name again, and runs the rest.
        wr.on_change = None
        wr.confirm("sat-night")
        await asyncio.wait_for(wr.start(), 30)
        assert [window.item(i).status for i in ids] == ["ok"] * 3  # type: ignore[union-attr]
        assert len([r for r in log.rows() if r.action == "merge"]) == 3


async def test_skip_and_blocked_items_are_logged_and_others_run(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, log, window = setup(s, tmp_path)
        # dba-01 is blocked (NO_SPACE) at its turn: skipped with the reason.
        ids = queue(s, window, ("git-01", "dba-01", "av-01"))
        wr = WindowRunner(runner, window)
        wr.confirm("sat-night")
        assert wr.skip(ids[2])
        assert not wr.skip("nope")
        await asyncio.wait_for(wr.start(), 30)
        git, dba, av = (window.item(i) for i in ids)
        assert git and git.status == "ok"
        assert dba and dba.status == "skipped" and "NO_SPACE" in dba.reason
        assert av and av.status == "skipped" and "skipped by the operator" in av.reason
        by_target = {r.target_name: r for r in log.rows()}
        assert by_target["dba-01"].outcome == "refused"
        assert "NO_SPACE" in by_target["dba-01"].error
        assert by_target["av-01"].outcome == "cancelled"
        assert "window sat-night" in by_target["av-01"].error
        assert by_target["av-01"].plan_data()["params"] == {"queue_window": "sat-night"}


async def test_a_failed_step_skips_its_vm_only(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, log, window = setup(s, tmp_path)
        old = by_name(s.store, "old-fs-01")
        ids = [
            window.add(old.id, "old-fs-01", "compact").id,  # fails: the VM is started
            window.add(old.id, "old-fs-01", "upgrade").id,  # same VM: skipped
            window.add(by_name(s.store, "git-01").id, "git-01", "merge").id,  # unrelated: runs
        ]

        def start_the_vm(event: object) -> None:
            # Someone starts the VM while Optimize-VHD runs.
            if (isinstance(event, Upsert) and isinstance(event.entity, Task)
                    and event.entity.kind == "compact"):
                s.backend.world.set_power(old.id, PowerState.RUNNING)

        s.hook = start_the_vm
        wr = WindowRunner(runner, window)
        wr.confirm("sat-night")
        await asyncio.wait_for(wr.start(), 30)
        compact, upgrade, merge = (window.item(i) for i in ids)
        assert compact and compact.status == "failed" and "Optimize-VHD" in compact.reason
        assert upgrade and upgrade.status == "skipped"
        assert "earlier step on this VM" in upgrade.reason
        assert merge and merge.status == "ok"
        outcomes = {(r.action, r.target_name): r.outcome for r in log.rows()}
        assert outcomes[("compact", "old-fs-01")] == "failed"
        assert outcomes[("upgrade", "old-fs-01")] == "cancelled"
        assert outcomes[("merge", "git-01")] == "ok"


async def test_queue_survives_a_restart(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        _runner, _log, window = setup(s, tmp_path)
        ids = queue(s, window, ("git-01", "av-01", "kms-01"))
        window.move(ids[2], -2)
        window.set_end(s.backend.now() + timedelta(hours=5))
        window.set_parallel(2)
        window.update(ids[1], status="running", started=s.backend.now())  # cut off mid-run
        window.rename("sunday")
        end = window.end
    again = WindowStore.open(tmp_path / "actions.db").load()
    assert again.name == "sunday" and again.end == end and again.parallel == 2
    assert [i.id for i in again.items] == [ids[2], ids[0], ids[1]]
    cut = again.item(ids[1])
    assert cut and cut.status == "unknown" and "verify on the host" in cut.reason
    assert WindowStore.open(tmp_path / "actions.db").load("sat-night").items == []


async def test_read_only_session_can_plan_but_not_run(tmp_path: Path) -> None:
    async with Session(quiet(read_only=True)) as s:
        runner, _log, window = setup(s, tmp_path)
        queue(s, window, ("git-01",))
        wr = WindowRunner(runner, window)
        assert wr.projection().items[0].plan is not None
        with pytest.raises(ReadOnlyError):
            wr.confirm("sat-night")


async def test_progress_events_do_not_matter_to_the_queue(tmp_path: Path) -> None:
    # A queue with one item on a vanished VM: skipped (refused, logged), no crash.
    async with Session(quiet()) as s:
        runner, _log, window = setup(s, tmp_path)
        item = window.add("no-such-vm", "ghost", "merge")
        wr = WindowRunner(runner, window)
        assert wr.projection().items[0].error
        assert wr.confirm("sat-night") == 0
        assert window.item(item.id).status == "skipped"  # type: ignore[union-attr]
        assert not any(isinstance(e, TaskProgress) for e in s.events)


async def test_nothing_starts_while_the_link_is_stale(tmp_path: Path) -> None:
    async with Session(quiet()) as s:
        runner, _log, window = setup(s, tmp_path)
        ids = queue(s, window, ("git-01",))
        wr = WindowRunner(runner, window)
        wr.confirm("sat-night")
        s.backend.drop_connection()
        await s.settle()
        assert s.store.stale
        task = wr.start()
        await asyncio.sleep(1.2)  # two polls
        assert window.item(ids[0]).status == "queued" and wr.active  # type: ignore[union-attr]
        s.backend.restore_connection()
        await asyncio.wait_for(task, 30)
        assert window.item(ids[0]).status == "ok"  # type: ignore[union-attr]



async def one_runs_one_waits(window: MaintenanceWindow, *, ran: str, waits: str
                             ) -> QueueItem:
    """Wait (up to 10 s) for item ``ran`` to end ok; item ``waits`` is still queued then
    (returned, to check why)."""
    for _ in range(100):
        if window.item(ran).status == "ok":  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.1)
    held = window.item(waits)
    assert window.item(ran).status == "ok"  # type: ignore[union-attr]
    assert held is not None and held.status == "queued"
    return held


async def test_one_stale_node_holds_only_its_own_items(tmp_path: Path) -> None:
    """Issue 14: with one node's link down, its VMs' items wait (saying which node)
    while the items on healthy nodes run; they run once the node is back."""
    async with Session(quiet()) as s:
        runner, _log, window = setup(s, tmp_path)
        git, av = by_name(s.store, "git-01"), by_name(s.store, "av-01")
        assert git.node_id != av.node_id
        ids = queue(s, window, ("git-01", "av-01"))
        wr = WindowRunner(runner, window)
        wr.confirm("sat-night")
        s.backend.drop_node(git.node_id)
        await s.settle()
        assert s.store.stale_for(git.node_id) and not s.store.stale_for(av.node_id)
        task = wr.start()
        held = await one_runs_one_waits(window, ran=ids[1], waits=ids[0])
        assert held.reason == f"waiting: the link to node {git.node_id} is not live"
        s.backend.restore_node(git.node_id)
        await asyncio.wait_for(task, 30)
        assert window.item(ids[0]).status == "ok"  # type: ignore[union-attr]


async def test_a_composite_target_down_holds_only_its_own_items(tmp_path: Path) -> None:
    """Two targets in one console (MultiBackend): with one target's link down, its item
    waits, saying which target, while the other target's item runs; it runs once the
    link is back (its VM has no node another link names: the target decides)."""
    from ventana.backends.multi import MultiBackend
    from ventana.state.plans import Severity, plan_merge

    lab, dc2 = quiet(), quiet(seed=8)
    async with Session(MultiBackend([("lab", lab), ("dc2", dc2)])) as s:  # type: ignore[arg-type]
        for _ in range(500):  # the second target's inventory follows the first's
            if len(s.store.staleness().targets) == 2 and not s.store.stale:
                break
            await asyncio.sleep(0.01)
        runner, _log, window = setup(s, tmp_path)

        def mergeable(prefix: str) -> tuple[str, str]:
            for vm in sorted(s.store.vms(), key=lambda v: v.name):
                plan = plan_merge(s.store, vm.id, s.backend.now())
                if (vm.id.startswith(prefix) and s.store.checkpoints_of(vm.id)
                        and not any(f.severity is Severity.BLOCKING for f in plan.findings)):
                    return vm.id, vm.name
            raise AssertionError(f"no mergeable VM under {prefix}")

        ids = [window.add(*mergeable(prefix), "merge").id for prefix in ("lab/", "dc2/")]
        wr = WindowRunner(runner, window)
        wr.confirm("sat-night")
        dc2.drop_connection()
        await s.settle()
        assert s.store.staleness().partial
        task = wr.start()
        held = await one_runs_one_waits(window, ran=ids[0], waits=ids[1])
        assert held.reason == "waiting: the link to dc2 is not live", held.reason
        dc2.restore_connection()
        await asyncio.wait_for(task, 30)
        assert window.item(ids[1]).status == "ok"  # type: ignore[union-attr]


HOLDER = """
import sys
from ventana.state.actionlog import ActionLog
from ventana.state.leases import Claim
log = ActionLog.open(sys.argv[1])
row = log.begin(action="merge", target_system="sim", mode="read-write",
                target_object=sys.argv[2], target_name=sys.argv[3], plan={}, findings=[],
                override=False, confirmed=True, task_id="merge-other0002", claim=Claim(ttl=30))
print("begun", flush=True)
sys.stdin.readline()  # holds the VM's lease until told
log.finish(row, outcome="ok")
log.close()
print("done", flush=True)
"""


async def test_an_item_another_console_holds_waits_naming_the_holder(pg_url: str) -> None:
    """Team mode: the queue does not run (nor skip) an item whose VM another console
    process acts on; it waits, saying who holds it, while the rest of the queue runs,
    and runs once the other console is done."""
    import subprocess
    import sys

    async with Session(quiet()) as s:
        log = ActionLog.open(pg_url)
        runner = ActionRunner(s.store, s.backend, log, clock=s.backend.now)
        window = WindowStore.open(log.path).load("sat-night", default_name="sat-night")
        held, free = queue(s, window, ("git-01", "av-01"))
        vm = by_name(s.store, "git-01")
        other = subprocess.Popen([sys.executable, "-c", HOLDER, pg_url, f"vm:{vm.id}",
                                  "git-01"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert other.stdout is not None and other.stdin is not None
            assert (await asyncio.to_thread(other.stdout.readline)).strip() == "begun"
            wr = WindowRunner(runner, window)
            assert wr.confirm("sat-night") == 2
            run = wr.start()

            async def until(cond: object, timeout: float = 20) -> None:
                async def poll() -> None:
                    while not cond():  # type: ignore[operator]
                        await asyncio.sleep(0.05)
                await asyncio.wait_for(poll(), timeout)

            await until(lambda: window.item(free).status == "ok")  # type: ignore[union-attr]
            item = window.item(held)
            assert item is not None and item.status == "queued", item
            assert item.reason.startswith("waiting: held from another console by ")
            assert "@" in item.reason and "merge since" in item.reason  # who, what, since
            assert not run.done()
            other.stdin.write("\n")
            other.stdin.flush()
            assert (await asyncio.to_thread(other.stdout.readline)).strip() == "done"
            await asyncio.wait_for(run, 30)
            assert window.item(held).status == "ok"  # type: ignore[union-attr]
        finally:
            other.kill()
            other.wait()
        # One row of ours per VM (the wait wrote none), the other console's one.
        mine = [r for r in log.rows() if r.task_id != "merge-other0002"]
        assert sorted(r.target_name for r in mine) == ["av-01", "git-01"]
        assert all(r.outcome == "ok" for r in log.rows())
        log.close()


async def test_the_queue_waits_while_the_teams_log_is_out_of_reach() -> None:
    """Team mode: the database gone after the run was confirmed, nothing starts and
    nothing is skipped (every intent row would be refused); it back, the queue runs."""
    from peers.postgres import PgServer

    with PgServer() as pg:
        pg.psql("create database team")
        async with Session(quiet()) as s:
            log = ActionLog.open(pg.url("team"))
            runner = ActionRunner(s.store, s.backend, log, clock=s.backend.now)
            window = WindowStore.open(log.path).load("sat-night", default_name="sat-night")
            ids = queue(s, window, ("git-01", "av-01"))
            wr = WindowRunner(runner, window)
            assert wr.confirm("sat-night") == 2
            await asyncio.to_thread(pg.kill)
            run = wr.start()
            await asyncio.sleep(1.5)  # three rounds of the loop
            assert [i.status for i in window.items] == ["queued", "queued"]
            assert not run.done() and not wr.running_ids
            await asyncio.to_thread(pg.start)
            await asyncio.wait_for(run, 30)
            assert [window.item(i).status for i in ids] == ["ok", "ok"]  # type: ignore[union-attr]
            assert sorted(r.outcome for r in log.rows()) == ["ok", "ok"]
            log.close()
