"""The console on a real vSphere API (vcsim): `ventana --vsphere` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import wait_for
from peers.vcsim import BUILD_HINT, is_built, start_vcsim

from ventana.backends.vsphere.backend import DEFAULT_ENV
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind
from ventana.tui.app import VentanaApp
from ventana.tui.cli import VSPHERE_READ_ONLY, _vsphere_backend, build_parser
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

pytestmark = [
    pytest.mark.skipif(not is_built(), reason=BUILD_HINT),
    pytest.mark.timeout(90),
]


async def test_vsphere_inventory_fills_the_console_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handle = start_vcsim(tmp_path / "vcsim", hosts=2, vms=3, datastores=2)
    try:
        monkeypatch.setenv(DEFAULT_ENV, handle.password)
        args = build_parser().parse_args([
            "--vsphere", f"127.0.0.1:{handle.port}", "--user", handle.user,
            "--ca-file", str(handle.ca_path),
        ])
        backend = _vsphere_backend(args)
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(backend, log=log, read_only_reason=VSPHERE_READ_ONLY)
        async with app.run_test(size=(180, 50)) as pilot:
            await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 6, timeout=40)
            await pilot.pause(0.3)
            table = app.query_one(VmTable)
            assert table.row_count == app.store.count(Kind.VM) == 6
            assert app.store.count(Kind.NODE) == 2
            assert app.store.count(Kind.LUN) == 2
            assert app.read_only and app.query_one("#read-only-banner")
            assert "connected" in str(app.query_one("#header").render())
            await pilot.press("m")
            assert not isinstance(app.screen, PlanScreen)
            text = app.export_screenshot()
            assert handle.password not in text
        log.close()
    finally:
        handle.stop()
