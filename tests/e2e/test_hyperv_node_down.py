"""Issue 14: one node of a Hyper-V cluster stops answering, in the console (Pilot).

Two WinRM/PSRP endpoints, one per node, serve the simulated cluster; the
second one is stopped. Only that node's VMs, its node row and the CSVs it
coordinates show stale; the header says "1/2 nodes" and names it; a merge on
the dead node's VM is refused by pre-flight while one on the healthy node's VM
runs through the endpoint.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apphelp import placed, wait_for
from peers.winrm.fixture import node_endpoints
from peers.winrm.hyperv import ClusterModel
from test_hyperv_backend import config_for

from ventana.backends.actions import ActionRefused
from ventana.backends.hyperv import Credential, HyperVBackend
from ventana.backends.sim import SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind, TaskState
from ventana.state.plans import plan_merge
from ventana.tui.app import VentanaApp
from ventana.tui.header import StatusHeader
from ventana.tui.luns_pane import LunsPane
from ventana.tui.nodes_pane import NodesPane
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(120)


async def test_one_dead_node_leaves_the_other_bright_and_actionable(tmp_path: Path) -> None:
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    with node_endpoints(model, tmp_path / "cas.pem") as (names, handles, password):
        config = config_for(handles, str(tmp_path / "cas.pem"), poll_interval=0.3,
                            command_timeout=5.0, connection_timeout=3.0, read_only=False)
        backend = HyperVBackend(config, Credential(handles[0].user, password, "test"))
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(backend, log=log)
        async with app.run_test(size=(180, 50)) as pilot:
            store = app.store
            await wait_for(pilot, lambda: store.count(Kind.VM) >= 12 and placed(app)
                           and store.nodes_live() == (2, 2), timeout=60)
            live, dead = names
            await asyncio.to_thread(handles[1].peer.stop)  # the second node dies
            await wait_for(pilot, lambda: store.stale_for(dead), timeout=30)
            await pilot.pause(0.5)

            table = app.query_one(VmTable)
            assert not table.stale and table.stale_nodes == (dead,)
            rows = {vm.id: table.row_stale(vm.id) for vm in store.vms()}
            assert all(rows[v.id] == (v.node_id == dead) for v in store.vms())
            nodes = app.query_one(NodesPane)
            assert [k for k in nodes.keys if nodes.is_stale(k)] == [dead]
            luns = app.query_one(LunsPane)
            assert {k for k in luns.keys if luns.is_stale(k)} == {
                lun.id for lun in store.luns() if lun.owner_node_id == dead}
            shown = str(app.query_one(StatusHeader).render())
            assert re.search(rf"● 1/2( nodes)? stale: {dead} ", shown), shown

            now = datetime.now(UTC)

            def mergeable_on(node: str, but: str = "") -> str:
                """A VM on ``node`` with checkpoints whose merge blocks on nothing (but
                ``but``)."""
                for v, chain in sorted(model.chains.items()):
                    if chain and model.vms[v].node_id == node and {
                            f.code for f in plan_merge(store, v, now).blocking} <= {but}:
                        return v
                raise AssertionError(f"no mergeable VM on {node}")

            dead_vm = mergeable_on(dead, but="STALE_DATA")
            plan = app.runner.plan("merge", dead_vm)
            assert "STALE_DATA" in {f.code for f in plan.blocking}
            with pytest.raises(ActionRefused):
                await app.runner.execute(plan, plan.target_name)
            healthy_vm = mergeable_on(live)
            plan = app.runner.plan("merge", healthy_vm)
            assert not plan.blocking, plan.blocking
            result = await app.runner.execute(plan, plan.target_name)
            assert result.state is TaskState.OK, result.error
            assert not model.chains.get(healthy_vm)
        log.close()
