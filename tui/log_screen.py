"""The action-log screens: the newest rows of the SQLite action log, and in a
replay the operator actions the recording holds.

Everything read back from the log file or a recording is untrusted: each
cell is sanitized (``clean``) and long names are capped (``cap``); times are
wall-clock UTC, labelled as such.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.derived import human_bytes, human_duration
from ventana.state.recording import ActionRecord
from ventana.state.sanitize import clean

from .fit import cap

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

    def __init__(self, log: ActionLog | None, unavailable: str = "") -> None:
        super().__init__()
        self.action_log = log
        self.unavailable = unavailable

    def compose(self) -> ComposeResult:
        with Vertical(id="log-dialog"):
            yield Static(Text("Action log (newest first)", style="bold"), id="log-title")
            yield DataTable(id="log-table", cursor_type="row")

    def on_mount(self) -> None:
        table = self.query_one("#log-table", DataTable)
        for label in ("Started (UTC, wall clock)", "Operator", "System", "Mode", "Action", "Target",
                      "Outcome", "Override", "Duration", "Before", "After", "Final state",
                      "Error"):
            table.add_column(label)
        if self.action_log is None:
            self.query_one("#log-title", Static).update(
                Text(f"The action log is unavailable: {self.unavailable}", style="bold red")
            )
            return
        try:
            rows = self.action_log.rows(limit=500)
        except ActionLogError as exc:
            self.query_one("#log-title", Static).update(
                Text(f"The action log cannot be read: {exc}", style="bold red")
            )
            return
        for row in rows:
            status = row.status
            # Read back from a file any writer can reach: sanitized, capped.
            table.add_row(
                Text(clean(row.started[:19].replace("T", " "))),
                Text(cap(row.operator, 30)),
                Text(cap(row.target_system, 40)),
                Text(cap(row.mode, 12)),
                Text(cap(row.action, 30)),
                Text(cap(row.target_name)),
                Text(cap(status, 40), style="bold magenta" if row.interrupted
                     else _OUTCOME_STYLE.get(row.outcome, "bold magenta")),
                Text("yes" if row.override else "", style="bold red"),
                Text(human_duration(row.duration_s)),
                Text(human_bytes(row.size_before) if row.size_before is not None else "-"),
                Text(human_bytes(row.size_after) if row.size_after is not None else "-"),
                Text(cap(row.final_state or "-", 30)),
                Text(cap(row.error or "", 120)),
            )
        table.focus()
