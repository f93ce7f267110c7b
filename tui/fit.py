"""Fitting untrusted text into the space a column, toast or title has.

``cap`` shortens a (sanitized) string to a number of cells with an ellipsis
so that a 10,000-character VM name never pushes a column, a toast or a
dialog title out of shape; detail views show the full text.
"""

from __future__ import annotations

from ventana.state.sanitize import clean

#: Cells a name may take in a column, a toast or a title before it is cut.
NAME_CELLS = 60


def cap(text: object, cells: int = NAME_CELLS) -> str:
    """``text`` sanitized, cut to ``cells`` characters with "…" when longer."""
    value = clean(text)
    if len(value) <= cells:
        return value
    return value[: max(cells - 1, 0)] + "…"
