"""Issue 14: the rebuild plan of a running VM at 80x24 and 200x55.

It states what the guest shutdown does and offers "Turn off … instead of a guest shutdown" as an
explicit option (unticked). Regenerate with ``--snapshot-update`` after a
deliberate change and look at the SVGs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import make_app, populated, wait_for
from textual.pilot import Pilot
from textual.widgets import Input

from ventana.state.model import PowerState, ReplicationState
from ventana.tui.app import VentanaApp
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZES = {"80x24": (80, 24), "200x55": (200, 55)}


def _running_vm(app: VentanaApp) -> str:
    for vm in sorted(app.store.vms(), key=lambda v: v.name):
        if (vm.power is PowerState.RUNNING and vm.replication is ReplicationState.DISABLED
                and app.store.checkpoints_of(vm.id)):
            return vm.id
    raise AssertionError("no running VM with checkpoints")


@pytest.mark.parametrize("size", SIZES)
def test_rebuild_plan_stop_choice(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        await populated(pilot)
        app.query_one(VmTable).select_vm(_running_vm(app))
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        for box in app.screen.query(Input):
            box.cursor_blink = False  # a blinking cursor makes the SVG a coin toss
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=ready)
