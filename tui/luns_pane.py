"""The LUNs pane: CSVs/datastores with total, free, % free and a bar.

Thresholds: under 10 % free is a warning, under 5 % (or under the 200 MB
that makes Hyper-V pause VMs) is critical. The owner node is in the nodes
pane; State is blank while the LUN is online and not in a backup.
"""

from __future__ import annotations

from rich.text import Text

from ventana.state.derived import human_bytes, lun_level, pct_free
from ventana.state.model import Lun, LunState, Severity
from ventana.state.store import Store

from .keyed_table import KeyedTable

BAR_WIDTH = 10
_LEVEL_STYLE = {Severity.INFO: "green", Severity.WARNING: "yellow", Severity.CRITICAL: "bold red"}


def free_bar(pct: float, style: str) -> Text:
    """A bar of the *used* share; the free part is the empty tail."""
    used_cells = round((100.0 - pct) / 100.0 * BAR_WIDTH)
    used_cells = max(0, min(BAR_WIDTH, used_cells))
    bar = Text("█" * used_cells, style=style)
    bar.append("░" * (BAR_WIDTH - used_cells), style="dim")
    return bar


def lun_cells(lun: Lun, store: Store) -> list[Text]:
    pct = pct_free(lun)
    level = lun_level(lun)
    style = _LEVEL_STYLE[level]
    state = "" if lun.state is LunState.ONLINE else lun.state.value
    if lun.in_backup:
        state = (state + " backup").strip()
    return [
        Text(lun.name, style="bold"),
        Text(human_bytes(lun.total_bytes), justify="right"),
        Text(human_bytes(lun.free_bytes), justify="right", style=style),
        Text(f"{pct:5.1f}%", justify="right", style=style),
        free_bar(pct, style),
        Text(state, style="bold yellow"),
    ]


class LunsPane(KeyedTable):
    COLUMNS = (
        ("name", "LUN", 15),
        ("total", "Total", 7),
        ("free", "Free", 8),
        ("pct", "%Free", 6),
        ("bar", "Used", BAR_WIDTH),
        ("state", "State", 8),
    )

    def __init__(self, **kwargs: object) -> None:
        super().__init__(self.COLUMNS, **kwargs)

    def sync(self, store: Store, ids: set[str] | None = None) -> None:
        wanted = ids if ids is not None else {lun.id for lun in store.luns()} | set(self.keys)
        # Name, then id: two LUNs may share a name ("NEW VOLUME" twice in the lab).
        for lun_id in sorted(wanted, key=lambda i: (store.lun(i).name if store.lun(i) else i, i)):
            lun = store.lun(lun_id)
            if lun is None:
                self.discard(lun_id)
            else:
                self.upsert(lun_id, lun_cells(lun, store))
