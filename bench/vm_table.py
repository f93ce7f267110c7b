"""VM table benchmark: sort, filter and change → screen at 45,000 VMs, without vcsim.

The vSphere suite (bench/vsphere.py) times sort, filter and a change → its
cell on a console fed by vcsim; at 45,000 VMs that needs minutes and
gigabytes for the simulator alone. This suite fills the same console (the
real ``VentanaApp`` and its ``VmTable``, headless under ``run_test()``) from
the built-in simulator at the same size in seconds, and times the table the
same way:

- ``vt_sort_ms``: ``table.sort_by("power")`` then ``sort_by("name")`` → the
  first line of the table drawn after it, median (as ``vs_sort_ms``);
- ``vt_sort_key_ms``: the sort key (``s``, then ``S``) sent as a terminal's key
  arrives → the first line drawn, median;
- ``vt_filter_ms``: ``set_filter(word)`` then ``set_filter("")`` → first line
  drawn, median (as ``vs_filter_ms``);
- ``vt_filter_typed_ms``: a word typed into the filter box one key at a time
  (each key → the first line drawn), then cleared; p99 over every key;
- ``vt_change_store_to_screen_p99_ms``: a VM on screen changed (half while
  sorted by name: powered off or on, or a new checkpoint; half while sorted by
  power: its RAM or a new checkpoint, so the row stays on screen) → its cell
  drawn, from the moment the store applied it (before any subscriber ran: the
  table's own work is counted; the vSphere suite starts after the app's
  subscriber);
- ``*_cpu_ms``: the process CPU of the same spans (steadier when the machine is
  loaded).

``python -m bench vmtable --vms 45000`` (the default size here is 45,000).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from textual import events

from ventana.backends.base import Backend, Executor
from ventana.backends.sim import SimBackend, SimConfig
from ventana.state.events import Event, Upsert
from ventana.state.model import VM, Checkpoint, CheckpointKind, Kind, PowerState
from ventana.tui.app import VentanaApp
from ventana.tui.vm_table import VmTable

from .console import _forget_frozen, _populate, settle
from .table import Row

SIZE = (200, 60)
DEFAULT_VMS = 45_000
ROUNDS = 5
FILTER_WORD = "vm-001"  # 100 of the generated names (vm-00100 … vm-00199)
TYPED_WORD = "vm-012"  # typed key by key: 100 rows left (vm-01200 … vm-01299)
CHANGES = 20


class FedSim(Backend):
    """The simulator's inventory, then only the events the bench puts in ``feed``."""

    name = "sim"

    def __init__(self, vms: int) -> None:
        self.sim = SimBackend(SimConfig(seed=7, vms=vms, rate=0.0, read_only=True))
        super().__init__(self.sim.target, read_only=True)
        self.feed: asyncio.Queue[Event] = asyncio.Queue()

    def _make_executor(self) -> Executor:  # pragma: no cover - read-only
        raise RuntimeError("read-only benchmark")

    def now(self):  # type: ignore[no-untyped-def]
        return self.sim.now()

    async def events(self) -> AsyncIterator[Event]:
        stream = self.sim.events().__aiter__()
        while True:  # the inventory, up to CONNECTED
            event = await stream.__anext__()
            yield event
            if getattr(event, "state", None) == "connected":
                break
        while True:
            yield await self.feed.get()


@dataclasses.dataclass
class Span:
    wall: float
    cpu: float


async def _first_line(table: VmTable, action: Callable[[], None], settle_s: float = 0.05
                      ) -> Span:
    """From ``action`` to the first line of the table drawn after it (wall and CPU)."""
    drawn: list[tuple[float, float]] = []
    original = table.render_line

    def render_line(y: int) -> Any:
        if not drawn:
            drawn.append((time.perf_counter(), time.process_time()))
        return original(y)

    await asyncio.sleep(settle_s)
    started, cpu = time.perf_counter(), time.process_time()
    table.render_line = render_line  # type: ignore[method-assign]
    try:
        action()
        while not drawn and time.perf_counter() - started < 30:
            await asyncio.sleep(0.001)
    finally:
        del table.render_line
    end, end_cpu = drawn[0] if drawn else (time.perf_counter(), time.process_time())
    return Span(end - started, end_cpu - cpu)


def _press(app: VentanaApp, key: str, character: str | None) -> Callable[[], None]:
    """Send a key as a terminal's would arrive (the driver's message queue)."""

    def send() -> None:
        driver = app._driver
        assert driver is not None
        event = events.Key(key, character)
        event.set_sender(app)
        driver.send_message(event)

    return send


