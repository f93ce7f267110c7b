"""Stop 14: two simulators in one console, one of them losing its link (Pilot).

``dc2`` names no nodes (it speaks for its whole target): when its link drops,
its VM rows, node rows, CSVs and tasks are stale and say so — the VM table's
stamp names it, its task's bar becomes "STALE: dc2" — while ``lab``'s stay
bright. The snapshots show that main screen at 80x24 and 200x55.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import placed, wait_for
from factories import NOW
from textual.pilot import Pilot

from ventana.backends.multi import MultiBackend
from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.events import Upsert
from ventana.state.model import Kind, Severity, Task, TaskState
from ventana.state.plans import plan_merge
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.luns_pane import LunsPane
from ventana.tui.nodes_pane import NodesPane
from ventana.tui.task_strip import TaskStrip
from ventana.tui.vm_table import VmTable

SIZES = {"80x24": (80, 24), "200x55": (200, 55)}
REASON = "WinRM: no answer from DC2CLUSTER for 30 s (read timeout)"


def _app(tmp_path: Path) -> tuple[VentanaApp, SimBackend]:
    def sim(seed: int) -> SimBackend:
        return SimBackend(SimConfig(seed=seed, vms=6, rate=0.0, speed=1e6, epoch=NOW,
                                    merge_failure_rate=0.0))

    dc2 = sim(8)
    multi = MultiBackend([("lab", sim(7)), ("dc2", dc2)])
    return VentanaApp(multi, log=ActionLog.open(tmp_path / "a.db"), clock=lambda: NOW), dc2


def _mergeable(app: VentanaApp, prefix: str, not_named: str = "") -> str:
    for vm in sorted(app.store.vms(), key=lambda v: v.name):
        plan = plan_merge(app.store, vm.id, NOW)
        if (vm.id.startswith(prefix) and app.store.checkpoints_of(vm.id)
                and vm.name != not_named
                and not any(f.severity is Severity.BLOCKING for f in plan.findings)):
            return vm.id
    raise AssertionError(f"no mergeable VM under {prefix}")


async def _ready(pilot: Pilot, dc2: SimBackend) -> tuple[str, str]:
    """Both inventories in, a merge done on each target, then dc2's link lost."""
    app = pilot.app
    assert isinstance(app, VentanaApp)
    await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app))
    merged = []
    for prefix in ("lab/", "dc2/"):
        first = app.store.vm(merged[0]) if merged else None
        vm_id = _mergeable(app, prefix, first.name if first else "")
        plan = app.runner.plan("merge", vm_id)
        result = await app.runner.execute(plan, plan.target_name)
        assert result.state is TaskState.OK, result.error
        merged.append(vm_id)
    await wait_for(pilot, lambda: sum(t.state.finished for t in app.store.tasks()) >= 2)
    dc2.drop_connection(reason=REASON)
    await wait_for(pilot, lambda: app.store.staleness().partial)
    await pilot.pause(0.3)
    return merged[0], merged[1]


async def test_a_target_down_dims_only_its_own_rows_and_tasks(tmp_path: Path) -> None:
    app, dc2 = _app(tmp_path)
    async with app.run_test(size=(180, 50)) as pilot:
        lab_vm, dc2_vm = await _ready(pilot, dc2)
        store = app.store
        table = app.query_one(VmTable)
        assert not table.stale and table.stale_nodes == ("dc2",)
        assert "STALE: dc2" in table.render_line(0).text
        for vm in store.vms():
            assert table.row_stale(vm.id) == vm.id.startswith("dc2/"), vm.id
        nodes = app.query_one(NodesPane)
        assert {k for k in nodes.keys if nodes.is_stale(k)} == {
            n.id for n in store.nodes() if n.id.startswith("dc2/")}
        luns = app.query_one(LunsPane)
        assert {k for k in luns.keys if luns.is_stale(k)} == {
            lun.id for lun in store.luns() if lun.id.startswith("dc2/")}
        pane = app.query_one(CheckpointsPane)  # follows the selected VM's own target
        table.select_vm(dc2_vm)
        await pilot.pause(0.2)
        assert pane.has_class("stale") and "stale: dc2's link is down" in str(pane.root.label)
        table.select_vm(lab_vm)
        await pilot.pause(0.2)
        assert pane.vm_id == lab_vm and not pane.has_class("stale")
        assert "stale" not in str(pane.root.label)
        strip = app.query_one(TaskStrip)
        assert not strip.has_class("stale")  # not everything is
        lines = str(strip.content).splitlines()
        dc2_line = next(x for x in lines if f" {store.vm(dc2_vm).name} " in x)
        lab_line = next(x for x in lines if f" {store.vm(lab_vm).name} " in x)
        assert "STALE: dc2" in dc2_line and "(dc2 not answering)" in dc2_line
        assert "STALE" not in lab_line and "━" in lab_line
        # Both down: everything, the strip dimmed as a whole too.
        app.backend.children[0].backend.drop_connection()  # type: ignore[attr-defined]
        await wait_for(pilot, lambda: store.staleness().everything)
        await pilot.pause(0.2)
        assert table.stale and strip.has_class("stale")
        assert all(" STALE " in x for x in str(strip.content).splitlines()[:2])


@pytest.mark.parametrize("size", SIZES)
def test_one_target_stale(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """The main screen of a composite with one target's link down, a finished merge
    on each target in the strip (upserted as recorded: a merge run here would widen
    the table's Task column or not, by timing)."""
    app, dc2 = _app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app))
        store, name = app.store, ""
        for n, prefix in enumerate(("lab/", "dc2/")):
            vm = store.vm(_mergeable(app, prefix, name))
            assert vm is not None
            name = vm.name
            store.apply(Upsert(Task(f"merge-{n}", "merge", f"vm:{vm.id}", vm.name, 100.0,
                                    TaskState.OK, NOW, NOW, "Merged 2 checkpoint(s)")))
        dc2.drop_connection(reason=REASON)
        await wait_for(pilot, lambda: app.store.staleness().partial)
        await pilot.pause(0.3)
        assert app.query_one(CheckpointsPane).has_class("stale")  # dc2's app-01 selected

    assert snap_compare(app, terminal_size=SIZES[size], run_before=ready)
