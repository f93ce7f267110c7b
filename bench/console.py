"""Benchmarks of the console at scale, headless, on the simulated cluster.

Measures, at 10,000 VMs: time from start to a fully populated screen, how
long a key waits to be handled while the inventory loads (Down pressed 50
times a second through ``KEY_LOADS`` loads, pooled), RSS, events/s
applied by the store, the time from an event leaving the backend to its row
being redrawn (median and p99 at 200 events/s, half of them on rows that are
on screen) and CPU under that load. CPU at rest is measured at steady state:
first the console settles (the first findings, rows built in the background;
``settle_s`` is how long that takes after the screen is populated), then
CPU is measured over a window of ``IDLE_WINDOW_S`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import random
import resource
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from textual import events

from ventana.backends.base import Backend, Executor
from ventana.backends.sim import SimBackend, SimConfig, build_inventory
from ventana.state.events import Event, Upsert
from ventana.state.model import VM, Kind, PowerState
from ventana.state.store import Store
from ventana.tui.app import VentanaApp
from ventana.tui.vm_table import VmTable

from .stats import latency_stats

SIZE = (200, 60)
IDLE_WINDOW_S = 10.0  # CPU at rest: one window this long, after settling
SETTLE_STEP_S = 0.5  # settled: a window this long under SETTLED_CPU_PCT ...
SETTLED_CPU_PCT = 5.0
SETTLE_MAX_S = 60.0  # ... or give up (settle_s is then this)
KEY_PERIOD_S = 0.02  # the key probe presses Down 50 times a second, answered or not
KEY_LOADS = 8  # initial loads the key probe presses through (pooled); the first is timed


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class LoadedSim(Backend):
    """The simulator at N VMs, plus a steady stream of VM changes.

    After the inventory, it yields ``rate`` changes per second: half to VMs
    whose rows are on screen (so their redraw can be timed), half anywhere.
    The time each change leaves the backend is kept for the latency figures.
    """

    name = "sim"

    def __init__(self, vms: int, rate: float) -> None:
        self.sim = SimBackend(SimConfig(seed=7, vms=vms, rate=0.0, read_only=True))
        super().__init__(self.sim.target, read_only=True)
        self.rate = rate
        self.load = asyncio.Event()
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.table: VmTable | None = None
        self.rng = random.Random(1)
        self.emitted = 0
        self.inventory_sent_at: float | None = None

    def _make_executor(self) -> Executor:  # pragma: no cover - read-only
        raise RuntimeError("read-only benchmark")

    def now(self):  # type: ignore[no-untyped-def]
        return self.sim.now()

    async def events(self) -> AsyncIterator[Event]:
        vms: dict[str, VM] = {}
        stream = self.sim.events().__aiter__()
        while True:  # the inventory, up to CONNECTED
            event = await stream.__anext__()
            if isinstance(event, Upsert) and event.entity.KIND is Kind.VM:
                vms[event.entity.id] = event.entity  # type: ignore[assignment]
            yield event
            if getattr(event, "state", None) == "connected":
                self.inventory_sent_at = time.perf_counter()
                break
        await self.load.wait()
        ids = list(vms)
        powers = [PowerState.RUNNING, PowerState.OFF, PowerState.SAVED, PowerState.PAUSED]
        interval = 1.0 / self.rate
        next_at = time.perf_counter()
        while True:
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            table = self.table
            visible = table.visible_ids if table is not None else []
            top = table.scroll_offset.y if table is not None else 0
            page = table.scrollable_content_region.height - 1 if table is not None else 0
            # A row already waiting for its redraw is not changed again: two
            # changes in one batch can cancel out (A→B→A) and leave nothing to draw.
            on_screen = [i for i in visible[top : top + page] if i not in self.sent]
            pick_visible = bool(on_screen) and self.emitted % 2 == 0
            vm_id = self.rng.choice(on_screen if pick_visible else ids)
            if not pick_visible and vm_id in self.sent:
                continue
            vm = vms[vm_id]
            vm = dataclasses.replace(
                vm, power=self.rng.choice([p for p in powers if p is not vm.power])
            )
            vms[vm_id] = vm
            if pick_visible:
                self.sent[vm_id] = time.perf_counter()
            self.emitted += 1
            yield Upsert(vm)


def _instrument(table: VmTable, backend: LoadedSim) -> None:
    """Time a row's redraw: the first strip built for a VM after its change."""
    original = table._row_strip

    def timed(vm_id: str, *args: Any):  # type: ignore[no-untyped-def]
        built_before = table.rows_rendered
        strip = original(vm_id, *args)
        if table.rows_rendered != built_before:
            sent = backend.sent.pop(vm_id, None)
            if sent is not None:
                backend.latencies.append(time.perf_counter() - sent)
        return strip

    table._row_strip = timed  # type: ignore[method-assign]


