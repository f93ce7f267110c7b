"""The console core without Textual: a backend's events into the store, actions to the log.

``ventana.core.Console`` is driven here as a headless front end would drive it:
its own ``follow`` loop (pump + flush), a listener that records what it is told,
and the action path through ``resolve`` → ``plan`` → ``execute``.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from factories import NOW

from ventana.backends.base import Backend, Executor
from ventana.backends.sim import SimBackend, SimConfig
from ventana.core import Console, Notice
from ventana.state.actionlog import ActionLog
from ventana.state.events import ConnectionChanged, LinkState, Remove, Upsert
from ventana.state.model import VM, Cluster, Kind, Platform, PowerState
from ventana.state.plans import plan_merge
from ventana.state.plans_vsphere import REMOVE_ALL


class Heard:
    """A listener that keeps what the console said."""

    def __init__(self) -> None:
        self.notices: list[Notice] = []
        self.facts: dict[str, Any] = {}
        self.final: list[str] = []
        self.windows = 0

    def notice(self, notice: Notice) -> None:
        self.notices.append(notice)

    def header(self, **facts: Any) -> None:
        self.facts.update(facts)

    def final_state_changed(self, target: str) -> None:
        self.final.append(target)

    def window_changed(self) -> None:
        self.windows += 1

    def inventory_applied(self) -> None:  # optional: a listener without it is not called
        self.inventory = getattr(self, "inventory", [])
        self.inventory.append(self.store.count(Kind.VM))


class Gc:
    """Whether the cyclic GC was on each time the store applied a slice of the inventory."""

    def __init__(self, core: Console) -> None:
        self.core = core
        self.enabled: list[bool] = []

    def __call__(self, delta: object) -> None:
        if self.core.inventory_applying:
            self.enabled.append(gc.isenabled())


def console(tmp_path: Path, *, read_only: bool = False) -> tuple[Console, Heard]:
    config = SimConfig(seed=7, rate=0.0, speed=1e6, epoch=NOW, read_only=read_only,
                       merge_failure_rate=0.0)
    heard = Heard()
    core = Console(SimBackend(config), log=ActionLog.open(tmp_path / "actions.db"),
                   clock=lambda: NOW, listener=heard)
    heard.store = core.store  # type: ignore[attr-defined]
    return core, heard


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    waited = 0.0
    while not condition():
        assert waited < timeout, "condition not reached in time"
        await asyncio.sleep(0.05)
        waited += 0.05


async def loaded(core: Console) -> asyncio.Task[None]:
    loop = asyncio.create_task(core.follow())
    await until(lambda: core.store.count(Kind.VM) >= 74 and not core.pending)
    return loop


def test_the_core_imports_no_textual() -> None:
    code = ("import sys, ventana.core; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich') "
            "or m.startswith('ventana.tui')]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_the_pump_fills_the_store_and_the_header_hears_findings(tmp_path: Path) -> None:
    core, heard = console(tmp_path)
    loop = await loaded(core)
    try:
        assert not core.loading
        assert core.store.count(Kind.NODE) > 0 and core.store.count(Kind.LUN) > 0
        await until(lambda: not core.findings.pending)
        core.sync_findings(force=True)
        bad, warn, info = heard.facts["findings"]
        assert bad + warn + info > 0 and heard.facts["findings_pending"] is False
        assert core.header_facts()["mode"] == "read-write"
    finally:
        loop.cancel()
        await core.close()


async def test_the_first_inventory_is_applied_without_the_gc_and_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No cyclic collection walks the inventory while it is applied; the GC is on again
    after it, and the listener hears once that the whole inventory is in the store."""
    monkeypatch.setattr("ventana.core.console.INVENTORY_SLICE", 50)  # several slices
    was_enabled = gc.isenabled()  # (another test's console may have left it off)
    gc.enable()
    try:
        core, heard = console(tmp_path)
        seen = Gc(core)
        core.store.subscribe(seen)
        loop = await loaded(core)
        try:
            await until(lambda: not core.inventory_applying)
            assert len(seen.enabled) > 1 and not any(seen.enabled)
            assert gc.isenabled()
            assert heard.inventory == [core.store.count(Kind.VM)]  # type: ignore[attr-defined]
        finally:
            loop.cancel()
            await core.close()
        assert gc.isenabled()
    finally:
        if not was_enabled:
            gc.disable()


