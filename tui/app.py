"""The Ventana app: wires a backend's event stream to the store and panes.

Events are pumped from the backend into a buffer and applied to the store
12.5 times a second in one batch (an event reaches the screen within ~80 ms
however busy the cluster is; a flood costs one redraw per batch). Each
batch's Delta is routed to the panes that show what changed (keyed updates,
no rebuilds). Actions go through the ActionRunner (plan → pre-flight → typed
confirm → log); the UI never calls a backend mutation itself. Read-only is one reactive consulted by
``check_action``; the runner and backend refuse again below.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Protocol

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Input

from ventana.backends.actions import ActionRecorder, ActionRefused, ActionRunner
from ventana.backends.base import Backend, ReadOnlyError
from ventana.backends.window_runner import WindowRunner
from ventana.state.acks import AckBook, AckError, follow, open_counts
from ventana.state.actionlog import ActionLog, ActionLogError
from ventana.state.derived import human_bytes
from ventana.state.events import ConnectionChanged, Event, LinkState
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import Kind, Severity, TaskState
from ventana.state.plans import Plan
from ventana.state.plans_vsphere import (
    CONSOLIDATE,
    CREATE_SNAPSHOT,
    ESTIMATES,
    REMOVE_ALL,
    REMOVE_SNAPSHOT,
    ServerEstimate,
    is_vsphere,
)
from ventana.state.rebuild import RebuildStore
from ventana.state.sanitize import clean
from ventana.state.store import Delta, Store
from ventana.state.window import WindowError, WindowStore

from . import commands
from .checkpoints_pane import CheckpointsPane
from .confirm_screen import ConfirmScreen
from .findings_screen import FindingsScreen
from .header import ReadOnlyBanner, StatusHeader
from .help_screen import HelpScreen
from .log_screen import LogScreen, RecordedActionsScreen
from .luns_pane import LunsPane
from .nodes_pane import NodesPane
from .plan_screen import Confirmation, PlanScreen
from .rebuild_screen import RebuildScreen
from .task_strip import TaskStrip
from .vm_table import VmTable
from .window_screen import RunChoice, WindowScreen

INITIAL_LOAD_MAX_S = 5.0
# The first inventory is applied this many events per turn of the event loop, so
# a key or a frame never waits for the whole of it (about 10 ms of work each).
INVENTORY_SLICE = 1000
FINDINGS_TICK_S = 30.0  # age thresholds and snooze expiry are checked this often
# The first inventory's findings are computed in slices of this many seconds per
# flush (about 0.5 s of work at 10,000 VMs): a redraw never waits longer for them.
FINDINGS_SLICE_S = 0.008


#: Hyper-V workflows, and how a notice names them on a vSphere VM.
HYPERV_ONLY = {"upgrade": "A configuration-version upgrade", "rebuild": "The rebuild workflow",
               "compact": "Compacting a VHDX", "delete": "Deleting a VM"}


class EventRecorder(ActionRecorder, Protocol):
    error: str | None

    def write_event(self, event: Event) -> None: ...


class VentanaApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Ventana"
    BINDINGS = commands.bindings()

    read_only: reactive[bool] = reactive(False)

    def __init__(
        self,
        backend: Backend,
        *,
        log: ActionLog | None,
        log_error: str = "",
        recorder: EventRecorder | None = None,
        clock: Callable[[], datetime] | None = None,
        flags: str = "",
        mode: str | None = None,
        read_only_reason: str = "",
        flush_hz: float = 12.5,
        findings_config: FindingsConfig | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.store = Store()
        clock = clock or backend.now
        self.clock = clock
        self.recorder = recorder
        self.action_log = log
        self.runner = ActionRunner(
            self.store, backend, log, log_error=log_error, recorder=recorder, clock=clock,
            mode=mode, flags=flags,
        )
        self.flags = flags
        self.runner.settle = self._settle_store
        self.read_only_reason = read_only_reason or "this session cannot change the cluster"
        self._flush_interval = 1.0 / flush_hz
        self._pending: list[Event] = []
        self._selected_vm: str | None = None
        self._final_states: dict[str, str] = {}  # "vm:id" → final state, from the action log
        self._recording_lost = False
        self._actions_running = 0
        # The first inventory is applied in one batch (every row built once);
        # until it is complete the header counts what has arrived.
        self._loading = True
        self._inventory_done = False
        self._inventory_applying = False  # the first inventory's slices are being applied
        self._load_started = time.monotonic()
        self.set_reactive(VentanaApp.read_only, backend.read_only)
        # Findings: live, incremental; the first inventory is computed in slices
        # by the flush timer so it never delays the first screen.
        self.findings = FindingsEngine(self.store, findings_config, clock).attach(eager=False)
        self.acks: AckBook | None = None
        self.acks_error = ""
        if self.runner.mode == "replay":
            self.acks_error = "a replay cannot acknowledge findings"
        elif log is None:
            self.acks_error = f"the action log is unavailable ({log_error or 'not opened'})"
        else:
            try:
                self.acks = AckBook.open(log.path, grace=self.findings.config.ack_grace)
            except AckError as exc:
                self.acks_error = str(exc)
        if self.acks is not None:
            follow(self.findings, self.acks, clock)
        self._findings_seen = (-1, -1)

    # -- layout ---------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        if self.read_only:
            yield ReadOnlyBanner(self.read_only_reason, id="read-only-banner")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                nodes = NodesPane(id="nodes")
                nodes.border_title = "Nodes"
                yield nodes
                vms = VmTable(self.store, clock=self.clock, id="vms")
                vms.border_title = "VMs"
                yield vms
            with Vertical(id="right"):
                luns = LunsPane(id="luns")
                luns.border_title = "LUNs / CSVs"
                yield luns
                cps = CheckpointsPane(self.clock, id="checkpoints")
                cps.border_title = "Checkpoints"
                yield cps
        strip = TaskStrip(id="tasks")
        strip.border_title = "Tasks"
        yield strip
        yield Input(
            placeholder="filter VMs: words, power:off, lun:CSV-DATA1, gen:1, ckpt>3, "
            "oldest>30d, diff>100GB (Esc clears)",
            id="filter",
        )
        yield Footer()

    def on_mount(self) -> None:
        header = self.query_one(StatusHeader)
        header.target = clean(self.backend.target)
        header.mode = self.runner.mode
        header.flags = self.flags
        if self.action_log is None and not self.read_only:
            header.flags = " ".join(
                f for f in (self.flags, "NO ACTION LOG — ACTIONS REFUSED") if f
            )
            self.notify(
                f"The action log cannot be opened, so every action will be refused: "
                f"{clean(self.runner.log_error)}",
                title="Action log unavailable", severity="error", markup=False, timeout=60,
            )
        self._announce_unfinished_rebuilds()
        self.store.subscribe(self._on_delta)
        self.set_interval(self._flush_interval, self._flush_events)
        self.set_interval(FINDINGS_TICK_S, self._tick_findings)
        self.run_worker(self._pump(), name="event-pump", group="backend", exit_on_error=False)
        self.run_worker(self._load_final_states(), group="final-states", exit_on_error=False)
        self.query_one(VmTable).focus()

    # -- the event stream --------------------------------------------------------
    async def _pump(self) -> None:
        try:
            async for event in self.backend.events():
                self._pending.append(event)
                if isinstance(event, ConnectionChanged) and event.state is not LinkState.CONNECTING:
                    self._inventory_done = True
                if self.recorder is not None:
                    self.recorder.write_event(event)
        except Exception as exc:  # a backend must never take the console down
            self._inventory_done = True
            reason = clean(f"{type(exc).__name__}: {exc}")
            self._pending.append(
                ConnectionChanged(self.backend.name, LinkState.DISCONNECTED, reason)
            )
            self.notify(f"Backend stopped: {reason}", severity="error", markup=False)

    def _flush_events(self) -> None:
        self._flush_store()
        if not self._loading and not self._inventory_applying and self.findings.pending:
            self.findings.drain(FINDINGS_SLICE_S)
        self.sync_findings()

    def _flush_store(self) -> None:
        if self.recorder is not None and self.recorder.error and not self._recording_lost:
            self._recording_lost = True
            self.query_one(StatusHeader).flags = " ".join(
                f for f in (self.flags, "RECORDING STOPPED") if f
            )
            self.notify(
                f"Recording stopped: {clean(str(self.recorder.error))}",
                severity="error", markup=False, timeout=30,
            )
        if not self._pending or self._inventory_applying:
            return
        if self._loading:
            waited = time.monotonic() - self._load_started
            if not self._inventory_done and waited < INITIAL_LOAD_MAX_S:
                self.query_one(StatusHeader).counts = (
                    f"loading… {len(self._pending):,} objects received"
                )
                return
            self._loading = False
            batch, self._pending = self._pending, []
            self._inventory_applying = True
            self.run_worker(self._apply_inventory(batch), name="inventory", group="inventory",
                            exit_on_error=False)
            return
        batch, self._pending = self._pending, []
        self._apply(batch)

    async def _apply_inventory(self, batch: list[Event]) -> None:
        """The first inventory, ``INVENTORY_SLICE`` events per turn of the loop."""
        # The inventory is long-lived and acyclic: no collections while it
        # is built, then it leaves the cyclic GC's generations so that a
        # full collection never pauses a redraw for hundreds of ms.
        gc.disable()
        try:
            for start in range(0, len(batch), INVENTORY_SLICE):
                self._apply(batch[start : start + INVENTORY_SLICE])
                await asyncio.sleep(0)
        finally:
            gc.freeze()
            gc.enable()
            self._inventory_applying = False

    def _apply(self, batch: list[Event]) -> None:
        try:
            self.store.apply_many(batch)
        except Exception as exc:  # bad data from a source must not stop the console
            reason = clean(f"bad data from {self.backend.name}: {type(exc).__name__}: {exc}")
            self.store.apply(ConnectionChanged(self.backend.name, LinkState.STALE, reason))
            self.notify(reason, title="Data error", severity="error", markup=False, timeout=30)

    def _on_delta(self, delta: Delta) -> None:
        # While the console closes its panes are gone; the store is still right.
        with contextlib.suppress(NoMatches):
            self._route(delta)

    def _route(self, delta: Delta) -> None:
        store = self.store
        nodes: set[str] = set()
        luns: set[str] = set()
        tasks = False
        selected_touched = False
        sel = self._selected_vm
        for change in delta.changes:
            kind = change.kind
            if kind is Kind.NODE:
                nodes.add(change.id)
            elif kind is Kind.LUN:
                luns.add(change.id)
                entity = change.new or change.old
                if entity is not None and getattr(entity, "owner_node_id", ""):
                    nodes.add(entity.owner_node_id)  # type: ignore[union-attr]
            elif kind is Kind.TASK:
                tasks = True
            elif sel is not None and (
                (kind is Kind.CHECKPOINT and (change.new or change.old).vm_id == sel)  # type: ignore[union-attr]
                or (kind is Kind.VM and change.id == sel)
            ):
                selected_touched = True
        with self.batch_update():
            vms = self.query_one(VmTable)
            vms.apply_delta(delta)
            vms.flush()  # one buffering stage (the app's), not two: lower latency
            if nodes:
                self.query_one(NodesPane).sync(store, nodes)
            if luns:
                self.query_one(LunsPane).sync(store, luns)
            if tasks:
                self.query_one(TaskStrip).sync(store)
            if selected_touched:
                self.query_one(CheckpointsPane).show_vm(store, sel)
            if delta.links_changed:
                self._sync_link()
            self._sync_counts()

    def _sync_link(self) -> None:
        header = self.query_one(StatusHeader)
        header.link = self.store.link_state()
        header.reason = self.store.link_reason()
        per_target = getattr(self.backend, "read_only_of_link", None)
        if callable(per_target):  # several targets: each one's link and mode
            header.targets = tuple(
                (link.source, link.state, link.reason, per_target(link.source))
                for link in self.store.links.values()
            )
        stale = self.store.stale
        self.query_one(VmTable).stale = stale
        self.query_one(NodesPane).set_stale(stale)
        self.query_one(LunsPane).set_stale(stale)
        for pane in (self.query_one(CheckpointsPane), self.query_one(TaskStrip)):
            pane.set_class(stale, "stale")

    def _tick_findings(self) -> None:
        self.findings.tick()
        if self.acks is not None:
            with contextlib.suppress(AckError):
                self.acks.expire(self.clock())
        self.sync_findings(force=True)

    def sync_findings(self, force: bool = False) -> None:
        """The header's open-finding counts (recounted only when something changed)."""
        seen = (self.findings.version, self.acks.version if self.acks else 0)
        if not force and seen == self._findings_seen and not self.findings.pending:
            return
        self._findings_seen = seen
        counts = open_counts(self.findings, self.acks, self.clock())
        with contextlib.suppress(NoMatches):
            header = self.query_one(StatusHeader)
            header.findings = (counts[Severity.CRITICAL] + counts[Severity.BLOCKING],
                               counts[Severity.WARNING], counts[Severity.INFO])
            header.findings_pending = self.findings.pending > 0

    def _sync_counts(self) -> None:
        s = self.store
        self.query_one(StatusHeader).counts = (
            f"{s.count(Kind.NODE)} nodes · {s.count(Kind.VM)} VMs · "
            f"{s.count(Kind.LUN)} LUNs · {s.count(Kind.CHECKPOINT)} checkpoints"
        )

    @on(VmTable.CountChanged)
    def _vm_count(self, message: VmTable.CountChanged) -> None:
        message.control.border_title = f"VMs ({message.shown}/{message.total})"

    # -- selection ------------------------------------------------------------------
    @on(VmTable.CursorMoved)
    def _vm_moved(self, message: VmTable.CursorMoved) -> None:
        self._show_vm(message.vm_id)

    @on(VmTable.Activated)
    def _vm_activated(self, message: VmTable.Activated) -> None:
        self._show_vm(message.vm_id)
        self.query_one(CheckpointsPane).focus()

    def _show_vm(self, vm_id: str | None) -> None:
        self._selected_vm = vm_id
        pane = self.query_one(CheckpointsPane)
        pane.show_vm(self.store, vm_id)
        vm = self.store.vm(vm_id) if vm_id else None
        pane.border_title = Text(f"Checkpoints — {vm.name}") if vm else "Checkpoints"
        final = self.final_state_of(vm_id) if vm_id else None
        if vm and final:
            pane.border_title = Text(f"Checkpoints — {vm.name} · final state: {final}")

    # -- read-only, bindings, palette -------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in commands.CONSOLE_ACTIONS and len(self.screen_stack) > 1:
            # The console's commands act on the main screen only: a key that a
            # screen on top does not use (or has disabled) must not fall
            # through to a console command behind it.
            return False
        if action in commands.MUTATING_ACTIONS and self.read_only:
            return None  # shown disabled; the runner refuses anyway
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for c in commands.COMMANDS:
            if c.mutating and self.read_only:
                continue
            yield SystemCommand(c.title, c.help, partial(self.run_action, c.action))

    # -- commands -------------------------------------------------------------------
    def action_help(self) -> None:
        under = self.screen if len(self.screen_stack) > 1 else None
        if isinstance(under, HelpScreen):
            return
        self.push_screen(HelpScreen(self.read_only, under))

    def action_action_log(self) -> None:
        recorded = getattr(self.backend, "actions_so_far", None)
        if callable(recorded):  # a replay: what the operator did in the recording
            self.push_screen(RecordedActionsScreen(recorded()))
            return
        self.push_screen(LogScreen(self.action_log, self.runner.log_error))

    def action_sort(self) -> None:
        self.query_one(VmTable).cycle_sort()

    def action_focus_next_pane(self) -> None:
        self.screen.focus_next()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(VmTable).set_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(VmTable).focus()

    def on_key(self, event) -> None:  # type: ignore[no-untyped-def]
        box = self.query_one("#filter", Input)
        if event.key == "escape" and self.focused is box:
            box.value = ""
            box.remove_class("shown")
            self.query_one(VmTable).focus()
            event.stop()

    def selected_vm_id(self) -> str | None:
        if isinstance(self.focused, CheckpointsPane) and self.focused.vm_id:
            return self.focused.vm_id
        return self.query_one(VmTable).cursor_vm_id

    def action_findings(self) -> None:
        self.push_screen(FindingsScreen(self))

    def action_merge(self) -> None:
        vm_id = self.selected_vm_id()
        self._open_plan(self._merge_action(vm_id), vm_id)

    def _merge_action(self, vm_id: str | None) -> str:
        """What "merge" is on this VM's platform: on vSphere, remove all snapshots."""
        vm = self.store.vm(vm_id) if vm_id else None
        return REMOVE_ALL if vm is not None and is_vsphere(self.store, vm) else "merge"

    # -- vSphere snapshot actions (plans in state/plans_vsphere.py) ----------------
    def _vsphere_vm(self) -> str | None:
        vm_id = self.selected_vm_id()
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is None:
            self.notify("Select a VM first.", severity="warning")
            return None
        if not is_vsphere(self.store, vm):
            self.notify("This action is for vSphere VMs.", severity="warning")
            return None
        return vm.id

    def _remove_snapshot(self, children: bool) -> None:
        vm_id = self._vsphere_vm()
        if vm_id is None:
            return
        snapshot = self.query_one(CheckpointsPane).selected_checkpoint_id(vm_id)
        if snapshot is None:
            self.notify("Select a snapshot in the Checkpoints pane first (Tab, then the "
                        "arrow keys).", severity="warning")
            return
        self._open_plan(REMOVE_SNAPSHOT, vm_id, snapshot=snapshot, children=children)

    def action_remove_snapshot(self) -> None:
        self._remove_snapshot(children=False)

    def action_remove_snapshot_tree(self) -> None:
        self._remove_snapshot(children=True)

    def action_consolidate(self) -> None:
        if (vm_id := self._vsphere_vm()) is not None:
            self._open_plan(CONSOLIDATE, vm_id)

    def action_create_snapshot(self) -> None:
        if (vm_id := self._vsphere_vm()) is not None:
            self._open_plan(CREATE_SNAPSHOT, vm_id)

    async def action_cancel_task(self) -> None:
        """Ask the cluster to cancel this console's running action on the selected VM."""
        vm_id = self.selected_vm_id()
        ours = [t for t in self.store.running_tasks_for(f"vm:{vm_id}")
                if t.id.startswith(f"{t.kind}-")] if vm_id else []
        if not ours:
            self.notify("No action of this console is running on the selected VM.",
                        severity="warning")
            return
        task = ours[0]
        try:
            done = await self.runner.cancel(task.id)
        except Exception as exc:  # the request may not have gone out
            self.notify(f"Cancel of {task.kind} failed: {clean(str(exc))}", severity="error",
                        markup=False)
            return
        if done:
            self.notify(f"Cancel requested for {task.kind} of {task.target_name}.",
                        markup=False)
        else:
            self.notify(f"{task.kind} of {task.target_name} cannot be cancelled at this point "
                        "(e.g. a snapshot removal or a merge in progress); it goes on.",
                        severity="warning", markup=False)

    async def _estimate_then_plan(self, action: str, vm_id: str,
                                  params: dict[str, object]) -> None:
        """Ask vCenter for its storage estimate (best-effort), then open the plan."""
        self.notify("Asking vCenter for its storage estimate…", timeout=3)
        with contextlib.suppress(Exception):
            executor = self.backend.executor()
            estimate = getattr(executor, "estimate_consolidation", None)
            if estimate is not None:
                snaps = frozenset(c.id for c in self.store.checkpoints_of(vm_id))
                by_lun = await estimate(vm_id, timeout=10.0)
                ESTIMATES[vm_id] = ServerEstimate(by_lun, snaps, self.clock())
        self._show_plan(action, vm_id, **params)

    def action_upgrade(self) -> None:
        if self._not_on_vsphere(HYPERV_ONLY["upgrade"]):
            self._open_plan("upgrade")

    def _open_plan(self, action: str, vm_id: str | None = None, **params: object) -> None:
        """Plan ``action`` on the VM (default: the selected one) and show it.

        Snapshot removal and consolidation first ask vCenter for its storage
        estimate, on writable sessions only (it starts a server task).
        """
        vm_id = vm_id or self.selected_vm_id()
        if vm_id is None:
            self.notify("Select a VM first.", severity="warning")
            return
        if action in (REMOVE_ALL, CONSOLIDATE) and not self.read_only:
            self.run_worker(self._estimate_then_plan(action, vm_id, dict(params)),
                            group="estimate", exclusive=True, exit_on_error=False)
            return
        self._show_plan(action, vm_id, **params)

    def _show_plan(self, action: str, vm_id: str, **params: object) -> None:
        try:
            plan = self.runner.plan(action, vm_id, **params)
        except (KeyError, ValueError) as exc:  # gone, or not available on this target
            self.notify(clean(str(exc)), severity="error", markup=False)
            return
        per_target = getattr(self.backend, "read_only_for", None)  # several targets
        read_only = self.read_only or (per_target is not None and per_target(vm_id))
        self.push_screen(
            PlanScreen(plan, read_only=read_only,
                       replan=partial(self.runner.plan, action, vm_id)),
            callback=partial(self._plan_closed, plan),
        )

    # -- rebuild ----------------------------------------------------------------------
    def _announce_unfinished_rebuilds(self) -> None:
        """Say which rebuilds wait to be resumed (paused, failed or interrupted)."""
        if self.action_log is None:
            return
        try:
            rs = RebuildStore.open(self.action_log.path)
            try:
                waiting = rs.unfinished()
            finally:
                rs.close()
        except ActionLogError as exc:
            self.notify(f"Rebuild state cannot be read: {clean(str(exc))}", severity="warning",
                        markup=False)
            return
        if waiting:
            names = ", ".join(f"{clean(w.vm_name)} ({w.status})" for w in waiting[:5])
            more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
            self.notify(f"{len(waiting)} rebuild(s) unfinished: {names}{more} — select the VM "
                        "and press b", title="Rebuilds waiting", severity="warning",
                        markup=False, timeout=30)

    def action_rebuild(self) -> None:
        vm_id = self.selected_vm_id()
        if vm_id is None:
            self.notify("Select a VM first.", severity="warning")
            return
        if not self._not_on_vsphere(HYPERV_ONLY["rebuild"]):
            return
        if self.action_log is None:
            self.notify("A rebuild keeps its state in the action log, which is not open: "
                        f"{clean(self.runner.log_error)}", severity="error", markup=False)
            return
        try:
            rs = RebuildStore.open(self.action_log.path)
            try:
                waiting = rs.unfinished(vm_id)
                latest = rs.latest(vm_id)
            finally:
                rs.close()
        except ActionLogError as exc:
            self.notify(clean(str(exc)), severity="error", markup=False)
            return
        if waiting or (latest is not None and latest.new_vm_id == vm_id):
            wf = waiting[-1] if waiting else latest
            assert wf is not None
            self.push_screen(RebuildScreen(self.action_log.path, wf.vm_id, workflow=wf.id,
                                           read_only=self.read_only))
            return
        self.open_rebuild_plan(vm_id)

    def open_rebuild_plan(self, vm_id: str, workflow: str | None = None, *,
                          show_checklist: bool = True) -> None:
        """Plan a rebuild (or its resumption): pre-flight, typed confirmation, then run."""
        if self.action_log is None:
            return
        params: dict[str, object] = {"db": str(self.action_log.path)}
        if workflow:
            params["workflow"] = workflow
        try:
            plan = self.runner.plan("rebuild", vm_id, **params)
        except (KeyError, ActionLogError) as exc:
            self.notify(clean(str(exc)), severity="error", markup=False)
            return

        def closed(confirmation: Confirmation | None) -> None:
            self._plan_closed(plan, confirmation)
            if confirmation is not None and show_checklist:
                self.push_screen(RebuildScreen(self.action_log.path, vm_id,  # type: ignore[union-attr]
                                               workflow=workflow, read_only=self.read_only))

        self.push_screen(PlanScreen(plan, read_only=self.read_only), callback=closed)

    def _plan_closed(self, plan: Plan, confirmation: Confirmation | None) -> None:
        if confirmation is not None and confirmation.plan is not None:
            plan = confirmation.plan  # options changed on the plan screen
        if confirmation is None:
            try:
                self.runner.cancelled(plan)
            except ActionRefused as exc:
                self.notify(clean(str(exc)), severity="error", markup=False)
            self.notify(f"{plan.action.capitalize()} of {plan.target_name} cancelled; nothing "
                        "was sent.", markup=False)
            return
        self.run_worker(
            self._execute(plan, confirmation), group="actions", exit_on_error=False
        )

    async def action_quit(self) -> None:
        running = self._actions_running
        if not running:
            if len(self.screen_stack) > 1:  # q on a dialog or a screen that does not close on q
                if not isinstance(self.screen, ConfirmScreen):
                    self.push_screen(ConfirmScreen("Leave the console?", "Quit", "Stay"),
                                     callback=lambda quit_: self.exit() if quit_ else None)
                return
            self.exit()
            return
        question = (
            f"{running} action(s) started from this console are still running. They go on "
            "on the cluster, but this console stops tracking them and logs their outcome as "
            "unknown — verify on the host. Quit anyway?"
        )
        self.push_screen(
            ConfirmScreen(question, "Quit", "Stay"),
            callback=lambda quit_: self.exit() if quit_ else None,
        )

    async def _execute(self, plan: Plan, confirmation: Confirmation) -> None:
        self._actions_running += 1
        try:
            await self._execute_tracked(plan, confirmation)
        finally:
            self._actions_running -= 1

    async def _execute_tracked(self, plan: Plan, confirmation: Confirmation) -> None:
        started = time.monotonic()
        try:
            result = await self.runner.execute(
                plan, confirmation.typed, override=confirmation.override,
                overridden=confirmation.overridden, confirmed_twice=confirmation.second,
            )
        except (ActionRefused, ReadOnlyError) as exc:
            self.notify(
                f"{plan.action.capitalize()} refused: {exc}", title="Refused",
                severity="error", markup=False, timeout=30,
            )
            return
        except Exception as exc:  # never lose an action silently
            self.notify(
                f"{plan.action.capitalize()} of {plan.target_name}: "
                f"{clean(f'{type(exc).__name__}: {exc}')} — check the action log and verify "
                "on the host",
                title="Action error", severity="error", markup=False, timeout=60,
            )
            return
        took = time.monotonic() - started
        sizes = ""
        if result.size_before is not None and result.size_after is not None:
            sizes = f"; disks {human_bytes(result.size_before)} → {human_bytes(result.size_after)}"
        message = (f"{plan.action.capitalize()} of {plan.target_name}: {result.state.value} "
                   f"in {took:.1f} s{sizes}")
        if result.error:
            message += f"\n{result.error}"
        severity = {
            TaskState.OK: "information",
            TaskState.WARNING: "warning",
        }.get(result.state, "error")
        self.notify(message, title=f"{plan.action.capitalize()} finished", severity=severity,
                    markup=False, timeout=15)
        self.last_result = result
        if result.final_state is not None:
            self._set_final_state(plan.target, result.final_state.value)

    async def on_unmount(self) -> None:
        self.findings.detach()
        if self.acks is not None:
            self.acks.close()
        await self.backend.close()

    # -- the campaign report and final states ----------------------------------------
    def action_report(self) -> None:
        from ventana.state.model import Lun

        from .report_screen import ReportScreen

        luns = [lun for lun in self.store.all(Kind.LUN) if isinstance(lun, Lun)]
        self.push_screen(ReportScreen(self.action_log, self.runner.log_error, luns))

    def final_state_of(self, vm_id: str) -> str | None:
        """The VM's final state as the action log has it (None: never set)."""
        return self._final_states.get(f"{Kind.VM.value}:{vm_id}")

    def _set_final_state(self, target: str, state: str) -> None:
        self._final_states[target] = state
        kind, _, vm_id = target.partition(":")
        if kind == Kind.VM.value and vm_id == self._selected_vm:
            with contextlib.suppress(NoMatches):
                self._show_vm(vm_id)

    async def _load_final_states(self) -> None:
        import asyncio

        if self.action_log is None:
            return
        try:
            states = await asyncio.to_thread(self.action_log.final_states)
        except Exception as exc:  # the console works without them
            self.notify(f"Final states could not be read from the action log: "
                        f"{clean(str(exc))}", severity="warning", markup=False)
            return
        for target, state in states.items():  # an edit made meanwhile stays
            self._final_states.setdefault(target, state)
        if self._selected_vm is not None:
            with contextlib.suppress(NoMatches):
                self._show_vm(self._selected_vm)

    def action_final_state(self) -> None:
        from .final_state_screen import FinalStateScreen

        vm_id = self.selected_vm_id()
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is None:
            self.notify("Select a VM first.", severity="warning")
            return
        if self.runner.mode == "replay":
            self.notify("A replay shows a recorded session: final states are set on a live "
                        "console.", severity="warning")
            return
        if self.action_log is None:
            self.notify(f"The action log is unavailable, so the final state cannot be "
                        f"recorded: {clean(self.runner.log_error)}", severity="error",
                        markup=False)
            return
        self.push_screen(FinalStateScreen(vm.name, self.final_state_of(vm.id)),
                         callback=partial(self._final_state_chosen, vm.id, vm.name))

    def _final_state_chosen(self, vm_id: str, vm_name: str, choice: object) -> None:
        if choice is None:
            return
        self.run_worker(self._record_final_state(vm_id, vm_name, choice),
                        group="final-states", exit_on_error=False)

    async def _record_final_state(self, vm_id: str, vm_name: str, choice: object) -> None:
        import asyncio

        from ventana.state.actionlog import ActionLogError

        from .final_state_screen import FinalStateChoice

        assert isinstance(choice, FinalStateChoice) and self.action_log is not None
        target = f"{Kind.VM.value}:{vm_id}"
        previous = self.final_state_of(vm_id)
        try:
            await asyncio.to_thread(
                self.action_log.record,
                action="final-state", target_system=self.backend.target, mode=self.runner.mode,
                target_object=target, target_name=vm_name,
                plan={"final_state": choice.state.value, "previous": previous,
                      "note": choice.note},
                findings=[], override=False, confirmed=True, outcome="ok",
                final_state=choice.state,
                detail={"note": choice.note} if choice.note else None,
            )
        except ActionLogError as exc:
            self.notify(f"The final state was not recorded: {clean(str(exc))}",
                        severity="error", markup=False, timeout=30)
            return
        self._set_final_state(target, choice.state.value)
        self.notify(f"{vm_name}: final state {choice.state.value}"
                    + (f" ({choice.note})" if choice.note else ""), markup=False)

    async def _settle_store(self) -> None:
        """Apply the backend's events received so far (an outcome reads the store next)."""
        import asyncio

        await asyncio.sleep(self._flush_interval)  # the pump takes what the backend sent
        if not self._loading:
            self._flush_events()

    # -- the maintenance window -------------------------------------------------------
    _window: WindowRunner | None = None

    def window_runner(self) -> WindowRunner | None:
        """The window queue (from the action log's file); None, with a notice, if unusable."""
        if self._window is not None:
            return self._window
        if self.action_log is None:
            self.notify("The maintenance window is kept in the action log, which is not "
                        f"open: {clean(self.runner.log_error)}", severity="error",
                        markup=False)
            return None
        try:
            window = WindowStore.open(self.action_log.path).load(
                default_name=f"window {self.clock():%Y-%m-%d}", now=self.clock())
        except WindowError as exc:
            self.notify(clean(str(exc)), severity="error", markup=False)
            return None
        self._window = WindowRunner(self.runner, window, on_change=self._window_changed)
        return self._window

    def action_window(self) -> None:
        wr = self.window_runner()
        if wr is not None:
            self.push_screen(WindowScreen(wr, read_only=self.read_only,
                                          on_run=self._window_run))

    def action_queue_merge(self) -> None:
        if isinstance(self.screen, WindowScreen):
            return
        vm_id = self.selected_vm_id()
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is None:
            self.notify("Select a VM first.", severity="warning")
            return
        wr = self.window_runner()
        if wr is None:
            return
        # The platform decides, per VM, as for m: a vSphere VM's plan is remove-all-snapshots.
        action = self._merge_action(vm.id)
        try:
            wr.window.add(vm.id, vm.name, action)
        except WindowError as exc:
            self.notify(clean(str(exc)), severity="error", markup=False)
            return
        pending = sum(1 for i in wr.window.items if i.pending)
        what = "Removal of all snapshots" if action == REMOVE_ALL else "Merge"
        self.notify(f"{what} of {vm.name} queued in {wr.window.name} ({pending} to run). "
                    "w opens the window.", markup=False)

    def action_compact(self) -> None:
        if self._not_on_vsphere(HYPERV_ONLY["compact"]):
            self._open_plan("compact")

    def action_delete_vm(self) -> None:
        if self._not_on_vsphere(HYPERV_ONLY["delete"]):
            self._open_plan("delete")

    def _window_changed(self) -> None:
        if isinstance(self.screen, WindowScreen):
            self.screen.refresh_queue()

    def _window_run(self, choice: RunChoice, shown: dict[str, Plan]) -> None:
        wr = self._window
        if wr is None:
            return
        try:
            wr.window.set_parallel(choice.parallel, choice.same_lun)
            count = wr.confirm(choice.typed, shown)
        except (ActionRefused, ReadOnlyError, WindowError) as exc:
            self.notify(f"The queue was not run: {clean(str(exc))}", severity="error",
                        markup=False)
            return
        self.notify(f"Running {count} item(s) of {wr.window.name}.", markup=False)
        self.run_worker(self._run_window(wr), group="window", exit_on_error=False)

    async def _run_window(self, wr: WindowRunner) -> None:
        self._actions_running += 1
        try:
            await wr.start()
        finally:
            self._actions_running -= 1
        counts: dict[str, int] = {}
        for item in wr.window.items:
            counts[item.status] = counts.get(item.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        self.notify(f"Window {wr.window.name}: {summary}", title="Queue stopped",
                    markup=False, timeout=15)

    def open_remedy(self, action: str, vm_id: str) -> None:
        """A finding's remedy on its VM, decided per VM like the keys: a vSphere VM's
        "merge" is remove-all-snapshots; a Hyper-V workflow says it is one."""
        if action == "merge":
            action = self._merge_action(vm_id)
        if action in HYPERV_ONLY and not self._not_on_vsphere(HYPERV_ONLY[action], vm_id):
            return
        self._open_plan(action, vm_id)

    def _not_on_vsphere(self, what: str, vm_id: str | None = None) -> bool:
        """True when the (selected) VM is not a vSphere VM; else say why nothing opens.

        Upgrade, rebuild, compact and delete are Hyper-V workflows: their plans
        would show Hyper-V commands and a vSphere target would refuse them (a
        rebuild would leave a failed workflow behind).
        """
        vm_id = vm_id or self.selected_vm_id()
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is not None and is_vsphere(self.store, vm):
            self.notify(f"{what} is for Hyper-V VMs; {vm.name} is a vSphere VM (m removes "
                        "all its snapshots, c consolidates, n takes a snapshot).",
                        severity="warning", markup=False)
            return False
        return True
