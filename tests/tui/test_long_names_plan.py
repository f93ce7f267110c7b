"""Issue 12: 10,000-character names on the plan screen.

Hostile names (a VM, its snapshots, its datastore) are cut in the middle
wherever the plan shows them — title, steps, findings, equivalent command,
tables, pinned summary — as on the rest of the plan; Ctrl+Y still copies the
whole command, the confirmation still needs the whole real name, and at 80x24
nothing is confirmed while part of the plan is off screen. SVGs in
screenshots/ (test_long_names_plan_*).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from apphelp import make_app, placed, populated, screen_lines, vm_where, wait_for
from factories import NOW
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static

from ventana.backends.base import Backend, Executor
from ventana.state.actionlog import ActionLog
from ventana.state.events import ConnectionChanged, Event, LinkState, Upsert
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Kind,
    Lun,
    LunRole,
    Node,
    Platform,
    PowerState,
    VirtualDisk,
)
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.fit import cap_middle, shorten_names
from ventana.tui.plan_screen import PlanBody, PlanScreen
from ventana.tui.vm_table import VmTable

SIZES = {"80x24": (80, 24), "200x55": (200, 55)}
#: Two names that differ only in their last characters, 10,000 long.
VM_NAME = "sql-" + "n" * 9_990 + "-prod01"
SNAP_NAME = "before 'CU12' " + "s" * 9_980 + " end"
DS_NAME = "DS-" + "d" * 9_990 + "-A"


class HostileVCenter(Backend):
    """A fixed vCenter whose VM, snapshot and datastore have 10,000-character names."""

    name = "hostile-vcenter"
    platform = Platform.VSPHERE

    def __init__(self) -> None:
        super().__init__("vsphere://vc01.corp.example:443", read_only=False)
        self._closed = asyncio.Event()

    def now(self):  # type: ignore[no-untyped-def]
        return NOW

    async def events(self) -> AsyncIterator[Event]:
        yield ConnectionChanged(self.target, LinkState.CONNECTING)
        disk = f"vm-101:[{DS_NAME}] sql/sql.vmdk"
        for entity in (
            Cluster("domain-c7", "Prod-Cluster", Platform.VSPHERE, nodes=1),
            Node("host-12", "esx01.corp.example", "domain-c7", vm_count=1),
            Lun("datastore-21", DS_NAME, "domain-c7", int(4000 * GB), int(310 * GB),
                role=LunRole.DATASTORE),
            VM("vm-101", VM_NAME, "domain-c7", "host-12", PowerState.RUNNING,
               memory_mb=32768, lun_id="datastore-21", disk_ids=(disk,)),
            VirtualDisk(disk, "vm-101", f"[{DS_NAME}] sql/sql.vmdk", DiskFormat.VMDK,
                        int(400 * GB), int(500 * GB), None, "datastore-21"),
            Checkpoint("snapshot-1", "vm-101", SNAP_NAME, None, CheckpointKind.STANDARD,
                       NOW - timedelta(days=40), f"[{DS_NAME}] sql/sql-000001.vmdk",
                       int(180 * GB), quiesced=True, memory=False),
        ):
            yield Upsert(entity)
        yield ConnectionChanged(self.target, LinkState.CONNECTED)
        await self._closed.wait()

    def _make_executor(self) -> Executor:
        raise NotImplementedError("a fixed backend runs nothing")

    async def close(self) -> None:
        self._closed.set()


def as_text(widget: Static) -> str:
    """What a Static shows, unwrapped (one long line per line of its content)."""
    console = Console(width=100_000, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def hostile_app(tmp_path: Path) -> VentanaApp:
    return VentanaApp(HostileVCenter(), log=ActionLog.open(tmp_path / "a.db"), clock=lambda: NOW)


async def open_remove_snapshot(pilot: Pilot) -> PlanScreen:
    app = pilot.app
    assert isinstance(app, VentanaApp)
    await wait_for(pilot, lambda: app.store.count(Kind.CHECKPOINT) == 1 and placed(app))
    app.query_one(VmTable).select_vm("vm-101")
    await pilot.pause(0.2)
    pane = app.query_one(CheckpointsPane)
    pane.focus()
    [node] = [n for n in pane.root.children if n.data == "snapshot-1"]
    pane.move_cursor(node)
    await pilot.pause(0.1)
    await pilot.press("x")
    await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
    for box in app.screen.query(Input):
        box.cursor_blink = False  # a blinking cursor makes the SVG a coin toss
    await pilot.pause(0.3)
    assert isinstance(app.screen, PlanScreen)
    return app.screen


def test_cap_middle_keeps_both_ends_and_shorten_names_finds_quoted_forms() -> None:
    short = cap_middle(VM_NAME, 40)
    assert len(short) == 40 and short.startswith("sql-nnn") and short.endswith("-prod01")
    assert cap_middle("short") == "short" and cap_middle("a\x1bb") == "a\\x1bb"
    text = (f"govc: govc snapshot.remove -vm '{VM_NAME}' 'before '\"'\"'CU12'\"'\"' s'\n"
            f"PowerCLI: Get-VM -Name '{SNAP_NAME.replace(chr(39), chr(39) * 2)}'")
    out = shorten_names(text, [VM_NAME, SNAP_NAME])
    assert VM_NAME not in out and "s" * 200 not in out
    assert cap_middle(VM_NAME) in out and cap_middle(SNAP_NAME) in out
    assert out.count("\n") == 1  # the command's own line break stays a line break
    # A name the plan did not list is still cut (runs and lines).
    stray = shorten_names("on " + "z" * 5000 + " and " + "w " * 2000, [])
    assert len(stray) < 700 and "…" in stray


@pytest.mark.parametrize("size", SIZES)
async def test_long_names_are_cut_everywhere_on_the_plan(tmp_path: Path, size: str) -> None:
    app = hostile_app(tmp_path)
    async with app.run_test(size=SIZES[size]) as pilot:
        screen = await open_remove_snapshot(pilot)
        plan = screen.plan
        assert VM_NAME in plan.command and any(VM_NAME in s for s in plan.steps)
        body = screen.query_one(PlanBody)
        texts = {w.id: as_text(w) for w in screen.query(Static) if w.id}
        for wid, text in texts.items():
            for name in (VM_NAME, SNAP_NAME, DS_NAME):
                assert name[:200] not in text, (wid, name[:10])
        summary = texts["plan-summary"]
        assert summary.count(cap_middle(VM_NAME)) >= 3  # steps, govc and PowerCLI lines
        assert cap_middle(SNAP_NAME) in summary and cap_middle(DS_NAME) in summary
        assert "Ctrl+Y copies it whole" in summary
        assert cap_middle(VM_NAME, 40) in texts["plan-pinned-summary"]
        # The whole plan is a few screens at most, not 10,000 characters of name.
        assert body.virtual_size.height < 80
        # Nothing hides to the right either: the plan wraps inside its width.
        assert body.virtual_size.width <= body.size.width and body.max_scroll_x == 0
        assert not any("n" * 200 in line for line in screen_lines(app))
        # The stored and copied command stays whole.
        await pilot.press("ctrl+y")
        await pilot.pause(0.1)
        assert app.clipboard == plan.command and VM_NAME in app.clipboard


async def test_a_long_named_vm_is_confirmed_only_by_its_real_name_after_reading_it_all(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n == 12)
        long_name = "web-" + "n" * 9_990 + "-site02"
        app.store.apply(Upsert(dataclasses.replace(app.store.vm(vm_id), name=long_name)))
        for cp in app.store.checkpoints_of(vm_id):
            app.store.apply(Upsert(dataclasses.replace(cp, name=cp.name + "c" * 10_000)))
        await pilot.pause(0.2)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        await pilot.pause(0.2)
        assert not any("c" * 200 in line or "n" * 200 in line for line in screen_lines(app))
        name_box = screen.query_one("#confirm-name", Input)
        # The name as shown is not the name: refused (and logged as a mismatch).
        name_box.value = cap_middle(long_name, 40)
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(app.action_log.rows()))
        assert app.screen is screen and app.action_log.rows()[0].outcome == "refused"
        # The real name, but part of the plan is still below: refused, nothing logged.
        assert screen.unseen_lines() > 0
        name_box.value = long_name
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen is screen and len(app.action_log.rows()) == 1
        assert "not yet seen" in str(screen.query_one("#plan-error", Static).render())
        for _ in range(60):
            if screen.seen_all:
                break
            await pilot.press("pagedown")
            await pilot.pause(0.05)
        assert screen.seen_all
        name_box.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(app.action_log.rows()) == 2, 20)
        row = app.action_log.rows()[0]
        assert row.action == "merge" and row.target_name == long_name


@pytest.mark.parametrize("size", SIZES)
def test_long_names_plan(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """The remove-snapshot plan of a VM, snapshot and datastore with 10,000-character names."""
    assert snap_compare(hostile_app(tmp_path), terminal_size=SIZES[size],
                        run_before=open_remove_snapshot)


async def test_a_yes_no_question_with_a_huge_name_keeps_its_buttons_on_screen(
    tmp_path: Path,
) -> None:
    from ventana.tui.confirm_screen import ConfirmScreen

    app = make_app(tmp_path)
    answers: list[bool | None] = []
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        await populated(pilot)
        spaced = " ".join(["word"] * 2_000)
        question = (f"Abandon the rebuild of {VM_NAME}? Nothing is sent to the cluster; "
                    f"notes: {spaced}. Really?")
        app.push_screen(ConfirmScreen(question, "Abandon", "Keep"), callback=answers.append)
        await pilot.pause(0.3)
        text = as_text(app.screen.query_one("#confirm-question", Static))
        assert cap_middle(VM_NAME + "?") in text and "n" * 200 not in text
        assert text.startswith("Abandon the rebuild of sql-n") and text.rstrip().endswith("Really?")
        for button in ("#yes", "#no"):
            region = app.screen.query_one(button).region
            assert region.height > 0 and region.bottom <= SIZES["80x24"][1], button
        await pilot.press("escape")
        await pilot.pause(0.1)
    assert answers == [False]


@pytest.mark.parametrize("size", SIZES)
def test_long_names_confirm(snap_compare, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    """Read to its end, the real 10,000-character name typed: what Enter would confirm."""

    async def ready(pilot: Pilot) -> None:
        screen = await open_remove_snapshot(pilot)
        await pilot.press("ctrl+end")
        await pilot.pause(0.1)
        box = screen.query_one("#confirm-name", Input)
        box.value = VM_NAME
        box.focus()
        await pilot.pause(0.3)
        assert screen.seen_all

    assert snap_compare(hostile_app(tmp_path), terminal_size=SIZES[size], run_before=ready)


async def test_the_window_confirmation_shortens_long_names_too(tmp_path: Path) -> None:
    from ventana.tui.window_screen import WindowConfirmScreen, WindowScreen

    app = make_app(tmp_path)
    async with app.run_test(size=SIZES["80x24"]) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        vm = app.store.vm(vm_id)
        app.store.apply(Upsert(dataclasses.replace(vm, name=VM_NAME)))
        lun = app.store.lun(vm.lun_id)
        app.store.apply(Upsert(dataclasses.replace(lun, name=DS_NAME)))
        await pilot.pause(0.2)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("p", "w")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowConfirmScreen))
        await pilot.pause(0.2)
        text = "\n".join(as_text(w) for w in app.screen.query(Static))
        assert cap_middle(VM_NAME) in text and cap_middle(DS_NAME) in text
        assert "n" * 200 not in text and "d" * 200 not in text
