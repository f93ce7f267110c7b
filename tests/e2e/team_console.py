"""A console without a screen, for team-mode tests: one process = one console.

Builds what ``ventana`` builds — the simulated cluster, a store fed from its
stream, the action log at ``--log`` (a postgresql:// URL) and an
``ActionRunner`` — then plans and runs one action through the guarded path
(plan → pre-flight → typed name → intent row + lease → backend → outcome).
It prints one JSON object per line on stdout: ``plan``, ``started`` (the
intent row is committed and the request is going out), ``refused``/
``done``, ``flushed`` (no outcome left waiting for the database), ``exit``.

Options shape the test: ``--go FILE`` waits for FILE to exist before
confirming (two consoles racing), ``--lun-free LUN=BYTES`` sets a LUN's free
space in this console's simulated cluster before connecting (two consoles see
the same cluster), ``--as-host NAME`` makes this console report another host
name (a console on another machine: its lease is judged by its expiry, not by
a pid this host can check).

    python tests/e2e/team_console.py --log URL --vm NAME [--action merge] [--speed S]
    python tests/e2e/team_console.py --log URL --describe      # VMs, LUNs, merge needs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def say(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **data}, default=str), flush=True)


class Recorder:
    def write_action(self, data: dict[str, Any]) -> None:
        if data.get("phase") == "start":
            say("started", task=data.get("task"), target=data.get("target"))


async def main(args: argparse.Namespace) -> int:
    if args.as_host:
        import ventana.state.actionlog as actionlog

        actionlog._HOST = args.as_host  # this console "runs on another machine"
    from ventana.backends.actions import ActionRefused, ActionRunner
    from ventana.backends.sim import SimBackend, SimConfig
    from ventana.state.actionlog import ActionLog, ActionLogError
    from ventana.state.derived import merge_needed_by_lun
    from ventana.state.events import ConnectionChanged, LinkState
    from ventana.state.store import Store

    backend = SimBackend(SimConfig(
        seed=7, rate=0, speed=args.speed, epoch=datetime(2024, 10, 14, 8, 0, tzinfo=UTC),
        merge_failure_rate=0.0, task_retention_s=None))
    for item in args.lun_free:
        lun_id, _, value = item.partition("=")
        lun = backend.world.luns[lun_id]
        backend.world.adjust_free(lun_id, int(value) - lun.free_bytes)
    store = Store()
    stream = backend.events()
    async for event in stream:
        store.apply(event)
        if isinstance(event, ConnectionChanged) and event.state is LinkState.CONNECTED:
            break
    merges_sent: list[str] = []

    async def pump() -> None:
        async for event in stream:
            store.apply(event)
            task = getattr(event, "entity", None)
            if getattr(task, "kind", None) == "merge" and task.id not in merges_sent:  # type: ignore[union-attr]
                merges_sent.append(task.id)  # type: ignore[union-attr]

    pumping = asyncio.create_task(pump())
    if args.describe:
        for vm in store.vms():
            cps = store.checkpoints_of(vm.id)
            if not cps:
                continue
            lun = store.lun(vm.lun_id)
            say("vm", id=vm.id, name=vm.name, lun=vm.lun_id, free=lun.free_bytes if lun else None,
                needs=merge_needed_by_lun(store, vm.id), replication=vm.replication.value,
                power=vm.power.value)
        await backend.close()
        return 0
    try:
        log = ActionLog.open(args.log, lease_ttl=args.ttl)
    except ActionLogError as exc:
        say("refused", reason=f"log: {exc}")
        await backend.close()
        return 3
    runner = ActionRunner(store, backend, log, recorder=Recorder())
    vm = next(v for v in store.vms() if v.name == args.vm)
    await runner.read_leases()  # as the console does before it opens a plan
    plan = runner.plan(args.action, vm.id)
    say("plan", blocking=[f.code for f in plan.blocking], reserved=plan.facts.get(
        "reserved_by_running_merges"), needed=plan.space_needed, free=plan.free_now)
    if args.go:
        while not Path(args.go).exists():
            await asyncio.sleep(0.01)
    code = 0
    try:
        result = await runner.execute(plan, vm.name)
        say("done", state=result.state.value, error=result.error, merges_sent=merges_sent)
    except ActionRefused as exc:
        say("refused", reason=str(exc), merges_sent=merges_sent)
        code = 2
    deadline = time.monotonic() + args.flush_wait
    while log.pending_outcomes and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    say("flushed" if not log.pending_outcomes else "unflushed", pending=log.pending_outcomes,
        merges_sent=merges_sent)
    log.close()
    await backend.close()
    pumping.cancel()
    say("exit", code=code)
    return code


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--log")
    p.add_argument("--vm")
    p.add_argument("--action", default="merge")
    p.add_argument("--speed", type=float, default=600.0)
    p.add_argument("--ttl", type=float, default=60.0)
    p.add_argument("--go")
    p.add_argument("--lun-free", action="append", default=[])
    p.add_argument("--as-host")
    p.add_argument("--describe", action="store_true")
    p.add_argument("--flush-wait", type=float, default=60.0)
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
