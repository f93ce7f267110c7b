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

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Button, Input, Static

from ventana.state.acks import Ack, AckError, audit, open_findings, parse_until
from ventana.state.derived import human_age
from ventana.state.findings import LiveFinding
from ventana.state.model import Severity
from ventana.state.sanitize import clean

from .vm_rows import fit

if TYPE_CHECKING:
    from ventana.core import Console

SEVERITY_STYLE = {
    Severity.BLOCKING: "bold white on red",
    Severity.CRITICAL: "bold red",
    Severity.WARNING: "bold yellow",
    Severity.INFO: "cyan",
}
SORTS = ("severity", "object", "code", "age")
MIN_SEVERITY = (Severity.INFO, Severity.WARNING, Severity.CRITICAL)
# (label, width); the message takes what is left of the width (the detail
# line under the list shows it whole).
COLUMNS: tuple[tuple[str, int], ...] = (
    ("Severity", 9), ("Object", 20), ("Code", 26), ("Age", 6), ("Status", 8), ("Message", 0),
)
_FIXED = sum(w for _, w in COLUMNS) + len(COLUMNS)
_SEVERITY_RICH = {sev: Style.parse(style) for sev, style in SEVERITY_STYLE.items()}
_DIM = Style(dim=True)
Item = tuple[LiveFinding, Ack | None]


