"""The first inventory on screen when its source stalls: shown after a bounded time,
marked "still loading" in the header until the source says it is complete.

The backend here is scripted (a real source cannot be made to stall at a chosen
point); the console, the store and the app are the real ones.
"""

from __future__ import annotations

import asyncio

import pytest
from apphelp import placed, wait_for
from factories import NOW

from ventana.backends.base import Backend, Executor
from ventana.state.events import ConnectionChanged, LinkState, Upsert
from ventana.state.model import VM, Cluster, Kind, Node, Platform, PowerState
from ventana.tui.app import VentanaApp
from ventana.tui.header import StatusHeader
from ventana.tui.vm_table import VmTable


class Stalling(Backend):
    """CONNECTING, half the inventory, then nothing until ``go`` is set; then the rest
    and CONNECTED."""

    name = "stalling"

    def __init__(self) -> None:
        super().__init__("stalling", read_only=True)
        self.go = asyncio.Event()

    def _make_executor(self) -> Executor:  # pragma: no cover - read-only
        raise RuntimeError("read-only")

    async def events(self):  # type: ignore[no-untyped-def]
        yield ConnectionChanged(self.name, LinkState.CONNECTING)
        yield Upsert(Cluster("c", "C", Platform.HYPERV))
        yield Upsert(Node("n", "NODE1", "c"))
        for i in range(60):
            yield Upsert(VM(f"v{i:03d}", f"vm-{i:03d}", "c", "n", PowerState.RUNNING))
        await self.go.wait()
        for i in range(60, 120):
            yield Upsert(VM(f"v{i:03d}", f"vm-{i:03d}", "c", "n", PowerState.RUNNING))
        yield ConnectionChanged(self.name, LinkState.CONNECTED)
        await asyncio.Event().wait()


async def test_a_stalled_inventory_is_shown_and_marked_still_loading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ventana.core.console.INITIAL_LOAD_MAX_S", 0.5)
    monkeypatch.setattr("ventana.core.console.LATE_INVENTORY_EVERY_S", 0.2)
    backend = Stalling()
    app = VentanaApp(backend, log=None, log_error="test", clock=lambda: NOW,
                     read_only_reason="test")
    async with app.run_test(size=(120, 30)) as pilot:
        header = app.query_one(StatusHeader)
        table = app.query_one(VmTable)
        # What came is shown once nothing more arrives for INITIAL_LOAD_MAX_S.
        await wait_for(pilot, lambda: table.row_count == 60 and not app.core.inventory_applying)
        assert app.core.still_loading and not app.core.loading
        assert header.counts.endswith("60 VMs · 0 LUNs · 0 checkpoints · still loading…")
        backend.go.set()
        # (Also when the last burst went before the source said CONNECTED: the mark
        # goes once it has, with nothing left to apply.)
        await wait_for(pilot, lambda: placed(app) and table.row_count == 120)
        assert app.store.count(Kind.VM) == 120
        assert "still loading" not in header.counts and "120 VMs" in header.counts
