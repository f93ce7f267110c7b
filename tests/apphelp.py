"""Helpers for Pilot tests: build the app on the simulator, wait for it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from factories import NOW
from textual.pilot import Pilot
from textual.screen import Screen

from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind, Severity
from ventana.state.plans import plan_merge
from ventana.tui.app import VentanaApp


def make_app(
    tmp_path: Path, *, read_only: bool = False, rate: float = 0.0, speed: float = 1e6,
    **sim: object,
) -> VentanaApp:
    config = SimConfig(seed=7, rate=rate, speed=speed, epoch=NOW, read_only=read_only,
                       merge_failure_rate=0.0, **sim)  # type: ignore[arg-type]
    log = ActionLog.open(tmp_path / "actions.db")
    return VentanaApp(SimBackend(config), log=log, clock=lambda: NOW,
                      read_only_reason="started with --read-only" if read_only else "")


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    waited = 0.0
    while not condition():
        if waited >= timeout:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.05)
        waited += 0.05


def placed(app: VentanaApp) -> bool:
    """Everything received is in the table: nothing pending, and the first inventory's
    last slice applied (until then the table holds its rows: ``select_vm`` says no)."""
    core = app.core
    return (not app._pending and not core.loading and not core.inventory_applying
            and not core.still_loading)


async def populated(pilot: Pilot, vms: int = 74) -> None:
    app = pilot.app
    assert isinstance(app, VentanaApp)
    # The inventory is applied in slices: wait for the last one.
    await wait_for(pilot, lambda: app.store.count(Kind.VM) >= vms and placed(app))
    await pilot.pause(0.2)


def vm_where(app: VentanaApp, want: Callable[[set[str], int], bool]) -> str:
    """The first VM (by name) whose merge plan's blocking codes satisfy ``want``."""
    for vm in sorted(app.store.vms(), key=lambda v: v.name):
        plan = plan_merge(app.store, vm.id, NOW)
        blocking = {f.code for f in plan.findings if f.severity is Severity.BLOCKING}
        if want(blocking, len(app.store.checkpoints_of(vm.id))):
            return vm.id
    raise AssertionError("no VM matches")


def screen_lines(app: VentanaApp) -> list[str]:
    """The text on the terminal now, one string per line (what the operator reads)."""
    strips = app.screen._compositor.render_strips()
    return ["".join(segment.text for segment in strip) for strip in strips]


async def read_whole_plan(pilot: Pilot) -> None:
    """Scroll the plan screen to its end, as an operator reads it before confirming."""
    await pilot.press("ctrl+end")
    await wait_for(pilot, lambda: getattr(pilot.app.screen, "seen_all", True))


def help_text(screen: Screen) -> str:
    """The help dialog's texts, line by line as laid out on screen (every line of each
    text at its width: the dialog scrolls)."""
    from textual.widgets import Static

    return "\n".join(static.render_line(y).text for static in screen.query(Static)
                     for y in range(static.size.height))