def _ms(spans: list[Span], name: str, *, p99: bool = False) -> dict[str, float | None]:
    stat = f"{name}_p99" if p99 else name
    if not spans:
        return {f"{stat}_ms": None, f"{stat}_cpu_ms": None, f"{name}_max_ms": None}
    walls = sorted(s.wall for s in spans)
    cpus = sorted(s.cpu for s in spans)

    def pick(values: list[float]) -> float:
        if p99 and len(values) >= 2:
            return statistics.quantiles(values, n=100, method="inclusive")[98]
        return statistics.median(values)

    return {f"{stat}_ms": round(1000 * pick(walls), 1),
            f"{stat}_cpu_ms": round(1000 * pick(cpus), 1),
            f"{name}_max_ms": round(1000 * walls[-1], 1)}


async def _sorts(app: VentanaApp, table: VmTable) -> dict[str, Any]:
    direct: list[Span] = []
    keyed: list[Span] = []
    for _ in range(ROUNDS):
        direct.append(await _first_line(table, lambda: table.sort_by("power")))
        direct.append(await _first_line(table, lambda: table.sort_by("name")))
    table.focus()
    for _ in range(ROUNDS):
        keyed.append(await _first_line(table, _press(app, "s", "s")))  # the next column
        keyed.append(await _first_line(table, _press(app, "S", "S")))  # reversed
    table.sort_by("name")
    return {**_ms(direct, "vt_sort"), **_ms(keyed, "vt_sort_key")}


async def _filters(app: VentanaApp, table: VmTable, pilot: Any) -> dict[str, Any]:
    direct: list[Span] = []
    typed: list[Span] = []
    for _ in range(ROUNDS):
        direct.append(await _first_line(table, lambda: table.set_filter(FILTER_WORD)))
        direct.append(await _first_line(table, lambda: table.set_filter("")))
    shown: list[int] = []
    for _ in range(ROUNDS):
        table.focus()
        await pilot.press("slash")
        await pilot.pause()
        for char in TYPED_WORD:
            typed.append(await _first_line(table, _press(app, char, char)))
        shown.append(table.row_count)
        for _ in TYPED_WORD:
            typed.append(await _first_line(table, _press(app, "backspace", None)))
        await pilot.press("escape")
        await pilot.pause()
    assert table.row_count == app.store.count(Kind.VM), "the filter was not cleared"
    return {**_ms(direct, "vt_filter"), **_ms(typed, "vt_filter_typed", p99=True),
            "vt_filter_typed_keys": len(typed), "vt_filter_typed_shown": min(shown)}


