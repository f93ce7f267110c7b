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
from ventana.state.acks import AckBook, AckError, follow, open_counts
from ventana.state.actionlog import ActionLog
from ventana.state.derived import human_bytes
from ventana.state.events import ConnectionChanged, Event, LinkState
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import Kind, Severity, TaskState
from ventana.state.plans import Plan
from ventana.state.sanitize import clean
from ventana.state.store import Delta, Store

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
from .task_strip import TaskStrip
from .vm_table import VmTable

INITIAL_LOAD_MAX_S = 5.0
FINDINGS_TICK_S = 30.0  # age thresholds and snooze expiry are checked this often
# The first inventory's findings are computed in slices of this many seconds per
# flush (about 0.5 s of work at 10,000 VMs): a redraw never waits longer for them.
FINDINGS_SLICE_S = 0.008


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
        self.read_only_reason = read_only_reason or "this session cannot change the cluster"
        self._flush_interval = 1.0 / flush_hz
        self._pending: list[Event] = []
        self._selected_vm: str | None = None
        self._recording_lost = False
        self._actions_running = 0
        # The first inventory is applied in one batch (every row built once);
        # until it is complete the header counts what has arrived.
        self._loading = True
        self._inventory_done = False
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
        self.store.subscribe(self._on_delta)
        self.set_interval(self._flush_interval, self._flush_events)
        self.set_interval(FINDINGS_TICK_S, self._tick_findings)
        self.run_worker(self._pump(), name="event-pump", group="backend", exit_on_error=False)
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
        if not self._loading and self.findings.pending:
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
        if not self._pending:
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
            # The inventory is long-lived and acyclic: no collections while it
            # is built, then it leaves the cyclic GC's generations so that a
            # full collection never pauses a redraw for hundreds of ms.
            gc.disable()
            try:
                self._apply(batch)
            finally:
                gc.freeze()
                gc.enable()
            return
        batch, self._pending = self._pending, []
        self._apply(batch)

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

    # -- read-only, bindings, palette -------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
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
        self.push_screen(HelpScreen(self.read_only))

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
        self._open_plan("merge")

    def action_upgrade(self) -> None:
        self._open_plan("upgrade")

    def _open_plan(self, action: str, vm_id: str | None = None, **params: object) -> None:
        vm_id = vm_id or self.selected_vm_id()
        if vm_id is None:
            self.notify("Select a VM first.", severity="warning")
            return
        try:
            plan = self.runner.plan(action, vm_id, **params)
        except KeyError as exc:
            self.notify(clean(str(exc)), severity="error", markup=False)
            return
        self.push_screen(
            PlanScreen(plan, read_only=self.read_only), callback=partial(self._plan_closed, plan)
        )

    def _plan_closed(self, plan: Plan, confirmation: Confirmation | None) -> None:
        if confirmation is None:
            try:
                self.runner.cancelled(plan)
            except ActionRefused as exc:
                self.notify(str(exc), severity="error", markup=False)
            self.notify(f"{plan.action.capitalize()} of {plan.target_name} cancelled; nothing "
                        "was sent.", markup=False)
            return
        self.run_worker(
            self._execute(plan, confirmation), group="actions", exit_on_error=False
        )

    async def action_quit(self) -> None:
        running = self._actions_running
        if not running:
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
                overridden=confirmation.overridden,
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

    async def on_unmount(self) -> None:
        self.findings.detach()
        if self.acks is not None:
            self.acks.close()
        await self.backend.close()
