"""Findings recomputation at scale: the time from one change to updated findings.

Builds the simulated cluster at N VMs (10,000 by default) into a store, computes
every finding once, then applies many single changes of the kinds a live
cluster sends — a VM's power or memory, a checkpoint taken or removed, a
differencing disk growing, a LUN's free space moving, a merge task
progressing, a node's backup agent — one ``store.apply`` each, and times the
engine's incremental recomputation (target: < 20 ms) and the whole apply.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
import time
from datetime import timedelta

from ventana.backends.sim import SimConfig, build_inventory
from ventana.state.events import Event, Remove, Upsert
from ventana.state.findings import FindingsEngine
from ventana.state.model import (
    GB,
    Checkpoint,
    CheckpointKind,
    Kind,
    PowerState,
    ServiceState,
    Task,
    TaskState,
)
from ventana.state.store import Store, ref


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_findings(vms: int = 10_000, changes: int = 3_000, seed: int = 5) -> dict:
    config = SimConfig(seed=7, vms=vms, rate=0.0)
    inv = build_inventory(config)
    store = Store()
    store.apply_many(Upsert(e) for e in inv.entities())
    now = config.start_time()
    engine = FindingsEngine(store, clock=lambda: now)
    started = time.perf_counter()
    engine.attach()
    full_s = time.perf_counter() - started

    rng = random.Random(seed)
    vm_list = list(store.vms())
    luns = list(store.luns())
    nodes = list(store.nodes())
    diffs = [d for d in store.all(Kind.DISK) if d.parent_path]  # type: ignore[union-attr]
    engine_ms: list[float] = []
    apply_ms: list[float] = []
    kinds: dict[str, int] = {}

    def one(kind: str, event: Event) -> None:
        t0 = time.perf_counter()
        store.apply(event)
        apply_ms.append((time.perf_counter() - t0) * 1000)
        engine_ms.append(engine.last_recompute_s * 1000)
        kinds[kind] = kinds.get(kind, 0) + 1

    for i in range(changes):
        r = i % 7
        vm = store.vm(rng.choice(vm_list).id)
        assert vm is not None
        if r == 0:
            power = PowerState.OFF if vm.power is PowerState.RUNNING else PowerState.RUNNING
            one("vm power", Upsert(dataclasses.replace(vm, power=power)))
        elif r == 1:
            one("vm memory", Upsert(dataclasses.replace(vm, memory_mb=vm.memory_mb + 1)))
        elif r == 2:
            cp_id = f"bench-cp-{i}"
            one("checkpoint taken", Upsert(Checkpoint(
                cp_id, vm.id, "bench", None, CheckpointKind.PRODUCTION,
                now - timedelta(hours=rng.uniform(1, 2000)), "", GB)))
            one("checkpoint removed", Remove(Kind.CHECKPOINT, cp_id))
        elif r == 3 and diffs:
            disk = store.get(Kind.DISK, rng.choice(diffs).id)
            if disk is not None:
                one("disk grew", Upsert(dataclasses.replace(
                    disk, size_bytes=disk.size_bytes + 64 * 1024 * 1024)))  # type: ignore[arg-type]
        elif r == 4:
            lun = store.lun(rng.choice(luns).id)
            assert lun is not None
            free = max(0, lun.free_bytes + rng.choice((-1, 1)) * GB)
            one("lun free", Upsert(dataclasses.replace(lun, free_bytes=free)))
        elif r == 5:
            task_id = f"bench-merge-{i}"
            one("merge task", Upsert(Task(task_id, "merge", ref(Kind.VM, vm.id), vm.name, 0.0,
                                          TaskState.RUNNING, started=now)))
            one("merge task ended", Upsert(Task(task_id, "merge", ref(Kind.VM, vm.id), vm.name,
                                                100.0, TaskState.OK, started=now, ended=now)))
        else:
            node = store.node(rng.choice(nodes).id)
            assert node is not None
            state = (ServiceState.STOPPED if node.backup_agent_state is ServiceState.RUNNING
                     else ServiceState.RUNNING)
            one("node agent", Upsert(dataclasses.replace(node, backup_agent_state=state)))
    return {
        "findings_vms": vms,
        "findings_count": len(engine),
        "findings_full_s": round(full_s, 3),
        "findings_changes": len(engine_ms),
        "findings_median_ms": round(statistics.median(engine_ms), 3),
        "findings_p99_ms": round(_pct(engine_ms, 0.99), 3),
        "findings_max_ms": round(max(engine_ms), 3),
        "findings_apply_median_ms": round(statistics.median(apply_ms), 3),
        "findings_apply_p99_ms": round(_pct(apply_ms, 0.99), 3),
        "findings_change_kinds": kinds,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run_findings(), indent=2))
