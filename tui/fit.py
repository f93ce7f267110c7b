"""Fitting untrusted text into the space a column, toast or title has.

``cap`` shortens a (sanitized) string to a number of cells with an ellipsis
so that a 10,000-character VM name never pushes a column, a toast or a
dialog title out of shape; detail views show the full text.
"""

from __future__ import annotations

import re

from ventana.state.sanitize import clean

#: Cells a name may take in a column, a toast or a title before it is cut.
NAME_CELLS = 60


def cap(text: object, cells: int = NAME_CELLS) -> str:
    """``text`` sanitized, cut to ``cells`` characters with "…" when longer."""
    value = clean(text)
    if len(value) <= cells:
        return value
    return value[: max(cells - 1, 0)] + "…"


#: A toast's longest unbroken word and its longest text.
RUN_CELLS = 60
TOAST_CELLS = 600
_RUN = re.compile(r"\S{" + str(RUN_CELLS + 1) + ",}")


def cap_runs(text: str) -> str:
    """Every unbroken run longer than RUN_CELLS cut with "…", the whole capped at
    TOAST_CELLS: the sentence around a huge name stays readable."""
    out = _RUN.sub(lambda m: m.group(0)[: RUN_CELLS - 1] + "…", text)
    return out if len(out) <= TOAST_CELLS else out[: TOAST_CELLS - 1] + "…"
