"""vSphere benchmark: full inventory and change → screen, against one vcsim.

One simulator (tools/vcsim, 1,000 VMs by default, a tenth of them with
snapshots) is read by three readers that collect the same facts — every VM
(name, power, host, connection, consolidation flag, hardware, version,
firmware, snapshot tree with sizes from ``layoutEx``, datastores, tools),
host, datastore and cluster:

- **ours**: ``VSphereBackend`` (one PropertyCollector; the update filter's
  first ``WaitForUpdatesEx``, in pages of ``maxObjectUpdates``) until every
  object is in a ``Store``;
- **(a) plain pyvmomi**: a script that walks the inventory object by object
  as most scripts do — a container view of VMs, then ``vm.name``,
  ``vm.runtime.powerState``, ``vm.snapshot``, ... each access a round trip;
- **(b) govc-style Go**: ``tools/vcsim/inventory-bench`` (govmomi's ``view``
  + ``property`` collector, one ``Retrieve`` per object type).

Each time covers login to the last object read (Python start-up and the Go
process start are not counted). Then the console itself, headless under
Pilot on ``VSphereBackend``: a second pyvmomi client powers VMs off and
creates snapshots, and the time from the call to the changed cell being
drawn is taken for each (median and p99).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ventana.backends.vsphere import VSphereBackend, VSphereConfig
from ventana.backends.vsphere.mapping import snapshot_size
from ventana.backends.vsphere.session import ssl_context
from ventana.state.events import ConnectionChanged, Event, LinkState
from ventana.state.model import Kind
from ventana.state.store import Store

from .console import IDLE_WINDOW_S, _cpu_percent, _populate, rss_mb, settle
from .stats import latency_stats
from .table import Row

REPO = Path(__file__).resolve().parents[1]
SIZE = (200, 60)
DEFAULT_VMS = 1000
PLAIN_MAX_VMS = 5000  # the object-by-object reader is skipped above this size


def _peers() -> Any:
    """tests/peers/vcsim.py (start/stop the simulator), importable from here."""
    import importlib.util

    path = REPO / "tests" / "peers" / "vcsim.py"
    spec = importlib.util.spec_from_file_location("ventana_bench_vcsim", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # dataclasses look the module up while building
    spec.loader.exec_module(module)
    return module


def inventory_bench_path() -> Path:
    """The Go peer built by tools/vcsim/build.sh (next to the simulator)."""
    return _peers().binary_path().with_name("inventory-bench")


@dataclass
class Inventory:
    """What a reader found: sorted names per kind and the snapshot count."""

    seconds: float
    vms: list[str]
    hosts: list[str]
    datastores: list[str]
    clusters: list[str]
    snapshots: int
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> tuple[int, int, int, int, int]:
        return (len(self.vms), len(self.hosts), len(self.datastores), len(self.clusters),
                self.snapshots)


def _connect(handle: Any) -> Any:
    from pyVim.connect import SmartConnect

    return SmartConnect(host=handle.host, port=handle.port, user=handle.user,
                        pwd=handle.password, sslContext=ssl_context(handle.ca_path))


# -- ours ------------------------------------------------------------------------------------
async def read_ours(handle: Any, max_object_updates: int | None = None) -> Inventory:
    """``VSphereBackend`` until CONNECTED, every event applied to a ``Store``."""
    cfg = VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                        ca_file=handle.ca_path)
    if max_object_updates is not None:
        cfg = VSphereConfig(**{**cfg.__dict__, "max_object_updates": max_object_updates})
    backend = VSphereBackend(cfg, password=handle.password)
    store = Store()
    started = time.perf_counter()
    batch: list[Event] = []
    stream = backend.events()
    try:
        async for event in stream:
            batch.append(event)
            if isinstance(event, ConnectionChanged) and event.state in (
                LinkState.CONNECTED, LinkState.DISCONNECTED
            ):
                break
        store.apply_many(batch)
        seconds = time.perf_counter() - started
        if store.link_state() is not LinkState.CONNECTED:
            raise RuntimeError(f"backend did not connect: {store.link_reason()}")
    finally:
        await backend.close()
        async for _ in stream:
            pass
    return Inventory(
        seconds,
        sorted(vm.name for vm in store.vms()),
        sorted(n.name for n in store.nodes()),
        sorted(lun.name for lun in store.luns()),
        sorted(c.name for c in store.all(Kind.CLUSTER)),  # type: ignore[attr-defined]
        store.count(Kind.CHECKPOINT),
        {"entities": sum(store.count(k) for k in Kind)},
    )


# -- (a) plain pyvmomi -----------------------------------------------------------------------
def read_plain(handle: Any) -> Inventory:
    """Object by object, every attribute access a round trip — as most scripts do."""
    from pyVim.connect import Disconnect
    from pyVmomi import vim

    started = time.perf_counter()
    si = _connect(handle)
    content = si.RetrieveContent()
    views = content.viewManager

    def objects(kind: type) -> list[Any]:
        view = views.CreateContainerView(content.rootFolder, [kind], True)
        try:
            return list(view.view)
        finally:
            view.Destroy()

    vms: list[str] = []
    snapshots = 0
    for vm in objects(vim.VirtualMachine):
        facts: dict[str, Any] = {
            "name": vm.name,
            "power": vm.runtime.powerState,
            "host": vm.runtime.host.name,
            "connection": vm.runtime.connectionState,
            "consolidation": vm.runtime.consolidationNeeded,
            "hardware": vm.config.hardware,
            "version": vm.config.version,
            "firmware": vm.config.firmware,
            "tools": vm.guest.toolsRunningStatus,
            "datastores": [ds.name for ds in vm.datastore],
        }
        layout = vm.layoutEx
        tree = vm.snapshot
        stack = list(tree.rootSnapshotList) if tree is not None else []
        while stack:
            snap = stack.pop()
            snapshots += 1
            facts.setdefault("snapshots", []).append(
                (snap.name, snapshot_size(layout, snap.snapshot._moId)))
            stack.extend(snap.childSnapshotList)
        vms.append(facts["name"])
    hosts = []
    for host in objects(vim.HostSystem):
        hosts.append(host.name)
        _ = (host.runtime.connectionState, host.runtime.inMaintenanceMode, host.parent.name)
    datastores = []
    for ds in objects(vim.Datastore):
        datastores.append(ds.name)
        _ = (ds.summary.capacity, ds.summary.freeSpace, ds.summary.accessible, len(ds.host))
    clusters = []
    for cr in objects(vim.ComputeResource):
        clusters.append(cr.name)
        _ = len(cr.host)
    seconds = time.perf_counter() - started
    Disconnect(si)
    return Inventory(seconds, sorted(vms), sorted(hosts), sorted(datastores), sorted(clusters),
                     snapshots)


# -- (b) govc-style Go -----------------------------------------------------------------------
def read_go(handle: Any, binary: Path | None = None) -> Inventory:
    """tools/vcsim/inventory-bench; its own login → last object time."""
    binary = binary or inventory_bench_path()
    if not binary.is_file():
        raise FileNotFoundError(f"{binary} missing: run `make vcsim` (tools/vcsim/build.sh)")
    env = {**os.environ, "VCSIM_USERNAME": handle.user, "VCSIM_PASSWORD": handle.password}
    wall = time.perf_counter()
    done = subprocess.run(
        [str(binary), "-url", handle.url, "-ca", str(handle.ca_path)],
        env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    wall = time.perf_counter() - wall
    if done.returncode != 0:
        raise RuntimeError(f"inventory-bench failed ({done.returncode}): {done.stderr[-2000:]}")
    out = json.loads(done.stdout)
    return Inventory(out["total_s"], out["vms"] or [], out["hosts"] or [],
                     out["datastores"] or [], out["clusters"] or [], out["snapshots"],
                     {"process_wall_s": wall, "login_s": out["login_s"],
                      "retrieve_s": out["retrieve_s"]})


# -- the simulator ---------------------------------------------------------------------------
@contextmanager
def simulator(vms: int, tmp: Path) -> Any:
    """A vcsim with ``vms`` VMs: 2 clusters of 5 hosts, 4 datastores."""
    peers = _peers()
    hosts = 10
    per_host = max(1, -(-vms // hosts))
    handle = peers.start_vcsim(tmp, clusters=2, hosts=hosts // 2, vms=per_host, datastores=4,
                               quiet=True, startup_timeout=600.0)
    try:
        yield handle
    finally:
        handle.stop()


def peer_rss_mb(handle: Any) -> float | None:
    """The simulator's resident memory (MB), from /proc; None where unreadable."""
    try:
        status = Path(f"/proc/{handle.process.pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def peer_cpu_s(handle: Any) -> float | None:
    """The simulator's CPU time so far (user + system, s), from /proc; None where
    unreadable. It shares the machine's cores with the console: beside our CPU rows."""
    try:
        fields = Path(f"/proc/{handle.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _less(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 2)


def add_snapshots(handle: Any, every: int = 10) -> int:
    """A snapshot on every ``every``-th VM (a child one too on every other of those)."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = _connect(handle)
    content = si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    made = 0
    for i, vm in enumerate(sorted(view.view, key=lambda v: v._moId)):
        if i % every:
            continue
        for depth in range(1 + (i // every) % 2):
            WaitForTask(vm.CreateSnapshot_Task(f"bench-{depth}", "benchmark", False, False), si=si)
            made += 1
    view.Destroy()
    Disconnect(si)
    return made


# -- change → cell on screen -----------------------------------------------------------------
async def run_latency(handle: Any, changes: int = 20) -> dict[str, Any]:
    """The console on VSphereBackend; a second client changes VMs on screen."""
    from pyVim.connect import Disconnect
    from pyVmomi import vim

    from ventana.tui.app import VentanaApp
    from ventana.tui.vm_table import VmTable

    cfg = VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                        ca_file=handle.ca_path)
    backend = VSphereBackend(cfg, password=handle.password)
    app = VentanaApp(backend, log=None, log_error="benchmark", read_only_reason="benchmark")
    si = await asyncio.to_thread(_connect, handle)
    content = si.RetrieveContent()
    by_id = {
        vm._moId: vm
        for vm in content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True).view
    }
    latencies: list[float] = []
    in_store: list[float] = []
    store_to_screen: list[float] = []
    pending: dict[str, tuple[float, str, str]] = {}  # vm id -> (t0, column, text before)
    stored: dict[str, float] = {}  # vm id -> when its change reached the store
    cpu: dict[str, float | None] = {}
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(VmTable)
        expected = len(by_id)
        # Generous: on a loaded machine vcsim alone takes minutes over 45,000 VMs.
        deadline = time.monotonic() + 120 + expected / 40
        ours0, peer0 = time.process_time(), peer_cpu_s(handle)
        # Inventory in: the backend's CONNECTED event has reached the store.
        while (app.store.link_state() is not LinkState.CONNECTED
               and time.monotonic() < deadline):
            await pilot.pause(0.01)
        inventory_in = time.perf_counter()
        ours1, peer1 = time.process_time(), peer_cpu_s(handle)
        connected_at = await _populate(app, pilot, expected, timeout=deadline - time.monotonic())
        populated_after_inventory_s = connected_at - inventory_in
        ours2, peer2 = time.process_time(), peer_cpu_s(handle)
        # Steady state: the update filter's first WaitForUpdatesEx (in pages of
        # maxObjectUpdates) is complete. Since stop 13 that answer is the inventory
        # itself, so this is ~0; before, it was every object again after CONNECTED.
        while not (backend._session and backend._session.caught_up) and (
            time.monotonic() < deadline
        ):
            await pilot.pause(0.05)
        first_update_s = time.perf_counter() - connected_at
        ours3, peer3 = time.process_time(), peer_cpu_s(handle)
        cpu = {"vs_inventory_cpu_s": round(ours1 - ours0, 2),
               "vcsim_inventory_cpu_s": _less(peer1, peer0),
               "vs_populate_cpu_s": round(ours2 - ours1, 2),
               "first_update_cpu_s": round(ours3 - ours2, 2),
               "vcsim_first_update_cpu_s": _less(peer3, peer2),
               "vs_slow_waits": backend.slow_waits, "vs_full_reads": backend.reads}
        settle_s = await settle(app, pilot)
        rss_populated = rss_mb()
        idle_cpu = await _cpu_percent(pilot, IDLE_WINDOW_S)
        sort_ms, filter_ms = await _sort_and_filter(table, pilot)

        def seen(delta: Any) -> None:
            now = time.perf_counter()
            for change in delta.changes:
                vm_id = change.id if change.kind is Kind.VM else None
                if change.kind is Kind.CHECKPOINT:
                    cp = app.store.get(Kind.CHECKPOINT, change.id)
                    vm_id = getattr(cp, "vm_id", None)
                if vm_id in pending and vm_id not in stored:
                    stored[vm_id] = now
                    in_store.append(now - pending[vm_id][0])

        app.store.subscribe(seen)
        original = table._row_strip

        def timed(vm_id: str, *args: Any):  # type: ignore[no-untyped-def]
            strip = original(vm_id, *args)
            want = pending.get(vm_id)
            if want is not None and table.cell_text(vm_id, want[1]) != want[2]:
                now = time.perf_counter()
                latencies.append(now - want[0])
                if vm_id in stored:
                    store_to_screen.append(now - stored[vm_id])
                del pending[vm_id]
            return strip

        table._row_strip = timed  # type: ignore[method-assign]
        top = table.scroll_offset.y
        page = table.scrollable_content_region.height - 1
        on_screen = [i for i in table.visible_ids[top : top + page]
                     if app.store.vm(i) is not None and app.store.vm(i).power.value == "running"]
        missed = 0
        # vcsim re-collects the whole view for each change (O(inventory): ~9 s at
        # 45,000 VMs), so each change is given time in proportion; a miss is counted.
        give_s = max(10.0, expected / 2000)
        ours4, peer4 = time.process_time(), peer_cpu_s(handle)
        for n, vm_id in enumerate(on_screen[:changes]):
            vm = by_id[vm_id]
            column = "power" if n % 2 == 0 else "ckpts"
            call: Callable[[], Any] = (
                vm.PowerOffVM_Task if column == "power"
                else lambda vm=vm: vm.CreateSnapshot_Task("latency", "", False, False))
            pending[vm_id] = (time.perf_counter(), column, table.cell_text(vm_id, column))
            await asyncio.to_thread(call)
            until = time.monotonic() + give_s
            while vm_id in pending and time.monotonic() < until:
                await pilot.pause(0.005)
            if pending.pop(vm_id, None) is not None:
                missed += 1
            await pilot.pause(0.1)
        cpu["vs_changes_cpu_s"] = round(time.process_time() - ours4, 2)
        cpu["vcsim_changes_cpu_s"] = _less(peer_cpu_s(handle), peer4)
    await asyncio.to_thread(Disconnect, si)
    return {
        "change_samples": len(latencies),
        "change_missed": missed,
        **latency_stats(latencies, "change"),
        **latency_stats(in_store, "change_in_store"),
        **latency_stats(store_to_screen, "change_store_to_screen"),
        "first_update_after_connect_s": round(first_update_s, 2),
        **cpu,
        "vs_populated_after_inventory_s": round(populated_after_inventory_s, 3),
        "vs_settle_s": round(settle_s, 2),
        "vs_idle_cpu_pct": round(idle_cpu, 2),
        "vs_rss_mb": round(max(rss_populated, rss_mb()), 1),
        "vs_sort_ms": sort_ms,
        "vs_filter_ms": filter_ms,
    }


async def _sort_and_filter(table: Any, pilot: Any, rounds: int = 5) -> tuple[float, float]:
    """Median ms from a sort (Power, then Name) or a filter (typed, cleared) to the first
    line of the table drawn after it (``pilot.pause()`` would wait for the process to idle)."""

    async def timed(action: Callable[[], None]) -> float:
        drawn: list[float] = []
        original = table.render_line

        def render_line(y: int) -> Any:
            if not drawn:
                drawn.append(time.perf_counter())
            return original(y)

        await pilot.pause(0.05)
        started = time.perf_counter()
        action()
        table.render_line = render_line
        try:
            while not drawn and time.perf_counter() - started < 10:
                await asyncio.sleep(0.002)
        finally:
            del table.render_line
        return (drawn[0] if drawn else time.perf_counter()) - started

    sorts: list[float] = []
    filters: list[float] = []
    for _ in range(rounds):
        sorts.append(await timed(lambda: table.sort_by("power")))
        sorts.append(await timed(lambda: table.sort_by("name")))
        filters.append(await timed(lambda: table.set_filter("H1_VM1")))
        filters.append(await timed(lambda: table.set_filter("")))
    return (round(1000 * statistics.median(sorts), 1),
            round(1000 * statistics.median(filters), 1))


# -- the suite -------------------------------------------------------------------------------
def _median(fn: Callable[[], Inventory], rounds: int) -> tuple[Inventory, list[float]]:
    runs = [fn() for _ in range(rounds)]
    times = [r.seconds for r in runs]
    runs.sort(key=lambda r: r.seconds)
    return runs[len(runs) // 2], times


async def run_vsphere(vms: int = 1000, rounds: int = 3, plain_rounds: int = 1,
                      changes: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ventana-bench-vcsim-") as tmp:
        started = time.perf_counter()
        with simulator(vms, Path(tmp)) as handle:
            sim_start_s = time.perf_counter() - started
            made = add_snapshots(handle)
            # The console first, so that its RSS is the console's, not the readers' leftovers.
            latency = await run_latency(handle, changes)
            latency["vcsim_rss_mb"] = peer_rss_mb(handle)  # the peer's own, after the console
            await read_ours(handle)  # warm: imports, TLS session, server caches
            ours_runs: list[Inventory] = []
            go_runs: list[Inventory] = []
            for _ in range(rounds):  # alternated: a burst of load elsewhere hits both
                ours_runs.append(await read_ours(handle))
                go_runs.append(read_go(handle))
            go_times = [r.seconds for r in go_runs]
            ours_runs.sort(key=lambda r: r.seconds)
            go_runs.sort(key=lambda r: r.seconds)
            ours, go = ours_runs[len(ours_runs) // 2], go_runs[len(go_runs) // 2]
            readers = [("go", go)]
            plain: Inventory | None = None
            plain_times: list[float] = []
            if vms <= PLAIN_MAX_VMS:  # object by object: minutes at a full vCenter's size
                plain, plain_times = _median(lambda: read_plain(handle), plain_rounds)
                readers.append(("plain", plain))
            for name, other in readers:
                if other.summary() != ours.summary() or other.vms != ours.vms:
                    raise AssertionError(
                        f"readers disagree: ours {ours.summary()} vs {name} {other.summary()}")
    return {
        "vms": len(ours.vms),
        "hosts": len(ours.hosts),
        "datastores": len(ours.datastores),
        "snapshots": ours.snapshots,
        "snapshots_created": made,
        "entities_in_store": ours.extra["entities"],
        "vcsim_start_s": round(sim_start_s, 2),
        "ours_s": round(ours.seconds, 3),
        "ours_runs_s": [round(r.seconds, 3) for r in ours_runs],
        "plain_s": round(plain.seconds, 3) if plain else None,
        "plain_runs_s": [round(t, 3) for t in plain_times],
        "go_s": round(go.seconds, 3),
        "go_runs_s": [round(t, 3) for t in go_times],
        "go_process_wall_s": round(go.extra["process_wall_s"], 3),
        "plain_over_ours": round(plain.seconds / ours.seconds, 1) if plain else None,
        "ours_over_go": round(ours.seconds / go.seconds, 2),
        **latency,
    }


ROWS = (
    Row("ours_s", "ours: login → full inventory in Store (s)", noise=0.1),
    Row("go_s", "(b) govmomi view+property, Go (s)", noise=0.1),
    Row("ours_over_go", "ours / (b) (×)", 1.5, noise=0.1),
    Row("plain_s", "(a) plain pyvmomi, object by object (s)", noise=0.2),
    Row("plain_over_ours", "(a) / ours (×)", 5.0, lower=False, noise=0.5),
    Row("vs_inventory_cpu_s", "  console: login → inventory in, process CPU (s)", noise=0.5),
    Row("vcsim_inventory_cpu_s", "  vcsim's CPU in that time (s)", noise=0.5),
    Row("vs_populated_after_inventory_s", "inventory in the store → populated (s)", 3.0,
        noise=0.1),
    Row("vs_populate_cpu_s", "  process CPU in that time (s)", noise=0.1),
    Row("first_update_after_connect_s", "populated → live updates flow (s; ~0 since stop 13)",
        noise=0.5),
    Row("first_update_cpu_s", "  process CPU in that time (s)", noise=0.5),
    Row("vcsim_first_update_cpu_s", "  vcsim's CPU in that time (s)", noise=0.5),
    Row("vs_rss_mb", "console RSS, populated (MB)", 600.0, noise=10),
    Row("change_median_ms", "change on server → cell drawn, median (ms)", noise=10),
    Row("change_p99_ms", "change on server → cell drawn, p99 (ms)", noise=20),
    Row("change_in_store_p99_ms", "  part 1: server → in the store, p99 (ms)", noise=20),
    Row("change_store_to_screen_p99_ms", "  part 2: store → cell drawn, p99 (ms)", 100.0,
        noise=10),
    Row("vs_changes_cpu_s", "  console: process CPU over the changes (s)", noise=0.5),
    Row("vcsim_changes_cpu_s", "  vcsim's CPU over the changes (s)", noise=0.5),
    Row("vs_sort_ms", "sort (Power / Name) → frame, median (ms)", 100.0, noise=10),
    Row("vs_filter_ms", "filter (typed / cleared) → frame, median (ms)", 100.0, noise=10),
    Row("vs_settle_s", "populated → settled (s)", noise=0.5),
    Row("vs_idle_cpu_pct", "CPU at rest after settling, 10 s window (%)", 2.0, noise=1.0),
)


def report(results: dict[str, Any]) -> None:
    """The figures the rows do not show (the table is printed by ``python -m bench``)."""
    print(f"\nvSphere on vcsim — {results['vms']:,} VMs, {results['hosts']} hosts, "
          f"{results['datastores']} datastores, {results['snapshots']} snapshots; "
          f"runs: ours {results['ours_runs_s']}, (b) {results['go_runs_s']} "
          f"(process wall {results['go_process_wall_s']} s), (a) {results['plain_runs_s']}; "
          f"changes: {results['change_samples']} drawn, {results['change_missed']} missed, "
          f"max {results['change_max_ms']} ms; the update filter's first full "
          f"WaitForUpdatesEx took {results['first_update_after_connect_s']} s after "
          f"populated; vcsim's own RSS {results.get('vcsim_rss_mb')} MB")


async def run_memory(handle: Any, top: int) -> dict[str, Any]:
    """The console on VSphereBackend until settled after the update filter's first
    answer: RSS, idle CPU and (``top`` > 0, tracemalloc started by the caller) the
    ``top`` files and lines holding the live Python allocations."""
    import gc
    import tracemalloc

    from ventana.tui.app import VentanaApp

    cfg = VSphereConfig(host=handle.host, port=handle.port, user=handle.user,
                        ca_file=handle.ca_path)
    backend = VSphereBackend(cfg, password=handle.password)
    app = VentanaApp(backend, log=None, log_error="benchmark", read_only_reason="benchmark")
    async with app.run_test(size=SIZE) as pilot:
        while app.store.link_state() is not LinkState.CONNECTED:
            await pilot.pause(0.05)
        populated = await _populate(app, pilot, handle.size.total_vms, timeout=600)
        cpu = time.process_time()
        while not (backend._session and backend._session.caught_up):
            await pilot.pause(0.05)
        caught_up_s = time.perf_counter() - populated
        cpu = time.process_time() - cpu
        settle_s = await settle(app, pilot)
        out: dict[str, Any] = {"vms": app.store.count(Kind.VM),
                               "first_update_after_populated_s": round(caught_up_s, 2),
                               "first_update_cpu_s": round(cpu, 2),
                               "settle_s": round(settle_s, 2),
                               "rss_mb": round(rss_mb(), 1),
                               "idle_cpu_pct": round(await _cpu_percent(pilot, IDLE_WINDOW_S), 2),
                               "vcsim_rss_mb": peer_rss_mb(handle)}
        if top and tracemalloc.is_tracing():
            gc.collect()
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)])
            out["traced_mb"] = round(sum(st.size for st in snap.statistics("filename")) / 2**20, 1)
            def where(frame: Any, line: bool) -> str:
                name = frame.filename.split("site-packages/")[-1].replace(f"{REPO}/", "")
                return f"{name}:{frame.lineno}" if line else name

            for group in ("filename", "lineno"):
                out[f"by_{group}"] = [
                    f"{st.size / 2**20:8.1f} MB {st.count:>9,} blocks  "
                    f"{where(st.traceback[0], group == 'lineno')}"
                    for st in snap.statistics(group)[:top]]
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.vsphere --vms N [--tracemalloc TOP]``: where the console's
    memory is at N VMs (vcsim, a tenth of the VMs with snapshots), without the
    readers and the change probe of the suite."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.vsphere")
    parser.add_argument("--vms", type=int, default=DEFAULT_VMS)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="TOP",
                        help="trace the console's allocations; print the TOP sites")
    args = parser.parse_args(argv)
    with (tempfile.TemporaryDirectory(prefix="ventana-bench-vcsim-") as tmp,
          simulator(args.vms, Path(tmp)) as handle):
        add_snapshots(handle)
        if args.tracemalloc:
            import tracemalloc

            tracemalloc.start()
        out = asyncio.run(run_memory(handle, args.tracemalloc))
    for group in ("by_filename", "by_lineno"):
        lines = out.pop(group, [])
        if lines:
            print(f"-- tracemalloc, {group.replace('_', ' ')}")
            print("\n".join(lines))
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
