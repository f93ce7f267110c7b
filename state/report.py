"""The campaign report: the tables a maintenance campaign is written up with.

Built from the action log (and, optionally, a recording for the complete
LUN list), within an optional time range on each row's start time:

- **per VM and disk**: size before (first seen) and after (last seen), the
  VM's merge time (the sum over its merges that ran; their first start) and
  rebuild time (rows whose action is ``rebuild``), and its final state. As in
  the campaign's own sheet, the VM-level times sit on the VM's first disk
  line; the final state is on every line.
- **time base**: merge and rebuild times are the ``duration_s`` the console
  that ran each action measured (wall clock). A row run on a simulator logs
  its ``clock_rate`` (simulated seconds per wall second) in the plan; such
  times are labelled and also given in the simulator's clock, which is what
  the simulator's own "merged in …" outcome text uses.
- **per LUN**: free space first seen and last seen in the range (from the
  plans, the outcomes and the recording's LUN updates).
- **totals**: space recovered on the disks and gained on the LUNs, VMs per
  final state, actions per outcome.
- **pending tasks**: actions whose outcome is unknown or interrupted, and
  VMs left *With pending tasks*, *Partially consolidated* or *Failed*. An
  unknown/interrupted/running action is no longer pending once a later run
  of the same action on the same target finished ``ok`` or ``warning`` in the
  range (the question "did it run? verify the VM" is answered): it is dropped
  from the list (the action log and the outcome counts keep it).

A VM's final state is the latest one set in the range: an action's outcome
sets it, an operator's edit (a ``final-state`` row) replaces it, and a later
action replaces that in turn. Sizes and LUN figures come from what the
runner wrote at the intent (``disks_before``/``lun_before`` in the plan) and
at the outcome (``disks_after``/``lun_after`` in the detail); older rows
without them fall back to the ``size_before``/``size_after`` columns and the
plan's LUN name and ``free_now``.

Output: Markdown, CSV (one file; the first column names the table, each
table starts with a header row whose first cell is ``table``, a blank line
between tables) and xlsx (one sheet per table, plus a bar chart of the LUN
free space), and a plain-text bar chart. Every text cell is literal: Markdown
metacharacters are escaped, and CSV/xlsx cells that a spreadsheet would run
as a formula get a leading ``'``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from .actionlog import INTERRUPTED, UNKNOWN, LogRow
from .model import FinalState, Kind, Lun
from .sanitize import clean

FINAL_STATE_ACTION = "final-state"
REBUILD_ACTION = "rebuild"
MERGE_ACTION = "merge"
#: Outcomes of actions that reached the cluster (their sizes and times count).
RAN = frozenset({"ok", "warning", "failed", "unknown", "running"})
PENDING_STATES = (FinalState.PENDING, FinalState.PARTIAL, FinalState.FAILED)
#: Outcomes of a later run that answer an earlier unknown/interrupted one.
RESOLVES = frozenset({"ok", "warning"})
#: The order outcomes are counted in the totals.
STATUSES = ("ok", "warning", "failed", "unknown", "interrupted", "running", "cancelled",
            "refused")
GB = 1024**3


class ReportError(ValueError):
    """Bad report arguments (an unparseable time, an empty range)."""


# -- time -----------------------------------------------------------------------

def parse_time(text: str) -> datetime:
    """An ISO date or date-time; without a zone it is UTC."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ReportError(f"not an ISO date or time: {clean(text)!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ReportError:
        return None


# -- the tables -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DiskLine:
    vm: str
    vm_ref: str
    disk: str  # the disk's file name; "(all disks)" when only the VM's total is known
    lun: str
    size_before: int | None
    size_after: int | None
    merge_started: datetime | None
    merge_s: float | None
    merges: int
    rebuild_s: float | None
    final_state: str | None
    first_of_vm: bool
    #: The clock of the backend the merge/rebuild times come from: source seconds
    #: per wall second, one value per rate seen (``(1.0,)``: a real cluster).
    #: The times above are always wall clock, measured by the console that ran it.
    clock_rates: tuple[float, ...] = (1.0,)

    @property
    def time_base(self) -> str:
        """"wall clock", or how a simulator's faster clock relates to it."""
        return time_base(self.clock_rates)

    @property
    def simulated_s(self) -> tuple[float | None, float | None]:
        """(merge, rebuild) in the simulator's own clock — what its "merged in"
        text said — when exactly one simulated rate applies; else (None, None)."""
        if len(self.clock_rates) != 1 or self.clock_rates[0] == 1.0:
            return None, None
        rate = self.clock_rates[0]
        return (None if self.merge_s is None else self.merge_s * rate,
                None if self.rebuild_s is None else self.rebuild_s * rate)

    @property
    def recovered(self) -> int | None:
        if self.size_before is None or self.size_after is None:
            return None
        return self.size_before - self.size_after


@dataclass(frozen=True, slots=True)
class LunLine:
    lun_id: str
    name: str
    total: int | None
    free_before: int | None
    free_after: int | None
    seen_first: datetime | None
    seen_last: datetime | None

    @property
    def gained(self) -> int | None:
        if self.free_before is None or self.free_after is None:
            return None
        return self.free_after - self.free_before


@dataclass(frozen=True, slots=True)
class PendingLine:
    when: datetime | None
    vm: str
    what: str
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class Totals:
    vms: int
    disks: int
    size_before: int
    size_after: int
    luns: int
    lun_free_before: int
    lun_free_after: int
    final_states: dict[str, int]
    outcomes: dict[str, int]

    @property
    def recovered(self) -> int:
        return self.size_before - self.size_after

    @property
    def lun_gained(self) -> int:
        return self.lun_free_after - self.lun_free_before


@dataclass(frozen=True, slots=True)
class CampaignReport:
    since: datetime | None
    until: datetime | None
    disks: tuple[DiskLine, ...]
    luns: tuple[LunLine, ...]
    totals: Totals
    pending: tuple[PendingLine, ...]
    rows_read: int
    notes: tuple[str, ...] = field(default=())


# -- building -----------------------------------------------------------------------

def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _file_name(path: str) -> str:
    return re.split(r"[\\/]", path)[-1] or path


@dataclass(slots=True)
class _Vm:
    ref: str
    name: str = ""
    lun: str = ""
    before: dict[str, tuple[str, int]] = field(default_factory=dict)  # disk id → (path, size)
    after: dict[str, tuple[str, int]] = field(default_factory=dict)
    total_before: int | None = None
    total_after: int | None = None
    merge_s: float = 0.0
    merges: int = 0
    merge_started: datetime | None = None
    rebuild_s: float = 0.0
    rebuilds: int = 0
    rates: set[float] = field(default_factory=set)  # clock_rate of the timed rows
    final: str | None = None
    final_at: tuple[datetime, int] | None = None
    final_why: str = ""
    worked: bool = False


@dataclass(slots=True)
class _LunSeen:
    lun_id: str
    name: str = ""
    total: int | None = None
    first: tuple[datetime, int, int] | None = None  # (time, order, free)
    last: tuple[datetime, int, int] | None = None

    def see(self, at: datetime, order: int, free: int, name: str, total: int | None) -> None:
        if name:
            self.name = name
        if total is not None:
            self.total = total
        key = (at, order, free)
        if self.first is None or key[:2] < self.first[:2]:
            self.first = key
        if self.last is None or key[:2] >= self.last[:2]:
            self.last = key


def _duration(row: LogRow, started: datetime) -> float | None:
    if row.duration_s is not None:
        return float(row.duration_s)
    ended = _when(row.ended)
    return (ended - started).total_seconds() if ended else None


def _rate(plan: dict[str, Any]) -> float:
    """The backend's clock rate the runner logged with the intent (absent: a real clock)."""
    try:
        rate = float(plan.get("clock_rate") or 1.0)
    except (TypeError, ValueError):
        return 1.0
    return rate if rate > 0 and rate == rate and rate != float("inf") else 1.0


def _disks(value: Any) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    if isinstance(value, list):
        for d in value:
            if isinstance(d, dict) and _int(d.get("size")) is not None:
                path = str(d.get("path") or d.get("id") or "?")
                out[clean(d.get("id") or path)] = (clean(path), int(d["size"]))
    return out


def _in_range(at: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or at >= since) and (until is None or at <= until)


def build_report(
    rows: Iterable[LogRow],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    luns: Iterable[tuple[datetime, Lun]] = (),
) -> CampaignReport:
    """The report from action-log rows (any order) and optional LUN sightings.

    ``luns`` are (time, Lun) pairs, e.g. from ``lun_sightings(recording)``.
    """
    if since and until and since > until:
        raise ReportError("--since is after --until")
    vms: dict[str, _Vm] = {}
    seen_luns: dict[str, _LunSeen] = {}
    outcomes: Counter[str] = Counter()
    pending: list[PendingLine] = []
    # (target, action) -> its pending lines not yet answered by a later success.
    open_by_action: dict[tuple[str, str], list[PendingLine]] = {}
    resolved: set[int] = set()
    read = 0
    order = 0
    by_name: list[tuple[str, datetime, int, int]] = []

    def lun_seen(key: str) -> _LunSeen:
        return seen_luns.setdefault(key, _LunSeen(key))

    ordered = sorted(rows, key=lambda r: (r.started, r.id))
    for row in ordered:
        started = _when(row.started)
        if started is None or not _in_range(started, since, until):
            continue
        read += 1
        order += 1
        plan = _json(row.plan) or {}
        detail = _json(row.detail) or {}
        if not isinstance(plan, dict):
            plan = {}
        if not isinstance(detail, dict):
            detail = {}
        ended = _when(row.ended) or started
        is_vm = row.target_object.startswith(f"{Kind.VM.value}:")

        # LUN sightings: the plan (at the start) and the outcome (at the end).
        before_lun = plan.get("lun_before")
        if isinstance(before_lun, dict) and _int(before_lun.get("free")) is not None:
            lun_seen(str(before_lun.get("id") or before_lun.get("name"))).see(
                started, order, int(before_lun["free"]), clean(before_lun.get("name") or ""),
                _int(before_lun.get("total")))
        elif plan.get("lun") and _int(plan.get("free_now")) is not None:
            # An older row: the LUN by name only (resolved to its id below).
            name = clean(plan["lun"])
            by_name.append((name, started, order, int(plan["free_now"])))
        after_lun = detail.get("lun_after")
        if isinstance(after_lun, dict) and _int(after_lun.get("free")) is not None:
            lun_seen(str(after_lun.get("id") or after_lun.get("name"))).see(
                ended, order, int(after_lun["free"]), clean(after_lun.get("name") or ""),
                _int(after_lun.get("total")))

        if row.action == FINAL_STATE_ACTION:
            if not is_vm or not row.final_state:
                continue
        else:
            status = "interrupted" if row.status == INTERRUPTED else (
                "unknown" if row.status == UNKNOWN else row.outcome)
            outcomes[status] += 1
            what = (row.target_object, row.action)
            if status in ("unknown", "interrupted", "running"):
                line = PendingLine(
                    started, clean(row.target_name), clean(row.action), row.status,
                    clean(row.error or "verify the VM's state on the host"))
                pending.append(line)
                open_by_action.setdefault(what, []).append(line)
            elif status in RESOLVES and what in open_by_action:
                resolved.update(id(p) for p in open_by_action.pop(what))
        if not is_vm:
            continue
        vm = vms.setdefault(row.target_object, _Vm(row.target_object))
        vm.name = clean(row.target_name) or vm.name
        lun_name = (after_lun or {}).get("name") if isinstance(after_lun, dict) else None
        if not lun_name and isinstance(before_lun, dict):
            lun_name = before_lun.get("name")
        vm.lun = clean(lun_name or plan.get("lun") or vm.lun)

        if row.final_state:
            at = (ended, row.id)
            if vm.final_at is None or at >= vm.final_at:
                vm.final, vm.final_at = clean(row.final_state), at
                note = plan.get("note") if row.action == FINAL_STATE_ACTION else None
                vm.final_why = clean(note or row.error or "")
            if row.action == FINAL_STATE_ACTION:
                vm.worked = True
        if row.action == FINAL_STATE_ACTION or row.outcome not in RAN:
            continue
        vm.worked = True
        # Sizes: first seen before, last seen after.
        for disk_id, value in _disks(plan.get("disks_before")).items():
            vm.before.setdefault(disk_id, value)
        if vm.total_before is None:
            vm.total_before = row.size_before if row.size_before is not None else _int(
                plan.get("size_before"))
        if row.ended:
            after = _disks(detail.get("disks_after"))
            if after:
                vm.after.update(after)
            if row.size_after is not None:
                vm.total_after = row.size_after
        took = _duration(row, started) if row.ended else None
        if row.action in (MERGE_ACTION, REBUILD_ACTION) and took is not None:
            vm.rates.add(_rate(plan))
        if row.action == MERGE_ACTION and took is not None:
            vm.merge_s += took
            vm.merges += 1
            vm.merge_started = vm.merge_started or started
        elif row.action == REBUILD_ACTION and took is not None:
            vm.rebuild_s += took
            vm.rebuilds += 1

    if resolved:
        pending = [p for p in pending if id(p) not in resolved]

    for at, lun in luns:
        if _in_range(at, since, until):
            order += 1
            lun_seen(lun.id).see(at, order, lun.free_bytes, clean(lun.name), lun.total_bytes)

    for name, at, n, free in by_name:
        # Two LUNs may share a name (the campaign had two "NEW VOLUME"s): a
        # sighting by name counts only where the name is unambiguous.
        named = [s for s in seen_luns.values() if s.name == name]
        if len(named) == 1:
            named[0].see(at, n, free, name, None)
        elif not named:
            lun_seen(f"name:{name}").see(at, n, free, name, None)

    disks: list[DiskLine] = []
    final_counts: Counter[str] = Counter()
    for vm in sorted(vms.values(), key=lambda v: (v.name.casefold(), v.ref)):
        if not vm.worked:
            continue
        final_counts[vm.final or "not set"] += 1
        if vm.final in {s.value for s in PENDING_STATES}:
            pending.append(PendingLine(vm.final_at[0] if vm.final_at else None, vm.name,
                                       "final state", vm.final or "", vm.final_why))
        ids = sorted(set(vm.before) | set(vm.after),
                     key=lambda i: (vm.before.get(i) or vm.after[i])[0].casefold())
        lines: list[tuple[str, int | None, int | None]] = [
            (_file_name((vm.before.get(i) or vm.after[i])[0]),
             vm.before[i][1] if i in vm.before else None,
             vm.after[i][1] if i in vm.after else None)
            for i in ids
        ] or [("(all disks)", vm.total_before, vm.total_after)]
        for n, (disk, before, after) in enumerate(lines):
            first = n == 0
            disks.append(DiskLine(
                vm=vm.name, vm_ref=vm.ref, disk=disk, lun=vm.lun,
                size_before=before, size_after=after,
                merge_started=vm.merge_started if first else None,
                merge_s=vm.merge_s if first and vm.merges else None,
                merges=vm.merges if first else 0,
                rebuild_s=vm.rebuild_s if first and vm.rebuilds else None,
                final_state=vm.final, first_of_vm=first,
                clock_rates=tuple(sorted(vm.rates)) or (1.0,),
            ))

    lun_lines = tuple(
        LunLine(s.lun_id, s.name, s.total,
                s.first[2] if s.first else None, s.last[2] if s.last else None,
                s.first[0] if s.first else None, s.last[0] if s.last else None)
        for s in sorted(seen_luns.values(), key=lambda s: (s.name.casefold(), s.lun_id))
    )
    both = [d for d in disks if d.recovered is not None]
    luns_both = [u for u in lun_lines if u.gained is not None]
    totals = Totals(
        vms=sum(1 for d in disks if d.first_of_vm),
        disks=len(disks),
        size_before=sum(d.size_before or 0 for d in both),
        size_after=sum(d.size_after or 0 for d in both),
        luns=len(lun_lines),
        lun_free_before=sum(u.free_before or 0 for u in luns_both),
        lun_free_after=sum(u.free_after or 0 for u in luns_both),
        final_states={**{s.value: final_counts.get(s.value, 0) for s in FinalState},
                      "not set": final_counts.get("not set", 0)},
        outcomes={s: outcomes.get(s, 0) for s in STATUSES},
    )
    pending.sort(key=lambda p: (p.when or datetime.min.replace(tzinfo=UTC), p.vm))
    return CampaignReport(since, until, tuple(disks), lun_lines, totals, tuple(pending), read)


def lun_sightings(recording: Any) -> list[tuple[datetime, Lun]]:
    """(time, Lun) for every LUN upsert in a recording (``state.recording``)."""
    from .events import Upsert

    start = _when(recording.header.started) or datetime.fromtimestamp(0, UTC)
    out: list[tuple[datetime, Lun]] = []
    for t, event in recording.events:
        if isinstance(event, Upsert) and isinstance(event.entity, Lun):
            out.append((start + timedelta(seconds=t), event.entity))
    return out


# -- cells -----------------------------------------------------------------------------

def gb(n: int | None) -> float | None:
    return None if n is None else round(n / GB, 3)


def fmt_gb(n: int | None) -> str:
    """GB with two decimals; under 1 GB in MB (26 MB free is the alarm, not 0.03 GB)."""
    if n is None:
        return "-"
    if 0 < abs(n) < GB:
        return f"{n / 1024**2:,.0f} MB"
    return f"{n / GB:,.2f} GB"


def time_base(rates: Iterable[float]) -> str:
    """The time base of durations measured at these clock rates, in words."""
    sims = sorted({r for r in rates if r != 1.0})
    if not sims:
        return "wall clock"
    shown = ", ".join(f"×{r:g}" for r in sims)
    if 1.0 in set(rates):
        return f"wall clock; some runs on a simulator ({shown})"
    return f"wall clock of a simulator run ({shown})"


def fmt_timed(seconds: float | None, line: DiskLine, which: int) -> str:
    """A report duration with its time base when it is not plain wall clock."""
    text = fmt_duration(seconds)
    if seconds is None or line.clock_rates == (1.0,):
        return text
    simulated = line.simulated_s[which]
    if simulated is not None:
        return f"{text} wall (simulated ×{line.clock_rates[0]:g}: {fmt_duration(simulated)})"
    return f"{text} wall ({line.time_base})"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min"


def fmt_time(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _iso(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).isoformat(timespec="seconds")


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


#: Column titles and the values of each table, shared by CSV and xlsx.
VM_COLUMNS = ("vm", "disk", "lun", "size_before_gb", "size_after_gb", "recovered_gb",
              "merge_started", "merge_minutes", "merges", "rebuild_minutes", "final_state",
              "time_base")
LUN_COLUMNS = ("lun", "lun_id", "total_gb", "free_before_gb", "free_after_gb", "gained_gb",
               "first_seen", "last_seen")
TOTAL_COLUMNS = ("item", "value")
PENDING_COLUMNS = ("when", "vm", "what", "status", "detail")


def table_rows(report: CampaignReport) -> dict[str, tuple[tuple[str, ...], list[list[Any]]]]:
    """Each table as (columns, rows of plain values) — the CSV and xlsx content."""
    t = report.totals
    vm_rows = [
        [d.vm, d.disk, d.lun, gb(d.size_before), gb(d.size_after), gb(d.recovered),
         _iso(d.merge_started), _minutes(d.merge_s), d.merges or None, _minutes(d.rebuild_s),
         d.final_state or "",
         d.time_base if d.first_of_vm and (d.merge_s, d.rebuild_s) != (None, None) else ""]
        for d in report.disks
    ]
    lun_rows = [
        [u.name, u.lun_id, gb(u.total), gb(u.free_before), gb(u.free_after), gb(u.gained),
         _iso(u.seen_first), _iso(u.seen_last)]
        for u in report.luns
    ]
    total_rows: list[list[Any]] = [
        ["vms", t.vms], ["disks", t.disks],
        ["size_before_gb", gb(t.size_before)], ["size_after_gb", gb(t.size_after)],
        ["recovered_gb", gb(t.recovered)],
        ["luns", t.luns], ["lun_free_before_gb", gb(t.lun_free_before)],
        ["lun_free_after_gb", gb(t.lun_free_after)], ["lun_gained_gb", gb(t.lun_gained)],
        *([f"final_state: {k}", v] for k, v in t.final_states.items()),
        *([f"actions: {k}", v] for k, v in t.outcomes.items()),
    ]
    pending_rows = [[_iso(p.when), p.vm, p.what, p.status, p.detail] for p in report.pending]
    return {
        "vm_disks": (VM_COLUMNS, vm_rows),
        "luns": (LUN_COLUMNS, lun_rows),
        "totals": (TOTAL_COLUMNS, total_rows),
        "pending": (PENDING_COLUMNS, pending_rows),
    }


_FORMULA = re.compile(r"^[=+\-@\t\r\n]")


def safe_cell(value: Any) -> Any:
    """A value a spreadsheet shows as typed: None → "", formula-like text gets ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        value = clean(value)
        if _FORMULA.match(value):
            return "'" + value
    return value


# -- Markdown ------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~#&!])")


def md_escape(text: object) -> str:
    """Literal in a Markdown table cell: metacharacters backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", clean(text))


def _md_table(head: Sequence[str], rows: Iterable[Sequence[str]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _range_text(report: CampaignReport) -> str:
    if report.since is None and report.until is None:
        return "the whole action log"
    return f"{fmt_time(report.since) if report.since else 'the start'} → " \
           f"{fmt_time(report.until) if report.until else 'now'} (UTC)"


def to_markdown(report: CampaignReport, *, chart_width: int = 30) -> str:
    t = report.totals
    lines = ["# Campaign report", "",
             f"Range: {_range_text(report)}. Rows read: {report.rows_read}. "
             "Sizes in GB (1 GB = 1024³ bytes); times in UTC. Merge and rebuild times are "
             "wall-clock durations measured by the console that ran each action; a time from "
             "a simulator, whose clock runs faster, is marked with its simulated duration.", ""]
    lines += ["## Per VM and disk", ""]
    if report.disks:
        lines += _md_table(
            ("VM", "Disk", "LUN", "Before", "After", "Recovered", "Merge start", "Merge time",
             "Rebuild time", "Final state"),
            ([md_escape(d.vm), md_escape(d.disk), md_escape(d.lun) or "-",
              fmt_gb(d.size_before), fmt_gb(d.size_after), fmt_gb(d.recovered),
              fmt_time(d.merge_started) if d.first_of_vm else "",
              (fmt_timed(d.merge_s, d, 0) + (f" ({d.merges} runs)" if d.merges > 1 else ""))
              if d.first_of_vm else "",
              fmt_timed(d.rebuild_s, d, 1) if d.first_of_vm else "",
              md_escape(d.final_state or "not set")]
             for d in report.disks),
            {3, 4, 5},
        )
    else:
        lines.append("No VM work recorded in this range.")
    lines += ["", "## Per LUN", ""]
    if report.luns:
        lines += _md_table(
            ("LUN", "ID", "Total", "Free before", "Free after", "Change"),
            ([md_escape(u.name), md_escape(u.lun_id), fmt_gb(u.total), fmt_gb(u.free_before),
              fmt_gb(u.free_after), _signed_gb(u.gained)] for u in report.luns),
            {2, 3, 4, 5},
        )
        lines += ["", "```text", *lun_chart(report.luns, width=chart_width), "```"]
    else:
        lines.append("No LUN seen in this range.")
    lines += ["", "## Totals", ""]
    lines += _md_table(("Total", "Value"), [
        ["VMs", str(t.vms)], ["Disks", str(t.disks)],
        ["Disk size before", fmt_gb(t.size_before)], ["Disk size after", fmt_gb(t.size_after)],
        ["Space recovered on disks", fmt_gb(t.recovered)],
        ["LUN free before", fmt_gb(t.lun_free_before)],
        ["LUN free after", fmt_gb(t.lun_free_after)],
        ["LUN free space gained", _signed_gb(t.lun_gained)],
    ], {1})
    lines += ["", "VMs per final state:", ""]
    lines += _md_table(("Final state", "VMs"),
                       ([md_escape(k), str(v)] for k, v in t.final_states.items()), {1})
    lines += ["", "Actions per outcome:", ""]
    lines += _md_table(("Outcome", "Actions"),
                       ([k, str(v)] for k, v in t.outcomes.items()), {1})
    lines += ["", "## Pending tasks", ""]
    if report.pending:
        lines += _md_table(
            ("When", "VM", "What", "Status", "Detail"),
            ([fmt_time(p.when), md_escape(p.vm), md_escape(p.what), md_escape(p.status),
              md_escape(p.detail) or "-"] for p in report.pending),
            set(),
        )
    else:
        lines.append("Nothing pending.")
    return "\n".join(lines) + "\n"


def _signed_gb(n: int | None) -> str:
    if n is None:
        return "-"
    return ("+" if n > 0 else "") + fmt_gb(n)


# -- the bar chart ------------------------------------------------------------------------

def lun_chart(luns: Sequence[LunLine], *, width: int = 30, label: int = 16) -> list[str]:
    """Plain-text bars of each LUN's free space before and after, on one scale."""
    if not luns:
        return []
    scale = max([u.total or 0 for u in luns] + [u.free_before or 0 for u in luns]
                + [u.free_after or 0 for u in luns] + [1])
    out = [f"{'LUN free space':<{label}} {'':6}  0{fmt_gb(scale):>{width}}"]
    for u in luns:
        name = clean(u.name).replace("`", "'")
        if len(name) > label:
            name = name[: label - 1] + "…"
        for i, (what, free) in enumerate((("before", u.free_before), ("after", u.free_after))):
            bar = "" if free is None else "█" * round(width * max(free, 0) / scale)
            if free is not None and free > 0 and not bar:
                bar = "▏"  # something, however little
            pct = f"{100 * free / u.total:5.1f} %" if free is not None and u.total else ""
            out.append(f"{name if i == 0 else '':<{label}} {what:<6} |{bar:<{width}}| "
                       f"{fmt_gb(free):>12} {pct}".rstrip())
    return out


# -- CSV and xlsx -------------------------------------------------------------------------

def write_csv(report: CampaignReport, file: TextIO) -> None:
    """One CSV: ``table`` first; each table's header row starts with ``table``."""
    out = csv.writer(file, lineterminator="\n")
    for n, (name, (columns, rows)) in enumerate(table_rows(report).items()):
        if n:
            out.writerow([])
        out.writerow(["table", *columns])
        for row in rows:
            out.writerow([name, *(safe_cell(v) for v in row)])


def to_csv(report: CampaignReport) -> str:
    buf = io.StringIO()
    write_csv(report, buf)
    return buf.getvalue()


SHEETS = {"vm_disks": "VMs and disks", "luns": "LUNs", "totals": "Totals", "pending": "Pending"}


def write_xlsx(report: CampaignReport, path: Path) -> None:
    """An xlsx workbook: one sheet per table and a bar chart on the LUN sheet."""
    from openpyxl import Workbook
    from openpyxl.chart import BarChart, Reference
    from openpyxl.styles import Font

    book = Workbook()
    book.remove(book.active)
    for name, (columns, rows) in table_rows(report).items():
        sheet = book.create_sheet(SHEETS[name])
        sheet.append(list(columns))
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append([safe_cell(v) for v in row])
        for cell in (c for r in sheet.iter_rows(min_row=2) for c in r):
            if isinstance(cell.value, str):
                cell.data_type = "s"  # text is text, never a formula
        sheet.freeze_panes = "A2"
        for i, title in enumerate(columns, 1):
            widest = max([len(str(title))] + [len(str(r[i - 1] or "")) for r in rows])
            sheet.column_dimensions[sheet.cell(1, i).column_letter].width = min(60, widest + 2)
        if name == "luns" and rows:
            chart = BarChart()
            chart.type = "bar"
            chart.title = "LUN free space before / after (GB)"
            data = Reference(sheet, min_col=4, max_col=5, min_row=1, max_row=len(rows) + 1)
            cats = Reference(sheet, min_col=1, min_row=2, max_row=len(rows) + 1)
            chart.add_data(data, titles_from_data=True)
            chart.set_categories(cats)
            chart.height = max(7.5, 0.6 * len(rows) + 3)
            chart.width = 18
            sheet.add_chart(chart, "J2")
    book.save(path)
