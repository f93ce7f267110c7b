"""Operator-safety wording shared by the screens and the app (issue 12).

What a refused confirmation is logged as, and the one-line reasons a key
that does nothing gives.
"""

from __future__ import annotations

from ventana.state.actionlog import INTERRUPTED, UNKNOWN, LogRow

from .fit import cap

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
        lines.append(f"• {cap(row.action, 30)} of {cap(row.target_name, 40)} "
                     f"(started {clean(row.started[:16].replace('T', ' '))} UTC): "
                     f"{'interrupted' if row.status == INTERRUPTED else 'outcome unknown'} "
                     f"— verify {what}")
    if not lines:
        return ""
    shown = lines[:8]
    if len(lines) > 8:
        shown.append(f"… and {len(lines) - 8} more (l shows the action log)")
    return "\n".join(shown)
