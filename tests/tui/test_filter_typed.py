"""A filter typed into the console's filter box faster than the table answers.

Keys arrive as a terminal's do (the driver's queue), all before the console
runs: the box ends with every key, the table shows exactly that filter, and
the matching was done fewer times than keys were typed (the filter a key left
in the box is replaced by the next one's before the table matched it).
"""

from __future__ import annotations

from pathlib import Path

from apphelp import make_app, populated, screen_lines
from factories import NOW
from textual import events
from textual.widgets import Input

from ventana.state.model import Kind
from ventana.tui.vm_rows import build_row, compile_filter
from ventana.tui.vm_table import VmTable


def _send(app, key: str, character: str | None) -> None:  # type: ignore[no-untyped-def]
    event = events.Key(key, character)
    event.set_sender(app)
    app._driver.send_message(event)


def _expected(app, text: str) -> set[str]:  # type: ignore[no-untyped-def]
    flt = compile_filter(text)
    rows = [build_row(app.store, vm) for vm in app.store.vms()]
    return {r.vm_id for r in rows if flt is None or flt(r, NOW)}


async def test_keys_typed_faster_than_frames_end_with_the_typed_filter(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await populated(pilot)
        table = app.query_one(VmTable)
        matched: list[str] = []
        original = table._refilter

        def refilter(narrow: bool) -> None:
            matched.append(table.filter_text)
            original(narrow)

        table._refilter = refilter  # type: ignore[method-assign]
        await pilot.press("slash")
        await pilot.pause()
        word = "app 0"  # two words: the second narrows the first
        for char in word:
            _send(app, "space" if char == " " else char, char)
        await pilot.pause(0.3)
        box = app.query_one("#filter", Input)
        assert box.value == word
        assert table.filter_text == word
        assert set(table.visible_ids) == _expected(app, word)
        assert 0 < len(table.visible_ids) < app.store.count(Kind.VM)
        assert matched[-1] == word
        assert len(matched) < len(word), matched  # coalesced: not once per key
        for _ in word:  # erased as fast: the last key (an empty box) is never lost
            _send(app, "backspace", None)
        await pilot.pause(0.3)
        assert box.value == "" and table.filter_text == ""
        assert table.row_count == app.store.count(Kind.VM)
        assert f"({table.row_count}/{table.row_count})" in "\n".join(screen_lines(app))
