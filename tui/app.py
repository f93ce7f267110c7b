"""The Ventana app: the Textual front end of the console core.

The engine is ``ventana.core.Console`` (no Textual in it): the event pump and
its batching into the store, the recorder, the action runner, findings and
acknowledgements, final states, the maintenance window and the routing of a
command on a VM to the action of the VM's platform. This app keeps what is a
front end's: the layout, routing each batch's Delta to the panes that show
what changed (keyed updates, no rebuilds), the keys and palette (built from
the action registry, ``commands.py``), and the screens. It hears the core
through ``ConsoleListener`` (notices become toasts, header facts go to the
header). Actions go plan → pre-flight → typed confirm → log through the
core's runner; the UI never calls a backend mutation itself. Read-only is one
reactive consulted by ``check_action``; the runner and backend refuse again
below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input

from ventana.backends.actions import ActionRunner
from ventana.backends.base import Backend
from ventana.backends.window_runner import WindowRunner
from ventana.core import Console, Notice
from ventana.core.console import EventRecorder
from ventana.state.acks import AckBook
from ventana.state.actionlog import ActionLog
from ventana.state.events import Event, LinkState
from ventana.state.findings import FindingsConfig, FindingsEngine
from ventana.state.model import Kind
from ventana.state.plans import Plan
from ventana.state.store import Delta, Store

from . import commands, compact
from .checkpoints_pane import CheckpointsPane
from .confirm_screen import ConfirmScreen
from .findings_screen import FindingsScreen
from .footer import StableFooter
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

FINDINGS_TICK_S = 30.0  # age thresholds and snooze expiry are checked this often


class VentanaApp(compact.SafetyMixin, App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "Ventana"
    BINDINGS = commands.bindings() + compact.bindings()  # compact: narrow layout, ':' (issue 12)

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
        if mode == "replay":  # a replay never writes to the operator's action log (issue 12)
            log, log_error = None, "a replay does not write to the action log"
        self.core = Console(
            backend, log=log, log_error=log_error, recorder=recorder, clock=clock,
            flags=flags, mode=mode, read_only_reason=read_only_reason, flush_hz=flush_hz,
            findings_config=findings_config, listener=self,
        )
        self._selected_vm: str | None = None
        # Nodes, LUNs, tasks changed while an inventory is applied: their panes' next sync.
        self._held_nodes: set[str] = set()
        self._held_luns: set[str] = set()
        self._held_tasks = False
        self.set_reactive(VentanaApp.read_only, backend.read_only)

    # -- the core's parts, as screens and tests know them --------------------------
    @property
    def backend(self) -> Backend:
        return self.core.backend

    @property
    def store(self) -> Store:
        return self.core.store

    @property
    def runner(self) -> ActionRunner:
        return self.core.runner

    @property
    def action_log(self) -> ActionLog | None:
        return self.core.action_log

    @property
    def recorder(self) -> EventRecorder | None:
        return self.core.recorder

    @property
    def clock(self) -> Callable[[], datetime]:
        return self.core.clock

    @property
    def flags(self) -> str:
        return self.core.flags

    @property
    def read_only_reason(self) -> str:
        return self.core.read_only_reason

    @property
    def findings(self) -> FindingsEngine:
        return self.core.findings

    @property
    def acks(self) -> AckBook | None:
        return self.core.acks

    @property
    def _pending(self) -> list[Event]:  # what the pump received and no flush applied yet
        return self.core.pending

    @property
    def _window(self) -> WindowRunner | None:
        return self.core.open_window

    # -- what the core tells the front end (ConsoleListener) ------------------------
    def notice(self, notice: Notice) -> None:
        kwargs: dict[str, Any] = {"title": notice.title, "severity": notice.severity,
                                  "markup": False}
        if notice.timeout is not None:
            kwargs["timeout"] = notice.timeout
        self.notify(notice.text, **kwargs)

    def header(self, **facts: Any) -> None:
        with contextlib.suppress(NoMatches):
            header = self.query_one(StatusHeader)
            for name, value in facts.items():
                setattr(header, name, value)
            core = getattr(self, "core", None)
            if "flags" in facts and core is not None:  # the team's log came or went: its
                self.query_one(TaskStrip).sync(self.store, bool(core.log_down))  # tasks too

    def final_state_changed(self, target: str) -> None:
        kind, _, vm_id = target.partition(":")
        selected = self._selected_vm
        if selected is not None and (not target or (kind == Kind.VM.value and vm_id == selected)):
            with contextlib.suppress(NoMatches):  # "": all of them (loaded from the log)
                self._show_vm(selected)

    def window_changed(self) -> None:
        if isinstance(self.screen, WindowScreen):
            self.screen.refresh_queue()

    def inventory_applied(self) -> None:
        """The first inventory is in the store: the VM table places it, once."""
        with contextlib.suppress(NoMatches):
            self._sync_panes(set(), set(), False)
            self.query_one(VmTable).release()
            self._sync_counts()

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
        yield StableFooter()

    def on_mount(self) -> None:
        self.header(**self.core.header_facts())
        self.core.start()
        self.store.subscribe(self._on_delta)
        self.set_interval(self.core.flush_interval, self.core.flush)
        self.set_interval(FINDINGS_TICK_S, self._tick_findings)
        self.run_worker(self.core.pump(), name="event-pump", group="backend", exit_on_error=False)
        self.run_worker(self.core.load_final_states(), group="final-states", exit_on_error=False)
        self.query_one(VmTable).focus()

    # -- the event stream --------------------------------------------------------
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
            if self.core.inventory_applying:  # staged slice by slice, placed once at the end
                vms.hold()
            vms.flush()  # one buffering stage (the app's), not two: lower latency
            if self.core.inventory_applying and (nodes or luns or tasks):
                # A pane's every update redraws all its cells (20 ms for the LUNs): while
                # an inventory is applied, it is filled once its rows stop coming.
                self._held_nodes.update(nodes)
                self._held_luns.update(luns)
                self._held_tasks = self._held_tasks or tasks
            else:
                self._sync_panes(nodes, luns, tasks)
            if selected_touched:
                self.query_one(CheckpointsPane).show_vm(store, sel)
            if delta.links_changed:
                self._sync_link()
            if not self.core.inventory_applying:  # counted once when all of it is in
                self._sync_counts()

    def _sync_panes(self, nodes: set[str], luns: set[str], tasks: bool) -> None:
        """Nodes, LUNs and tasks into their panes, with what was held (``_route``)."""
        if self._held_nodes or self._held_luns or self._held_tasks:
            nodes, luns = nodes | self._held_nodes, luns | self._held_luns
            tasks = tasks or self._held_tasks
            self._held_nodes, self._held_luns, self._held_tasks = set(), set(), False
        store = self.store
        if nodes:
            self.query_one(NodesPane).sync(store, nodes)
        if luns:
            self.query_one(LunsPane).sync(store, luns)
        if tasks:
            self.query_one(TaskStrip).sync(store, bool(self.core.log_down))

    def _sync_link(self) -> None:
        header = self.query_one(StatusHeader)
        header.link = self.store.link_state()
        targets = self.core.link_targets()
        if targets is not None:  # several targets: each one's link and mode
            header.targets = targets
        # Per node (issue 14) and per target (stop 14): one node or one target down
        # dims only what it owns, and says which.
        store = self.store
        view = store.staleness()
        everything = view.everything
        header.stale_nodes, header.nodes_live = tuple(store.stale_node_names()), store.nodes_live()
        header.reason = store.link_reasons() if view.partial else store.link_reason()
        self.query_one(VmTable).show_stale(everything, tuple(store.stale_names()))
        self.query_one(NodesPane).set_stale(everything, frozenset(
            n.id for n in store.nodes() if view.partial and view.of(n.id, n.id)))
        self.query_one(LunsPane).set_stale(everything, frozenset(  # its coordinator reports it
            lun.id for lun in store.luns()
            if view.partial and view.of(lun.owner_node_id, lun.id)))
        checkpoints = self.query_one(CheckpointsPane)
        checkpoints.show_vm(store, checkpoints.vm_id)  # dimmed when its VM's node is stale
        tasks = self.query_one(TaskStrip)
        tasks.set_class(everything, "stale")
        tasks.sync(store, bool(self.core.log_down))  # each by its own target's node or link

    def _tick_findings(self) -> None:
        self.core.tick_findings()

    def _sync_counts(self) -> None:
        s = self.store
        # A first inventory shown before it was complete (stuck or very long) says so.
        more = " · still loading…" if self.core.still_loading else ""
        self.query_one(StatusHeader).counts = (
            f"{s.count(Kind.NODE)} nodes · {s.count(Kind.VM)} VMs · "
            f"{s.count(Kind.LUN)} LUNs · {s.count(Kind.CHECKPOINT)} checkpoints{more}"
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
        try:
            pane = self.query_one(CheckpointsPane)
        except NoMatches:  # a key's cursor move handled while the app is closing
            return
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
            yield SystemCommand(c.title, c.help, partial(self.run_action, c.name))

    # -- commands -------------------------------------------------------------------
    def action_help(self) -> None:
        under = self.screen if len(self.screen_stack) > 1 else None
        if isinstance(under, HelpScreen):
            return
        links = [k for k in self.store.links.values()
                 if k.reason and k.state is not LinkState.CONNECTED]
        self.push_screen(HelpScreen(self.read_only, under, links))

    def action_action_log(self) -> None:
        recorded = self.core.recorded_actions()
        if recorded is not None:  # a replay: what the operator did in the recording
            self.push_screen(RecordedActionsScreen(recorded))
            return
        self.push_screen(LogScreen(self.action_log, self.runner.log_error,
                                   follow=self.core.team_watchers))

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
        # The box's value now, not the event's: keys typed faster than the table
        # answers are matched once, as the last one left the box (the Changed
        # messages still queued then find the filter already set: a no-op).
        self.query_one(VmTable).set_filter(event.input.value)

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
        self.push_screen(FindingsScreen(self.core, open_remedy=self.open_remedy))

    # -- action commands: one opener; the action registry decides per VM ---------------
    def run_command(self, command: str, vm_id: str | None = None) -> None:
        """Open the action ``command`` opens on the VM (default: the selected one).

        The core resolves command + the VM's platform to an action spec ("merge"
        on a vSphere VM removes all its snapshots) or says in one line why there
        is none. Removing all snapshots and consolidating first ask vCenter for
        its storage estimate (writable sessions only: it starts a server task);
        a workflow (the rebuild) opens its checklist when one is unfinished.
        """
        resolved = self.core.resolve(command, vm_id or self.selected_vm_id())
        if resolved is None:
            return
        spec, vm_id = resolved.spec, resolved.vm.id
        params = resolved.params
        if resolved.command.selects_snapshot:
            snapshot = self.query_one(CheckpointsPane).selected_checkpoint_id(vm_id)
            if snapshot is None:
                self.notify("Select a snapshot in the Checkpoints pane first (Tab, then the "
                            "arrow keys).", severity="warning")
                return
            params = {"snapshot": snapshot, **params}
        if spec.opens == "workflow":
            self.run_worker(self._open_workflow(vm_id), group="workflow", exclusive=True,
                            exit_on_error=False)
        elif self.core.wants_estimate(spec):
            self.run_worker(self._plan_when_read(spec.name, vm_id, params, estimate=True),
                            group="estimate", exclusive=True, exit_on_error=False)
        elif self.core.shares_log:  # what other consoles hold, read first (in a worker)
            self.run_worker(self._plan_when_read(spec.name, vm_id, params),
                            group="plan", exclusive=True, exit_on_error=False)
        else:
            self._show_plan(spec.name, vm_id, **params)

    def open_remedy(self, remedy: str, vm_id: str) -> None:
        """A finding's remedy on its VM, decided per VM like the keys."""
        self.run_command(self.core.command_of(remedy), vm_id)

    async def action_cancel_task(self) -> None:
        """Ask the cluster to cancel this console's running action on the selected VM."""
        await self.core.cancel_task(self.selected_vm_id())

    async def _plan_when_read(self, action: str, vm_id: str, params: dict[str, object], *,
                              estimate: bool = False) -> None:
        """The plan, once what it shows is read: vCenter's storage estimate (``estimate``,
        best-effort) and a team's leases (a worker thread; nothing on a local log)."""
        if estimate:
            await self.core.fetch_estimate(vm_id)
        await self.runner.read_leases()
        self._show_plan(action, vm_id, **params)

    def _show_plan(self, action: str, vm_id: str, **params: object) -> None:
        plan = self.core.plan(action, vm_id, **params)
        if plan is None:  # gone, or not available on this target
            return
        self.push_screen(
            PlanScreen(plan, read_only=self.core.read_only_for(vm_id),
                       replan=partial(self.runner.plan, action, vm_id)),
            callback=partial(self._plan_closed, plan),
        )

    # -- rebuild ----------------------------------------------------------------------
    async def _open_workflow(self, vm_id: str) -> None:
        """The VM's rebuild checklist, or its plan: which one, the log's database says
        (read in a worker thread; a second key meanwhile replaces this one)."""
        go_on, wf = await self.core.rebuild_to_open(vm_id)
        if not go_on:
            return
        if wf is not None:
            self.push_screen(self._rebuild_screen(wf.vm_id, wf.id))
            return
        await self.runner.read_leases()
        self.open_rebuild_plan(vm_id)

    def _rebuild_screen(self, vm_id: str, workflow: str | None) -> RebuildScreen:
        assert self.action_log is not None
        return RebuildScreen(self.action_log.path, vm_id, workflow=workflow,
                             read_only=self.read_only, store=self.store,
                             log=self.action_log, resume=self.open_rebuild_plan)

    def open_rebuild_plan(self, vm_id: str, workflow: str | None = None, *,
                          show_checklist: bool = True) -> None:
        """Plan a rebuild (or its resumption): pre-flight, typed confirmation, then run."""
        params = self.core.rebuild_params(workflow)
        if params is None:
            return
        plan = self.core.plan("rebuild", vm_id, **params)
        if plan is None:
            return

        def closed(confirmation: Confirmation | None) -> None:
            self._plan_closed(plan, confirmation)
            if confirmation is not None and show_checklist:
                self.push_screen(self._rebuild_screen(vm_id, workflow))

        # replan: the plan's options (how to stop the VM: guest shutdown or turn off).
        self.push_screen(PlanScreen(plan, read_only=self.read_only,
                                    replan=partial(self.runner.plan, "rebuild", vm_id)),
                         callback=closed)

    def _plan_closed(self, plan: Plan, confirmation: Confirmation | None) -> None:
        if confirmation is not None and confirmation.plan is not None:
            plan = confirmation.plan  # options changed on the plan screen
        if confirmation is None:
            self.run_worker(self.core.cancelled(plan), group="log-rows", exit_on_error=False)
            return
        self.run_worker(
            self._execute(plan, confirmation), group="actions", exit_on_error=False
        )

    async def _execute(self, plan: Plan, confirmation: Confirmation) -> None:
        await self.core.execute(plan, confirmation.typed, override=confirmation.override,
                                overridden=confirmation.overridden, second=confirmation.second)

    async def action_quit(self) -> None:
        running = self.core.actions_running
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

    async def on_unmount(self) -> None:
        await self.core.close()

    # -- the campaign report and final states ----------------------------------------
    def action_report(self) -> None:
        from ventana.state.model import Lun

        from .report_screen import ReportScreen

        luns = [lun for lun in self.store.all(Kind.LUN) if isinstance(lun, Lun)]
        self.push_screen(ReportScreen(self.action_log, self.runner.log_error, luns))

    def final_state_of(self, vm_id: str) -> str | None:
        """The VM's final state as the action log has it (None: never set)."""
        return self.core.final_state_of(vm_id)

    def action_final_state(self) -> None:
        from .final_state_screen import FinalStateScreen

        vm_id = self.selected_vm_id()
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is None:
            self.notify("Select a VM first.", severity="warning")
            return
        why, severity = self.core.why_no_final_state()
        if why:
            self.notify(why, severity=severity, markup=False)  # type: ignore[arg-type]
            return
        self.push_screen(FinalStateScreen(vm.name, self.final_state_of(vm.id)),
                         callback=partial(self._final_state_chosen, vm.id, vm.name))

    def _final_state_chosen(self, vm_id: str, vm_name: str, choice: object) -> None:
        from .final_state_screen import FinalStateChoice

        if choice is None:
            return
        assert isinstance(choice, FinalStateChoice)
        self.run_worker(self.core.record_final_state(vm_id, vm_name, choice.state, choice.note),
                        group="final-states", exit_on_error=False)

    # -- the maintenance window -------------------------------------------------------
    def action_window(self) -> None:
        self.run_worker(self._open_window(), group="window-open", exclusive=True,
                        exit_on_error=False)

    async def _open_window(self) -> None:
        """The window screen, once the queue is read (a worker thread, the first time)."""
        wr = await self.core.window_runner()
        if wr is not None and not isinstance(self.screen, WindowScreen):
            self.push_screen(WindowScreen(wr, read_only=self.read_only,
                                          on_run=self._window_run))

    def action_queue_merge(self) -> None:
        if isinstance(self.screen, WindowScreen):
            return
        # Not exclusive: every key queues its VM, in the order pressed.
        self.run_worker(self.core.queue("merge", self.selected_vm_id()), group="queue",
                        exit_on_error=False)

    def _window_run(self, choice: RunChoice, shown: dict[str, Plan]) -> None:
        wr = self.core.run_window_now(choice.typed, shown, choice.parallel, choice.same_lun)
        if wr is not None:
            self.run_worker(self.core.run_window(wr), group="window", exit_on_error=False)


def _command_opener(name: str) -> Callable[[VentanaApp], None]:
    def action(self: VentanaApp) -> None:
        self.run_command(name)

    action.__name__ = f"action_{name}"
    action.__doc__ = f"The {name!r} command on the selected VM (see run_command)."
    return action


# Every action command's key and palette entry runs ``run_command`` (Textual finds
# an action by its ``action_<name>`` method): a new action spec needs no code here.
for _command in commands.ACTION_COMMANDS:
    setattr(VentanaApp, f"action_{_command.name}", _command_opener(_command.name))