async def _cpu_percent(pilot: Any, seconds: float) -> float:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    await pilot.pause(seconds)
    return 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def loading(app: VentanaApp) -> bool:
    """The first inventory is still being received or applied.

    (Live events waiting for the next flush are not counted: a live backend
    always has some, and the table may already show every VM.)
    """
    return app.core.loading or app.core.inventory_applying or app.core.still_loading


async def _populate(app: VentanaApp, pilot: Any, vms: int, timeout: float = 300.0) -> float:
    """When the first frame showing all ``vms`` rows (the first inventory applied) was drawn.

    Times the table's own drawing instead of ``pilot.pause()``, which waits for
    the whole process to go idle (up to a second more while findings are computed).
    """
    table = app.query_one(VmTable)
    drawn: list[float] = []
    original = table.render_line

    def render_line(y: int) -> Any:
        if not drawn and table.row_count >= vms and not loading(app):
            drawn.append(time.perf_counter())
        return original(y)

    table.render_line = render_line  # type: ignore[method-assign]
    deadline = time.perf_counter() + timeout
    nudged = False
    try:
        while not drawn:
            if not nudged and table.row_count >= vms and not loading(app):
                # If the last frame already showed everything, no further one may come:
                # ask for one (this can only make the figure a frame later, never earlier).
                nudged = True
                table.refresh()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{table.row_count:,} of {vms:,} rows after {timeout:g} s")
            await asyncio.sleep(0.005)
    finally:
        del table.render_line
    return drawn[0]


async def settle(app: VentanaApp, pilot: Any) -> float:
    """Seconds until the console is at rest: no findings queued, every row built and a
    quiet half-second."""
    started = time.perf_counter()
    while time.perf_counter() - started < SETTLE_MAX_S:
        at = time.perf_counter()
        cpu = await _cpu_percent(pilot, SETTLE_STEP_S)
        if (cpu < SETTLED_CPU_PCT and not app.findings.pending
                and not getattr(app.query_one(VmTable), "rows_pending", 0)):
            return at - started
    return SETTLE_MAX_S


