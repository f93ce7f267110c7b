"""The key bar: recomposed only when the keys it shows change (tui/footer.py)."""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated, screen_lines
from textual.widgets._footer import FooterKey

from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.footer import StableFooter
from ventana.tui.luns_pane import LunsPane
from ventana.tui.nodes_pane import NodesPane

SIZE = (180, 50)


def shown(app) -> list[str]:  # type: ignore[no-untyped-def]
    return [k.description for k in app.query_one(StableFooter).query(FooterKey)]


async def test_moving_between_panes_keeps_the_footer_when_its_keys_stay(tmp_path: Path) -> None:
    """The VM table binds s itself (Sort is not shown there); the other panes show the
    same keys, so moving between them rebuilds nothing."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        assert "Sort" not in shown(app) and "Quit" in shown(app)
        await pilot.press("tab")
        await pilot.pause(0.1)
        assert isinstance(app.focused, LunsPane)
        assert "Sort" in shown(app)  # what it shows changed: recomposed
        footer = app.query_one(StableFooter)
        keys = list(footer.query(FooterKey))
        for pane in (CheckpointsPane, NodesPane):
            await pilot.press("tab")
            await pilot.pause(0.1)
            assert isinstance(app.focused, pane)
            assert list(footer.query(FooterKey)) == keys  # the same widgets
        assert all(k.is_attached for k in keys)
        assert "Quit" in screen_lines(app)[-1]


async def test_the_footer_follows_a_change_of_what_it_shows(tmp_path: Path) -> None:
    """Read-only greys out the mutating keys: recomposed, the same keys in the same place."""
    app = make_app(tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await populated(pilot)
        footer = app.query_one(StableFooter)
        before = {k.action: k.has_class("-disabled") for k in footer.query(FooterKey)}
        assert not any(before.values())
        app.read_only = True
        app.screen.refresh_bindings()
        await pilot.pause(0.2)
        after = {k.action: k.has_class("-disabled") for k in footer.query(FooterKey)}
        assert after.keys() == before.keys()
        assert after["merge"] and not after["filter"]
