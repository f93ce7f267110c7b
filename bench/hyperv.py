"""Benchmark of the Hyper-V backend at scale: 4 nodes x 2,500 VMs behind WinRM/PSRP endpoints.

The endpoints are the test peer (tests/peers/winrm: HTTPS, NTLM, psrpcore)
serving a simulated cluster, one endpoint per node, run in a separate
process (``python -m bench.hyperv serve``) so the client and the server do
not share a GIL. Both are Python on the same machine and share its CPUs —
a real cluster would answer from four other machines, so these figures are
pessimistic for the client side.

Measured through the console as an operator runs it (``VentanaApp`` headless
under Textual's Pilot, the real ``HyperVBackend`` behind it):

- time to full inventory: from the app starting to every VM in the app's
  store and every node CONNECTED, and to a fully populated VM table;
- server-side change → row redrawn on screen: the server process flips the
  power state of a VM whose row is on screen; the time from the change being
  made (the server's reply) to that row's strip being rebuilt, median/p99;
  the same change measured to the app's store is kept too;
- RSS of the client process after the inventory and after the changes.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .console import SIZE, _populate, rss_mb
from .table import Row

ROOT = Path(__file__).resolve().parent.parent


def profile_threads(out: str) -> None:
    """cProfile every thread of this process (Thread.run patched); merged stats at exit.

    Timed by each thread's own CPU clock (``time.thread_time``): the stats are
    CPU seconds, not wall time, so a thread blocked on a socket or a lock costs
    nothing and a machine shared with other work does not distort them.
    """
    import atexit
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile(time.thread_time)
    profiles.append(main)
    main.enable()

    def dump() -> None:
        main.disable()
        stats: pstats.Stats | None = None
        for profile in profiles:
            profile.create_stats()
            if not profile.stats:  # type: ignore[attr-defined]
                continue
            if stats is None:
                stats = pstats.Stats(profile)
            else:
                stats.add(profile)
        if stats is not None:
            stats.dump_stats(out)

    atexit.register(dump)


# -- the server process ---------------------------------------------------------------


def serve(vms: int, nodes: int, stream: bool, part: int = 0,
          parts: int = 1) -> int:  # pragma: no cover - own process
    """Run one peer per node over one simulated cluster; obey commands on stdin.

    ``stream=False``: the endpoints refuse the VM event subscription.
    ``part``/``parts``: this process serves every ``parts``-th node from the
    ``part``-th (the model, built from the same seed, is whole in each); a
    change to a VM another process serves answers ``{"skip": true}``. The
    password comes from ``VENTANA_BENCH_PEER_PASSWORD`` when given (the same
    for every process).
    """
    sys.path.insert(0, str(ROOT / "tests"))
    from peers.winrm.fixture import generate_password, start_winrm_peer
    from peers.winrm.hyperv import ClusterModel, build_hyperv_registry

    from ventana.backends.sim import SimConfig
    from ventana.state.model import CheckpointKind, PowerState

    model = ClusterModel(SimConfig(seed=7, vms=vms, nodes=nodes, rate=0))
    model.indications = stream
    password = os.environ.get("VENTANA_BENCH_PEER_PASSWORD") or generate_password()
    names = sorted(model.nodes)[part::parts]
    mine = {n.casefold() for n in names}
    handles = [
        start_winrm_peer(registry=build_hyperv_registry(model, name), password=password)
        for name in names
    ]
    bundle = Path(handles[0].ca_path).parent / "bundle.pem"
    bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
    print(json.dumps({"ports": [h.port for h in handles], "names": names, "ca": str(bundle),
                      "user": handles[0].user, "password": password,
                      "vms": len(model.vms)}), flush=True)
    powers = [PowerState.RUNNING, PowerState.OFF, PowerState.SAVED]
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] in ("power", "checkpoint") and (
                    model.vms[words[1]].node_id.casefold() not in mine):
                print(json.dumps({"skip": True}), flush=True)  # another process serves it
            elif words[0] == "power":
                vm = model.vms[words[1]]
                model.set_power(vm.id, next(p for p in powers if p is not vm.power))
                print(json.dumps({"ok": True, "power": model.vms[vm.id].power.value}),
                      flush=True)
            elif words[0] == "checkpoint":  # a checkpoint created on the host (not power)
                cp_id = model.add_checkpoint(words[1], "bench", CheckpointKind.STANDARD)
                print(json.dumps({"ok": True, "checkpoint": cp_id}), flush=True)
            elif words[0] == "cpu":  # this process's CPU seconds so far (all its threads)
                print(json.dumps({"cpu": time.process_time()}), flush=True)
            elif words[0] == "quit":
                break
    finally:
        # All at once: one after the other, 32 endpoints took 25-35 s to stop, past the
        # 15 s Server.close() waits, and the killed process never wrote its --profile.
        import threading

        stoppers = [threading.Thread(target=h.stop, daemon=True) for h in handles]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(10.0)
    return 0


class Server:
    """The endpoints' processes, and their command channel (one JSON line per ``ask``).

    ``processes`` > 1 (``bench.hyperv`` only): the nodes are shared out between
    that many processes, as a real cluster's nodes are separate machines — one
    Python process serving 64 endpoints is bound to one core by its GIL and
    saturates at 64 nodes polled every 10 s. ``info`` is merged (ports in node
    order, one CA bundle), ``cpu`` answers the sum of their CPU.
    """

    def __init__(self, vms: int, nodes: int, stream: bool, profile: str | None = None,
                 *, module: str = "bench.hyperv", processes: int = 1) -> None:
        processes = max(1, min(processes, nodes))
        env = {**os.environ, "VENTANA_BENCH_PEER_PASSWORD": secrets.token_urlsafe(24)}
        self.procs: list[subprocess.Popen[str]] = []
        for part in range(processes):
            args = [sys.executable, "-m", module, "serve", "--vms", str(vms),
                    "--nodes", str(nodes)]
            if processes > 1:
                args += ["--part", str(part), "--parts", str(processes)]
            if profile:
                args += ["--profile", profile if processes == 1 else f"{profile}.{part}"]
            if not stream:
                args.append("--no-stream")
            self.procs.append(subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, text=True, bufsize=1,
                                               env=env))
        infos = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the endpoint process did not start")
            infos.append(json.loads(line))
        self.proc = self.procs[0]
        self.info: dict[str, Any] = infos[0]
        if processes > 1:
            by_name = {n: p for info in infos for n, p in zip(info["names"], info["ports"],
                                                              strict=True)}
            bundle = Path(infos[0]["ca"]).parent / "all-nodes.pem"
            bundle.write_text("".join(Path(i["ca"]).read_text() for i in infos))
            self.info = {**infos[0], "ports": [by_name[n] for n in sorted(by_name)],
                         "ca": str(bundle)}

    def ask(self, line: str) -> dict[str, Any]:
        answers = []
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        for proc in self.procs:
            assert proc.stdout is not None
            answers.append(json.loads(proc.stdout.readline()))
        if line.split()[:1] == ["cpu"]:
            return {"cpu": sum(a["cpu"] for a in answers)}
        return next((a for a in answers if not a.get("skip")), answers[0])

    def close(self) -> None:
        for proc in self.procs:
            try:
                if proc.stdin is not None:
                    proc.stdin.write("quit\n")
                    proc.stdin.close()
                proc.wait(15)
            except Exception:
                proc.kill()
                proc.wait(5)


# -- the client -------------------------------------------------------------------------


async def run_hyperv(vms: int = 10_000, nodes: int = 4, changes: int = 40,
                     poll: float = 15.0, stream: bool = True,
                     profile: str | None = None, trace: int = 0,
                     nonpower_changes: int = 5) -> dict[str, Any]:
    """The console on ``HyperVBackend`` against ``nodes`` endpoints serving ``vms`` VMs.

    ``trace``: tracemalloc on (client only); the ``trace`` biggest allocation
    sites live after the inventory are printed (it slows the client down).
    """
    from ventana.backends.hyperv import Credential, HyperVBackend, HyperVConfig
    from ventana.state.model import Kind
    from ventana.tui.app import VentanaApp
    from ventana.tui.vm_table import VmTable

    peer_profile = str(Path(profile) / "peer.prof") if profile else None
    server = await asyncio.to_thread(Server, vms, nodes, stream, peer_profile,
                                     processes=PEER_PROCESSES)
    try:
        info = server.info
        config = HyperVConfig(
            "HVCLUSTER01", info["user"],
            nodes=tuple(f"127.0.0.1:{p}" for p in info["ports"]),
            auth="ntlm", ca_bundle=info["ca"], poll_interval=poll,
            command_timeout=120.0, operation_timeout=60, stream=stream,
        )
        backend = HyperVBackend(config, Credential(info["user"], info["password"], "bench"))
        app = VentanaApp(backend, log=None, log_error="benchmark")
        peer_cpu = (await asyncio.to_thread(server.ask, "cpu"))["cpu"]
        started, cpu_started = time.perf_counter(), time.process_time()
        async with app.run_test(size=SIZE) as pilot:
            store = app.store
            table = app.query_one(VmTable)

            while store.count(Kind.VM) < info["vms"] or not _all_connected(app, backend):
                await pilot.pause(0.05)
                if time.perf_counter() - started > 300:
                    raise RuntimeError("no full inventory in 300 s")
            inventory_s = time.perf_counter() - started
            inventory_cpu_s = time.process_time() - cpu_started
            peer_cpu = (await asyncio.to_thread(server.ask, "cpu"))["cpu"] - peer_cpu
            screen_s = await _populate(app, pilot, info["vms"]) - started
            rss_inventory = rss_mb()
            if trace:
                print_allocations(trace)
            # -- settling: every node's event stream and change subscriptions up ---------
            # The streams open once every node's first inventory is in (they would slow
            # it down); changes are measured from then on, the time to it is its own row.
            settle_cpu, settle_peer = time.process_time(), (
                await asyncio.to_thread(server.ask, "cpu"))["cpu"]
            while stream and not _all_streaming(backend):
                await pilot.pause(0.1)
                if time.perf_counter() - started > 600:
                    raise RuntimeError("the event streams did not all come up in 600 s")
            settled_s = time.perf_counter() - started
            settle_cpu = time.process_time() - settle_cpu
            settle_peer = (await asyncio.to_thread(server.ask, "cpu"))["cpu"] - settle_peer

            # -- server-side changes on rows that are on screen ------------------------
            sent: dict[str, float] = {}
            to_screen: list[float] = []
            to_store: list[float] = []
            original = table._row_strip

            def timed(vm_id: str, *args: Any):  # type: ignore[no-untyped-def]
                before = table.rows_rendered
                strip = original(vm_id, *args)
                if table.rows_rendered != before and vm_id in sent:
                    to_screen.append(time.perf_counter() - sent.pop(vm_id))
                return strip

            table._row_strip = timed  # type: ignore[method-assign]
            rng = random.Random(5)
            for _ in range(changes):
                top = table.scroll_offset.y
                page = max(1, table.scrollable_content_region.height - 1)
                on_screen = table.visible_ids[top: top + page]
                vm_id = rng.choice(on_screen)
                power_before = store.vm(vm_id).power
                await asyncio.to_thread(server.ask, f"power {vm_id}")
                t0 = time.perf_counter()
                sent[vm_id] = t0
                # Spread the changes over the poll cycle (as real changes are).
                deadline = t0 + poll + 30
                while store.vm(vm_id).power is power_before:
                    await asyncio.sleep(0.005)
                    if time.perf_counter() > deadline:
                        raise RuntimeError("a change did not arrive")
                to_store.append(time.perf_counter() - t0)
                while vm_id in sent and time.perf_counter() < deadline:
                    await pilot.pause(0.01)
                sent.pop(vm_id, None)
                await asyncio.sleep(rng.uniform(0, min(poll, 2.0)))
            # -- non-power changes: a checkpoint created on a VM on screen -----------------
            # The backend learns of these only from its next poll (no subscription yet).
            nonpower: list[float] = []
            nonpower_store: list[float] = []
            for _ in range(nonpower_changes):
                top = table.scroll_offset.y
                page = max(1, table.scrollable_content_region.height - 1)
                vm_id = rng.choice(table.visible_ids[top: top + page])
                before = table.cell_text(vm_id, "ckpts")
                await asyncio.to_thread(server.ask, f"checkpoint {vm_id}")
                t0 = time.perf_counter()
                count = len(store.checkpoints_of(vm_id))
                deadline = t0 + 3 * poll + 60
                while len(store.checkpoints_of(vm_id)) == count:
                    await asyncio.sleep(0.005)
                    if time.perf_counter() > deadline:
                        raise RuntimeError("a checkpoint did not arrive")
                nonpower_store.append(time.perf_counter() - t0)
                while table.cell_text(vm_id, "ckpts") == before:
                    await pilot.pause(0.01)
                    if time.perf_counter() > deadline:
                        raise RuntimeError("a checkpoint did not reach the screen")
                nonpower.append(time.perf_counter() - t0)
                await asyncio.sleep(rng.uniform(0, 1.0))
            rss_changes = rss_mb()
            threads, sockets = threads_and_sockets()
        await backend.close()
    finally:
        await asyncio.to_thread(server.close)

    def stats(values: list[float], name: str) -> dict[str, Any]:
        values = sorted(values)
        if not values:
            return {f"{name}_median_ms": None, f"{name}_p99_ms": None}
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        return {f"{name}_median_ms": round(1000 * statistics.median(values), 1),
                f"{name}_p99_ms": round(1000 * p99, 1),
                f"{name}_max_ms": round(1000 * values[-1], 1)}

    return {
        "hv_vms": info["vms"],
        "hv_nodes": nodes,
        "hv_poll_s": poll,
        "hv_stream": stream,
        "hv_inventory_s": round(inventory_s, 2),
        "hv_inventory_cpu_s": round(inventory_cpu_s, 2),
        "hv_inventory_peer_cpu_s": round(peer_cpu, 2),
        "hv_populated_s": round(screen_s, 2),
        "hv_settled_s": round(settled_s, 2),
        "hv_settle_cpu_s": round(settle_cpu, 2),
        "hv_settle_peer_cpu_s": round(settle_peer, 2),
        "hv_rss_mb_inventory": round(rss_inventory, 1),
        "hv_rss_mb": round(rss_changes, 1),
        "hv_threads": threads,
        "hv_sockets": sockets,
        "hv_change_samples": len(to_store),
        "hv_screen_samples": len(to_screen),
        **stats(to_screen, "hv_change_screen"),
        **stats(to_store, "hv_change_store"),
        "hv_nonpower_samples": len(nonpower),
        **stats(nonpower, "hv_nonpower_screen"),
        **stats(nonpower_store, "hv_nonpower_store"),
    }


def print_allocations(top: int) -> None:
    """Where the live memory was allocated (tracemalloc): by file, then by line."""
    import gc
    import tracemalloc

    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    print(f"\ntracemalloc: {total / 2**20:.1f} MB live in Python allocations")
    for group in ("filename", "lineno"):
        print(f"-- by {group}")
        for stat in snapshot.statistics(group)[:top]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
            line = f":{frame.lineno}" if group == "lineno" else ""
            print(f"{stat.size / 2**20:8.1f} MB {stat.count:>9,} blocks  {where}{line}")


def threads_and_sockets() -> tuple[int, int]:
    """This process's threads and open sockets (from /proc)."""
    threads = len(os.listdir("/proc/self/task"))
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return threads, sockets


