"""The console's compact and delete on a real PowerShell Remoting endpoint (`ventana --hyperv`).

The operator opens the plan from the palette's actions, types the VM's name
(and, for a delete, the second word); the action runs as Optimize-VHD /
Remove-ClusterGroup + Remove-VM + Remove-Item on the WinRM/PSRP peer, and
the panes show what the endpoint then reports.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apphelp import placed, wait_for
from peers.winrm.fixture import start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry

from ventana.backends.sim import SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind, PowerState, ReplicationState
from ventana.tui.app import VentanaApp
from ventana.tui.cli import _hyperv_backend, build_parser
from ventana.tui.plan_screen import SECOND_WORD, PlanScreen
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(120)


def _app(tmp_path: Path, model: ClusterModel, handle) -> tuple[VentanaApp, ActionLog]:  # type: ignore[no-untyped-def]
    secret = tmp_path / "pw"
    secret.write_text(handle.password + "\n")
    os.chmod(secret, 0o600)
    args = build_parser().parse_args([
        "--hyperv", "HVCLUSTER01", "--node", f"127.0.0.1:{handle.port}",
        "--user", handle.user, "--auth", "ntlm", "--ca-file", str(handle.ca_path),
        "--password-file", str(secret), "--read-write",
    ])
    log = ActionLog.open(tmp_path / "a.db")
    return VentanaApp(_hyperv_backend(args), log=log), log


async def test_delete_then_compact_on_a_psrp_endpoint_from_the_console(tmp_path: Path) -> None:
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    doomed, compacted = [v for v in sorted(model.vms.values(), key=lambda v: v.name)
                         if v.disk_ids and v.replication is ReplicationState.DISABLED
                         and not model.chains.get(v.id)][:2]
    for vm in (doomed, compacted):
        model.set_power(vm.id, PowerState.OFF)
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        app, log = _app(tmp_path, model, handle)
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app),
                           timeout=60)
            files = [d.path for d in app.store.disks_of(doomed.id)]
            app.query_one(VmTable).select_vm(doomed.id)
            await pilot.pause(0.05)
            app.action_delete_vm()
            await pilot.pause(0.2)
            assert isinstance(app.screen, PlanScreen) and app.screen.plan.double_confirm
            assert not app.screen.plan.blocking
            await pilot.press(*doomed.name, "enter")
            await pilot.pause(0.1)
            await pilot.press(*SECOND_WORD, "enter")
            await wait_for(pilot, lambda: app.store.vm(doomed.id) is None, 30)
            assert doomed.id not in model.vms
            assert all(model.disk_by_path(p) is None for p in files)

            app.query_one(VmTable).select_vm(compacted.id)
            await pilot.pause(0.05)
            app.action_compact()
            await pilot.pause(0.2)
            assert isinstance(app.screen, PlanScreen) and not app.screen.plan.blocking
            before = sum(d.size_bytes for d in app.store.disks_of(compacted.id))
            await pilot.press(*compacted.name, "enter")
            await wait_for(pilot, lambda: len(log.rows()) == 2
                           and log.rows()[0].outcome != "running", 30)
            await wait_for(pilot, lambda: sum(
                d.size_bytes for d in app.store.disks_of(compacted.id)) < before, 10)
            assert handle.password not in app.export_screenshot()
        rows = {r.action: r for r in log.rows()}
        assert rows["delete"].outcome == "ok", rows["delete"].error
        assert rows["compact"].outcome == "ok", rows["compact"].error
        assert rows["compact"].size_after < rows["compact"].size_before
        assert rows["delete"].target_system == "hyperv://HVCLUSTER01"
        log.close()
    finally:
        handle.stop()
