"""Benchmark: Hyper-V changes other than power → the store, at 4 nodes x 2,500 VMs (issue 16).

The endpoints are the WinRM test peer (tests/peers/winrm) serving one
simulated cluster, one endpoint per node, in a second process
(``python -m bench.hyperv_changes serve``) on the same CPUs. The client is
the real ``HyperVBackend`` feeding a ``Store`` (no screen: the screen side
is bench/hyperv.py's). After the full inventory, the server makes, one at
a time and spread over the subscriptions' polling interval:

- a checkpoint created on a VM, then that checkpoint removed (merged);
- a CSV crossing its free-space threshold (under 10 %, then back above);
- a VM's disk file growing by 2 GiB (its CSV losing the space);

and each is timed from the server's reply to the change being in the
store, median and p99. The full poll runs at its usual interval
(``POLL_S``, longer than one full read at this size): a change that waited
for it would take seconds; the subscriptions (``backends/hyperv/
subscriptions.py``) and a targeted re-read bring it in about one
``WITHIN`` interval. ``hvc_full_polls`` counts the polls that ran during
the changes (for the record: the changes never wait for one).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from . import hyperv
from .table import Row

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SIZE = (4, 10_000)  # nodes, VMs in all
POLL_S = 15.0
GIB = 1024**3


def serve(vms: int, nodes: int) -> int:  # pragma: no cover - own process
    """One peer per node over one simulated cluster; obey change commands on stdin."""
    import dataclasses

    sys.path.insert(0, str(ROOT / "tests"))
    from peers.winrm.fixture import generate_password, start_winrm_peer
    from peers.winrm.hyperv import ClusterModel, build_hyperv_registry

    from ventana.backends.sim import SimConfig
    from ventana.state.model import CheckpointKind, LunRole

    model = ClusterModel(SimConfig(seed=7, vms=vms, nodes=nodes, rate=0))
    password = generate_password()
    handles = [
        start_winrm_peer(registry=build_hyperv_registry(model, name), password=password)
        for name in sorted(model.nodes)
    ]
    bundle = Path(handles[0].ca_path).parent / "bundle.pem"
    bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
    plain = [v.id for v in model.vms.values() if v.disk_ids and not model.chains.get(v.id)]
    csvs = [x.id for x in model.luns.values() if x.role is LunRole.CSV]
    print(json.dumps({"ports": [h.port for h in handles], "ca": str(bundle),
                      "user": handles[0].user, "password": password, "vms": len(model.vms),
                      "plain": plain[:200], "csvs": csvs}), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            answer: dict[str, Any] = {"ok": True}
            if words[0] == "checkpoint":
                answer["checkpoint"] = model.add_checkpoint(words[1], "bench",
                                                            CheckpointKind.STANDARD)
            elif words[0] == "uncheckpoint":
                model.remove_checkpoint(words[1])
            elif words[0] == "free":  # a CSV's free space, as a share of its size
                lun = model.luns[words[1]]
                free = int(lun.total_bytes * float(words[2])) // 2**20 * 2**20
                model.set_free(lun.id, free)
                answer["free"] = free
            elif words[0] == "grow":  # a VM's first disk file grows; its CSV loses the space
                with model.lock:
                    disk = model.disks[model.vms[words[1]].disk_ids[0]]
                    size = min(disk.max_bytes, disk.size_bytes + int(words[2]))
                    model.disks[disk.id] = dataclasses.replace(disk, size_bytes=size)
                    lun = model.luns[disk.lun_id]
                    model.luns[lun.id] = dataclasses.replace(
                        lun, free_bytes=lun.free_bytes - (size - disk.size_bytes))
                    model.changed()
                answer.update(path=disk.path, size=size)
            elif words[0] == "polls":  # full polls served (Get-VMReplication: the poll only)
                with model.lock:
                    answer["polls"] = model.calls.count("Get-VMReplication")
                    # The backup reads (integration services: the heavy per-VM read).
                    answer["backup_reads"] = model.calls.count("Get-VMIntegrationService")
                answer["cpu_s"] = time.process_time()  # the endpoints' process
            elif words[0] == "quit":
                break
            print(json.dumps(answer), flush=True)
    finally:
        for h in handles:
            h.stop()
    return 0


def Server(vms: int, nodes: int) -> hyperv.Server:
    """The endpoints' process (this module's ``serve``) and its command channel."""
    return hyperv.Server(vms, nodes, stream=True, module="bench.hyperv_changes")


async def _until(check: Any, limit: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 5 ms); RuntimeError past ``limit``."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > limit:
            raise RuntimeError(f"{what} did not reach the store in {limit:g} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - t0


async def run_changes(vms: int = 10_000, nodes: int = 4, samples: int = 20,
                      poll: float = POLL_S) -> dict[str, Any]:
    from ventana.backends.hyperv import Credential, HyperVBackend, HyperVConfig
    from ventana.state.events import ConnectionChanged, LinkState
    from ventana.state.findings import pct_free
    from ventana.state.model import Kind
    from ventana.state.store import Store

    server = await asyncio.to_thread(Server, vms, nodes)
    info = server.info
    store = Store()
    config = HyperVConfig(
        "HVCLUSTER01", info["user"], nodes=tuple(f"127.0.0.1:{p}" for p in info["ports"]),
        auth="ntlm", ca_bundle=info["ca"], poll_interval=poll, command_timeout=120.0,
        operation_timeout=60)
    backend = HyperVBackend(config, Credential(info["user"], info["password"], "bench"))
    links: dict[str, LinkState] = {}

    async def consume() -> None:
        async for event in backend.events():
            store.apply(event)
            if isinstance(event, ConnectionChanged):
                links[event.source] = event.state

    consumer = asyncio.create_task(consume())
    times: dict[str, list[float]] = {"created": [], "removed": [], "csv": [], "growth": []}
    try:
        started = time.perf_counter()
        await _until(lambda: store.count(Kind.VM) >= info["vms"] and len(links) == nodes
                     and all(s is LinkState.CONNECTED for s in links.values())
                     and all(len(backend.changes.get(s, ())) >= 1 for s in backend.sources),
                     600, "the inventory")
        inventory_s = time.perf_counter() - started
        first = await asyncio.to_thread(server.ask, "polls")
        polls = first["polls"]
        cpu0, reread0 = time.process_time(), len(backend.reread_s)
        rng = random.Random(11)
        plain = list(info["plain"])
        rng.shuffle(plain)

        async def ask(line: str) -> dict[str, Any]:
            return await asyncio.to_thread(server.ask, line)

        for vm_id in plain[:samples]:
            cp = (await ask(f"checkpoint {vm_id}"))["checkpoint"]
            times["created"].append(await _until(
                lambda cp=cp: store.get(Kind.CHECKPOINT, cp) is not None, 60, "a checkpoint"))
            await asyncio.sleep(rng.uniform(0, 1.0))
            await ask(f"uncheckpoint {cp}")
            times["removed"].append(await _until(
                lambda cp=cp: store.get(Kind.CHECKPOINT, cp) is None, 60, "a removal"))
            await asyncio.sleep(rng.uniform(0, 1.0))
        lun_id = info["csvs"][0]
        for i in range(samples):
            share = 0.08 if i % 2 == 0 else 0.30  # under the 10 % warning, then back above
            await ask(f"free {lun_id} {share}")
            below = share < 0.10
            times["csv"].append(await _until(
                lambda below=below: (pct_free(store.lun(lun_id)) < 10) is below,  # type: ignore[arg-type]
                60, "a CSV threshold crossing"))
            await asyncio.sleep(rng.uniform(0, 1.0))
        for vm_id in plain[samples:samples + max(3, samples // 4)]:
            grown = await ask(f"grow {vm_id} {2 * GIB}")
            times["growth"].append(await _until(
                lambda g=grown, v=vm_id: any(d.path == g["path"] and d.size_bytes == g["size"]
                                             for d in store.disks_of(v)),
                60, "a grown disk file"))
            await asyncio.sleep(rng.uniform(0, 1.0))
        last = await ask("polls")
        polls = last["polls"] - polls
        changes_s = time.perf_counter() - started - inventory_s
        client_cpu = time.process_time() - cpu0
        endpoint_cpu = last["cpu_s"] - first["cpu_s"]
        backup_reads = last["backup_reads"] - first["backup_reads"]
        rereads = backend.reread_s[reread0:]
        load = os.getloadavg()
    finally:
        await backend.close()
        try:
            await asyncio.wait_for(consumer, 15)
        except (TimeoutError, asyncio.CancelledError):
            consumer.cancel()
        await asyncio.to_thread(server.close)

    def stats(values: list[float], name: str) -> dict[str, Any]:
        values = sorted(values) or [float("nan")]
        p99 = values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]
        return {f"hvc_{name}_samples": len(values),
                f"hvc_{name}_median_ms": round(1000 * statistics.median(values), 1),
                f"hvc_{name}_p99_ms": round(1000 * p99, 1)}

    return {
        "hvc_vms": info["vms"], "hvc_nodes": nodes, "hvc_poll_s": poll,
        "hvc_inventory_s": round(inventory_s, 2),
        "hvc_full_polls": polls, "hvc_changes_s": round(changes_s, 1),
        # What the change window cost (the full polls beside the changes included): CPU is
        # what a busy shared machine does not distort; the wall-clock rows below are.
        "hvc_client_cpu_s": round(client_cpu, 2), "hvc_endpoint_cpu_s": round(endpoint_cpu, 2),
        "hvc_backup_reads": backup_reads,
        "hvc_loadavg_1m": round(load[0], 2),
        **stats(rereads, "reread"),
        **stats(times["created"], "checkpoint_created"),
        **stats(times["removed"], "checkpoint_removed"),
        **stats(times["csv"], "csv_threshold"),
        **stats(times["growth"], "disk_growth"),
    }


ROWS = (
    Row("hvc_reread_p99_ms", "targeted VM re-read (sent → published), p99 (ms)", noise=200),
    Row("hvc_client_cpu_s", "client CPU during the changes, polls beside them (s)", noise=2),
    Row("hvc_endpoint_cpu_s", "endpoints' CPU during the changes, peer (s)", noise=4),
    Row("hvc_checkpoint_created_median_ms", "checkpoint created → store, median (ms)",
        noise=200),
    Row("hvc_checkpoint_created_p99_ms", "checkpoint created → store, p99 (ms)", 2000.0,
        noise=300),
    Row("hvc_checkpoint_removed_p99_ms", "checkpoint removed → store, p99 (ms)", 2000.0,
        noise=300),
    Row("hvc_csv_threshold_p99_ms", "CSV crossing its free-space threshold → store, p99 (ms)",
        2000.0, noise=300),
    Row("hvc_disk_growth_p99_ms", "a VM's disk file growing 2 GiB → store, p99 (ms)", 2000.0,
        noise=300),
)


def suite(vms: int = 10_000, nodes: int = 4, samples: int = 20) -> dict[str, Any]:
    """What ``python -m bench`` would run: returns the figures."""
    results = asyncio.run(run_changes(vms, nodes, samples))
    print(f"\nHyper-V changes other than power — {results['hvc_vms']:,} VMs on {nodes} "
          f"endpoints, poll {results['hvc_poll_s']:g} s, {results['hvc_full_polls']} full "
          f"poll(s) during {results['hvc_changes_s']} s of changes")
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.hyperv_changes")
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "serve"])
    parser.add_argument("--vms", type=int, default=DEFAULT_SIZE[1])
    parser.add_argument("--nodes", type=int, default=DEFAULT_SIZE[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--poll", type=float, default=POLL_S)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.vms, args.nodes)
    results = asyncio.run(run_changes(args.vms, args.nodes, args.samples, args.poll))
    print(json.dumps(results, indent=2))
    from .table import load_baseline, print_regressions, print_rows

    print_regressions(print_rows(
        f"Hyper-V changes other than power, {args.nodes} nodes, {results['hvc_vms']:,} VMs",
        ROWS, results, load_baseline(),
        "" if (args.nodes, args.vms) == DEFAULT_SIZE else f"@{args.nodes}x{args.vms}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