class KeyProbe:
    """While the inventory loads, presses Down on the VM table at a steady rate and times
    each key until the table's action runs.

    A thread presses every ``KEY_PERIOD_S`` whether or not the last key was answered,
    as a terminal's input thread delivers keys (``Driver.process_message``, from
    outside the UI loop): a stalled loop shows as every key pressed during the stall
    waiting, as an operator holding a key feels it. (Until stop 13 one key was in
    flight at a time, on the loop itself: a stall was one sample among ~25 a load.)
    Keys are handled in order, so each answer is the oldest key not yet answered.
    The probe can press through several loads (one :meth:`run` each); their keys
    are pooled in :meth:`figures`. Beside each key's wait, the UI loop thread's CPU
    time in it (``_cpu``): on a shared machine, what the console itself did while
    the key waited, without the time other processes had the core.
    """

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.latencies_cpu: list[float] = []  # the UI loop thread's CPU time in each wait
        self.max_by_load: list[float] = []
        self.loads = 0
        self.unanswered = 0  # pressed during a load, not answered 10 s after it
        self._lock = threading.Lock()
        self._pressed: collections.deque[tuple[float, float]] = collections.deque()
        self._halt = threading.Event()  # the pressing thread stops
        self._stopped: asyncio.Event | None = None  # run() stops (made in its loop)
        self._loop_clock = 0  # the UI loop thread's CPU clock (set by run)

    @contextlib.contextmanager
    def installed(self) -> Any:
        original = VmTable.action_cursor_down
        probe = self

        def timed(table: VmTable) -> None:
            now, cpu = time.perf_counter(), time.thread_time()
            with probe._lock:
                if probe._pressed:
                    pressed, pressed_cpu = probe._pressed.popleft()
                    probe.latencies.append(now - pressed)
                    probe.latencies_cpu.append(cpu - pressed_cpu)
            original(table)

        VmTable.action_cursor_down = timed  # type: ignore[method-assign]
        try:
            yield self
        finally:
            VmTable.action_cursor_down = original  # type: ignore[method-assign]

    def _press(self, driver: Any) -> None:
        """The pressing thread: Down every KEY_PERIOD_S (none made up after a late wake)."""
        due = time.perf_counter()
        while not self._halt.is_set():
            key = events.Key("down", None)
            with self._lock:
                self._pressed.append((time.perf_counter(),
                                      time.clock_gettime(self._loop_clock)))
            driver.process_message(key)
            due = max(due + KEY_PERIOD_S, time.perf_counter())
            self._halt.wait(max(0.0, due - time.perf_counter()))

    async def run(self, app: VentanaApp) -> None:
        """Press from when the VM table has the focus until :meth:`stop`, then wait (at
        most 10 s) for every key pressed to be answered."""
        try:
            await self._run(app)
        finally:
            self._halt.clear()  # ready for the next load
            self._stopped = None

    async def _run(self, app: VentanaApp) -> None:
        if self._halt.is_set():
            return
        self._stopped = stopped = asyncio.Event()
        self._loop_clock = time.pthread_getcpuclockid(threading.get_ident())
        answered = len(self.latencies)
        while not isinstance(app.focused, VmTable) and not self._halt.is_set():
            await asyncio.sleep(0.005)
        driver = app._driver
        if self._halt.is_set() or driver is None:
            return
        thread = threading.Thread(target=self._press, args=(driver,), name="bench-keys",
                                  daemon=True)
        thread.start()
        await stopped.wait()
        await asyncio.to_thread(thread.join)
        deadline = time.perf_counter() + 10.0
        while self._pressed and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        with self._lock:
            self.unanswered += len(self._pressed)
            self._pressed.clear()
        self.loads += 1
        self.max_by_load.append(max(self.latencies[answered:], default=0.0))

    def stop(self) -> None:
        """Stop pressing (call from the UI loop)."""
        self._halt.set()
        if self._stopped is not None:
            self._stopped.set()

    def figures(self) -> dict[str, Any]:
        return {"keys_during_load": len(self.latencies),
                "keys_during_load_loads": self.loads,
                "keys_during_load_per_s": round(1 / KEY_PERIOD_S, 1),
                "keys_during_load_unanswered": self.unanswered,
                **latency_stats(self.latencies, "keys_during_load"),
                "keys_during_load_max_ms_by_load": [round(1000 * x, 1)
                                                    for x in self.max_by_load],
                **latency_stats(self.latencies_cpu, "keys_during_load_cpu")}


def _forget_frozen() -> None:
    """The app froze its inventory out of the cyclic GC (tui/app.py); the next
    app in this process must not carry it in its RSS."""
    gc.unfreeze()
    gc.collect()


class TimedSim(SimBackend):
    """The plain simulator, with the CPU its world build takes (in slices on the UI loop):
    the part of ``populated_cpu_s`` that is the simulator's, not the console's."""

    world_cpu_s = 0.0

    def _building_world(self):  # type: ignore[no-untyped-def]
        steps = super()._building_world()
        while True:
            started = time.thread_time()
            try:
                next(steps)
            except StopIteration as done:
                self.world_cpu_s += time.thread_time() - started
                return done.value
            self.world_cpu_s += time.thread_time() - started
            yield


async def key_loads(vms: int, probe: KeyProbe, loads: int) -> list[float]:
    """``loads`` more starts at ``vms`` VMs, the probe pressing through each load; each
    one's seconds to populated (warm starts in this process, not the cold one timed by
    :func:`run_startup`)."""
    populated: list[float] = []
    with probe.installed():
        for _ in range(loads):
            app = VentanaApp(SimBackend(SimConfig(seed=7, vms=vms, rate=0.0, read_only=True)),
                             log=None, log_error="benchmark")
            started = time.perf_counter()
            async with app.run_test(size=SIZE) as pilot:
                pressing = asyncio.create_task(probe.run(app))
                populated.append(await _populate(app, pilot, vms) - started)
                probe.stop()
                await pressing
                # The last keys' messages (the cursor moved: the details pane follows)
                # are handled before the app exits: during its teardown the pane is gone.
                await pilot.pause()
            _forget_frozen()
    return populated


