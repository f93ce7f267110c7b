"""Issue 12: the screens at 80x24 and 200x55 (plan, confirm, main, findings, window).

Regenerate after a deliberate UI change with ``--snapshot-update`` and look
at the SVGs in screenshots/ before committing them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import make_app, populated, vm_where, wait_for
from textual.pilot import Pilot
from textual.widgets import Input

from ventana.tui.plan_screen import PlanScreen
from ventana.tui.vm_table import VmTable

SIZES = {"80x24": (80, 24), "200x55": (200, 55)}


async def _open_merge_plan(pilot: Pilot) -> PlanScreen:
    app = pilot.app
    await populated(pilot)
    vm_id = vm_where(app, lambda blocking, n: "NO_SPACE" in blocking)  # type: ignore[arg-type]
    app.query_one(VmTable).select_vm(vm_id)
    await pilot.press("m")
    await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
    for box in app.screen.query(Input):
        box.cursor_blink = False  # a blinking cursor makes the SVG a coin toss
    await pilot.pause(0.3)
    assert isinstance(app.screen, PlanScreen)
    return app.screen


@pytest.mark.parametrize("size", SIZES)
def test_plan(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """The plan as it opens: unseen lines flagged, summary and name box pinned."""
    app = make_app(tmp_path)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=_open_merge_plan)


@pytest.mark.parametrize("size", SIZES)
def test_confirm(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """Read to the end, override ticked, name typed: what Enter would confirm."""
    app = make_app(tmp_path)

    async def ready(pilot: Pilot) -> None:
        screen = await _open_merge_plan(pilot)
        await pilot.press("ctrl+end")
        await pilot.pause(0.1)
        screen.query_one("#override").value = True  # type: ignore[attr-defined]
        screen.query_one("#confirm-name", Input).value = screen.plan.target_name
        screen.query_one("#confirm-name", Input).focus()
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=ready)


async def _main(pilot: Pilot) -> None:
    await populated(pilot)
    await pilot.pause(0.2)


@pytest.mark.parametrize("size", SIZES)
def test_main(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """The console: four panes when wide, the VM list alone (1-4 switch) when narrow."""
    assert snap_compare(make_app(tmp_path), terminal_size=SIZES[size], run_before=_main)


@pytest.mark.parametrize("size", SIZES)
def test_findings(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    async def ready(pilot: Pilot) -> None:
        await _main(pilot)
        await pilot.press("f")
        await pilot.pause(0.5)

    assert snap_compare(make_app(tmp_path), terminal_size=SIZES[size], run_before=ready)


@pytest.mark.parametrize("size", SIZES)
def test_window(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    async def ready(pilot: Pilot) -> None:
        app = pilot.app
        await _main(pilot)
        for vm_id in [vm_where(app, lambda b, n: not b and n > 0)]:  # type: ignore[arg-type]
            app.query_one(VmTable).select_vm(vm_id)
            await pilot.press("p")
        await pilot.press("w")
        await pilot.pause(0.5)

    assert snap_compare(make_app(tmp_path), terminal_size=SIZES[size], run_before=ready)
