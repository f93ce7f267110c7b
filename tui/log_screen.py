"""The action-log screens: the newest rows of the action log, and in a replay the
operator actions the recording holds. On a team's log (PostgreSQL) the rows
follow what other consoles write (the core's ``team_watchers``), each with the
operator and host that wrote it.

Everything read back from the log file or a recording is untrusted: each
cell is sanitized (``clean``) and long names are capped (``cap``); times are
wall-clock UTC, labelled as such.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ventana.state.actionlog import ActionLog, ActionLogError, LogRow
from ventana.state.derived import human_bytes, human_duration
from ventana.state.recording import ActionRecord
from ventana.state.sanitize import clean

from .fit import cap, cap_middle

_OUTCOME_STYLE = {
    "ok": "green",
    "warning": "yellow",
    "failed": "bold red",
    "refused": "red",
    "cancelled": "dim",
    "unknown": "bold magenta",
    "running": "cyan",
}


class RecordedActionsScreen(ModalScreen[None]):
    """In a replay: the operator actions the recording holds, up to now."""

    BINDINGS = [Binding("escape,q,l", "dismiss", "Close"),
                Binding("question_mark", "app.help", "Help", show=False)]

    def __init__(self, actions: list[ActionRecord]) -> None:
        super().__init__()
        self.actions = actions

    def compose(self) -> ComposeResult:
        with Vertical(id="log-dialog"):
            yield Static(Text("Operator actions in this recording, up to the replay's "
                              "position", style="bold"), id="log-title")
            yield DataTable(id="log-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#log-table", DataTable)
        for label in ("At (s into the recording)", "Action", "Target", "Phase", "Outcome",
                      "Error"):
            table.add_column(label)
        for record in self.actions:
            data = record.data
            table.add_row(
                Text(f"{record.t:.1f}"), Text(cap(record.action, 30)), Text(cap(record.target)),
                Text(cap(str(data.get("phase", "")), 30)),
                Text(cap(record.outcome, 30),
                     style=_OUTCOME_STYLE.get(record.outcome, "bold magenta")),
                Text(cap(str(data.get("error", "")), 120)),
            )
        if not self.actions:
            self.query_one("#log-title", Static).update(
                Text("No operator action in this recording so far.", style="dim"))
        table.focus()


class LogScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,l", "dismiss", "Close"),
                Binding("question_mark", "app.help", "Help", show=False)]

    def __init__(self, log: ActionLog | None, unavailable: str = "", *,
                 follow: list[Callable[[list[LogRow]], None]] | None = None) -> None:
        """``follow``: where to hear of other consoles' rows (``Console.team_watchers``);
        the screen re-reads the log (in a worker) when some arrive."""
        super().__init__()
        self.action_log = log
        self.unavailable = unavailable
        self._follow = follow
        self._reading = False
        self._again = False

    def compose(self) -> ComposeResult:
        with Vertical(id="log-dialog"):
            yield Static(Text("Action log (newest first)", style="bold"), id="log-title")
            yield DataTable(id="log-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#log-table", DataTable)
        for label in ("Started (UTC, wall clock)", "Operator", "Host", "System", "Mode", "Action",
                      "Target", "Outcome", "Override", "Took (wall clock)", "Before", "After",
                      "Final state", "Error"):
            table.add_column(label)
        if self.action_log is None:
            self.query_one("#log-title", Static).update(
                Text(f"The action log is unavailable: {self.unavailable}", style="bold red")
            )
            return
        if self.action_log.shared:  # a round trip: read in a worker, then follow
            if self._follow is not None:
                self._follow.append(self._team_rows)
            table.focus()
            self._team_rows([])
            return
        try:
            rows = self.action_log.rows(limit=500)
        except ActionLogError as exc:
            self._title(f"The action log cannot be read: {exc}")
            return
        self._fill(rows)
        table.focus()

    def _title(self, problem: str = "") -> None:
        self.query_one("#log-title", Static).update(
            Text(problem, style="bold red") if problem
            else Text("Action log (newest first)", style="bold"))

    def on_unmount(self) -> None:
        if self._follow is not None and self._team_rows in self._follow:
            self._follow.remove(self._team_rows)

    def _team_rows(self, rows: list[LogRow]) -> None:
        """Rows arrived (on the loop; [] : the first read): re-read the log, one read at
        a time."""
        if self._reading:
            self._again = True
            return
        self._reading = True
        self.run_worker(self._reread(), group="log-reread", exit_on_error=False)

    async def _reread(self) -> None:
        log = self.action_log
        assert log is not None
        try:
            while True:
                self._again = False
                try:
                    rows = await asyncio.to_thread(log.rows, limit=500)
                except ActionLogError as exc:  # out of reach for now: what is shown stays
                    self._title(f"The action log cannot be read: {exc}")
                    return
                self._title()
                self._fill(rows)
                if not self._again:
                    return
        finally:
            self._reading = False

    def _fill(self, rows: list[LogRow]) -> None:
        table = self.query_one("#log-table", DataTable)
        at = table.cursor_row
        table.clear()
        for row in rows:
            status = row.status
            # Read back from a database any writer can reach: sanitized, capped.
            table.add_row(
                Text(clean(row.started[:19].replace("T", " "))),
                Text(cap(row.operator, 30)),
                Text(cap(row.host, 30)),
                Text(cap(row.target_system, 40)),
                Text(cap(row.mode, 12)),
                Text(cap(row.action, 30)),
                Text(cap_middle(row.target_name)),
                Text(cap(status, 40), style="bold magenta" if row.interrupted
                     else _OUTCOME_STYLE.get(row.outcome, "bold magenta")),
                Text("yes" if row.override else "", style="bold red"),
                Text(human_duration(row.duration_s)),
                Text(human_bytes(row.size_before) if row.size_before is not None else "-"),
                Text(human_bytes(row.size_after) if row.size_after is not None else "-"),
                Text(cap(row.final_state or "-", 30)),
                Text(cap(row.error or "", 120)),
            )
        if rows:
            table.move_cursor(row=min(at, len(rows) - 1))
