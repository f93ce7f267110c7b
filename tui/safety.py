"""Operator-safety wording shared by the screens and the app (issue 12).

What a refused confirmation is logged as, and the one-line reasons a key
that does nothing gives.
"""

from __future__ import annotations

import re

from ventana.state.actionlog import INTERRUPTED, UNKNOWN, LogRow

from .fit import cap, cap_middle

#: At most this much of a wrongly typed name goes into the action log.
TYPED_CELLS = 80


def mismatch_reason(typed: str) -> str:
    """The logged reason of a confirmation refused for a wrong name (typed text sanitized)."""
    return (f"refused (name mismatch): typed '{cap(typed, TYPED_CELLS)}', which is not the "
            "target's name; nothing was sent")


#: What to check on the host after an action was interrupted, by action.
VERIFY = {
    "merge": "its checkpoints and the merge job on its node (Get-VMSnapshot, Get-VHD chain)",
    "upgrade": "its configuration version (Get-VM | Select Version)",
    "compact": "its disks' size and that they are not still being optimized (Get-VHD)",
    "delete": "whether the VM and its files still exist",
    "rebuild": "which VM is running and the rebuild checklist (b on the VM)",
    "remove-snapshot": "its snapshots and consolidationNeeded in vCenter",
    "remove-all-snapshots": "its snapshots and consolidationNeeded in vCenter",
    "consolidate": "consolidationNeeded and its recent tasks in vCenter",
    "create-snapshot": "its snapshot list and the guest's freeze/thaw state",
}


def interrupted_notice(rows: list[LogRow]) -> str:
    """One notice naming every interrupted/unknown action and what to verify; "" if none."""
    from ventana.state.sanitize import clean

    lines = []
    for row in rows:
        if row.status not in (INTERRUPTED, UNKNOWN):
            continue
        what = VERIFY.get(row.action, "its state")
        lines.append(f"• {cap(row.action, 30)} of {cap_middle(row.target_name, 40)} "
                     f"(started {clean(row.started[:16].replace('T', ' '))} UTC): "
                     f"{'interrupted' if row.status == INTERRUPTED else 'outcome unknown'} "
                     f"— verify {what}")
    if not lines:
        return ""
    shown = lines[:8]
    if len(lines) > 8:
        shown.append(f"… and {len(lines) - 8} more (l shows the action log)")
    return "\n".join(shown)


_LOOSE = re.compile(r"^([a-z]+)(?:<=|>=|<|>|=)")
_COMPARE = re.compile(r"^([a-z]+)(<=|>=|<|>|=)(\d+(?:\.\d+)?)([a-z]*)$")


def filter_problem(text: str) -> str:
    """Why a VM filter does not parse ("" when every word is a filter term).

    A word with ``< > =`` must be ``column<op>number[unit]`` on a numeric
    column (``ckpt>3``, ``diff>100GB``, ``oldest>30d``); ``key:value`` needs a
    known column. Anything else is a plain word matched against the row.
    """
    from .vm_rows import COLUMNS, column_index, compile_filter

    for word in text.lower().split():
        if any(op in word for op in "<>="):
            loose = _LOOSE.match(word)
            if loose is not None:
                try:
                    column = COLUMNS[column_index(loose.group(1))]
                except KeyError:
                    column = None
                if column is not None and not column.numeric:
                    return (f"{cap(word, 30)}: {loose.group(1)} is not a number column "
                            f"(use {loose.group(1)}:value)")
            found = _COMPARE.match(word)
            if found is None:
                return (f"{cap(word, 30)}: not a comparison — write column, one of < <= > "
                        ">= =, then a number (ckpt>3, diff>100GB, oldest>30d)")
            key = found.group(1)
            try:
                index = column_index(key)
            except KeyError:
                return f"{cap(word, 30)}: no column {cap(key, 20)!r}"
            if not COLUMNS[index].numeric:
                return f"{cap(word, 30)}: {key} is not a number column (use {key}:value)"
            flt = compile_filter(word)
            if flt is None:
                return f"{cap(word, 30)}: not a filter"
            if found.group(4) and not _unit_ok(COLUMNS[index].key, found.group(4)):
                return f"{cap(word, 30)}: unknown unit {cap(found.group(4), 10)!r}"
        elif ":" in word:
            key = word.partition(":")[0]
            try:
                column_index(key)
            except KeyError:
                return (f"{cap(word, 30)}: no column {cap(key, 20)!r}, matched as plain text "
                        "(columns: power:off, lun:NAME, node:NAME …)")
    return ""


def _unit_ok(column: str, unit: str) -> bool:
    sizes = {"b", "k", "kb", "m", "mb", "g", "gb", "t", "tb"}
    ages = {"s", "m", "min", "h", "d", "w", "y"}
    if column in ("ram", "diff"):
        return unit in sizes
    if column == "oldest":
        return unit in ages
    return False


def clock_label(app: object) -> str:
    """Which clock a time on this console comes from (one labelled time base)."""
    runner = getattr(app, "runner", None)
    if getattr(runner, "mode", "") == "replay":
        return "the recording's clock"
    rate = getattr(getattr(app, "backend", None), "clock_rate", 1.0)
    if rate != 1.0:
        return f"simulated clock, {rate:g}× wall time"
    return "wall clock"
