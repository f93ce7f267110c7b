"""Stop 14: in a composite session, one target's link down dims only that target.

The simulator (``lab``, one source naming no nodes: it speaks for its whole
target) next to a Hyper-V cluster served by the real WinRM/PSRP test peer
(``hv``, one endpoint per node). First an ``hv`` node's endpoint is stopped:
only that node's VMs, node row, CSVs, checkpoints and tasks are stale, and
the simulator's all stay bright and mergeable (before, the node-less
simulator's node and LUN rows and checkpoints were dimmed and its merges
refused because *some* link was down). Then the simulator's own link drops:
everything it owns is stale — its VM rows too, which before stayed bright —
while the healthy ``hv`` node stays bright; it comes back.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apphelp import placed, wait_for
from factories import NOW
from peers.winrm.fixture import node_endpoints
from peers.winrm.hyperv import ClusterModel
from test_hyperv_backend import config_for
from textual.pilot import Pilot

from ventana.backends.hyperv import Credential, HyperVBackend
from ventana.backends.multi import MultiBackend
from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind, Severity, TaskState
from ventana.state.plans import plan_merge
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.header import StatusHeader
from ventana.tui.luns_pane import LunsPane
from ventana.tui.nodes_pane import NodesPane
from ventana.tui.task_strip import TaskStrip
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(180)


def _blocking(app: VentanaApp, vm_id: str) -> set[str]:
    plan = plan_merge(app.store, vm_id, datetime.now(UTC))
    return {f.code for f in plan.findings if f.severity is Severity.BLOCKING}


def _mergeable(app: VentanaApp, prefix: str, node: str = "", *, but: str = "",
               not_named: frozenset[str] = frozenset()) -> str:
    """A VM of a target (on ``node``), with checkpoints, whose merge blocks on nothing
    (but ``but``), not named ``not_named`` (the task strip shows names)."""
    for vm in sorted(app.store.vms(), key=lambda v: v.id):
        if (vm.id.startswith(prefix) and (not node or vm.node_id == node)
                and app.store.checkpoints_of(vm.id) and vm.name not in not_named
                and _blocking(app, vm.id) <= {but} - {""}):
            return vm.id
    raise AssertionError(f"no mergeable VM under {prefix}{node}")


async def _merge(pilot: Pilot, app: VentanaApp, vm_id: str) -> None:
    plan = app.runner.plan("merge", vm_id)
    assert not plan.blocking, plan.blocking
    result = await app.runner.execute(plan, plan.target_name)
    assert result.state is TaskState.OK, result.error
    await wait_for(pilot, lambda: any(t.target == f"vm:{vm_id}" and t.state.finished
                                      for t in app.store.tasks()), timeout=30)


def _task_line(app: VentanaApp, vm_id: str) -> str:
    """The task strip's line for the merge of ``vm_id`` (by its VM's name: the other
    target's merge is on a VM of another name)."""
    name = app.store.vm(vm_id).name  # type: ignore[union-attr]
    shown = str(app.query_one(TaskStrip).content).splitlines()
    return next(line for line in shown if f" {name} " in line)


