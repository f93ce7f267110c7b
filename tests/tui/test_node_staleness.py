"""Issue 14: one node's link down is not the cluster down (Pilot, on the simulator).

The simulator loses one node's link (``SimBackend.drop_node``: that node's own
source goes stale, the cluster's source names the others). What that node
owns — its VMs' rows, its node row, the CSVs it coordinates, the checkpoints
of a VM on it — shows stale; everything else stays bright and actionable; the
header says "3/4 nodes" and names the stale node; actions on its VMs are
refused by pre-flight (STALE_DATA) while a healthy node's VM merges. The
snapshots show the main screen so, at 80x24 and 200x55.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from apphelp import make_app, populated, wait_for
from factories import NOW
from textual.pilot import Pilot

from ventana.backends.actions import ActionRefused
from ventana.backends.sim import SimBackend
from ventana.state.model import Severity, TaskState
from ventana.state.plans import plan_merge
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.header import StatusHeader
from ventana.tui.luns_pane import LunsPane
from ventana.tui.nodes_pane import NodesPane
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)
SIZES = {"80x24": (80, 24), "200x55": (200, 55)}


def _sim(app: VentanaApp) -> SimBackend:
    backend = app.backend
    assert isinstance(backend, SimBackend)
    return backend


def _dead_node(app: VentanaApp) -> str:
    """The node to take down: the one with most VMs that have checkpoints (by name)."""
    return sorted(app.store.nodes(), key=lambda n: n.name)[1].id


def _mergeable_on(app: VentanaApp, node_id: str, *, stale_ok: bool = False) -> str:
    """A VM on ``node_id`` whose merge plan blocks on nothing (but STALE_DATA)."""
    allowed = {"STALE_DATA"} if stale_ok else set()
    for vm in sorted(app.store.vms(), key=lambda v: v.name):
        if vm.node_id != node_id or not app.store.checkpoints_of(vm.id):
            continue
        plan = plan_merge(app.store, vm.id, NOW)
        if {f.code for f in plan.findings if f.severity is Severity.BLOCKING} <= allowed:
            return vm.id
    raise AssertionError(f"no mergeable VM on {node_id}")


async def _drop(pilot: Pilot, node_id: str) -> None:
    app = pilot.app
    assert isinstance(app, VentanaApp)
    _sim(app).drop_node(node_id, f"WinRM: no answer from {node_id} for 30 s (read timeout)")
    await wait_for(pilot, lambda: app.store.stale_for(node_id))
    await pilot.pause(0.3)


async def test_one_node_down_marks_only_what_it_owns(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        store = app.store
        dead = _dead_node(app)
        healthy = sorted(n.id for n in store.nodes() if n.id != dead)
        healthy_vm = _mergeable_on(app, healthy[0])
        await _drop(pilot, dead)

        # The VM list: only the dead node's rows are stale; the header stamp names it.
        table = app.query_one(VmTable)
        assert not table.stale and table.stale_nodes == (dead,)
        on_dead = [vm.id for vm in store.vms() if vm.node_id == dead]
        on_live = [vm.id for vm in store.vms() if vm.node_id != dead]
        assert on_dead and on_live
        assert all(table.row_stale(v) for v in on_dead)
        assert not any(table.row_stale(v) for v in on_live)
        assert f"STALE: {dead}" in table.render_line(0).text

        # Nodes and LUN panes: the dead node's row, the CSVs it coordinates.
        nodes = app.query_one(NodesPane)
        assert [k for k in nodes.keys if nodes.is_stale(k)] == [dead]
        luns = app.query_one(LunsPane)
        owned = {lun.id for lun in store.luns() if lun.owner_node_id == dead}
        assert owned and {k for k in luns.keys if luns.is_stale(k)} == owned

        # The header: not a red "stale" for the whole target, but which node, and why.
        header = app.query_one(StatusHeader)
        shown = str(header.render())
        assert re.search(rf"● 3/4( nodes)? stale: {dead} ", shown), shown
        assert "no answer from" in shown
        assert "● stale" not in shown

        # The checkpoints pane follows the selected VM's node.
        pane = app.query_one(CheckpointsPane)
        table.select_vm(on_dead[0])
        await pilot.pause(0.2)
        assert pane.vm_id == on_dead[0] and pane.has_class("stale")
        assert "link is down" in str(pane.root.label)
        table.select_vm(healthy_vm)
        await pilot.pause(0.2)
        assert pane.vm_id == healthy_vm and not pane.has_class("stale")

        # Actions: refused on the dead node's VM (STALE_DATA names the node), a healthy
        # node's VM merges.
        dead_vm = _mergeable_on(app, dead, stale_ok=True)
        plan = app.runner.plan("merge", dead_vm)
        stale = [f for f in plan.findings if f.code == "STALE_DATA"]
        assert stale and f"node {dead}" in stale[0].message
        with pytest.raises(ActionRefused):
            await app.runner.execute(plan, plan.target_name)
        plan = app.runner.plan("merge", healthy_vm)
        assert "STALE_DATA" not in {f.code for f in plan.findings}
        result = await app.runner.execute(plan, plan.target_name)
        assert result.state is TaskState.OK, result.error

        # The node comes back: nothing is stale any more.
        _sim(app).restore_node(dead)
        await wait_for(pilot, lambda: not store.staleness().any)
        await pilot.pause(0.3)
        assert not table.stale_nodes and not any(table.row_stale(v) for v in on_dead)
        assert not any(nodes.is_stale(k) for k in nodes.keys)
        assert not any(luns.is_stale(k) for k in luns.keys)
        assert "stale" not in str(header.render())


async def test_the_whole_link_down_is_still_everything_stale(tmp_path: Path) -> None:
    """After one node was down and came back, losing the whole link dims everything
    (the node's own source goes stale with the cluster's)."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        dead = _dead_node(app)
        await _drop(pilot, dead)
        _sim(app).restore_node(dead)
        await wait_for(pilot, lambda: not app.store.staleness().any)
        _sim(app).drop_connection()
        await wait_for(pilot, lambda: app.store.staleness().everything)
        await pilot.pause(0.2)
        table = app.query_one(VmTable)
        assert table.stale and all(table.row_stale(v.id) for v in app.store.vms())
        assert all(app.store.stale_for(n.id) for n in app.store.nodes())
        assert "● stale" in str(app.query_one(StatusHeader).render())


@pytest.mark.parametrize("size", SIZES)
def test_one_node_stale(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """The main screen with one node's link down: its rows dimmed, the header naming it."""
    app = make_app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        await populated(pilot)
        await _drop(pilot, _dead_node(app))

    assert snap_compare(app, terminal_size=SIZES[size], run_before=ready)
