"""Issue 12: an 80x24 console does everything a 200x55 one does; keys that do
nothing say why; `:` command mode; the header keeps its counts."""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated, screen_lines, vm_where, wait_for
from textual.widgets import Input

from ventana.state.events import LinkState
from ventana.tui.findings_screen import FindingsScreen
from ventana.tui.header import StatusHeader
from ventana.tui.log_screen import LogScreen
from ventana.tui.vm_table import VmTable
from ventana.tui.window_screen import WindowScreen

SMALL = (80, 24)


def shown(app, pane: str) -> bool:  # type: ignore[no-untyped-def]
    widget = app.query_one(f"#{pane}")
    return widget.display and widget.region.width > 0 and widget.region.height > 0


async def test_narrow_layout_shows_one_pane_at_a_time(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        assert app.narrow
        assert shown(app, "vms") and not shown(app, "nodes") and not shown(app, "luns")
        assert app.query_one("#vms").region.width >= 76  # the whole width, not 10 columns
        text = "\n".join(screen_lines(app))
        assert "q  Quit" in text and "?  Help" in text  # the key bar keeps quit
        for key, pane in (("2", "nodes"), ("3", "luns"), ("4", "checkpoints"), ("1", "vms")):
            await pilot.press(key)
            await pilot.pause(0.1)
            assert shown(app, pane), pane
            assert [p for p in ("vms", "nodes", "luns", "checkpoints") if shown(app, p)] \
                == [pane]
        # Enter on a VM shows its checkpoints; Esc goes back to the list.
        vm_id = vm_where(app, lambda blocking, n: n > 0)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("enter")
        await wait_for(pilot, lambda: shown(app, "checkpoints"))
        await pilot.press("escape")
        await wait_for(pilot, lambda: shown(app, "vms"))
        # Tab moves to the next pane and shows it.
        await pilot.press("tab")
        await pilot.pause(0.1)
        assert not shown(app, "vms")


async def test_wide_layout_shows_every_pane(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(200, 55)) as pilot:
        await populated(pilot)
        assert not app.narrow
        assert all(shown(app, p) for p in ("vms", "nodes", "luns", "checkpoints"))
        await pilot.resize_terminal(100, 30)
        await pilot.pause(0.2)
        assert app.narrow and shown(app, "vms") and not shown(app, "luns")


async def test_colon_commands(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        for word, screen in (("findings", FindingsScreen), ("log", LogScreen),
                             ("window", WindowScreen)):
            await pilot.press("colon", *word, "enter")
            await wait_for(pilot, lambda screen=screen: isinstance(app.screen, screen))
            await pilot.press(":", *"luns", "enter")  # from a screen on top, back to a pane
            await wait_for(pilot, lambda: len(app.screen_stack) == 1 and shown(app, "luns"))
        await pilot.press(":", *"vms", "enter")
        await wait_for(pilot, lambda: shown(app, "vms"))
        await pilot.press(":", *"nonsense", "enter")
        await wait_for(pilot, lambda: any("Unknown command" in n.message
                                          for n in app._notifications))
        await pilot.press(":", *"q", "enter")
        await wait_for(pilot, lambda: app.return_code is not None or not app.is_running)


async def test_keys_that_do_nothing_say_why(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        await pilot.press("m")
        await wait_for(pilot, lambda: any("read-only" in n.message
                                          for n in app._notifications))
        assert len(app.screen_stack) == 1


async def test_a_long_error_never_pushes_the_counts_off_the_header(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        header = app.query_one(StatusHeader)
        header.link = LinkState.RECONNECTING
        header.reason = "connection refused by 10.0.0.1:5986 " * 20
        await pilot.pause(0.1)
        (line,) = [ln for ln in screen_lines(app)[:1]]
        assert "74vm" in line and "…" in line, line


async def test_the_filter_box_and_command_box_do_not_trigger_keys(tmp_path: Path) -> None:
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        await pilot.press("slash", "m")
        await pilot.pause(0.1)
        assert app.query_one("#filter", Input).value == "m"
        assert not any("read-only" in n.message for n in app._notifications)


async def test_a_colon_typed_in_a_text_box_is_just_a_colon(tmp_path: Path) -> None:
    from ventana.tui.plan_screen import PlanScreen

    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        app.query_one(VmTable).select_vm(vm_where(app, lambda blocking, n: n > 0))
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        await pilot.press("a", ":", "b")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)
        assert app.screen.query_one("#confirm-name", Input).value == "a:b"


def test_filter_problems_are_named() -> None:
    from ventana.tui.safety import filter_problem

    assert "not a comparison" in filter_problem("ckpt>>3")
    assert "not a number column" in filter_problem("power=off")
    assert "unknown unit" in filter_problem("diff>100XB")
    assert "no column" in filter_problem("ckptz>3")
    for fine in ("ckpt>3", "diff>100GB oldest>30d power:off web", "gen:1", ""):
        assert filter_problem(fine) == "", fine


async def test_a_filter_that_does_not_parse_says_so(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        await pilot.press("slash", *"ckpt>>3")
        await pilot.pause(0.2)
        box = app.query_one("#filter", Input)
        assert "not a comparison" in str(box.border_title)
        assert "not a comparison" in "\n".join(screen_lines(app))
        await pilot.press("backspace", "backspace", "3")
        await pilot.pause(0.1)
        assert not box.border_title


async def test_a_10000_character_name_is_capped_in_columns_toasts_and_titles(
    tmp_path: Path,
) -> None:
    import dataclasses

    from textual.widgets import DataTable, Static

    from ventana.state.events import Upsert
    from ventana.tui.plan_screen import PlanScreen

    app = make_app(tmp_path)
    async with app.run_test(size=(200, 55)) as pilot:
        await populated(pilot)
        vm_id = vm_where(app, lambda blocking, n: not blocking and n > 0)
        long_name = "n" * 10_000
        app.store.apply(Upsert(dataclasses.replace(app.store.vm(vm_id), name=long_name)))
        await pilot.pause(0.2)
        app.query_one(VmTable).select_vm(vm_id)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        title = str(app.screen.query_one("#plan-title", Static).render())
        assert "…" in title and len(title) < 200
        pinned = str(app.screen.query_one("#plan-pinned-summary", Static).render())
        assert "…" in pinned and long_name not in pinned
        await pilot.press("escape")
        await wait_for(pilot, lambda: any("cancelled" in n.message for n in app._notifications))
        toast = next(n.message for n in app._notifications if "cancelled" in n.message)
        assert "…" in toast and len(toast) < 200 and toast.endswith("nothing was sent.")
        await pilot.press("p", "w")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen))
        await pilot.pause(0.2)
        table = app.screen.query_one(DataTable)
        cells = [str(c) for c in table.get_row_at(0)]
        assert any("…" in c for c in cells) and max(map(len, cells)) < 100


async def test_a_mutating_key_in_a_replay_says_why(tmp_path: Path) -> None:
    from factories import NOW

    from ventana.backends.replay import ReplayBackend
    from ventana.tui.app import VentanaApp

    fixture = Path(__file__).resolve().parents[1] / "recordings" / "small-cluster.jsonl"
    app = VentanaApp(ReplayBackend(fixture, speed=0), log=None, log_error="replay",
                     clock=lambda: NOW, mode="replay", read_only_reason="replaying a recording")
    async with app.run_test(size=SMALL) as pilot:
        await wait_for(pilot, lambda: bool(app.store.vms()))
        await pilot.press("m")
        await wait_for(pilot, lambda: any("not in a replay" in n.message
                                          for n in app._notifications))
        assert len(app.screen_stack) == 1


async def test_a_console_key_on_a_screen_on_top_says_where_it_works(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SMALL) as pilot:
        await populated(pilot)
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.screen, LogScreen))
        await pilot.press("m")
        await wait_for(pilot, lambda: any("main screen" in n.message
                                          for n in app._notifications))
        assert isinstance(app.screen, LogScreen)  # nothing opened behind it
