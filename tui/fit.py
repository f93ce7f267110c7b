"""Fitting untrusted text into the space a column, toast or title has.

``cap`` shortens a (sanitized) string to a number of cells with an ellipsis
so that a 10,000-character VM name never pushes a column, a toast or a
dialog title out of shape; detail views show the full text. A VM's name is
cut in the middle (``cap_middle``: two names that differ only at their end
stay distinguishable) wherever it identifies a VM — the plan and its
confirmation (inside its steps and equivalent command too:
``shorten_names``), the task strip, the window queue, the log and the
report; the VM table's Name column does the same (``vm_rows.fit``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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


def cap_middle(text: object, cells: int = NAME_CELLS) -> str:
    """``text`` sanitized, cut to ``cells`` characters by an ellipsis in the middle: the
    start and the end both stay, so ``web-prod-…-site-01`` and ``…-site-02`` differ."""
    value = clean(text)
    if len(value) <= cells:
        return value
    if cells < 3:
        return value[: max(cells - 1, 0)] + "…"
    head = cells // 2
    tail = cells - 1 - head
    return value[:head] + "…" + value[-tail:]


#: In plan text: an unbroken run, and a line, longer than this is cut in the middle
#: (names not known to the plan, e.g. a LUN or node name inside a sentence).
PLAN_RUN_CELLS = 120
PLAN_LINE_CELLS = 600
_PLAN_RUN = re.compile(r"\S{" + str(PLAN_RUN_CELLS + 1) + ",}")


def shorten_names(text: str, names: Iterable[object], cells: int = NAME_CELLS) -> str:
    """Plan text (a step, the equivalent command) with every long name shortened the
    way the rest of the plan screen shows it (:func:`cap_middle`), sanitized.

    A name is found as written, ``repr``'d (``{name!r}``) and quoted for a POSIX
    shell or PowerShell (how the plans write commands). Then any unbroken run
    longer than PLAN_RUN_CELLS and any line longer than PLAN_LINE_CELLS is cut in
    the middle too, so a name the plan did not list cannot stretch the screen.
    The text stored and copied (Ctrl+Y) is never this one: it stays whole.
    """
    out = text
    long_names = sorted({str(n) for n in names if n and len(str(n)) > cells}, key=len,
                        reverse=True)
    for name in long_names:
        short = cap_middle(name, cells)
        forms = dict.fromkeys([repr(name)[1:-1], name.replace("'", "'\"'\"'"),
                               name.replace("'", "''"), name])
        for form in sorted(forms, key=len, reverse=True):
            out = out.replace(form, short)
    lines = (_PLAN_RUN.sub(lambda m: cap_middle(m.group(0), PLAN_RUN_CELLS), clean(line))
             for line in out.split("\n"))  # the command's own line breaks stay
    return "\n".join(cap_middle(line, PLAN_LINE_CELLS) for line in lines)
