"""The help screen: every key and command, from the one command table.

Opened over another screen (findings, report, window, rebuild, plan ...), it
lists that screen's own keys first, read from the screen's bindings — the
console's commands do not act there (``VentanaApp.check_action``).

When a link is not live (or says why it changed), its whole reason comes first:
the header has room for about 60 cells of it, and a refused certificate's
problem and SHA-256 fingerprint (docs/hyperv-tls.md) are longer than that.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from ventana.state.sanitize import clean
from ventana.state.store import Link

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


def links_table(links: Sequence[Link]) -> Table:
    """Each link that is not live or gives a reason, with the whole reason (wrapped)."""
    table = Table(box=None, padding=(0, 2), show_header=True, header_style="bold")
    table.add_column("Link", max_width=30)
    table.add_column("State", no_wrap=True)
    table.add_column("Since (UTC)", no_wrap=True)
    table.add_column("Why", ratio=1)
    for link in links:
        table.add_row(Text(clean(link.source), style="bold"),
                      Text(link.state.value, style="red" if link.state.value != "connected"
                           else ""),
                      Text(f"{link.since:%H:%M:%S}"),
                      Text(clean(link.reason), overflow="fold"))  # a fingerprint: folded
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

    def __init__(self, read_only: bool, under: Screen | None = None,
                 links: Sequence[Link] = ()) -> None:
        """``under``: the screen help was asked on (None: the main screen); ``links``:
        the links whose whole reason to show first."""
        super().__init__()
        self.read_only = read_only
        self.under = under if under is not None and screen_keys(under) else None
        self.links = tuple(links)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog"):
            if self.links:
                yield Static(Text("Links that are not live, with their whole reason",
                                  style="bold"))
                yield Static(links_table(self.links))
                yield Static(Text(""))
            if self.under is not None:
                yield Static(Text(f"Keys on this screen ({screen_title(self.under)})",
                                  style="bold"))
                yield Static(screen_table(self.under))
                yield Static(Text("\nOn the main screen", style="bold"))
            else:
                yield Static(Text("Ventana — keys and commands", style="bold"))
            yield Static(help_table(self.read_only))