async def _changes(app: VentanaApp, table: VmTable, backend: FedSim) -> dict[str, Any]:
    """A VM on screen changed (power or a new checkpoint) → its cell drawn."""
    store = app.store
    pending: dict[str, tuple[str, str]] = {}  # vm id -> (column, text before)
    stored: dict[str, tuple[float, float]] = {}  # vm id -> (wall, cpu) when in the store
    spans: list[Span] = []

    def seen(delta: Any) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        for change in delta.changes:
            vm_id = change.id if change.kind is Kind.VM else None
            if change.kind is Kind.CHECKPOINT:
                vm_id = change.new.vm_id  # type: ignore[union-attr]
            if vm_id in pending and vm_id not in stored:
                stored[vm_id] = (now, cpu)

    # First of the store's subscribers: the table's flush is inside the span.
    store._subscribers.insert(0, seen)
    original = table._row_strip

    def timed(vm_id: str, *args: Any):  # type: ignore[no-untyped-def]
        strip = original(vm_id, *args)
        want = pending.get(vm_id)
        if want is not None and vm_id in stored and table.cell_text(vm_id, want[0]) != want[1]:
            wall, cpu = stored.pop(vm_id)
            spans.append(Span(time.perf_counter() - wall, time.process_time() - cpu))
            del pending[vm_id]
        return strip

    table._row_strip = timed  # type: ignore[method-assign]
    missed = 0
    try:
        for sort in ("name", "power"):
            table.sort_by(sort)
            await asyncio.sleep(0.2)
            top = table.scroll_offset.y
            page = table.scrollable_content_region.height - 1
            on_screen = table.visible_ids[top : top + page]
            for n, vm_id in enumerate(on_screen[: CHANGES // 2]):
                vm: VM = store.vm(vm_id)  # type: ignore[assignment]
                # Sorted by power, a power change moves the row (off screen: never drawn).
                column = ("power" if sort == "name" else "ram") if n % 2 == 0 else "ckpts"
                pending[vm_id] = (column, table.cell_text(vm_id, column))
                if column == "power":
                    power = PowerState.OFF if vm.power is PowerState.RUNNING else (
                        PowerState.RUNNING)
                    event = Upsert(dataclasses.replace(vm, power=power))
                elif column == "ram":
                    event = Upsert(dataclasses.replace(vm, memory_mb=2 * vm.memory_mb + 1024))
                else:
                    event = Upsert(Checkpoint(f"bench-{sort}-{vm_id}", vm_id, "bench", None,
                                              CheckpointKind.STANDARD,
                                              backend.now() - timedelta(minutes=1)))
                backend.feed.put_nowait(event)
                until = time.monotonic() + 10
                while vm_id in pending and time.monotonic() < until:
                    await asyncio.sleep(0.002)
                if pending.pop(vm_id, None) is not None:
                    missed += 1
                await asyncio.sleep(0.1)
    finally:
        del table._row_strip
        store._subscribers.remove(seen)
    table.sort_by("name")
    return {**_ms(spans, "vt_change_store_to_screen", p99=True),
            "vt_change_samples": len(spans), "vt_change_missed": missed}


async def run_vm_table(vms: int = DEFAULT_VMS) -> dict[str, Any]:
    backend = FedSim(vms)
    app = VentanaApp(backend, log=None, log_error="benchmark")
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        populated_s = await _populate(app, pilot, vms) - started
        settle_s = await settle(app, pilot)  # every row built, findings done
        results: dict[str, Any] = {"vt_vms": vms, "vt_populated_s": round(populated_s, 2),
                                   "vt_settle_s": round(settle_s, 2)}
        results.update(await _sorts(app, table))
        results.update(await _filters(app, table, pilot))
        results.update(await _changes(app, table, backend))
    _forget_frozen()
    return results


ROWS = (
    Row("vt_sort_ms", "sort (Power / Name) → first line drawn, median (ms)", 100.0, noise=10),
    Row("vt_sort_cpu_ms", "  process CPU in that time (ms)", noise=10),
    Row("vt_sort_key_ms", "sort key (s / S) → first line drawn, median (ms)", 100.0, noise=10),
    Row("vt_sort_key_cpu_ms", "  process CPU in that time (ms)", noise=10),
    Row("vt_filter_ms", "filter (set / cleared) → first line drawn, median (ms)", 100.0,
        noise=10),
    Row("vt_filter_cpu_ms", "  process CPU in that time (ms)", noise=10),
    Row("vt_filter_typed_p99_ms", "filter typed key by key → first line drawn, p99 (ms)", 100.0,
        noise=10),
    Row("vt_filter_typed_p99_cpu_ms", "  process CPU in that time, p99 (ms)", noise=10),
    Row("vt_change_store_to_screen_p99_ms", "change in the store → cell drawn, p99 (ms)", 100.0,
        noise=10),
    Row("vt_change_store_to_screen_p99_cpu_ms", "  process CPU in that time, p99 (ms)", noise=10),
)


def report(results: dict[str, Any]) -> None:
    print(f"\nVM table at {results['vt_vms']:,} VMs: populated in {results['vt_populated_s']} s, "
          f"settled {results['vt_settle_s']} s later; sort max {results['vt_sort_max_ms']} ms, "
          f"filter max {results['vt_filter_max_ms']} ms, typed max "
          f"{results['vt_filter_typed_max_ms']} ms over {results['vt_filter_typed_keys']} keys "
          f"({results['vt_filter_typed_shown']:,} rows left), change max "
          f"{results['vt_change_store_to_screen_max_ms']} ms over "
          f"{results['vt_change_samples']} samples ({results['vt_change_missed']} missed)")


def main() -> None:  # pragma: no cover - manual runs
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m bench.vm_table")
    parser.add_argument("--vms", type=int, default=DEFAULT_VMS)
    parser.add_argument("--profile", metavar="FILE", help="cProfile the run into FILE")
    args = parser.parse_args()
    if args.profile:
        import cProfile

        with cProfile.Profile() as prof:
            results = asyncio.run(run_vm_table(args.vms))
        prof.dump_stats(args.profile)
    else:
        results = asyncio.run(run_vm_table(args.vms))
    report(results)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