async def run_startup(vms: int = 10_000, probe: KeyProbe | None = None) -> dict:
    """`ventana --vms N` as an operator starts it: the plain simulator backend, with
    ``probe`` (or a new one) pressing keys through the load."""
    backend = TimedSim(SimConfig(seed=7, vms=vms, rate=0.0, read_only=True))
    app = VentanaApp(backend, log=None, log_error="benchmark")
    probe = probe or KeyProbe()
    started, cpu_started = time.perf_counter(), time.process_time()
    main_started = time.thread_time()  # the UI loop's thread: the console's own work
    with probe.installed():
        async with app.run_test(size=SIZE) as pilot:
            pressing = asyncio.create_task(probe.run(app))
            populated_s = await _populate(app, pilot, vms) - started
            populated_cpu_s = time.process_time() - cpu_started
            populated_loop_cpu_s = time.thread_time() - main_started
            probe.stop()
            await pressing
            rss = rss_mb()
            settle_s = await settle(app, pilot)
            idle_cpu = await _cpu_percent(pilot, IDLE_WINDOW_S)
    _forget_frozen()
    return {"populated_s": round(populated_s, 3), "populated_cpu_s": round(populated_cpu_s, 3),
            "populated_loop_cpu_s": round(populated_loop_cpu_s, 3),
            "sim_world_cpu_s": round(backend.world_cpu_s, 3),
            "rss_mb_populated": round(rss, 1),
            "settle_s": round(settle_s, 2), "idle_cpu_pct": round(idle_cpu, 2),
            "idle_window_s": IDLE_WINDOW_S, **probe.figures()}


async def run_console(vms: int = 10_000, rate: float = 200.0, seconds: float = 10.0,
                      loads: int = KEY_LOADS) -> dict:
    """The cold start (:func:`run_startup`), the console under a steady load of changes,
    then ``loads - 1`` more starts for the key probe: its keys over ``loads`` loads are
    pooled (one load gives ~40 keys, too few for a p99). Those starts come last: the
    heap they leave behind would otherwise be in ``rss_mb_under_load`` (251 MB, not 188,
    when they ran before it)."""
    probe = KeyProbe()
    results = await run_startup(vms, probe)
    backend = LoadedSim(vms, rate)
    app = VentanaApp(backend, log=None, log_error="benchmark")
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        populated_at = await _populate(app, pilot, vms)
        console_s = populated_at - (backend.inventory_sent_at or started)
        await settle(app, pilot)  # the load is measured at steady state
        backend.table = table
        _instrument(table, backend)
        backend.load.set()
        load_cpu = await _cpu_percent(pilot, seconds)
        emitted = backend.emitted
        latencies = list(backend.latencies)
        rss_loaded = rss_mb()
    _forget_frozen()
    later = await key_loads(vms, probe, loads - 1)
    return {
        "vms": vms,
        **results,
        "inventory_to_screen_s": round(console_s, 3),
        "rss_mb_under_load": round(rss_loaded, 1),
        "load_events_per_s": round(emitted / seconds, 1),
        "load_cpu_pct": round(load_cpu, 1),
        "redraw_samples": len(latencies),
        **latency_stats(latencies, "redraw"),
        **probe.figures(),
        "populated_s_later_loads": [round(s, 3) for s in later],
    }


def run_store(vms: int = 10_000, events: int = 200_000) -> dict:
    """Events per second the store applies (batches of 100, one subscriber)."""
    inventory = build_inventory(SimConfig(seed=7, vms=vms, rate=0.0))
    store = Store()
    store.subscribe(lambda delta: None)
    started = time.perf_counter()
    store.apply_many(Upsert(e) for e in inventory.entities())
    load_s = time.perf_counter() - started
    rng = random.Random(3)
    all_vms = list(store.vms())
    changes = [
        Upsert(dataclasses.replace(vm, memory_mb=vm.memory_mb + i % 7 + 1))
        for i, vm in enumerate(rng.choices(all_vms, k=events))
    ]
    started = time.perf_counter()
    for i in range(0, len(changes), 100):
        store.apply_many(changes[i : i + 100])
    apply_s = time.perf_counter() - started
    return {
        "vms": vms,
        "inventory_entities": sum(store.count(k) for k in Kind),
        "inventory_apply_s": round(load_s, 3),
        "events": events,
        "events_per_s": round(events / apply_s),
    }
