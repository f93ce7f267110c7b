"""The findings screen shows Hyper-V backup readiness read through the real backend
(issue 15), end to end against the WinRM endpoint (Pilot): the Backup integration
service disabled on a running VM appears as BACKUP_OFFLINE_ONLY with what was
checked and what was not, the agent started by hand as BACKUP_AGENT_START_MODE;
both leave when the host is healthy again."""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import placed, wait_for
from peers.winrm.fixture import start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from textual.widgets import Static

from ventana.backends.hyperv import Credential, HyperVBackend, HyperVConfig
from ventana.backends.sim import SimConfig
from ventana.state import findings as F
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind, PowerState
from ventana.tui.app import VentanaApp
from ventana.tui.findings_screen import FindingsList, FindingsScreen

pytestmark = pytest.mark.timeout(120)
SIZE = (180, 50)


async def test_backup_readiness_on_the_findings_screen(tmp_path: Path) -> None:
    model = ClusterModel(SimConfig(vms=12, nodes=2, rate=0))
    handle = start_winrm_peer(registry=build_hyperv_registry(model))
    node = next(iter(model.nodes))
    vm = next(v for v in model.vms_of(None) if v.node_id == node
              and v.power is PowerState.RUNNING and not v.name.startswith(("lnx-", "fw-")))
    try:
        config = HyperVConfig("HVCLUSTER01", handle.user, nodes=(f"127.0.0.1:{handle.port}",),
                              auth="ntlm", ca_bundle=handle.ca_path, poll_interval=0.3,
                              backup_interval=0, stream=False)
        backend = HyperVBackend(config, Credential(handle.user, handle.password, "test"))
        app = VentanaApp(backend, log=ActionLog.open(tmp_path / "a.db"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 12 and placed(app),
                           60)
            await wait_for(pilot, lambda: (v := app.store.vm(vm.id)) is not None
                           and v.vss_service == "ok", 20)
            await pilot.press("f")
            await wait_for(pilot, lambda: isinstance(app.screen, FindingsScreen))
            screen = app.screen
            assert isinstance(screen, FindingsScreen)

            async def detail_of(key: str) -> str:
                await wait_for(pilot, lambda: key in [f.key for f, _ in screen._rows], 20)
                keys = [f.key for f, _ in screen._rows]
                screen.query_one(FindingsList).move_to(keys.index(key))
                await pilot.pause(0.1)
                return str(screen.query_one("#findings-detail", Static).render())

            offline = f"vm:{vm.id}|{F.BACKUP_OFFLINE_ONLY}"
            mode = f"node:{node}|{F.AGENT_START_MODE}"
            assert offline not in [f.key for f, _ in screen._rows]
            model.backup.ic_disabled.add(("vss", vm.id))
            model.backup.start_mode[node] = "Manual"
            detail = await detail_of(offline)
            assert f"WARNING {F.BACKUP_OFFLINE_ONLY} {vm.name}" in detail
            assert "Backup (volume shadow copy) integration service is disabled" in detail
            assert "Not checked: dynamic disks and non-NTFS volumes" in detail
            detail = await detail_of(mode)
            assert "starts 'Manual', not automatically" in detail

            model.backup.ic_disabled.clear()
            model.backup.start_mode.clear()
            await wait_for(pilot, lambda: not {offline, mode} & {f.key for f, _ in screen._rows},
                           20)
    finally:
        handle.stop()
