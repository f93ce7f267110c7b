"""The maintenance-window screen: the plan queue, its projection and its run.

Shows each queued item in order with its action, LUN, estimate (likely and
range, and the basis: learned or heuristic), projected start and end, the
LUN's projected free space after it (cumulative over the queue, worst to best),
whether it fits before the window's end, and its status while the queue runs.
Re-plans live (every second and at every change of the queue).

Keys: shift+↑/↓ move an item, e end time, n rename, r run (confirm every plan
by typing the window's name; N in parallel), z pause, k skip, Delete remove,
x put a finished/skipped item back, Esc close. Running needs a writable
session (``r`` is disabled read-only); planning the queue does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from rich.console import Group
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Checkbox, DataTable, Footer, Input, Static

from ventana.backends.window_runner import WindowRunner
from ventana.state.derived import human_bytes
from ventana.state.plans import Plan
from ventana.state.sanitize import clean
from ventana.state.window import ItemProjection, Projection

from .fit import cap, cap_middle
from .plan_screen import (
    SEEN_BINDINGS,
    PlanBody,
    SeenTracker,
    findings_text,
    plan_title,
)
from .plan_screen import shown as plan_text

_STATUS_STYLE = {
    "queued": "",
    "running": "bold cyan",
    "ok": "green",
    "warning": "yellow",
    "failed": "bold red",
    "unknown": "bold magenta",
    "cancelled": "dim",
    "skipped": "dim yellow",
}
COLUMNS = ("#", "VM", "Action", "LUN", "Estimate", "Start", "End", "LUN free after",
           "Fits", "Status")


def _hm(seconds: float) -> str:
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h}h{m:02d}" if h else f"{m}m"


def _at(t: datetime | None, now: datetime | None = None) -> str:
    """HH:MM, with +Nd when it falls on a later day than ``now``."""
    if t is None:
        return ""
    days = (t.date() - now.date()).days if now is not None else 0
    return t.strftime("%H:%M") + (f" +{days}d" if days > 0 else "")


def _fits(likely: bool | None, worst: bool | None) -> Text:
    if likely is None:
        return Text("—", style="dim")
    if worst:
        return Text("yes", style="green")
    if likely:
        return Text("risk", style="yellow")  # likely yes, not in the worst case
    return Text("NO", style="bold red")


def parse_end(text: str, now: datetime) -> datetime | None:
    """'06:00' (next such time), '2024-10-15 06:00', '+3h', '+90m'; '' clears."""
    text = text.strip()
    if not text:
        return None
    rel = re.fullmatch(r"\+\s*(\d+(?:\.\d+)?)\s*([hm])", text)
    if rel:
        n = float(rel.group(1))
        return now + (timedelta(hours=n) if rel.group(2) == "h" else timedelta(minutes=n))
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if clock:
        at = now.replace(hour=int(clock.group(1)), minute=int(clock.group(2)), second=0,
                         microsecond=0)
        return at if at > now else at + timedelta(days=1)
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=now.tzinfo)


def item_cells(n: int, p: ItemProjection, now: datetime | None = None,
               progress: str = "") -> tuple[Text, ...]:
    item = p.item
    est = Text("")
    if item.pending and p.plan is not None:
        est = Text(f"{_hm(p.estimate.likely_s)} ({_hm(p.estimate.low_s)}–"
                   f"{_hm(p.estimate.high_s)})")
        if p.estimate.basis.startswith("from "):
            est.append(" L", style="bold green")  # learned from this cluster
    free = Text("")
    if p.lun_free_after_worst is not None:
        free = Text(human_bytes(p.lun_free_after_worst))
        if p.lun_free_after_best != p.lun_free_after_worst:
            free.append(f"–{human_bytes(p.lun_free_after_best)}")
    status = Text(item.status, style=_STATUS_STYLE.get(item.status, ""))
    if progress:
        status.append(f" {progress}", style="cyan")
    reason = p.error or item.reason
    if item.status == "queued" and p.blocking:
        status.append(f" blocked: {', '.join(p.blocking)}", style="bold red")
    elif reason:
        status.append(f" {reason}", style="dim")
    return (Text(str(n)), Text(cap_middle(item.vm_name)), Text(item.action),
            Text(cap(p.lun_name, 40)),
            est, Text(_at(p.start_likely, now)), Text(_at(p.end_likely, now)), free,
            _fits(p.fits_likely, p.fits_worst) if item.pending else Text(""), status)


def summary_text(wr: WindowRunner, proj: Projection) -> Text:
    w = wr.window
    text = Text("Window ", style="bold")
    text.append(w.name, style="bold underline")
    if w.end is not None:
        left = (w.end - proj.now).total_seconds()
        text.append(f" · ends {w.end:%Y-%m-%d %H:%M %Z}".rstrip())
        text.append(f" (in {_hm(left)})" if left > 0 else " (over)",
                    style="" if left > 0 else "bold red")
    else:
        text.append(" · no end time (e to set)", style="dim")
    text.append(f" · {w.parallel} at a time, "
                + ("two per LUN allowed" if w.same_lun else "one per LUN"))
    pending = [p for p in proj.items if p.item.pending]
    if pending:
        text.append(f"\n{len(pending)} to run · likely done {_at(proj.end_likely, proj.now)}, "
                    f"worst {_at(proj.end_worst, proj.now)}")
        if proj.fits_likely is not None:
            text.append(" · ")
            if proj.fits_worst:
                text.append("fits, even in the worst case", style="bold green")
            elif proj.fits_likely:
                text.append("fits if merges run as usual; NOT in the worst case",
                            style="bold yellow")
            else:
                text.append("does NOT fit before the end", style="bold red")
    else:
        text.append("\nNothing to run. Add merges with p on the VM list.", style="dim")
    if wr.save_error:
        text.append(f"\nThe queue could not be saved: {clean(wr.save_error)}", style="bold red")
    staleness = wr.runner.store.staleness()
    if wr.active and staleness.everything:
        text.append(" · waiting for the connection: nothing new starts", style="bold yellow")
    elif wr.active and staleness.any:  # per node (issue 14) or target: only its items wait
        names = ", ".join(wr.runner.store.stale_names()) or "a stale target"
        text.append(f" · items on {names} wait for the link", style="bold yellow")
    state = ("paused: running items finish, nothing new starts" if wr.paused and wr.active
             else "running" if wr.active else "")
    if state:
        text.append(f" · {state}", style="bold cyan")
    return text


@dataclass(frozen=True, slots=True)
class RunChoice:
    typed: str
    parallel: int
    same_lun: bool


class WindowConfirmScreen(SeenTracker, ModalScreen[RunChoice | None]):
    """Every plan of the queue, then the window's name typed once to run them all
    (accepted only once every plan has been on screen: issue 12)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), *SEEN_BINDINGS]

    def __init__(self, name: str, plans: list[Plan], parallel: int, same_lun: bool) -> None:
        super().__init__()
        self.window_name = name
        self.plans = plans
        self.parallel = parallel
        self.same_lun = same_lun

    def compose(self) -> ComposeResult:
        with Vertical(id="plan-dialog"):
            with PlanBody(id="plan-body"):
                yield Static(Text(f"Run {len(self.plans)} queued action(s) of the window "
                                  f"'{cap_middle(self.window_name)}'", style="bold"),
                             id="plan-title")
                for n, plan in enumerate(self.plans, start=1):
                    head = Text(f"\n{n}. ")
                    head.append_text(plan_title(plan))
                    parts: list[Text] = [head, findings_text(plan)]
                    if plan.blocking:
                        parts.append(Text("   Blocked now: skipped at its turn unless this has "
                                          "cleared (no override from a queue).",
                                          style="bold red"))
                    # Long names shortened as on the plan screen (issue 12).
                    parts.append(Text(f"   {cap_middle(plan.lun_name or '?')} · "
                                      f"{plan.estimate.text() if plan.estimate else 'no estimate'}"
                                      f"\n   {plan_text(plan, plan.command)}", style="dim"))
                    yield Static(Group(*parts))
                yield Static(Text(
                    "Each item is re-planned at its start; one blocked then (or whose plan "
                    "changed) is skipped and logged. There is no override from a queue. A "
                    "failed item skips the later items on its VM only.", style="italic"))
            yield Static("", id="plan-seen")
            with Vertical(id="plan-pinned"):
                with Horizontal(id="window-run-options"):
                    yield Static("In parallel:", classes="label")
                    yield Input(str(self.parallel), id="parallel", type="integer", compact=True)
                    yield Checkbox("Allow two on one LUN", self.same_lun, id="same-lun",
                                   compact=True)
                prompt = Text("Type the window's name to run every plan above: ")
                prompt.append(cap(self.window_name, 40), style="bold")
                yield Static(prompt, id="window-prompt")
                yield Input(placeholder=cap(self.window_name, 40), id="confirm-name",
                            compact=True)
                yield Static("", id="plan-error")
                with Horizontal(id="plan-buttons"):
                    yield Static(Text("PgDn read on", style="dim"), id="plan-keys")
                    yield Button("Run the queue", variant="error", id="run", compact=True)
                    yield Button("Cancel (Esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-name", Input).focus()
        self.watch_seen()

    def _try(self) -> None:
        typed = self.query_one("#confirm-name", Input).value
        error = self.query_one("#plan-error", Static)
        try:
            parallel = int(self.query_one("#parallel", Input).value or "1")
        except ValueError:
            parallel = 0
        if not 1 <= parallel <= 16:
            error.update(Text("In parallel: a number from 1 to 16.", style="bold red"))
            return
        if typed != self.window_name:
            error.update(Text("The name does not match. Type it exactly as shown.",
                              style="bold red"))
            return
        if below := self.unseen_lines():
            error.update(Text(f"Not confirmed: {below} line(s) of the plans are not yet seen. "
                              "Scroll to the end (PgDn) first.", style="bold red"))
            return
        self.dismiss(RunChoice(typed, parallel, self.query_one("#same-lun", Checkbox).value))

    @on(Input.Submitted, "#confirm-name")
    def _submitted(self) -> None:
        self._try()

    @on(Button.Pressed, "#run")
    def _run(self) -> None:
        self._try()

    @on(Button.Pressed, "#cancel")
    def _cancel_button(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class WindowScreen(Screen[None]):
    BINDINGS = [
        Binding("escape,w", "close", "Close"),
        Binding("shift+up", "move(-1)", "Move up"),
        Binding("shift+down", "move(1)", "Move down"),
        Binding("e", "ask('end')", "End time"),
        Binding("n", "ask('name')", "Rename"),
        Binding("r", "run", "Run…"),
        Binding("z", "pause", "Pause"),
        Binding("k", "skip", "Skip"),
        Binding("delete", "remove", "Remove"),
        Binding("x", "retry", "Back in queue"),
        # The VM-list keys mean nothing here (there is no VM list on this screen).
        Binding("m,u,p,s,slash", "nothing", show=False),
    ]

    def __init__(self, runner: WindowRunner, *, read_only: bool = False,
                 on_run: object = None) -> None:
        super().__init__()
        self.wr = runner
        self.read_only = read_only
        self.on_run = on_run  # callable(RunChoice, plans) from the app
        self._asking = ""
        self.projection: Projection | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="window-main"):
            yield Static("", id="window-summary")
            yield DataTable(id="window-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="window-detail")
            yield Input(id="window-input", classes="hidden")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#window-table", DataTable)
        for label in COLUMNS:
            table.add_column(label, key=label)
        self.refresh_queue()
        self.set_interval(1.0, self.refresh_queue)
        table.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "run" and self.read_only:
            return None
        return True

    # -- rendering ----------------------------------------------------------------
    def refresh_queue(self) -> None:
        if not self.is_attached:
            return
        proj = self.wr.projection()
        self.projection = proj
        self.query_one("#window-summary", Static).update(summary_text(self.wr, proj))
        table = self.query_one("#window-table", DataTable)
        cursor = table.cursor_row
        keys = [p.item.id for p in proj.items]
        progress = self._progress(proj)
        current = [str(k.value) for k in table.rows]
        if current != keys:
            table.clear()
            for n, p in enumerate(proj.items, start=1):
                table.add_row(*item_cells(n, p, proj.now, progress.get(p.item.id, "")),
                              key=p.item.id)
            if keys:
                table.move_cursor(row=min(cursor, len(keys) - 1))
            self._show_detail()
            return
        for n, p in enumerate(proj.items, start=1):
            cells = item_cells(n, p, proj.now, progress.get(p.item.id, ""))
            for label, cell in zip(COLUMNS, cells, strict=True):
                if str(table.get_cell(p.item.id, label)) != str(cell):
                    # A handful of rows: widths may follow the text.
                    table.update_cell(p.item.id, label, cell, update_width=True)
        self._show_detail()

    def _show_detail(self) -> None:
        """The selected item: its estimate's basis and uncertainty, findings, command."""
        detail = self.query_one("#window-detail", Static)
        item_id = self._selected()
        found = next((p for p in self.projection.items if p.item.id == item_id),
                     None) if self.projection else None
        if found is None:
            detail.update("")
            return
        text = Text(f"{found.item.action} {found.item.vm_name}: ", style="bold")
        if found.plan is None:
            text.append(found.error or found.item.reason or found.item.status)
        else:
            text.append(f"estimate {found.estimate.text()}\n")
            for f in found.plan.findings:
                style = ("cyan", "yellow", "bold red", "bold red")[f.severity.rank]
                text.append(f"{f.severity.value.upper()} {f.code}  ", style=style)
            text.append(found.plan.command, style="italic dim")
        if found.item.reason:
            text.append(f"\n{found.item.reason}", style="dim")
        detail.update(text)

    @on(DataTable.RowHighlighted, "#window-table")
    def _highlighted(self) -> None:
        self._show_detail()

    def _progress(self, proj: Projection) -> dict[str, str]:
        """Running items: the task's percentage and message from the live store."""
        store = self.wr.runner.store
        out: dict[str, str] = {}
        for p in proj.items:
            if p.item.status != "running":
                continue
            tasks = [t for t in store.running_tasks_for(f"vm:{p.item.vm_id}")
                     if t.kind == p.item.action]
            if tasks:
                out[p.item.id] = clean(f"{tasks[0].pct:.0f}% {tasks[0].message}")[:80]
        return out

    def _selected(self) -> str | None:
        table = self.query_one("#window-table", DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    # -- keys -----------------------------------------------------------------------
    def action_nothing(self) -> None:
        pass

    def action_close(self) -> None:
        if self._asking:
            self._end_ask()
            return
        self.app.pop_screen()

    def action_move(self, step: int) -> None:
        item_id = self._selected()
        if item_id and self.wr.window.move(item_id, step):
            self.refresh_queue()
            table = self.query_one("#window-table", DataTable)
            table.move_cursor(row=table.get_row_index(item_id))

    def action_remove(self) -> None:
        item_id = self._selected()
        if item_id and not self.wr.window.remove(item_id):
            self.notify("A running item cannot be removed.", severity="warning")
        self.refresh_queue()

    def action_skip(self) -> None:
        item_id = self._selected()
        if item_id is None:
            return
        item = self.wr.window.item(item_id)
        if item is not None and item.status == "queued" and not self.wr.active:
            self.wr.window.update(item_id, status="skipped", reason="skipped by the operator")
        elif not self.wr.skip(item_id):
            self.notify("Only a queued item can be skipped (a running merge cannot be "
                        "stopped).", severity="warning")
        self.refresh_queue()

    def action_retry(self) -> None:
        item_id = self._selected()
        item = self.wr.window.item(item_id) if item_id else None
        if item is not None and not item.pending:
            self.wr.window.reset(item.id)
            self.refresh_queue()

    def action_pause(self) -> None:
        if not self.wr.active:
            self.notify("The queue is not running.")
            return
        self.wr.pause()
        self.notify("Paused: running items finish; nothing new starts. r runs the rest.")
        self.refresh_queue()

    def action_run(self) -> None:
        if self.wr.active:
            self.notify("The queue is already running (z pauses it).", severity="warning")
            return
        proj = self.wr.projection()
        plans = [p.plan for p in proj.items if p.item.status == "queued" and p.plan]
        if not plans:
            self.notify("Nothing queued to run.", severity="warning")
            return
        ids = [p.item.id for p in proj.items if p.item.status == "queued" and p.plan]
        shown = dict(zip(ids, plans, strict=True))
        w = self.wr.window

        def chosen(choice: RunChoice | None) -> None:
            if choice is not None and callable(self.on_run):
                self.on_run(choice, shown)
            self.refresh_queue()

        self.app.push_screen(WindowConfirmScreen(w.name, plans, w.parallel, w.same_lun),
                             callback=chosen)

    def action_ask(self, what: str) -> None:
        box = self.query_one("#window-input", Input)
        self._asking = what
        if what == "end":
            box.placeholder = "window end: 06:00, 2024-10-15 06:00, +3h, +90m (empty clears)"
            box.value = ""
        else:
            box.placeholder = "window name (typed to confirm a run)"
            box.value = self.wr.window.name
        box.remove_class("hidden")
        box.focus()

    def _end_ask(self) -> None:
        self._asking = ""
        box = self.query_one("#window-input", Input)
        box.add_class("hidden")
        self.query_one("#window-table", DataTable).focus()

    @on(Input.Submitted, "#window-input")
    def _answered(self, event: Input.Submitted) -> None:
        what, value = self._asking, event.value
        try:
            if what == "end":
                self.wr.window.set_end(parse_end(value, self.wr.runner.clock()))
            elif what == "name":
                if self.wr.active:
                    raise ValueError("the window cannot be renamed while it runs")
                self.wr.window.rename(value)
        except ValueError as exc:
            self.notify(clean(str(exc)), severity="error", markup=False)
            return
        self._end_ask()
        self.refresh_queue()
