"""The status header and the READ-ONLY banner.

The header shows the target, the connection state (with its reason when not
connected; when only some nodes are stale, "3/4 nodes" and which ones), the
session mode, flags that weaken safety, and the inventory counts. Everything is
built as ``Text``: nothing from a cluster is markup.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ventana.state.events import LinkState
from ventana.state.sanitize import clean

from .fit import cap

_LINK_STYLE = {
    LinkState.CONNECTED: "bold green",
    LinkState.CONNECTING: "bold yellow",
    LinkState.RECONNECTING: "bold yellow",
    LinkState.STALE: "bold red",
    LinkState.DISCONNECTED: "bold red",
}


_SHORT_MODE = {"read-write": "rw", "read-only": "ro", "replay": "replay"}
_SHORT_COUNTS = ((" nodes", "n"), (" VMs", "vm"), (" LUNs", "lun"), (" checkpoints", "ck"),
                 (" · ", " "))



#: Where a link's reason is cut, the header says where the whole text is (help lists
#: every link that is not live with its whole reason), if there is room for it.
WHOLE_TEXT_HINT = " — ? shows all"


def _reason(reason: str, cells: int) -> str:
    """A link's reason in ``cells``; cut, with the hint when at least 40 cells are left."""
    if len(clean(reason)) <= cells or cells < 40:
        return cap(reason, cells)
    return cap(reason, cells - len(WHOLE_TEXT_HINT)) + WHOLE_TEXT_HINT


class StatusHeader(Static):
    """One line: target · link · mode · flags · open findings · counts."""

    target: reactive[str] = reactive("")
    link: reactive[LinkState] = reactive(LinkState.CONNECTING)
    reason: reactive[str] = reactive("")
    mode: reactive[str] = reactive("read-write")
    counts: reactive[str] = reactive("")
    flags: reactive[str] = reactive("")
    #: Several targets side by side: (name, link, reason, read-only) per link;
    #: shown instead of the single target, link and mode.
    targets: reactive[tuple[tuple[str, LinkState, str, bool], ...]] = reactive(())
    # Open (not acknowledged/snoozed) findings: (critical, warning, info).
    findings: reactive[tuple[int, int, int]] = reactive((0, 0, 0))
    findings_pending: reactive[bool] = reactive(False)
    #: Per-node staleness (``Store.stale_node_names``/``nodes_live``): with some nodes
    #: still live the header says "● 3/4 nodes" (yellow: the target is not down) and
    #: names the stale node(s), instead of a red "stale" for the whole target.
    stale_nodes: reactive[tuple[str, ...]] = reactive(())
    nodes_live: reactive[tuple[int, int]] = reactive((0, 0))

    def render(self) -> Text:
        """Everything that fits; a long reason or target is cut first (with "…") so
        the mode, flags, findings and counts always stay on screen."""
        width = self.size.width or 200
        levels = ((10_000, 10_000, False), (60, 40, False), (60, 40, True), (40, 30, True),
                  (20, 24, True), (8, 16, True), (0, 12, True), (0, 6, True))
        for reason_cells, target_cells, short in levels:
            text = self._head(reason_cells, target_cells, short)
            tail = self._tail(short)
            if text.cell_len + tail.cell_len <= width:
                break
        text.append_text(tail)
        return text

    def _head(self, reason_cells: int, target_cells: int, short: bool = False) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" Ventana ", style="bold reverse")
        if self.targets:
            for name, link, reason, read_only in self.targets:
                text.append("  ")
                text.append(cap(name, target_cells), style="bold")
                text.append(f" ● {link.value}", style=_LINK_STYLE.get(link, "bold"))
                if reason and link is not LinkState.CONNECTED and reason_cells:
                    text.append(f" ({_reason(reason, reason_cells)})", style="italic")
                text.append(" ")
                text.append(" RO " if read_only else " RW ",
                            style="bold black on yellow" if read_only else "bold")
        else:
            text.append("  ")
            text.append(cap(self.target, target_cells), style="bold")
            text.append("  ")
            live, known = self.nodes_live
            if self.stale_nodes and live:  # some nodes down, others live
                text.append(f"● {live}/{known}" if short else f"● {live}/{known} nodes",
                            style="bold yellow")
                text.append(" stale: ", style="bold")
                text.append(cap(", ".join(self.stale_nodes), max(target_cells, 16)),
                            style="bold red")
            else:
                text.append(f"● {self.link.value}", style=_LINK_STYLE.get(self.link, "bold"))
            if self.reason and self.link is not LinkState.CONNECTED and reason_cells:
                text.append(f" ({_reason(self.reason, reason_cells)})", style="italic")
            text.append("  ")
            mode_style = "bold black on yellow" if self.mode != "read-write" else "bold"
            mode = _SHORT_MODE.get(self.mode, self.mode) if short else self.mode
            text.append(f" {mode.upper()} ", style=mode_style)
        return text

    def _tail(self, short: bool = False) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.flags:
            text.append("  ")
            text.append(f" {self.flags} ", style="bold white on red")
        critical, warning, info = self.findings
        if critical or warning or info or self.findings_pending:
            # Before the inventory counts: what is wrong matters more than how much there is.
            text.append(" ⚑ " if short else "  findings ", style="dim")
            text.append(f"{critical}{'c' if short else ' crit'}",
                        style="bold red" if critical else "dim")
            text.append("·" if short else " · ", style="dim")
            text.append(f"{warning}{'w' if short else ' warn'}",
                        style="bold yellow" if warning else "dim")
            text.append(f"·{info}i" if short else f" · {info} info", style="dim")
            if self.findings_pending:
                text.append(" …", style="dim")
        if self.counts:
            text.append(" " if short else "  ")
            counts = self.counts
            if short:
                for long, brief in _SHORT_COUNTS:
                    counts = counts.replace(long, brief)
            text.append(counts, style="dim")
        return text


class ReadOnlyBanner(Static):
    """Shown only in read-only sessions: actions are unavailable."""

    def __init__(self, why: str, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.why = why

    def render(self) -> Text:
        return Text(
            f" READ-ONLY — {self.why}. Actions are unavailable and refused by the backend. ",
            justify="center",
        )
