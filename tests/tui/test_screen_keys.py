"""Keys across screens: each screen's keys are its own, help lists them, q never
drops the console from a dialog, and the task strip knows every action kind."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from apphelp import make_app, populated, wait_for
from factories import NOW, small_cluster
from textual.binding import Binding
from textual.screen import Screen

from ventana.backends.actionspecs import names as action_names
from ventana.state.events import Upsert
from ventana.state.model import Kind, Task, TaskState
from ventana.state.store import ref
from ventana.tui import commands
from ventana.tui.confirm_screen import ConfirmScreen
from ventana.tui.final_state_screen import FinalStateScreen
from ventana.tui.findings_screen import FindingsScreen, SilenceDialog
from ventana.tui.help_screen import HelpScreen, screen_keys
from ventana.tui.log_screen import LogScreen, RecordedActionsScreen
from ventana.tui.plan_screen import PlanScreen
from ventana.tui.rebuild_screen import RebuildScreen
from ventana.tui.report_screen import ReportScreen
from ventana.tui.task_strip import TaskStrip
from ventana.tui.window_screen import WindowConfirmScreen, WindowScreen

SIZE = (180, 50)
SCREENS: list[type[Screen]] = [FindingsScreen, SilenceDialog, ReportScreen, WindowScreen,
                               WindowConfirmScreen, RebuildScreen, PlanScreen,
                               FinalStateScreen, LogScreen, RecordedActionsScreen, HelpScreen,
                               ConfirmScreen]


def _keys(bindings: list[object]) -> list[str]:
    return [k.strip() for b in bindings if isinstance(b, Binding) for k in b.key.split(",")]


def test_no_key_means_two_things_on_one_screen() -> None:
    main = [c.key for c in commands.COMMANDS if c.key]
    assert not [k for k, n in Counter(main).items() if n > 1]
    for screen in SCREENS:
        keys = _keys(getattr(screen, "BINDINGS", []))
        assert not [k for k, n in Counter(keys).items() if n > 1], screen.__name__


@pytest.mark.parametrize("screen", SCREENS, ids=[s.__name__ for s in SCREENS])
def test_every_screen_can_be_closed_and_lists_its_keys(screen: type[Screen]) -> None:
    keys = _keys(getattr(screen, "BINDINGS", []))
    assert "escape" in keys, f"{screen.__name__} cannot be closed with Esc"
    listed = " ".join(k for k, _ in screen_keys(screen))
    for b in getattr(screen, "BINDINGS", []):
        if isinstance(b, Binding) and b.show and b.description:
            assert b.description in {what for _, what in screen_keys(screen)}
    assert "escape" in listed


async def test_help_on_the_findings_screen_shows_its_keys(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen, FindingsScreen))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert isinstance(app.screen.under, FindingsScreen)
        text = app.export_screenshot().replace("&#160;", " ")
        assert "Keys on this screen (Findings)" in text
        assert "Acknowledge" in text and "Snooze" in text and "Merge" in text
        await pilot.press("question_mark")  # ? again closes help, not a second help
        await wait_for(pilot, lambda: isinstance(app.screen, FindingsScreen))
        await pilot.press("m")  # a console key does not fall through the findings screen
        await pilot.pause(0.1)
        assert isinstance(app.screen, FindingsScreen)


async def test_q_on_a_screen_that_does_not_close_on_q_asks_first(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen))
        await pilot.press("q")
        await pilot.pause(0.1)
        assert app.is_running and isinstance(app.screen, ConfirmScreen)
        await pilot.press("q")  # q on the question itself does not stack another one
        await pilot.pause(0.1)
        assert app.is_running and len(app.screen_stack) == 3
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, WindowScreen))
        assert app.is_running


def test_the_task_strip_ranks_every_registered_action_first() -> None:
    store = small_cluster()
    backup = Task("bk-1", "backup", ref(Kind.VM, "b"), "db-01", 10.0, TaskState.RUNNING,
                  NOW)
    store.apply(Upsert(backup))
    for n, kind in enumerate(sorted(action_names())):
        older = NOW.replace(hour=1, minute=n)  # older than the backup: rank decides
        store.apply(Upsert(Task(f"{kind}-{n:04x}", kind, ref(Kind.VM, "a"), "app-01", 5.0,
                                TaskState.RUNNING, older)))
    # A step of a rebuild runs under its own kind, with the console's task id.
    store.apply(Upsert(Task("rebuild-ab12-merge-stop", "shutdown", ref(Kind.VM, "a"),
                            "app-01", 5.0, TaskState.RUNNING, NOW.replace(hour=0))))
    store.apply(Upsert(Task("lab/rebuild-cd34-merge-stop", "shutdown", ref(Kind.VM, "a"),
                            "app-01", 5.0, TaskState.RUNNING, NOW.replace(hour=0))))

    class Strip(TaskStrip):  # what the strip would show, without an app around it
        shown = ""

        def update(self, content: object = "", **kwargs: object) -> None:
            self.shown = str(content)

    strip = Strip()
    strip.MAX_LINES = 100
    strip.sync(store)
    lines = strip.shown.splitlines()
    assert len(lines) == len(action_names()) + 3
    assert lines[-1].startswith("backup"), lines


async def test_question_mark_in_the_typed_name_is_typed_not_help(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen))
        await wait_for(pilot, lambda: getattr(app.focused, "id", None) == "confirm-name")
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PlanScreen)
        assert app.focused.value == "?"  # type: ignore[union-attr]


@pytest.mark.parametrize("screen", [FindingsScreen, ReportScreen, RebuildScreen, PlanScreen,
                                    FinalStateScreen, LogScreen, RecordedActionsScreen],
                         ids=lambda s: s.__name__)
def test_modal_screens_answer_question_mark_themselves(screen: type[Screen]) -> None:
    # The app's own bindings do not reach a modal screen: each asks for help itself.
    assert "question_mark" in _keys(getattr(screen, "BINDINGS", []))
