"""The help screen: every key and command, from the one command table."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .commands import COMMANDS, key_label

PANE_KEYS = (
    ("↑ ↓ PgUp PgDn Home End", "Move in the focused pane"),
    ("Enter", "VMs: show the VM's checkpoints"),
    ("s / S", "VMs: sort by the next column / reverse"),
    ("Ctrl+P", "Command palette (every action)"),
    ("Esc", "Close a dialog or clear the filter; cancels a plan"),
)


def help_table(read_only: bool) -> Table:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("Key")
    table.add_column("Command")
    table.add_column("What it does")
    for c in COMMANDS:
        title = Text(c.title)
        if c.mutating and read_only:
            title.append(" (unavailable: read-only)", style="dim")
        table.add_row(Text(key_label(c.key), style="bold"), title, Text(c.help))
    for keys, what in PANE_KEYS:
        table.add_row(Text(keys, style="bold"), Text(""), Text(what))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, read_only: bool) -> None:
        super().__init__()
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            yield Static(Text("Ventana — keys and commands", style="bold"))
            yield Static(help_table(self.read_only))