def _all_streaming(backend: Any) -> bool:
    """Every node's VM event stream up and its change subscriptions made."""
    return all(backend.streaming.get(s) for s in backend.sources) and len(
        backend.changes) >= len(backend.sources)


def _all_connected(app: Any, backend: Any) -> bool:
    from ventana.state.events import LinkState

    links = app.store.links
    for source in backend.sources:
        link = links.get(source)
        if link is None or getattr(link, "state", None) is not LinkState.CONNECTED:
            return False
    return True


DEFAULT_SIZE = (4, 10_000)  # nodes, VMs in all
#: Endpoint processes (the nodes shared out between them; see ``Server``).
PEER_PROCESSES = 2
POLL_S = 10.0
ROWS = (
    Row("hv_inventory_s", "full inventory: start → every VM, all CONNECTED (s)", 10.0,
        noise=0.5),
    Row("hv_inventory_cpu_s", "  client CPU (all threads) in that time (s)", noise=0.5),
    Row("hv_inventory_peer_cpu_s", "  the endpoints' CPU in that time (s)", noise=0.5),
    Row("hv_populated_s", "  to a fully populated VM table (s)", noise=0.5),
    Row("hv_settled_s", "settled: start → every node's event stream up (s)", noise=1.0),
    Row("hv_settle_cpu_s", "  client CPU from the populated table to settled (s)", noise=0.5),
    Row("hv_settle_peer_cpu_s", "  the endpoints' CPU in that time (s)", noise=0.5),
    Row("hv_rss_mb_inventory", "client RSS after the inventory (MB)", 300.0, noise=10),
    Row("hv_rss_mb", "client RSS after the changes (MB)", 300.0, noise=10),
    Row("hv_threads", "client threads after the changes", lower=True, noise=2),
    Row("hv_sockets", "client sockets open after the changes", lower=True, noise=2),
    Row("hv_change_screen_median_ms", "power change → screen, median (ms)", noise=50),
    Row("hv_change_screen_p99_ms", "power change → screen, p99 (ms)", POLL_S * 1000 + 100,
        noise=100),
    Row("hv_nonpower_screen_p99_ms", "checkpoint created → screen, p99 (ms)", 2000.0,
        noise=500),
)


