"""Issue 12: never confirm what is not on screen; a wrong name is logged as refused."""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated, screen_lines, vm_where, wait_for
from textual.widgets import Input, Static

from ventana.tui.plan_screen import PlanBody, PlanScreen
from ventana.tui.vm_table import VmTable

SMALL = (80, 24)


def _text(screen: PlanScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_enter_is_refused_while_part_of_the_plan_is_unseen(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n == 12)
        name = app.store.vm(vm_id).name
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        await pilot.pause(0.2)
        body = screen.query_one(PlanBody)
        assert body.max_scroll_y > 0, "the 12-checkpoint plan must not fit in 80x24"
        assert not screen.seen_all and screen.unseen_lines() > 0
        assert "more line(s) of the plan below" in _text(screen, "#plan-seen")
        # The pinned summary and the name box are on screen at 80x24.
        for selector in ("#plan-pinned-summary", "#confirm-name", "#run"):
            widget = screen.query_one(selector)
            assert widget.region.height > 0 and widget.region.bottom <= SMALL[1], selector
        assert name in _text(screen, "#plan-pinned-summary")
        await pilot.press(*name, "enter")
        await pilot.pause(0.2)
        assert app.screen is screen, "confirmed a plan the operator has not seen"
        assert "not yet seen" in _text(screen, "#plan-error")
        assert app.action_log.rows() == []  # nothing sent, nothing to log yet
        # Reading it page by page to the end makes the confirmation acceptable.
        for _ in range(40):
            if screen.seen_all:
                break
            await pilot.press("pagedown")
            await pilot.pause(0.05)
        assert screen.seen_all and "whole plan seen" in _text(screen, "#plan-seen")
        # Scrolling back up does not un-see it.
        await pilot.press("pageup")
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(app.action_log.rows())
                       and app.action_log.rows()[0].outcome not in ("running", None), 20)
        assert app.action_log.rows()[0].outcome == "ok"
        await wait_for(pilot, lambda: any("finished" in (n.title or "")
                                          for n in app._notifications))
        done = next(n.message for n in app._notifications if "finished" in (n.title or ""))
        assert "(wall clock)" in done  # one labelled time base per display


async def test_a_plan_that_fits_can_be_confirmed_at_once(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(200, 55)) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n == 1)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        await pilot.pause(0.2)
        assert screen.seen_all
        command = screen.plan.command
        # The equivalent command is whole on screen (wrapped, not cut).
        shown = "".join(line.strip("│┃ ") for line in screen_lines(app))
        assert command.replace(" ", "") in shown.replace(" ", "")


async def test_ctrl_y_copies_the_equivalent_command(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: n > 0)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        await pilot.press("ctrl+y")
        await pilot.pause(0.1)
        assert app.clipboard == screen.plan.command


async def test_a_wrong_name_is_logged_as_refused_with_the_typed_text_sanitized(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(200, 55)) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        screen.query_one("#confirm-name", Input).value = "evil\x1b]52;c;AAAA\x07name"
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(app.action_log.rows()))
        (row,) = app.action_log.rows()
        assert row.outcome == "refused"
        assert "name mismatch" in (row.error or "")
        assert "\x1b" not in (row.error or "") and "\\x1b" in (row.error or "")
        assert "cancelled" not in (row.error or "")
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(app.action_log.rows()) == 2)
        assert [r.outcome for r in app.action_log.rows()] == ["cancelled", "refused"]


async def test_the_window_queue_is_run_only_once_every_plan_was_seen(tmp_path: Path) -> None:
    from ventana.tui.window_screen import WindowConfirmScreen, WindowScreen

    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        for vm_id in sorted(v.id for v in app.store.vms()
                            if app.store.checkpoints_of(v.id))[:3]:
            app.query_one(VmTable).select_vm(vm_id)
            await pilot.press("p")
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowConfirmScreen))
        screen = app.screen
        assert isinstance(screen, WindowConfirmScreen)
        await pilot.pause(0.2)
        assert screen.unseen_lines() > 0
        for selector in ("#confirm-name", "#run"):
            region = screen.query_one(selector).region
            assert region.height > 0 and region.bottom <= SMALL[1], selector
        screen.query_one("#confirm-name", Input).value = screen.window_name
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen is screen
        assert "not yet seen" in _text(screen, "#plan-error")
        await pilot.press("ctrl+end")
        await wait_for(pilot, lambda: screen.seen_all)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen))
