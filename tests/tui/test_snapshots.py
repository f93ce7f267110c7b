"""What the operator sees, as SVGs in screenshots/ (fixed size, seed, clock).

Regenerate after a deliberate UI change with ``make snapshots`` and look at
the SVGs before committing them.
"""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated, vm_where
from textual.pilot import Pilot
from textual.widgets import Input

from ventana.tui.vm_table import VmTable

SIZE = (180, 50)


def test_main_screen(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        await populated(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_merge_plan_with_blocking_finding(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path)

    async def open_plan(pilot: Pilot) -> None:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: "NO_SPACE" in blocking)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        for box in app.screen.query(Input):
            box.cursor_blink = False  # a blinking cursor makes the SVG a coin toss
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_plan)


def test_read_only_banner(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = make_app(tmp_path, read_only=True)

    async def ready(pilot: Pilot) -> None:
        await populated(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
