"""Team mode under load: 5 console processes x 200 actions on one PostgreSQL.

A throwaway PostgreSQL (tests/peers/postgres.py, ``fsync=on``: the durable
setting a team runs) holds one shared action log. Each console is its own
process with its own ``ActionLog``: it picks VMs at random among a few (so
consoles collide), writes the intent row with the VM's lease
(``begin(claim=…)``), holds it for a few milliseconds as if the request were
out, and appends the outcome. Measured: the intent commit's latency (what an
operator waits for before anything is sent), median and p99, and how many
attempts found the VM held by another console. Checked: no VM was ever held
by two consoles at once — every console reports its hold intervals (wall
clock, taken after the intent commit and before the outcome write) and no two
intervals on one VM overlap.

    python -m bench.team [--consoles 5] [--actions 200] [--vms 20]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def worker(url: str, actions: int, vms: int, seed: int) -> dict[str, Any]:
    from ventana.state.actionlog import ActionLog
    from ventana.state.leases import ActionBusy, Claim

    rng = random.Random(seed)
    latencies: list[float] = []
    holds: list[tuple[str, float, float]] = []
    busy = 0
    with ActionLog.open(url) as log:
        for _ in range(actions):
            vm = f"vm-{rng.randrange(vms):03d}"
            t0 = time.perf_counter()
            try:
                row = log.begin(action="merge", target_system="sim://bench", mode="read-write",
                                target_object=f"vm:{vm}", target_name=vm,
                                plan={"bench": True}, findings=[], override=False,
                                confirmed=True, claim=Claim(ttl=30))
            except ActionBusy:
                busy += 1
                continue
            latencies.append(time.perf_counter() - t0)
            held = time.time()
            time.sleep(rng.uniform(0.001, 0.01))  # the request is out
            released = time.time()
            log.finish(row, outcome="ok")
            holds.append((vm, held, released))
    return {"latencies": latencies, "holds": holds, "busy": busy}


def overlaps(holds: list[tuple[str, float, float]]) -> int:
    """How many times a VM was held by two consoles at once."""
    by_vm: dict[str, list[tuple[float, float]]] = {}
    for vm, start, end in holds:
        by_vm.setdefault(vm, []).append((start, end))
    bad = 0
    for spans in by_vm.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                bad += 1
    return bad


def run_team(consoles: int = 5, actions: int = 200, vms: int = 20) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from peers.postgres import PgServer

    from ventana.state.actionlog import ActionLog

    with PgServer(fsync=True) as pg:
        pg.psql("create database team")
        url = pg.url("team")
        ActionLog.open(url).close()  # the schema, once
        procs = [subprocess.Popen(
            [sys.executable, "-m", "bench.team", "--worker", url, "--actions", str(actions),
             "--vms", str(vms), "--seed", str(i)], cwd=ROOT, stdout=subprocess.PIPE,
            text=True) for i in range(consoles)]
        t0 = time.perf_counter()
        outs = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
        wall = time.perf_counter() - t0
        with ActionLog.open(url) as log:
            rows = log.rows()
    latencies = sorted(x for o in outs for x in o["latencies"])
    holds = [tuple(h) for o in outs for h in o["holds"]]
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None
    return {
        "team_consoles": consoles,
        "team_attempts": consoles * actions,
        "team_actions_run": len(latencies),
        "team_busy_refusals": sum(o["busy"] for o in outs),
        "team_rows": len(rows),
        "team_overlaps": overlaps(holds),  # type: ignore[arg-type]
        "team_intent_median_ms": round(statistics.median(latencies) * 1000, 2)
        if latencies else None,
        "team_intent_p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "team_wall_s": round(wall, 2),
    }


def report(results: dict[str, Any]) -> None:
    print(f"\nTeam mode — {results['team_consoles']} consoles x "
          f"{results['team_attempts'] // results['team_consoles']} actions on one PostgreSQL "
          "(fsync on)")
    print(f"  actions run {results['team_actions_run']}, refused (VM held by another console) "
          f"{results['team_busy_refusals']}, rows {results['team_rows']}")
    print(f"  VM acted on twice at once: {results['team_overlaps']} (must be 0)")
    print(f"  intent commit (row + lease): median {results['team_intent_median_ms']} ms, "
          f"p99 {results['team_intent_p99_ms']} ms; wall {results['team_wall_s']} s")


def run_team_suite(args: argparse.Namespace) -> None:
    """The `make bench` row (registered in bench/__main__.py)."""
    results = run_team()
    report(results)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = out / f"team-{stamp}.json"
    path.write_text(json.dumps({"when": stamp, "results": results}, indent=2) + "\n")
    print(f"written: {path}")


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.team")
    p.add_argument("--worker", metavar="URL")
    p.add_argument("--consoles", type=int, default=5)
    p.add_argument("--actions", type=int, default=200)
    p.add_argument("--vms", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.actions, args.vms, args.seed)))
        return 0
    results = run_team(args.consoles, args.actions, args.vms)
    report(results)
    return 0 if results["team_overlaps"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
