"""A DataTable for small panes, updated by keyed diff.

``upsert(key, cells)`` adds a row or changes only the cells whose text
differs, briefly highlighting them; ``discard(key)`` removes a row. Cells are
``Text`` so cluster data is never parsed as markup. Meant for tens to
hundreds of rows (nodes, LUNs); the VM pane uses the Line-API table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

HIGHLIGHT_SECONDS = 2.0
_HIGHLIGHT_STYLE = "reverse"


class KeyedTable(DataTable[Text]):
    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[tuple[str, str, int]], **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._columns = list(columns)
        self._cells: dict[str, list[Text]] = {}
        self._lit: dict[tuple[str, int], float] = {}
        self._stale = False  # every row (the whole link is down)
        self._stale_keys: frozenset[str] = frozenset()  # these rows (their node's link is)

    def on_mount(self) -> None:
        # Fixed widths: no re-measuring as rows arrive, so the layout never jumps.
        for key, label, width in self._columns:
            self.add_column(label, key=key, width=width)
        self.set_interval(0.5, self._expire_highlights)

    @property
    def keys(self) -> list[str]:
        return list(self._cells)

    def cell_text(self, key: str, column: str) -> str:
        index = [c[0] for c in self._columns].index(column)
        return self._cells[key][index].plain

    def is_stale(self, key: str) -> bool:
        return self._stale or key in self._stale_keys

    def _styled(self, cell: Text, lit: bool, key: str = "") -> Text:
        out = cell.copy()
        if self.is_stale(key):
            out.stylize("dim")
        if lit:
            out.stylize(_HIGHLIGHT_STYLE)
        return out

    def upsert(self, key: str, cells: Sequence[Text]) -> None:
        old = self._cells.get(key)
        new = list(cells)
        self._cells[key] = new
        if old is None:
            self.add_row(*(self._styled(c, False, key) for c in new), key=key)
            return
        now = time.monotonic()
        for index, (before, after) in enumerate(zip(old, new, strict=True)):
            if before.plain != after.plain or before.style != after.style:
                self._lit[(key, index)] = now + HIGHLIGHT_SECONDS
                self.update_cell(key, self._columns[index][0], self._styled(after, True, key))

    def discard(self, key: str) -> None:
        if self._cells.pop(key, None) is not None:
            self.remove_row(key)
            for lit_key in [k for k in self._lit if k[0] == key]:
                del self._lit[lit_key]

    def set_stale(self, stale: bool, keys: frozenset[str] = frozenset()) -> None:
        """Dim every row (``stale``), or only the rows in ``keys`` (one node's link is
        down: only what it owns); only rows whose staleness changed are redrawn."""
        if stale == self._stale and keys == self._stale_keys:
            return
        before = {k for k in self._cells if self.is_stale(k)}
        self._stale, self._stale_keys = stale, keys
        for key in before ^ {k for k in self._cells if self.is_stale(k)}:
            for index, cell in enumerate(self._cells[key]):
                lit = (key, index) in self._lit
                self.update_cell(key, self._columns[index][0], self._styled(cell, lit, key))

    def _expire_highlights(self) -> None:
        if not self._lit:
            return
        now = time.monotonic()
        for key, index in [k for k, until in self._lit.items() if until <= now]:
            del self._lit[(key, index)]
            cells = self._cells.get(key)
            if cells is not None:
                self.update_cell(key, self._columns[index][0],
                                 self._styled(cells[index], False, key))