class FindingsList(ScrollView, can_focus=True, inherit_bindings=False):
    """A virtual list of findings: only the lines on screen are built, so
    thousands of findings cost what a screenful does (the Line API)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("enter", "select", "Remedy", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"findings-list--header", "findings-list--cursor"}
    DEFAULT_CSS = """
    FindingsList {
        background: $surface;
        color: $foreground;
        height: 1fr;
        & > .findings-list--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        & > .findings-list--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .findings-list--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
        }
    }
    """

    class Highlighted(Message):
        pass

    class Selected(Message):
        pass

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.rows: list[Item] = []
        self.cursor = 0
        self.now: datetime | None = None

    def set_rows(self, rows: list[Item], now: datetime, keep: str | None) -> None:
        self.rows = rows
        self.now = now
        index = next((i for i, (f, _) in enumerate(rows) if f.key == keep), None)
        if index is not None:
            self.cursor = index
        self.cursor = max(0, min(self.cursor, len(rows) - 1))
        self.virtual_size = Size(0, len(rows) + 1)
        self._into_view()
        self.refresh()

    def current(self) -> Item | None:
        return self.rows[self.cursor] if 0 <= self.cursor < len(self.rows) else None

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _into_view(self) -> None:
        top, page = self.scroll_offset.y, self._page()
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + page:
            self.scroll_to(y=self.cursor - page + 1, animate=False)

    def move_to(self, row: int) -> None:
        if not self.rows:
            return
        row = max(0, min(row, len(self.rows) - 1))
        if row != self.cursor:
            self.cursor = row
            self._into_view()
            self.refresh()
            self.post_message(self.Highlighted())

    def action_cursor(self, step: int) -> None:
        self.move_to(self.cursor + step)

    def action_page(self, step: int) -> None:
        self.move_to(self.cursor + step * self._page())

    def action_cursor_to(self, row: int) -> None:
        self.move_to(row if row >= 0 else len(self.rows) - 1)

    def action_select(self) -> None:
        if self.rows:
            self.post_message(self.Selected())

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        self.move_to(offset.y - 1 + self.scroll_offset.y)
        if event.chain >= 2:
            self.action_select()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        widths = [w or max(10, width - _FIXED) for _, w in COLUMNS]
        base = self.rich_style
        if y == 0:
            style = self.get_component_rich_style("findings-list--header")
            segments = [Segment(" " + fit(label, w), style)
                        for (label, _), w in zip(COLUMNS, widths, strict=True)]
            return Strip(segments).crop_extend(0, width, style)
        row = y - 1 + self.scroll_offset.y
        if row >= len(self.rows):
            return Strip.blank(width, base)
        f, ack = self.rows[row]
        fill = (self.get_component_rich_style("findings-list--cursor")
                if row == self.cursor else base)
        muted = fill + _DIM if ack is not None else fill
        age = self.now - f.since if self.now and f.since else None
        status = ("snoozed" if ack.kind == "snooze" else "ack'd") if ack is not None else ""
        cells = (
            (f.severity.value, fill + _SEVERITY_RICH.get(f.severity, Style())),
            (f.target_name or f.target, muted),
            (f.code, muted),
            (human_age(age if age is None or age >= timedelta(0) else None), muted),
            (status, fill + _DIM),
            (f.message, muted),
        )
        segments = [Segment(" " + fit(text, w), style)
                    for (text, style), w in zip(cells, widths, strict=True)]
        return Strip(segments).crop_extend(0, width, fill)


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
        Binding("question_mark", "app.help", "Help", show=False),
        Binding("a", "acknowledge", "Acknowledge"),
        Binding("z", "snooze", "Snooze"),
        Binding("x", "lift", "Lift ack/snooze"),
        Binding("h", "toggle_silenced", "Show silenced"),
        Binding("v", "severity", "Min severity"),
        Binding("s", "sort", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("slash", "filter", "Filter"),
    ]

    def __init__(self, console: Console, *,
                 open_remedy: Callable[[str, str], None] | None = None) -> None:
        """``console``: the engine (findings, acknowledgements, the log);
        ``open_remedy(action, vm_id)``: the front end opens a remedy's plan."""
        super().__init__()
        self.console = console
        self._open_remedy = open_remedy
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
            yield FindingsList(id="findings-table")
            yield Static("", id="findings-detail")
            yield Static(Text(
                "Enter remedy · a acknowledge · z snooze · x lift · h show silenced · "
                "v min severity · s/S sort · / filter · Esc close", style="dim"),
                id="findings-keys")

    def on_mount(self) -> None:
        table = self.query_one("#findings-table", FindingsList)
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
        return self.query_one("#findings-table", FindingsList).current()

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
        table = self.query_one("#findings-table", FindingsList)
        current = self.selected()
        self._rows = rows
        table.set_rows(rows, now, current[0].key if current else None)
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

    @on(FindingsList.Highlighted)
    def _highlighted(self) -> None:
        self._show_detail()

    @on(FindingsList.Selected)
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
        self.query_one("#findings-table", FindingsList).focus()

    def action_close(self) -> None:
        box = self.query_one("#findings-filter", Input)
        if self.focused is box:
            box.value = ""
            box.remove_class("shown")
            self.query_one("#findings-table", FindingsList).focus()
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
        if not f.remedy or not f.vm_id or self._open_remedy is None:
            self.app.notify(f"{f.code} has no action in Ventana; see its message.",
                            markup=False)
            return
        self._open_remedy(f.remedy, f.vm_id)

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
        if silence is not None and self.console.acks is not None:
            # the app's worker: the write and its message outlive this screen
            self.app.run_worker(self._write_silence(finding, silence), group="acks",
                                exit_on_error=False)

    async def _write_silence(self, finding: LiveFinding, silence: Silence) -> None:
        """Acknowledge or snooze on the console's writer thread (a shared log's round trip
        never stalls the screen), then say what happened."""
        console, book = self.console, self.console.acks
        if book is None:
            return
        now = self.now()
        action = "snooze" if silence.until is not None else "acknowledge"

        def write() -> None:
            if silence.until is not None:
                book.snooze(finding, silence.until, silence.reason, now)
            else:
                book.acknowledge(finding, silence.reason, now)
            if console.action_log is not None:
                try:
                    audit(console.action_log, action=action, finding=finding,
                          reason=silence.reason, target_system=console.backend.target,
                          mode=console.runner.mode, until=silence.until)
                except AckError:
                    book.lift(finding.target, finding.code, now, "not audited")
                    raise

        try:
            await asyncio.wrap_future(console.book_write(write))
        except (AckError, ValueError) as exc:
            self.app.notify(f"Not {action}d: {clean(str(exc))}", severity="error",
                            markup=False)
            return
        self.app.notify(f"{finding.code} on {finding.target_name}: "
                        + (f"snoozed until {silence.until:%Y-%m-%d %H:%M} UTC"
                           if silence.until else "acknowledged"), markup=False)
        console.sync_findings()
        if self.is_attached:  # still shown (the app's worker outlives a closed screen)
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
        self.app.run_worker(self._write_lift(finding), group="acks", exit_on_error=False)

    async def _write_lift(self, finding: LiveFinding) -> None:
        console, book = self.console, self.console.acks
        if book is None:
            return
        now = self.now()

        def write() -> None:
            book.lift(finding.target, finding.code, now)
            if console.action_log is not None:
                audit(console.action_log, action="unacknowledge", finding=finding,
                      reason="lifted by the operator", target_system=console.backend.target,
                      mode=console.runner.mode)

        try:
            await asyncio.wrap_future(console.book_write(write))
        except AckError as exc:
            self.app.notify(f"Not lifted: {clean(str(exc))}", severity="error", markup=False)
            return
        console.sync_findings()
        if self.is_attached:  # still shown (the app's worker outlives a closed screen)
            self.refresh_rows()
