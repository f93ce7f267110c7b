"""The findings screen (key ``f``): what is wrong, live, and what to do about it.

A table of every open finding — severity, object, code, age (how long this
console has seen it), message and whether it is silenced — sortable (``s``
next column, ``S`` reverse) and filterable (``/`` text over object, code and
message; ``v`` minimum severity). Acknowledged and snoozed findings are
hidden unless ``h`` shows them. ``a`` acknowledges and ``z`` snoozes the
selected finding (a reason is required; a snooze asks until when: ``4h``,
``2d``, an ISO time), ``x`` lifts either; each is stored and written to the
action log. ``Enter`` on a finding with a remedy opens that guarded action
(plan → pre-flight → typed confirmation) for its VM. The table follows the
engine live (redrawn at most twice a second, keeping the cursor on the same
finding). Everything from the cluster is shown as ``Text``, never markup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Static

from ventana.state.acks import Ack, AckError, audit, open_findings, parse_until
from ventana.state.derived import human_age
from ventana.state.findings import LiveFinding
from ventana.state.model import Severity
from ventana.state.sanitize import clean

if TYPE_CHECKING:
    from .app import VentanaApp

SEVERITY_STYLE = {
    Severity.BLOCKING: "bold white on red",
    Severity.CRITICAL: "bold red",
    Severity.WARNING: "bold yellow",
    Severity.INFO: "cyan",
}
SORTS = ("severity", "object", "code", "age")
MIN_SEVERITY = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)
MESSAGE_WIDTH = 90


def _sort_key(column: str, now: datetime) -> Callable[[tuple[LiveFinding, Ack | None]], tuple]:
    def severity(item: tuple[LiveFinding, Ack | None]) -> tuple:
        f = item[0]
        return (-f.severity.rank, f.code, f.target_name.casefold(), f.key)

    def object_(item: tuple[LiveFinding, Ack | None]) -> tuple:
        f = item[0]
        return (f.target_name.casefold(), -f.severity.rank, f.code, f.key)

    def code(item: tuple[LiveFinding, Ack | None]) -> tuple:
        f = item[0]
        return (f.code, -f.severity.rank, f.target_name.casefold(), f.key)

    def age(item: tuple[LiveFinding, Ack | None]) -> tuple:
        f = item[0]
        return (f.since or now, -f.severity.rank, f.target_name.casefold(), f.key)

    return {"severity": severity, "object": object_, "code": code, "age": age}[column]


def matches(f: LiveFinding, words: list[str]) -> bool:
    hay = f"{f.target_name} {f.target} {f.code} {f.message} {f.severity.value}".casefold()
    return all(w in hay for w in words)


@dataclass(frozen=True, slots=True)
class Silence:
    reason: str
    until: datetime | None = None  # a snooze's end; None: acknowledge


class SilenceDialog(ModalScreen[Silence | None]):
    """Ask why (and, for a snooze, until when)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, finding: LiveFinding, *, snooze: bool, now: datetime) -> None:
        super().__init__()
        self.finding = finding
        self.snooze = snooze
        self.now = now

    def compose(self) -> ComposeResult:
        verb = "Snooze" if self.snooze else "Acknowledge"
        with Vertical(id="silence-dialog"):
            title = Text(f"{verb} ", style="bold")
            title.append(f"{self.finding.code} on {self.finding.target_name}", style="bold")
            yield Static(title, id="silence-title")
            yield Static(Text(self.finding.message), id="silence-message")
            yield Input(placeholder="reason (required; goes to the action log)",
                        id="silence-reason")
            if self.snooze:
                yield Input(value="4h", placeholder="until: 30m, 4h, 2d, 1w or 2026-11-24T08:00",
                            id="silence-until")
            yield Static("", id="silence-error")
            with Horizontal(id="silence-buttons"):
                yield Button(verb, variant="primary", id="silence-ok")
                yield Button("Cancel", id="silence-cancel")

    def on_mount(self) -> None:
        self.query_one("#silence-reason", Input).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#silence-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "silence-reason" and self.snooze:
            self.query_one("#silence-until", Input).focus()
            return
        self._ok()

    @on(Button.Pressed, "#silence-ok")
    def _ok(self) -> None:
        reason = self.query_one("#silence-reason", Input).value.strip()
        error = self.query_one("#silence-error", Static)
        if not reason:
            error.update(Text("Say why: a reason is required.", style="bold red"))
            self.query_one("#silence-reason", Input).focus()
            return
        until = None
        if self.snooze:
            try:
                until = parse_until(self.query_one("#silence-until", Input).value, self.now)
            except ValueError as exc:
                error.update(Text(str(exc), style="bold red"))
                return
        self.dismiss(Silence(reason, until))


class FindingsScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,f", "close", "Close"),
        Binding("a", "acknowledge", "Acknowledge"),
        Binding("z", "snooze", "Snooze"),
        Binding("x", "lift", "Lift ack/snooze"),
        Binding("h", "toggle_silenced", "Show silenced"),
        Binding("v", "severity", "Min severity"),
        Binding("s", "sort", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter"),
    ]

    def __init__(self, app: VentanaApp) -> None:
        super().__init__()
        self.console = app
        self.sort = "severity"
        self.reverse = False
        self.min_severity = Severity.INFO
        self.show_silenced = False
        self.text = ""
        self._dirty = True
        self._seen = (-1, -1)
        self._rows: list[tuple[LiveFinding, Ack | None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    # -- layout -------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        with Vertical(id="findings-dialog"):
            yield Static("", id="findings-title")
            yield Input(placeholder="filter: words over object, code and message (Esc clears)",
                        id="findings-filter")
            yield DataTable(id="findings-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="findings-detail")
            yield Static(Text(
                "Enter remedy · a acknowledge · z snooze · x lift · h show silenced · "
                "v min severity · s/S sort · / filter · Esc close", style="dim"),
                id="findings-keys")

    def on_mount(self) -> None:
        table = self.query_one("#findings-table", DataTable)
        for label, key, width in (("Severity", "sev", 9), ("Object", "obj", 22),
                                  ("Code", "code", 26), ("Age", "age", 6),
                                  ("Status", "status", 10),
                                  ("Message", "msg", MESSAGE_WIDTH)):
            table.add_column(label, key=key, width=width)
        self._unsubscribe = self.console.findings.subscribe(self._changed)
        self.refresh_rows()
        self.set_interval(0.5, self._maybe_refresh)
        table.focus()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    # -- data ------------------------------------------------------------------------
    def _changed(self, _change: object) -> None:
        self._dirty = True

    def _maybe_refresh(self) -> None:
        book = self.console.acks
        seen = (self.console.findings.version, book.version if book else 0)
        if self._dirty or seen != self._seen:
            self.refresh_rows()

    def now(self) -> datetime:
        return self.console.clock()

    def selected(self) -> tuple[LiveFinding, Ack | None] | None:
        table = self.query_one("#findings-table", DataTable)
        if not self._rows or table.cursor_row is None:
            return None
        row = table.cursor_row
        if 0 <= row < len(self._rows):
            return self._rows[row]
        return None

    def refresh_rows(self) -> None:
        console = self.console
        book = console.acks
        self._dirty = False
        self._seen = (console.findings.version, book.version if book else 0)
        now = self.now()
        items = open_findings(console.findings, book, now, silenced=True)
        total = len(items)
        silenced = sum(1 for _, a in items if a is not None)
        words = self.text.casefold().split()
        rows = [
            (f, a) for f, a in items
            if (self.show_silenced or a is None)
            and f.severity.rank >= self.min_severity.rank
            and (not words or matches(f, words))
        ]
        rows.sort(key=_sort_key(self.sort, now), reverse=self.reverse)
        table = self.query_one("#findings-table", DataTable)
        current = self.selected()
        keep = current[0].key if current else None
        self._rows = rows
        with self.app.batch_update():
            table.clear()
            for f, ack in rows:
                status = Text("")
                if ack is not None:
                    status = Text("snoozed" if ack.kind == "snooze" else "ack'd", style="dim")
                age = now - f.since if f.since else None
                message = f.message if len(f.message) <= MESSAGE_WIDTH else (
                    f.message[: MESSAGE_WIDTH - 1] + "…")
                style = "dim" if ack is not None else ""
                table.add_row(
                    Text(f.severity.value, style=SEVERITY_STYLE.get(f.severity, "")),
                    Text(f.target_name or f.target, style=style),
                    Text(f.code, style=style),
                    Text(human_age(age if age is None or age >= timedelta(0) else None),
                         style=style),
                    status,
                    Text(message, style=style),
                    key=f.key,
                )
            if keep is not None:
                for i, (f, _) in enumerate(rows):
                    if f.key == keep:
                        table.move_cursor(row=i, animate=False)
                        break
        title = Text("Findings ", style="bold")
        title.append(f"{len(rows)} shown of {total}", style="bold")
        extra = []
        if silenced:
            extra.append(f"{silenced} acknowledged/snoozed "
                         + ("shown" if self.show_silenced else "hidden (h shows)"))
        if self.min_severity is not Severity.INFO:
            extra.append(f"{self.min_severity.value} and worse")
        if self.text:
            extra.append(f"filter {self.text!r}")
        extra.append(f"sorted by {self.sort}{' (reversed)' if self.reverse else ''}")
        if console.findings.pending:
            extra.append(f"computing… {console.findings.pending:,} objects to go")
        if book is None:
            extra.append(f"acknowledging unavailable: {console.acks_error}")
        title.append(" · " + " · ".join(clean(e) for e in extra), style="dim")
        self.query_one("#findings-title", Static).update(title)
        self._show_detail()

    def _show_detail(self) -> None:
        item = self.selected()
        detail = self.query_one("#findings-detail", Static)
        if item is None:
            detail.update(Text("No finding matches.", style="dim"))
            return
        f, ack = item
        text = Text()
        text.append(f"{f.severity.value.upper()} ", style=SEVERITY_STYLE.get(f.severity, ""))
        text.append(f"{f.code} ", style="bold")
        text.append(f"{f.target_name} ({f.target})\n")
        text.append(f.message)
        if f.remedy:
            text.append(f"\nRemedy: Enter opens the guarded {f.remedy} of this VM.", style="green")
        if ack is not None:
            text.append(f"\n{ack.describe()}", style="dim")
        detail.update(text)

    @on(DataTable.RowHighlighted, "#findings-table")
    def _highlighted(self) -> None:
        self._show_detail()

    @on(DataTable.RowSelected, "#findings-table")
    def _selected(self) -> None:
        self.action_remedy()

    # -- filter / sort ---------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#findings-filter", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, "#findings-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.text = event.value
        self.refresh_rows()

    @on(Input.Submitted, "#findings-filter")
    def _filter_done(self) -> None:
        self.query_one("#findings-table", DataTable).focus()

    def action_close(self) -> None:
        box = self.query_one("#findings-filter", Input)
        if self.focused is box:
            box.value = ""
            box.remove_class("shown")
            self.query_one("#findings-table", DataTable).focus()
            return
        self.dismiss(None)

    def action_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.reverse = False
        self.refresh_rows()

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self.refresh_rows()

    def action_severity(self) -> None:
        i = MIN_SEVERITY.index(self.min_severity)
        self.min_severity = MIN_SEVERITY[(i + 1) % len(MIN_SEVERITY)]
        self.refresh_rows()

    def action_toggle_silenced(self) -> None:
        self.show_silenced = not self.show_silenced
        self.refresh_rows()

    # -- acting ------------------------------------------------------------------------------
    def action_remedy(self) -> None:
        item = self.selected()
        if item is None:
            return
        f = item[0]
        if not f.remedy or not f.vm_id:
            self.app.notify(f"{f.code} has no action in Ventana; see its message.",
                            markup=False)
            return
        self.console._open_plan(f.remedy, f.vm_id)

    def _silence(self, snooze: bool) -> None:
        item = self.selected()
        if item is None:
            return
        if self.console.acks is None:
            self.app.notify(f"Cannot acknowledge: {clean(self.console.acks_error)}",
                            severity="error", markup=False)
            return
        finding = item[0]
        self.app.push_screen(SilenceDialog(finding, snooze=snooze, now=self.now()),
                             callback=lambda s: self._silenced(finding, s))

    def _silenced(self, finding: LiveFinding, silence: Silence | None) -> None:
        if silence is None:
            return
        book = self.console.acks
        if book is None:
            return
        now = self.now()
        try:
            if silence.until is not None:
                book.snooze(finding, silence.until, silence.reason, now)
                action = "snooze"
            else:
                book.acknowledge(finding, silence.reason, now)
                action = "acknowledge"
            if self.console.action_log is not None:
                try:
                    audit(self.console.action_log, action=action, finding=finding,
                          reason=silence.reason, target_system=self.console.backend.target,
                          mode=self.console.runner.mode, until=silence.until)
                except AckError:
                    book.lift(finding.target, finding.code, now, "not audited")
                    raise
        except (AckError, ValueError) as exc:
            self.app.notify(f"Not {action if 'action' in locals() else 'saved'}: "
                            f"{clean(str(exc))}", severity="error", markup=False)
            return
        self.app.notify(f"{finding.code} on {finding.target_name}: "
                        + (f"snoozed until {silence.until:%Y-%m-%d %H:%M} UTC"
                           if silence.until else "acknowledged"), markup=False)
        self.console.sync_findings()
        self.refresh_rows()

    def action_acknowledge(self) -> None:
        self._silence(snooze=False)

    def action_snooze(self) -> None:
        self._silence(snooze=True)

    def action_lift(self) -> None:
        item = self.selected()
        book = self.console.acks
        if item is None or book is None:
            return
        finding, ack = item
        if ack is None and book.get(finding.target, finding.code) is None:
            self.app.notify("This finding is not acknowledged or snoozed.", markup=False)
            return
        now = self.now()
        try:
            book.lift(finding.target, finding.code, now)
            if self.console.action_log is not None:
                audit(self.console.action_log, action="unacknowledge", finding=finding,
                      reason="lifted by the operator", target_system=self.console.backend.target,
                      mode=self.console.runner.mode)
        except AckError as exc:
            self.app.notify(f"Not lifted: {clean(str(exc))}", severity="error", markup=False)
            return
        self.console.sync_findings()
        self.refresh_rows()
