"""A VM's Hyper-V backup facts in its detail pane and on the findings screen (Pilot).

The simulator reports none of these facts (its VMs keep their own); here a
backend's Upsert gives the selected VM what the Hyper-V backend reads
(``backends/hyperv/backup``) and the operator sees them under the VM's
checkpoint tree and as BACKUP_OFFLINE_ONLY with its full text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from apphelp import make_app, populated, wait_for
from textual.pilot import Pilot
from textual.widgets import Static

from ventana.state import findings as F
from ventana.state.events import Upsert
from ventana.state.model import PowerState
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.findings_screen import FindingsList, FindingsScreen

SIZE = (180, 50)


async def with_facts(pilot: Pilot) -> str:
    app = pilot.app
    assert isinstance(app, VentanaApp)
    await populated(pilot)
    await wait_for(pilot, lambda: app._selected_vm is not None)
    vm_id = app._selected_vm
    assert vm_id is not None
    vm = app.store.vm(vm_id)
    assert vm is not None
    app.store.apply(Upsert(dataclasses.replace(
        vm, power=PowerState.RUNNING, vss_service="disabled", guest_os="Ubuntu 22.04.4 LTS",
        guest_windows=False, passthrough_disks=("physical disk 3 (SCSI 0:2)",),
        backup_unchecked=("cluster group: \x1b[2Jnot read",))))
    pane = app.query_one(CheckpointsPane)
    await wait_for(pilot, lambda: "pass-through" in labels(pane))
    await pilot.pause(0.1)
    return vm_id


def labels(pane: CheckpointsPane) -> str:
    out: list[str] = []

    def walk(node) -> None:  # type: ignore[no-untyped-def]
        out.append(node.label.plain)
        for child in node.children:
            walk(child)

    walk(pane.root)
    return "\n".join(out)


async def test_the_pane_shows_the_facts_and_the_finding_says_what_was_checked(
        tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        vm_id = await with_facts(pilot)
        text = labels(app.query_one(CheckpointsPane))
        assert "Backup (VSS) integration service: disabled" in text
        assert "guest OS: Ubuntu 22.04.4 LTS" in text
        assert "pass-through disks: physical disk 3 (SCSI 0:2)" in text
        assert "not checked: cluster group: \\x1b[2Jnot read" in text  # escaped, not sent
        assert "host cannot see: dynamic disks, non-NTFS volumes" in text
        assert app.query_one(CheckpointsPane).selected_checkpoint_id(vm_id) is None

        await wait_for(pilot, lambda: any(
            f.code == F.BACKUP_OFFLINE_ONLY and f.target == f"vm:{vm_id}"
            for f in app.findings.findings()))
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FindingsScreen))
        screen = app.screen
        assert isinstance(screen, FindingsScreen)
        keys = [f.key for f, _ in screen._rows]
        screen.query_one(FindingsList).move_to(keys.index(f"vm:{vm_id}|{F.BACKUP_OFFLINE_ONLY}"))
        await pilot.pause(0.1)
        detail = str(screen.query_one("#findings-detail", Static).render())
        for part in ("Backup (volume shadow copy) integration service is disabled",
                     "the guest is not Windows", "pass-through disk(s) physical disk 3",
                     "Not checked: cluster group"):
            assert part in detail, detail


def test_backup_facts_in_the_vm_pane(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        await with_facts(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