async def test_one_targets_link_down_dims_only_that_targets_rows_and_tasks(
        tmp_path: Path) -> None:
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    with node_endpoints(model, tmp_path / "cas.pem") as (names, handles, password):
        config = config_for(handles, str(tmp_path / "cas.pem"), poll_interval=0.3,
                            command_timeout=5.0, connection_timeout=3.0, read_only=False)
        hyperv = HyperVBackend(config, Credential(handles[0].user, password, "test"))
        lab = SimBackend(SimConfig(seed=7, vms=10, rate=0.0, speed=1e6, epoch=NOW,
                                   merge_failure_rate=0.0))
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(MultiBackend([("lab", lab), ("hv", hyperv)]), log=log)
        async with app.run_test(size=(180, 50)) as pilot:
            store = app.store
            await wait_for(pilot, lambda: store.count(Kind.VM) >= 22 and placed(app)
                           and store.nodes_live() == (2, 2), timeout=60)
            live, dead = (f"hv/{n}" for n in names)
            lab_vm = _mergeable(app, "lab/")
            hv_vm = _mergeable(app, "hv/", dead, not_named=frozenset({store.vm(lab_vm).name}))
            await _merge(pilot, app, lab_vm)  # a finished task on each target
            await _merge(pilot, app, hv_vm)
            await pilot.pause(0.3)
            assert "STALE" not in str(app.query_one(TaskStrip).content)

            # 1. One hv node's endpoint stops: only that node's things are stale.
            await asyncio.to_thread(handles[1].peer.stop)
            await wait_for(pilot, lambda: store.stale_for(dead), timeout=30)
            await pilot.pause(0.5)
            view = store.staleness()
            assert view.partial and not view.everything
            table = app.query_one(VmTable)
            assert not table.stale and table.stale_nodes == (dead,)
            assert all(table.row_stale(v.id) == (v.node_id == dead) for v in store.vms())
            nodes = app.query_one(NodesPane)
            assert [k for k in nodes.keys if nodes.is_stale(k)] == [dead]
            luns = app.query_one(LunsPane)
            owned = {lun.id for lun in store.luns() if lun.owner_node_id == dead}
            assert owned and {k for k in luns.keys if luns.is_stale(k)} == owned
            assert "lab ● connected" in str(app.query_one(StatusHeader).render())
            pane = app.query_one(CheckpointsPane)
            table.select_vm(hv_vm)
            await pilot.pause(0.2)
            assert pane.has_class("stale") and f"node {dead}'s link is down" in str(
                pane.root.label)
            table.select_vm(lab_vm)
            await pilot.pause(0.2)
            assert pane.vm_id == lab_vm and not pane.has_class("stale")
            hv_line, lab_line = _task_line(app, hv_vm), _task_line(app, lab_vm)
            assert "STALE: hv/" in hv_line and f"(node {dead} not answering)" in hv_line
            assert "STALE" not in lab_line and "not answering" not in lab_line
            # The simulator's VMs stay actionable; the dead node's are refused.
            lab_next = _mergeable(app, "lab/")
            assert "STALE_DATA" not in _blocking(app, lab_next)
            dead_vm = next(v.id for v in store.vms() if v.node_id == dead)
            assert "STALE_DATA" in _blocking(app, dead_vm)

            # 2. The simulator's own link (it names no nodes) drops: all of it is stale,
            # the healthy hv node stays bright.
            lab.drop_connection(reason="WinRM: no answer from the lab for 30 s")
            await wait_for(pilot, lambda: store.staleness().of("", lab_vm), timeout=10)
            await pilot.pause(0.3)
            view = store.staleness()
            assert view.partial and [t.name for t in view.down_targets] == ["lab"]
            assert table.stale_nodes == ("lab", dead)
            assert f"STALE: lab, {dead}" in table.render_line(0).text
            for vm in store.vms():
                assert table.row_stale(vm.id) == (vm.id.startswith("lab/")
                                                  or vm.node_id == dead), vm.id
            assert {k for k in nodes.keys if nodes.is_stale(k)} == {
                n.id for n in store.nodes() if n.id.startswith("lab/")} | {dead}
            assert {k for k in luns.keys if luns.is_stale(k)} == owned | {
                lun.id for lun in store.luns() if lun.id.startswith("lab/")}
            assert pane.has_class("stale") and "lab's link is down" in str(pane.root.label)
            lab_line = _task_line(app, lab_vm)
            assert "STALE: lab" in lab_line and "(lab not answering)" in lab_line
            assert "STALE_DATA" in _blocking(app, lab_next)
            live_vm = next(v.id for v in store.vms() if v.node_id == live)
            assert not table.row_stale(live_vm) and "STALE_DATA" not in _blocking(app, live_vm)

            # 3. It comes back: its rows and task are bright again, the dead node's not.
            lab.restore_connection()
            await wait_for(pilot, lambda: not store.staleness().of("", lab_vm), timeout=10)
            await pilot.pause(0.3)
            assert table.stale_nodes == (dead,)
            assert not any(table.row_stale(v.id) for v in store.vms() if v.node_id != dead)
            assert "STALE" not in _task_line(app, lab_vm)
            assert "STALE" in _task_line(app, hv_vm)
            assert not pane.has_class("stale")
        log.close()
