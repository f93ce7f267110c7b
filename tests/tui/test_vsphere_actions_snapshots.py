"""What a vSphere snapshot plan looks like (SVG in screenshots/; fixed data and clock).

A small fixed backend stands in for vCenter so the screen is the same on
every run (vcsim's morefs and times are not).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from apphelp import placed, wait_for
from factories import NOW
from textual.pilot import Pilot
from textual.widgets import Input

from ventana.backends.base import Backend, Executor
from ventana.state.actionlog import ActionLog
from ventana.state.events import ConnectionChanged, Event, LinkState, Upsert
from ventana.state.model import (
    GB,
    VM,
    Checkpoint,
    CheckpointKind,
    Cluster,
    DiskFormat,
    Kind,
    Lun,
    LunRole,
    Node,
    Platform,
    PowerState,
    VirtualDisk,
)
from ventana.tui.app import VentanaApp
from ventana.tui.checkpoints_pane import CheckpointsPane
from ventana.tui.vm_table import VmTable

SIZE = (180, 50)


class FixedVCenter(Backend):
    name = "fixed-vcenter"
    platform = Platform.VSPHERE

    def __init__(self) -> None:
        super().__init__("vsphere://vc01.corp.example:443", read_only=False)
        self._closed = asyncio.Event()

    def now(self):  # type: ignore[no-untyped-def]
        return NOW

    async def events(self) -> AsyncIterator[Event]:
        yield ConnectionChanged(self.target, LinkState.CONNECTING)
        events: list[Event] = [
            Upsert(Cluster("domain-c7", "Prod-Cluster", Platform.VSPHERE, nodes=1)),
            Upsert(Node("host-12", "esx01.corp.example", "domain-c7", vm_count=1)),
            Upsert(Lun("datastore-21", "SAN-DS-01", "domain-c7", int(4000 * GB), int(310 * GB),
                       role=LunRole.DATASTORE)),
            Upsert(VM("vm-101", "sql-01", "domain-c7", "host-12", PowerState.RUNNING,
                      memory_mb=32768, lun_id="datastore-21",
                      disk_ids=("vm-101:[SAN-DS-01] sql-01/sql-01.vmdk",),
                      last_stun_ms=2480.0, stun_at=NOW - timedelta(days=1))),
            Upsert(VirtualDisk("vm-101:[SAN-DS-01] sql-01/sql-01.vmdk", "vm-101",
                               "[SAN-DS-01] sql-01/sql-01.vmdk", DiskFormat.VMDK, int(400 * GB),
                               int(500 * GB), None, "datastore-21")),
        ]
        for sid, name, parent, days, gb, kind, quiesced in (
            ("snapshot-1", "before SQL CU12", None, 40, 180, CheckpointKind.STANDARD, True),
            ("snapshot-2", "after SQL CU12", "snapshot-1", 39, 60, CheckpointKind.STANDARD, False),
            ("snapshot-3", "VEEAM BACKUP TEMPORARY SNAPSHOT", "snapshot-2", 12, 25,
             CheckpointKind.BACKUP, True),
        ):
            events.append(Upsert(Checkpoint(
                sid, "vm-101", name, parent, kind, NOW - timedelta(days=days),
                f"[SAN-DS-01] sql-01/sql-01-00000{sid[-1]}.vmdk", int(gb * GB),
                quiesced=quiesced, memory=False)))
        for event in events:
            yield event
        yield ConnectionChanged(self.target, LinkState.CONNECTED)
        await self._closed.wait()

    def _make_executor(self) -> Executor:
        raise NotImplementedError

    async def close(self) -> None:
        self._closed.set()


def test_remove_snapshot_plan(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = VentanaApp(FixedVCenter(), log=ActionLog.open(tmp_path / "a.db"), clock=lambda: NOW)

    async def open_plan(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: app.store.count(Kind.CHECKPOINT) == 3 and placed(app))
        app.query_one(VmTable).select_vm("vm-101")
        await pilot.pause(0.2)
        pane = app.query_one(CheckpointsPane)
        pane.focus()
        [node] = [n for n in pane.root.children if n.data == "snapshot-1"]
        pane.move_cursor(node)
        await pilot.pause(0.1)
        await pilot.press("x")
        await pilot.pause(0.3)
        assert app.screen.query("#confirm-name"), [n.message for n in app._notifications]
        for box in app.screen.query(Input):
            box.cursor_blink = False
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=open_plan)
