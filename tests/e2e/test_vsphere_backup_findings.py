"""The findings screen shows a vSphere backup fact read from the server (issue 15),
end to end against vcsim (Pilot): a disk set to independent mode by another
client appears as SNAPSHOT_SKIPS_DISKS with the disk's label, and leaves when
the disk is dependent again."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from apphelp import placed, wait_for
from peers.vcsim import BUILD_HINT, VcsimHandle, binary_path, is_built, start_vcsim

if not is_built():
    pytest.skip(f"vcsim test peer not built ({binary_path()}): {BUILD_HINT}",
                allow_module_level=True)

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim
from textual.widgets import Static

from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.state import findings as F
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind
from ventana.tui.app import VentanaApp
from ventana.tui.findings_screen import FindingsList, FindingsScreen

pytestmark = pytest.mark.timeout(60)
SIZE = (180, 50)
VM_NAME = "DC0_H0_VM0"


@pytest.fixture(scope="module")
def vcsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VcsimHandle]:
    handle = start_vcsim(tmp_path_factory.mktemp("vcsim"), quiet=True, clusters=0,
                         standalone_hosts=1, vms=2, datastores=1)
    yield handle
    handle.stop()


def set_disk_mode(handle: VcsimHandle, mode: str) -> str:
    """Another client sets the VM's first disk's mode; returns the disk's label."""
    si = SmartConnect(host=handle.host, port=handle.port, user=handle.user,
                      pwd=handle.password, httpConnectionTimeout=20,
                      sslContext=ssl.create_default_context(cafile=str(handle.ca_path)))
    try:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder,
                                                          [vim.VirtualMachine], True)
        vm = next(v for v in view.view if v.name == VM_NAME)
        view.Destroy()
        disk = next(d for d in vm.config.hardware.device
                    if isinstance(d, vim.vm.device.VirtualDisk))
        disk.backing.diskMode = mode
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[
            vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)])))
        return str(disk.deviceInfo.label)
    finally:
        Disconnect(si)


async def test_an_independent_disk_shows_on_the_findings_screen(
    vcsim: VcsimHandle, tmp_path: Path
) -> None:
    config = VSphereConfig(host=vcsim.host, port=vcsim.port, user=vcsim.user,
                           ca_file=vcsim.ca_path, wait_s=30)
    app = VentanaApp(VSphereBackend(config, password=vcsim.password),
                     log=ActionLog.open(tmp_path / "actions.db"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.store.count(Kind.VM) >= 2 and placed(app), 30)
        [vm] = [v for v in app.store.vms() if v.name == VM_NAME]
        key = f"vm:{vm.id}|{F.SNAPSHOT_SKIPS_DISKS}"
        assert app.findings.get(key) is None
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FindingsScreen))
        screen = app.screen
        assert isinstance(screen, FindingsScreen)

        label = await asyncio.to_thread(set_disk_mode, vcsim, "independent_persistent")
        await wait_for(pilot, lambda: key in [f.key for f, _ in screen._rows], 20)
        keys = [f.key for f, _ in screen._rows]
        screen.query_one(FindingsList).move_to(keys.index(key))
        await pilot.pause(0.1)
        detail = str(screen.query_one("#findings-detail", Static).render())
        assert f"WARNING {F.SNAPSHOT_SKIPS_DISKS} {VM_NAME}" in detail
        assert "snapshot-based image backup silently leaves out" in detail
        assert label in detail

        await asyncio.to_thread(set_disk_mode, vcsim, "persistent")
        await wait_for(pilot, lambda: key not in [f.key for f, _ in screen._rows], 20)