def suite(vms: int = 10_000, nodes: int = 4, changes: int = 40,
          poll: float = POLL_S) -> dict[str, Any]:
    """What ``python -m bench`` runs: returns the figures (it prints the table)."""
    results = asyncio.run(run_hyperv(vms, nodes, changes, poll))
    print(f"\nHyper-V over WinRM/PSRP — {results['hv_vms']:,} VMs on {nodes} endpoints, poll "
          f"{poll:g} s (endpoints in a second process on the same CPUs); changes to the "
          f"store: median {results['hv_change_store_median_ms']} ms, p99 "
          f"{results['hv_change_store_p99_ms']} ms")
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.hyperv")
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--poll", type=float, default=15.0)
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--part", type=int, default=0, help="serve: this process's share")
    parser.add_argument("--parts", type=int, default=1, help="serve: processes in all")
    parser.add_argument("--nonpower", type=int, default=5, help="checkpoints created")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="TOP",
                        help="trace the client's allocations; print the TOP sites")
    parser.add_argument("--profile", help="cProfile every thread; client.prof/peer.prof here "
                        "(serve: the file to write)")
    args = parser.parse_args(argv)
    if args.profile:
        if args.mode == "serve":
            profile_threads(args.profile)
        else:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profile_threads(str(Path(args.profile) / "client.prof"))
    if args.mode == "serve":
        return serve(args.vms, args.nodes, not args.no_stream, args.part, args.parts)
    if args.tracemalloc and args.mode == "run":
        import tracemalloc

        tracemalloc.start()
    results = asyncio.run(run_hyperv(args.vms, args.nodes, args.changes, args.poll,
                                     not args.no_stream, args.profile, args.tracemalloc,
                                     args.nonpower))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
