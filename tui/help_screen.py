"""The help screen: every key and command, from the one command table.

Opened over another screen (findings, report, window, rebuild, plan ...), it
lists that screen's own keys first, read from the screen's bindings — the
console's commands do not act there (``VentanaApp.check_action``).
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from .commands import COMMANDS, key_label, platforms_label

PANE_KEYS = (
    ("↑ ↓ PgUp PgDn Home End", "Move in the focused pane"),
    ("Enter", "VMs: show the VM's checkpoints"),
    ("s / S", "VMs: sort by the next column / reverse"),
    ("Ctrl+P", "Command palette (every action)"),
    ("Esc", "Close a dialog or clear the filter; cancels a plan"),
    (":", "Command mode: :vms :nodes :luns :checkpoints :findings :log :window :report "
          ":help :q"),
    ("1 2 3 4", "Under 120 columns (one pane at a time): VMs, Nodes, LUNs, Checkpoints; "
                "Tab cycles, Esc back to the VMs"),
)



def help_table(read_only: bool) -> Table:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("Key", max_width=12)
    table.add_column("Command", max_width=24)
    table.add_column("On", no_wrap=True)
    table.add_column("What it does", ratio=1)
    for c in COMMANDS:
        title = Text(c.title)
        if c.mutating and read_only:
            title.append(" (unavailable: read-only)", style="dim")
        platform = platforms_label(c.name)
        table.add_row(Text(key_label(c.key), style="bold"), title,
                      Text(platform, style="cyan" if platform == "vSphere"
                           else "magenta" if platform == "Hyper-V" else "dim"),
                      Text(c.help))
    for keys, what in PANE_KEYS:
        table.add_row(Text(keys, style="bold"), Text(""), Text(""), Text(what))
    return table


def screen_keys(screen: type[Screen] | Screen) -> list[tuple[str, str]]:
    """A screen's own keys and what they do, from its bindings (described ones)."""
    cls = screen if isinstance(screen, type) else type(screen)
    out: list[tuple[str, str]] = []
    for b in getattr(cls, "BINDINGS", []):
        if isinstance(b, Binding) and b.description:
            keys = " ".join(key_label(k.strip()) for k in b.key.split(","))
            out.append((keys, b.description))
    return out


def screen_title(screen: Screen) -> str:
    name = type(screen).__name__
    return name.removesuffix("Screen") or name


def screen_table(screen: Screen) -> Table:
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("Key")
    table.add_column("What it does")
    for keys, what in screen_keys(screen):
        table.add_row(Text(keys, style="bold"), Text(what))
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, read_only: bool, under: Screen | None = None) -> None:
        """``under``: the screen help was asked on (None: the main screen)."""
        super().__init__()
        self.read_only = read_only
        self.under = under if under is not None and screen_keys(under) else None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            if self.under is not None:
                yield Static(Text(f"Keys on this screen ({screen_title(self.under)})",
                                  style="bold"))
                yield Static(screen_table(self.under))
                yield Static(Text("\nOn the main screen", style="bold"))
            else:
                yield Static(Text("Ventana — keys and commands", style="bold"))
            yield Static(help_table(self.read_only))