class LateInventory(Backend):
    """An inventory that outlasts the first load's wait, then comes all at once."""

    name = "late"

    def __init__(self, vms: int, late_s: float) -> None:
        super().__init__("late", read_only=True)
        self.vms, self.late_s = vms, late_s

    def _make_executor(self) -> Executor:  # pragma: no cover - read-only
        raise RuntimeError("read-only")

    async def events(self):  # type: ignore[no-untyped-def]
        yield ConnectionChanged(self.name, LinkState.CONNECTING)
        await asyncio.sleep(self.late_s)
        yield Upsert(Cluster("c", "C", Platform.HYPERV))
        for i in range(self.vms):
            yield Upsert(VM(f"v{i:04d}", f"vm-{i:04d}", "c", "n", PowerState.RUNNING))
        yield ConnectionChanged(self.name, LinkState.CONNECTED)
        await asyncio.Event().wait()


async def test_a_burst_after_the_first_load_is_applied_in_slices_and_settled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest of an inventory that came after the first load stopped waiting is one
    big batch: it is applied in slices (the loop turns between them), announced like
    the inventory, and ``settle`` returns only once all of it is in the store."""
    monkeypatch.setattr("ventana.core.console.INITIAL_LOAD_MAX_S", 0.1)
    monkeypatch.setattr("ventana.core.console.INVENTORY_SLICE", 100)
    monkeypatch.setattr("ventana.core.console.BURST_EVENTS", 400)
    heard = Heard()
    core = Console(LateInventory(1000, late_s=0.3), log=None, listener=heard,
                   clock=lambda: NOW)
    heard.store = core.store  # type: ignore[attr-defined]
    sliced: list[int] = []
    core.store.subscribe(lambda d: sliced.append(len(d.changes)) if core.inventory_applying
                         else None)
    pump = asyncio.ensure_future(core.pump())
    try:
        def flushed() -> bool:
            core.flush()
            return not core.loading

        await until(flushed)  # gave up waiting: CONNECTING alone was the first load
        assert core.store.count(Kind.VM) == 0
        await until(lambda: len(core.pending) > 1000)
        await core.settle()  # its flush starts the slices; it returns after the last
        assert core.store.count(Kind.VM) == 1000 and not core.inventory_applying
        assert len(sliced) >= 10 and max(sliced) <= 100
        assert heard.inventory[-1] == 1000  # type: ignore[attr-defined]
        assert not core._gc_paused
    finally:
        pump.cancel()
        await core.close()


async def test_the_first_findings_are_computed_between_flushes(tmp_path: Path) -> None:
    """Once the inventory is in, one flush starts the findings; they carry on a slice at
    a time by themselves, without waiting for the next flushes."""
    config = SimConfig(seed=7, vms=2000, rate=0.0, epoch=NOW, read_only=True)
    core = Console(SimBackend(config), log=None, clock=lambda: NOW)
    pump = asyncio.ensure_future(core.pump())
    try:
        def applied() -> bool:
            core.flush()
            return not core.loading and not core.inventory_applying

        await until(applied)
        core.flush()  # the first slice of findings, and the next one queued
        assert core.findings.pending > 0
        await until(lambda: not core.findings.pending)  # no flush meanwhile
    finally:
        pump.cancel()
        await core.close()


async def test_a_merge_through_the_core_is_logged(tmp_path: Path) -> None:
    core, heard = console(tmp_path)
    loop = await loaded(core)
    try:
        vm = next(v for v in sorted(core.store.vms(), key=lambda v: v.name)
                  if core.store.checkpoints_of(v.id)
                  and not plan_merge(core.store, v.id, NOW).blocking)
        resolved = core.resolve("merge", vm.id)
        assert resolved is not None and resolved.spec.name == "merge"
        plan = core.plan(resolved.spec.name, vm.id, **resolved.params)
        assert plan is not None
        result = await core.execute(plan, vm.name)
        assert result is not None and result.state.value == "ok", result
        assert core.actions_running == 0
        (row,) = core.action_log.rows()  # type: ignore[union-attr]
        assert (row.action, row.outcome, row.target_name) == ("merge", "ok", vm.name)
        assert row.final_state == "Operational"
        assert core.final_state_of(vm.id) == "Operational"
        assert heard.final == [f"vm:{vm.id}"]
        done = [n for n in heard.notices if n.title == "Merge finished"]
        assert done and done[0].severity == "information"
        # The outcome read the store after settling: no checkpoint left.
        assert core.store.checkpoints_of(vm.id) == []
    finally:
        loop.cancel()
        await core.close()


async def test_a_command_opens_the_action_of_the_vms_platform(tmp_path: Path) -> None:
    core, heard = console(tmp_path)
    loop = await loaded(core)
    try:
        vm = sorted(core.store.vms(), key=lambda v: v.name)[0]
        assert core.resolve("upgrade", vm.id) is not None
        cluster = core.store.get(Kind.CLUSTER, vm.cluster_id)
        assert isinstance(cluster, Cluster)
        core.store.apply(Upsert(Cluster(cluster.id, cluster.name, Platform.VSPHERE,
                                        cluster.nodes)))
        merge = core.resolve("merge", vm.id)
        assert merge is not None and merge.spec.name == REMOVE_ALL
        assert core.wants_estimate(merge.spec)
        heard.notices.clear()
        assert core.resolve("upgrade", vm.id) is None
        (why,) = heard.notices
        assert why.severity == "warning"
        assert why.text.startswith(f"A configuration-version upgrade is for Hyper-V VMs; "
                                   f"{vm.name} is a vSphere VM")
        assert core.resolve("merge", None) is None
        assert heard.notices[-1].text == "Select a VM first."
        # Findings name the action the command opens there.
        await until(lambda: not core.findings.pending)
        remedies = {f.remedy for f in core.findings.findings() if f.vm_id == vm.id}
        assert "merge" not in remedies and "upgrade" not in remedies
    finally:
        loop.cancel()
        await core.close()


async def test_a_cancelled_plan_is_logged_and_a_read_only_core_refuses(tmp_path: Path
                                                                       ) -> None:
    core, heard = console(tmp_path, read_only=True)
    loop = await loaded(core)
    try:
        vm = next(v for v in core.store.vms() if core.store.checkpoints_of(v.id))
        plan = core.plan("merge", vm.id)
        assert plan is not None
        core.cancelled(plan)
        assert heard.notices[-1].text.endswith("cancelled; nothing was sent.")
        assert core.action_log.rows()[0].outcome == "cancelled"  # type: ignore[union-attr]
        assert await core.execute(plan, vm.name) is None
        refused = heard.notices[-1]
        assert refused.title == "Refused" and refused.severity == "error"
        assert core.read_only_for(vm.id)
    finally:
        loop.cancel()
        await core.close()


async def test_one_bad_event_costs_only_itself(tmp_path: Path) -> None:
    """A batch holding one event the store cannot take: the others still land
    (a removal lost with it would leave a deleted checkpoint on screen), the
    source is marked stale and the operator is told how many were skipped."""
    core, heard = console(tmp_path)
    loop = await loaded(core)
    try:
        checkpoint = next(iter(core.store.all(Kind.CHECKPOINT)))
        bad = Remove("no-such-kind", "x")  # type: ignore[arg-type]
        core.pending.extend([bad, Remove(Kind.CHECKPOINT, checkpoint.id)])
        await until(lambda: not core.pending)
        assert core.store.get(Kind.CHECKPOINT, checkpoint.id) is None
        [said] = [n for n in heard.notices if "bad data" in n.text]
        assert "1 event(s) of 2 skipped" in said.text
    finally:
        loop.cancel()
