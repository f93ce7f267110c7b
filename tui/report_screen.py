"""The campaign report screen (key ``r``): the report's tables and the LUN bar chart.

Reads the action log in a worker thread (never on the UI loop) and adds the
LUNs the console sees now, so LUNs without any action still show. ``r``
rebuilds it; nothing here changes the cluster or the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.model import Lun
from ventana.state.report import (
    CampaignReport,
    LunLine,
    build_report,
    fmt_gb,
    fmt_time,
    fmt_timed,
)
from ventana.state.sanitize import clean

from .fit import cap, cap_middle

_STATE_STYLE = {
    "Operational": "green",
    "Optimized": "green",
    "Migrated": "cyan",
    "Under monitoring": "yellow",
    "Degraded": "yellow",
    "With pending tasks": "bold magenta",
    "Partially consolidated": "bold magenta",
    "Failed": "bold red",
}


class LunChart(Static):
    """Bars of each LUN's free space before (dim) and after (bold), on one scale."""

    DEFAULT_CSS = """
    LunChart { height: auto; padding: 0 1; }
    """

    chart: Table | None = None

    def show(self, luns: Sequence[LunLine], width: int = 40) -> None:
        if not luns:
            self.update(Text("No LUN seen.", style="dim"))
            return
        scale = max([u.total or 0 for u in luns] + [u.free_before or 0 for u in luns]
                    + [u.free_after or 0 for u in luns] + [1])
        table = Table(box=None, show_header=True, header_style="bold", padding=(0, 1),
                      show_edge=False)
        table.add_column("LUN free space", no_wrap=True, max_width=24, overflow="ellipsis")
        table.add_column("")
        table.add_column(Text(f"0{fmt_gb(scale):>{width - 1}}"), no_wrap=True)
        table.add_column("free", justify="right", no_wrap=True)
        table.add_column("% free", justify="right", no_wrap=True)
        for u in luns:
            for what, free, style in (("before", u.free_before, "dim"),
                                      ("after", u.free_after, "bold green")):
                cells = round(width * max(free or 0, 0) / scale)
                bar = "█" * cells or ("▏" if free else "")
                pct = f"{100 * free / u.total:.1f} %" if free is not None and u.total else ""
                table.add_row(Text(cap_middle(u.name) if what == "before" else ""),
                              Text(what, style=style),
                              Text(f"{bar:<{width}}", style=style),
                              Text(fmt_gb(free), style=style), Text(pct, style=style))
        self.chart = table
        self.update(table)


def _table(table: DataTable, columns: Sequence[str], rows: Sequence[Sequence[Text]],
           right: Sequence[int] = ()) -> None:
    """Fill a table; the ``right`` columns (numbers) are right-aligned by padding."""
    table.clear(columns=True)
    widths = {i: max([len(columns[i])] + [r[i].cell_len for r in rows]) for i in right}
    for i, label in enumerate(columns):
        table.add_column(label.rjust(widths[i]) if i in widths else label)
    for row in rows:
        cells = list(row)
        for i, width in widths.items():
            cells[i] = cells[i].copy()
            cells[i].pad_left(width - cells[i].cell_len)
        table.add_row(*cells)


class ReportScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q", "dismiss", "Close"),
        Binding("question_mark", "app.help", "Help", show=False),
        Binding("r", "refresh_report", "Refresh"),
    ]
    DEFAULT_CSS = """
    ReportScreen { align: center middle; }
    #report-dialog { width: 96%; height: 90%; border: round $accent; background: $surface; }
    #report-title { height: auto; padding: 0 1; }
    #report-dialog DataTable { height: auto; max-height: 100%; }
    #report-luns DataTable { max-height: 12; }
    """

    def __init__(self, log: ActionLog | None, unavailable: str = "",
                 luns: Sequence[Lun] = ()) -> None:
        super().__init__()
        self.action_log = log
        self.unavailable = unavailable
        self.luns = tuple(luns)
        self.report: CampaignReport | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="report-dialog"):
            yield Static(Text("Campaign report — reading the action log…", style="bold"),
                         id="report-title")
            with TabbedContent(id="report-tabs"):
                with TabPane("VMs and disks", id="tab-vms"):
                    yield DataTable(id="report-vms", cursor_type="row", zebra_stripes=True)
                with TabPane("LUNs", id="tab-luns"), VerticalScroll(id="report-luns"):
                    yield DataTable(id="report-lun-table", cursor_type="row")
                    yield LunChart(id="report-chart")
                with TabPane("Totals", id="tab-totals"):
                    yield DataTable(id="report-totals", cursor_type="row")
                with TabPane("Pending", id="tab-pending"):
                    yield DataTable(id="report-pending", cursor_type="row")

    def on_mount(self) -> None:
        self.action_refresh_report()

    def action_refresh_report(self) -> None:
        if self.action_log is None:
            self._title(f"The action log is unavailable: {clean(self.unavailable)}", "bold red")
            return
        self._load()

    def _title(self, message: str, style: str = "bold") -> None:
        self.query_one("#report-title", Static).update(Text(message, style=style))

    @work(exclusive=True, group="report", exit_on_error=False)
    async def _load(self) -> None:
        log = self.action_log
        assert log is not None
        now = datetime.now(UTC)
        sightings = [(now, lun) for lun in self.luns]
        try:
            report = await asyncio.to_thread(
                lambda: build_report(log.rows(newest_first=False), luns=sightings))
        except ActionLogError as exc:
            self._title(f"The action log cannot be read: {clean(str(exc))}", "bold red")
            return
        self.show(report)

    def show(self, report: CampaignReport) -> None:
        self.report = report
        t = report.totals
        self._title(
            f"Campaign report — {t.vms} VMs, {t.disks} disks, {fmt_gb(t.recovered)} recovered "
            f"on disks, LUN free space {'+' if t.lun_gained > 0 else ''}{fmt_gb(t.lun_gained)}; "
            f"{len(report.pending)} pending · times: wall clock · r refresh · Esc close"
        )
        _table(
            self.query_one("#report-vms", DataTable),
            ("VM", "Disk", "LUN", "Before", "After", "Recovered", "Merge start", "Merge time",
             "Rebuild", "Final state"),
            [(Text(cap_middle(d.vm)), Text(cap_middle(d.disk, 80)), Text(cap(d.lun or "-", 40)),
              Text(fmt_gb(d.size_before)),
              Text(fmt_gb(d.size_after)),
              Text(fmt_gb(d.recovered)),
              Text(fmt_time(d.merge_started) if d.first_of_vm else ""),
              Text((fmt_timed(d.merge_s, d, 0) + (f" ({d.merges} runs)" if d.merges > 1 else ""))
                   if d.first_of_vm else ""),
              Text(fmt_timed(d.rebuild_s, d, 1) if d.first_of_vm else ""),
              Text(d.final_state or "not set", style=_STATE_STYLE.get(d.final_state or "", "dim")))
             for d in report.disks],
            right=(3, 4, 5),
        )
        _table(
            self.query_one("#report-lun-table", DataTable),
            ("LUN", "Total", "Free before", "Free after", "Change"),
            [(Text(cap_middle(u.name)), Text(fmt_gb(u.total)),
              Text(fmt_gb(u.free_before)),
              Text(fmt_gb(u.free_after)),
              Text(("+" if (u.gained or 0) > 0 else "") + fmt_gb(u.gained),
                   style="green" if (u.gained or 0) > 0 else ""))
             for u in report.luns],
            right=(1, 2, 3, 4),
        )
        self.query_one(LunChart).show(report.luns)
        totals = [
            ("VMs", str(t.vms)), ("Disks", str(t.disks)),
            ("Disk size before", fmt_gb(t.size_before)), ("Disk size after", fmt_gb(t.size_after)),
            ("Space recovered on disks", fmt_gb(t.recovered)),
            ("LUN free before", fmt_gb(t.lun_free_before)),
            ("LUN free after", fmt_gb(t.lun_free_after)),
            *((f"Final state: {k}", str(v)) for k, v in t.final_states.items()),
            *((f"Actions {k}", str(v)) for k, v in t.outcomes.items()),
        ]
        _table(self.query_one("#report-totals", DataTable), ("Total", "Value"),
               [(Text(k), Text(v)) for k, v in totals], right=(1,))
        _table(
            self.query_one("#report-pending", DataTable),
            ("When", "VM", "What", "Status", "Detail"),
            [(Text(fmt_time(p.when)), Text(cap_middle(p.vm)), Text(cap(p.what, 40)),
              Text(cap(p.status, 40), style="bold magenta"), Text(cap(p.detail, 120)))
             for p in report.pending],
        )
