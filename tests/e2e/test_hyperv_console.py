"""The console on a real PowerShell Remoting endpoint: `ventana --hyperv` end to end.

The WinRM/PSRP peer answers the Hyper-V cmdlets from the simulated cluster;
the operator merges a VM's checkpoints through plan → typed confirmation, and
the merge runs as Remove-VMSnapshot on the endpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apphelp import placed, wait_for
from peers.winrm.fixture import start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from peers.winrm.hyperv.profile import MODES

from ventana.backends.hyperv.commands import remove_all_snapshots
from ventana.backends.sim import SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind
from ventana.state.plans import plan_merge
from ventana.tui.app import VentanaApp
from ventana.tui.cli import _hyperv_backend, build_parser
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("mode", list(MODES))
async def test_merge_on_a_psrp_endpoint_from_the_console(tmp_path: Path, mode: str) -> None:
    """Against each host mode of the endpoint (Server 2019/2016 numbering, a German
    host, node names spelled differently)."""
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0), profile=MODES[mode])
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        secret = tmp_path / "pw"
        secret.write_text(handle.password + "\n")
        os.chmod(secret, 0o600)
        args = build_parser().parse_args([
            "--hyperv", "HVCLUSTER01", "--node", f"127.0.0.1:{handle.port}",
            "--user", handle.user, "--auth", "ntlm", "--ca-file", str(handle.ca_path),
            "--password-file", str(secret), "--read-write",
        ])
        backend = _hyperv_backend(args)
        assert not backend.read_only
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(backend, log=log)
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app),
                           timeout=60)
            await pilot.pause(0.3)
            store = app.store
            candidates = [
                vm for vm in sorted(store.vms(), key=lambda v: v.name)
                if store.checkpoints_of(vm.id)
                and not plan_merge(store, vm.id, app.clock()).blocking
            ]
            assert candidates, "the simulated cluster should have a mergeable VM"
            vm = candidates[0]
            app.query_one(VmTable).select_vm(vm.id)
            await pilot.press("m")
            await pilot.pause(0.2)
            assert isinstance(app.screen, PlanScreen)
            # The plan's command is exactly the command sent.
            assert app.screen.plan.command == remove_all_snapshots(vm.id).as_powershell()
            await pilot.press(*vm.name, "enter")
            await wait_for(pilot, lambda: bool(log.rows()) and log.rows()[0].outcome != "running",
                           timeout=60)
            (row,) = log.rows()
            assert row.outcome == "ok", row.error
            assert row.target_system == "hyperv://HVCLUSTER01"
            await wait_for(pilot, lambda: not store.checkpoints_of(vm.id), timeout=30)
            assert handle.password not in app.export_screenshot()
        log.close()
    finally:
        handle.stop()


async def test_upgrade_on_a_psrp_endpoint_is_refused_running_and_done_off(
    tmp_path: Path,
) -> None:
    from ventana.state.derived import version_key
    from ventana.state.model import PowerState, TaskState

    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    try:
        secret = tmp_path / "pw"
        secret.write_text(handle.password + "\n")
        os.chmod(secret, 0o600)
        args = build_parser().parse_args([
            "--hyperv", "HVCLUSTER01", "--node", f"127.0.0.1:{handle.port}",
            "--user", handle.user, "--auth", "ntlm", "--ca-file", str(handle.ca_path),
            "--password-file", str(secret), "--read-write",
        ])
        backend = _hyperv_backend(args)
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(backend, log=log)
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app),
                           timeout=60)
            # One endpoint stands for the node it was reached as; act on its VMs.
            reached = {n.computer.casefold() for n in backend._nodes if n.healthy}
            old = next(v for v in sorted(app.store.vms(), key=lambda v: v.name)
                       if version_key(v.config_version) < (9, 0)
                       and v.node_id.casefold() in reached)
            # The host refuses a running VM even when the operator overrides.
            model.set_power(old.id, PowerState.RUNNING)
            executor = backend.executor()
            refused = await executor.upgrade_version(old.id, "t-1", "9.0")
            assert refused.state is TaskState.FAILED
            assert "current state" in refused.error
            # Off: it goes through, and the version is read back from the host.
            model.set_power(old.id, PowerState.OFF)
            done = await executor.upgrade_version(old.id, "t-2", "9.0")
            assert done.state is TaskState.OK, done.error
            assert "→ 9.0" in done.detail
            await wait_for(pilot, lambda: app.store.vm(old.id).config_version == "9.0")
        log.close()
    finally:
        handle.stop()
