"""``ventana log``: the action log for people (tab-separated) or as CSV.

Everything read back from the log file is untrusted (another console sharing
the file, a restored backup, any writer): every cell is sanitized on the way
out (``clean``) in both outputs, and CSV cells that a spreadsheet would run as
a formula get a leading ``'``. The table shows sizes and durations for
people; the CSV keeps the raw values. A missing file is an error, never
quietly created.
"""

from __future__ import annotations

import csv
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from ventana.state.actionlog import COLUMNS, ActionLog, ActionLogError, LogRow
from ventana.state.derived import human_bytes, human_duration
from ventana.state.sanitize import clean
from ventana.state.schema import is_url

from .fit import cap

_FORMULA = re.compile(r"^[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def csv_cell(value: Any) -> Any:
    """One CSV cell: sanitized text, formulas defused, numbers raw."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    text = clean(value)
    if _FORMULA.match(text) and not _NUMBER.match(text):
        return "'" + text
    return text


def write_csv(rows: list[LogRow], out: TextIO) -> None:
    names = [*COLUMNS, "status"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([csv_cell(getattr(row, name)) for name in names])


def write_table(rows: list[LogRow], out: TextIO) -> None:
    writer = csv.writer(out, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE,
                        escapechar="\\")
    writer.writerow(["started (UTC, wall clock)", "operator", "host", "mode", "action", "target",
                     "status", "duration", "before", "after", "final_state", "error"])
    for r in rows:
        writer.writerow([
            clean(r.started[:19].replace("T", " ")), cap(r.operator, 30), cap(r.host, 40),
            clean(r.mode),
            cap(r.action, 30), cap(r.target_name), cap(r.status, 40),
            human_duration(r.duration_s),
            human_bytes(r.size_before) if r.size_before is not None else "-",
            human_bytes(r.size_after) if r.size_after is not None else "-",
            cap(r.final_state or "", 30), cap(r.error or "", 200),
        ])


def cmd_log(path: Path | str, *, as_csv: bool, limit: int) -> int:
    """Print the log (a file, or a team's database URL); 1 when it does not exist
    or cannot be read."""
    # never create an empty log for a mistyped name
    if not is_url(path) and not Path(path).is_file():
        print(f"ventana log: no action log at {clean(str(path))}", file=sys.stderr)
        return 1
    try:
        with ActionLog.open(path) as log:
            rows = log.rows(newest_first=False) if as_csv else log.rows(limit=limit)
    except ActionLogError as exc:
        print(f"ventana log: {clean(str(exc))}", file=sys.stderr)
        return 1
    if as_csv:
        write_csv(rows, sys.stdout)
    elif not rows:
        print("The action log is empty.")
    else:
        write_table(rows, sys.stdout)
    return 0
