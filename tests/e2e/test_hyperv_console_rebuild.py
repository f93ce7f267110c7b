"""The console's rebuild on a real PowerShell Remoting endpoint (`ventana --hyperv`).

`b` on a VM opens the rebuild plan, the typed name starts it; the six steps
run as cmdlets on the WinRM/PSRP peer, the checklist shows them, and the
panes show the new VM and the renamed old one as the endpoint reports them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from apphelp import placed, read_whole_plan, wait_for
from peers.winrm.fixture import start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from test_hyperv_console_cleanup import _app
from textual.widgets import Input

from ventana.backends.sim import SimConfig
from ventana.state.model import Kind, PowerState, ReplicationState
from ventana.state.rebuild import RebuildState, RebuildStore
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.rebuild_screen import RebuildScreen
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(120)


async def test_rebuild_on_a_psrp_endpoint_from_the_console(tmp_path: Path) -> None:
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    vm = next(v for v in sorted(model.vms.values(), key=lambda v: v.name)
              if v.generation == 2 and model.chains.get(v.id) and v.disk_ids
              and v.power is PowerState.RUNNING
              and v.replication is ReplicationState.DISABLED)
    with model.lock:  # room for the merge and the copy
        lun = model.luns[vm.lun_id]
        model.luns[lun.id] = dataclasses.replace(lun, total_bytes=lun.total_bytes + 2**41,
                                                 free_bytes=lun.free_bytes + 2**41)
        model.changed()
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        app, log = _app(tmp_path, model, handle)
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app),
                           timeout=60)
            assert app.query_one(VmTable).select_vm(vm.id)
            await pilot.pause(0.05)
            await pilot.press("b")
            await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
            plan = app.screen.plan  # type: ignore[attr-defined]
            assert plan.action == "rebuild" and not plan.blocking
            await read_whole_plan(pilot)  # a confirmation needs the whole plan seen (issue 12)
            app.screen.query_one("#confirm-name", Input).value = vm.name
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, RebuildScreen))

            def latest():  # type: ignore[no-untyped-def]
                rs = RebuildStore.open(tmp_path / "a.db")
                try:
                    return rs.latest(vm.id)
                finally:
                    rs.close()

            await wait_for(pilot, lambda: latest() is not None
                           and latest().state is RebuildState.DONE, timeout=60)
            wf = latest()
            await wait_for(pilot, lambda: app.store.vm(wf.new_vm_id) is not None
                           and app.store.vm(vm.id).name == wf.old_vm_name, timeout=20)
            new = app.store.vm(wf.new_vm_id)
            assert new.name == vm.name and new.power is PowerState.RUNNING
            assert app.store.vm(vm.id).power is PowerState.OFF
            assert not app.store.checkpoints_of(vm.id)
            assert handle.password not in app.export_screenshot()

            def rebuild_row_finished() -> bool:  # the outcome row follows the workflow's DONE
                rows = [r for r in log.rows() if r.action == "rebuild"]
                return bool(rows) and rows[0].outcome not in (None, "running")

            await wait_for(pilot, rebuild_row_finished, timeout=20)
        rows = {r.action: r for r in log.rows()}
        assert rows["rebuild"].outcome == "warning"  # guest services not compared
        assert "guest services not compared" in rows["rebuild"].error
        assert rows["rebuild.verify_boot"].outcome == "ok"
        log.close()
    finally:
        handle.stop()
