"""The headless console: a backend's events into the store, actions through the runner.

``Console`` is everything the Textual app did that is not layout, keys or
screens:

- the **event pump** (``pump``) takes the backend's events into a pending
  buffer (and the recorder); ``flush`` applies the buffer to the store in one
  batch. The first inventory is held while it arrives (the header counts the
  VMs received) and applied in one sliced batch once it is complete, with the
  cyclic GC off and then frozen. An inventory that stops arriving for
  ``INITIAL_LOAD_MAX_S``, or is still arriving after ``INITIAL_LOAD_HOLD_MAX_S``,
  is shown as far as it came, marked ``still_loading``; the rest is then placed
  in held bursts at most every ``LATE_INVENTORY_EVERY_S``, never row by row;
- the **action runner**, whose outcome rows read the store after ``settle``
  has applied what the backend sent meanwhile;
- the **findings engine** (remedies resolved through the action registry) and
  the **acknowledgements** book, and the header's open-finding counts;
- **final states** (loaded from the action log, recorded on request);
- the **maintenance window**'s runner and **vCenter's storage estimates**;
- **routing** an operator's command on a VM to the action of the VM's platform
  (``resolve``), with a one-line reason when there is none.

The front end is told what happened through ``ConsoleListener`` (notices with a
severity, header facts, a changed final state, a changed window queue); the
store's own subscribers receive the deltas. Nothing here imports Textual: a
headless recorder or a second front end drives a ``Console`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ventana.backends import actionspecs, gcpause
from ventana.backends.actions import ActionRecorder, ActionRefused, ActionRunner
from ventana.backends.actionspecs import ActionSpec, Command
from ventana.backends.base import ActionResult, Backend, ReadOnlyError, let_keys_in
from ventana.backends.capabilities import (
    ConsolidationEstimator,
    PerTargetModes,
    RecordedActions,
)
from ventana.backends.window_runner import WindowRunner
from ventana.state.acks import AckBook, AckError, follow, open_counts
from ventana.state.actionlog import ActionLog, ActionLogError, LogRow
from ventana.state.derived import human_bytes, human_duration
from ventana.state.estimates import LearnedEstimator
from ventana.state.events import ConnectionChanged, Event, LinkState, Upsert
from ventana.state.findings import FindingsConfig, FindingsEngine, platform_of
from ventana.state.live import TeamFeed, describe
from ventana.state.model import VM, FinalState, Kind, Platform, Severity, Task, TaskState
from ventana.state.plans import Plan
from ventana.state.plans_vsphere import ESTIMATES, REMOVE_ALL, ServerEstimate
from ventana.state.rebuild import Rebuild, RebuildStore
from ventana.state.sanitize import clean
from ventana.state.store import Store
from ventana.state.window import MaintenanceWindow, WindowError, WindowStore

#: The first inventory is held (nothing placed, the header counts what arrived) while
#: it arrives. A stuck source must not leave the screen empty: when nothing more has
#: arrived for INITIAL_LOAD_MAX_S, what is in is shown, marked still loading. A source
#: that keeps sending is held up to INITIAL_LOAD_HOLD_MAX_S (a 45,000-VM vCenter or a
#: 64-node cluster under load takes a minute or two), then shown the same way.
INITIAL_LOAD_MAX_S = 5.0
#: An inventory whose arrival kept the cyclic GC off longer than this is collected
#: before it is frozen (``_apply_inventory``): a remote source's parsing left garbage.
GC_COLLECT_AFTER_S = 2.0
INITIAL_LOAD_HOLD_MAX_S = 180.0
#: After such an early showing, the rest of the first inventory is applied in held
#: bursts (placed once each) at most this often, not re-placed at every flush.
LATE_INVENTORY_EVERY_S = 2.0
#: A source's CONNECTED ends the first inventory only if, this many turns of the loop
#: later, no source says CONNECTING (the tasks it started have had their first step).
CHECK_DONE_TURNS = 3
#: A team's log (PostgreSQL) is asked whether it answers this often, in a worker
#: thread; while it does not, actions are refused under ``TEAM_LOG_DOWN`` — and a
#: read-only console, which refuses them anyway, says under ``TEAM_FEED_STALE`` that
#: other consoles' actions no longer reach it.
LOG_CHECK_S = 2.0
#: A check that has not answered in this long (a server or a network path that holds
#: the query: TCP waits minutes) counts as the log being down until it answers.
LOG_CHECK_WAIT_S = 10.0
TEAM_LOG_DOWN = "TEAM LOG UNREACHABLE — ACTIONS REFUSED"
TEAM_FEED_STALE = "TEAM LOG UNREACHABLE — TEAM FEED STALE"
# The first inventory's findings are computed in slices of this many seconds, one
# every other slice's time (about 0.5 s of work at 10,000 VMs): a key or a redraw
# never waits longer for them.
FINDINGS_SLICE_S = 0.008
# The first inventory is applied in slices of about INVENTORY_SLICE_S of work (at
# most INVENTORY_SLICE events), so a key or a frame never waits for the whole of it.
INVENTORY_SLICE = 500
INVENTORY_SLICE_S = 0.006  # then the loop turns (``backends.base.let_keys_in``)
# A live batch bigger than this (a burst: the rest of an inventory that outlasted
# INITIAL_LOAD_MAX_S, a reconnect's full re-read) is applied in slices too.
BURST_EVENTS = 4 * INVENTORY_SLICE


def _hold_clock() -> float:
    """The clock of the first inventory's hold (a test steps its own)."""
    return time.monotonic()


class EventRecorder(ActionRecorder, Protocol):
    error: str | None

    def write_event(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the operator should read (a toast in the Textual front end).

    ``text`` is plain text (never markup); ``severity`` is "information",
    "warning" or "error"; ``timeout`` None means the front end's default.
    """

    text: str
    title: str = ""
    severity: str = "information"
    timeout: float | None = None


class ConsoleListener(Protocol):
    """What a front end hears from the console (besides the store's deltas)."""

    def notice(self, notice: Notice) -> None: ...

    def header(self, **facts: Any) -> None:
        """Header facts changed: ``counts``, ``flags``, ``findings``, ``findings_pending``."""

    def final_state_changed(self, target: str) -> None: ...

    def window_changed(self) -> None: ...

    # Optional (called only when the listener has it): the first inventory is in the
    # store. A front end that held its VM list while the slices were applied places
    # it now, once, rather than once per slice.
    # def inventory_applied(self) -> None: ...


class _Silent:
    def notice(self, notice: Notice) -> None:
        pass

    def header(self, **facts: Any) -> None:
        pass

    def final_state_changed(self, target: str) -> None:
        pass

    def window_changed(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Resolved:
    """An operator's command on a VM, resolved to the action of its platform."""

    spec: ActionSpec
    command: Command
    vm: VM
    params: dict[str, Any] = field(default_factory=dict)


class Console:
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
        listener: ConsoleListener | None = None,
    ) -> None:
        self.backend = backend
        self.store = Store()
        self.clock: Callable[[], datetime] = clock or backend.now
        self.recorder = recorder
        self.action_log = log
        self.listener: ConsoleListener = listener or _Silent()
        self.runner = ActionRunner(
            self.store, backend, log, log_error=log_error, recorder=recorder, clock=self.clock,
            mode=mode, flags=flags,
        )
        self.runner.settle = self.settle
        self.flags = flags
        self.read_only_reason = read_only_reason or "this session cannot change the cluster"
        self.flush_interval = 1.0 / flush_hz
        self.pending: list[Event] = []
        self.final_states: dict[str, str] = {}  # "vm:id" → final state, from the action log
        self.actions_running = 0
        self.last_result: ActionResult | None = None
        self._recording_lost = False
        # The first inventory is applied in one batch (every row built once);
        # until it is complete the header counts what has arrived.
        self.loading = True
        self._inventory_done = False
        self._connecting: set[str] = set()  # sources still CONNECTING in the first inventory
        #: The first inventory was shown before it was complete (stuck or too long);
        #: True until the rest of it is applied. The front end says "still loading".
        self.still_loading = False
        self.vms_received = 0  # VM upserts received while loading (the header's progress)
        self._last_arrival = _hold_clock()  # the last event received while loading
        self._late_applied = 0.0  # when the last burst of a late inventory was started
        #: The first inventory's slices (or a burst's) are being applied (a task of the loop).
        self.inventory_applying = False
        self._inventory_task: asyncio.Future[None] | None = None
        self._load_started = _hold_clock()
        self._gc_paused = False  # this console turned the cyclic GC off (_pause_gc)
        self._gc_paused_at = 0.0
        self._drain_queued = False  # a findings slice waits for the loop's next turn
        self._closed = False
        # Findings: live, incremental; the first inventory is computed in slices
        # by ``flush`` so it never delays the first screen. A finding's remedy is
        # the action its command opens on the VM's platform.
        self.findings = FindingsEngine(self.store, findings_config, self.clock,
                                       actions=actionspecs.action_for).attach(eager=False)
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
        self._book_writer: ThreadPoolExecutor | None = None  # book_write's one thread
        if self.acks is not None:
            follow(self.findings, self.acks, self.clock, defer=self.book_write)
        self._findings_seen = (-1, -1)
        self._window: WindowRunner | None = None
        self._window_opening: asyncio.Future[MaintenanceWindow] | None = None  # window_runner
        self._background: set[asyncio.Task[None]] = set()  # tasks kept until they end
        self.team_watchers = []
        #: Why the team's log does not answer ('' : it does, or the log is a file).
        self.log_down = log.down if log is not None and log.shared else ""
        self._log_watch: asyncio.Task[None] | None = None

    # -- facts ------------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        return self.backend.read_only

    def _notice(self, text: str, *, title: str = "", severity: str = "information",
                timeout: float | None = None) -> None:
        self.listener.notice(Notice(text, title, severity, timeout))

    def header_facts(self) -> dict[str, Any]:
        """The header's facts at start: target, mode and the session's flags."""
        return {"target": clean(self.backend.target), "mode": self.runner.mode,
                "flags": self._flags()}

    def _flags(self) -> str:
        """The session's flags and what refuses actions now (no log, the team's log down)."""
        extra = ""
        if self.action_log is None and not self.read_only:
            extra = "NO ACTION LOG — ACTIONS REFUSED"
        elif self.log_down:
            extra = TEAM_FEED_STALE if self.read_only else TEAM_LOG_DOWN
        lost = "RECORDING STOPPED" if self._recording_lost else ""
        return " ".join(f for f in (self.flags, lost, extra) if f)

    def start(self) -> None:
        """Say what the operator must know at start (no log, unfinished rebuilds)."""
        if self.action_log is None and not self.read_only:
            self._notice(
                f"The action log cannot be opened, so every action will be refused: "
                f"{clean(self.runner.log_error)}",
                title="Action log unavailable", severity="error", timeout=60,
            )
        if self.log_down:  # rebuilds, acks and the feed wait for the database
            self._say_log_down()
        else:
            self._say_unfinished_rebuilds()
            self._follow_team()
        self._watch_log()

    # -- a team's log out of reach: refuse actions, keep monitoring, recover ------------
    def _watch_log(self) -> None:
        """On a shared log, ask every ``LOG_CHECK_S`` (in a worker) whether it answers."""
        log = self.action_log
        if log is None or not log.shared or self.runner.mode == "replay":
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # started outside a loop (a script): nobody to watch for
            return
        self._log_watch = asyncio.ensure_future(self._watch_loop(log))

    async def _watch_loop(self, log: ActionLog) -> None:
        asking: asyncio.Future[str] | None = None
        while True:
            if asking is None:
                asking = asyncio.ensure_future(asyncio.to_thread(self._ask_log, log))
            try:
                why = await asyncio.wait_for(asyncio.shield(asking), LOG_CHECK_WAIT_S)
                asking = None
            except TimeoutError:  # a server (or a path) that holds the query: down, and the
                # same question is waited for next time (never a second stuck thread)
                why = (f"the team's database has not answered for {LOG_CHECK_WAIT_S:.0f} s "
                       "(its connection is kept and asked again)")
            except Exception as exc:  # never let the watch die: say it is down
                why, asking = f"{type(exc).__name__}: {exc}", None
            if self._log_state(clean(why)):
                with contextlib.suppress(Exception):  # what failed says so itself
                    await self._log_back()
            await asyncio.sleep(LOG_CHECK_S)

    def _ask_log(self, log: ActionLog) -> str:
        """In a worker: '' when the log answers (then what plans show of the team is read
        too), else why not."""
        why = log.check()
        if not why:
            self._read_team_view(log)
        return why

    def _read_team_view(self, log: ActionLog) -> None:
        """In a worker: the leases (``state/team.py``'s pre-flight reads the latest) and
        the merge samples the estimates learn from."""
        log.leases()
        estimator = self.runner.estimator
        if isinstance(estimator, LearnedEstimator) and estimator.log is log:
            estimator.refresh()

    def _log_state(self, why: str) -> bool:
        """The watch's answer: a banner when the log goes; True when it just returned."""
        if why and not self.log_down:
            self.log_down = why
            self.listener.header(flags=self._flags())
            self._say_log_down()
        elif why:
            self.log_down = why  # still down (the reason may have changed)
        elif self.log_down:
            self.log_down = ""
            self.listener.header(flags=self._flags())
            self._notice("The team's action log answers again: "
                         + ("other consoles' actions reach this console again."
                            if self.read_only else "actions are allowed."),
                         title="Action log back", timeout=15)
            return True
        return False

    def _say_log_down(self) -> None:
        if self.read_only:  # nothing to refuse here, but what the team does is unseen
            self._notice(f"The team's action log does not answer, so other consoles' "
                         f"actions no longer reach this console: what the task strip "
                         f"shows of them may be out of date (the cluster itself is still "
                         f"watched live; this recovers by itself when the log answers): "
                         f"{self.log_down}", title="Team feed stale", severity="warning",
                         timeout=30)
            return
        self._notice(f"The team's action log does not answer, so every action is refused "
                     f"(monitoring goes on; the console recovers by itself when it answers): "
                     f"{self.log_down}", title="Action log unreachable", severity="error",
                     timeout=30)

    def refused_while_down(self) -> bool:
        """True, with a notice, when the team's log is down (an action would run unlogged)."""
        if not self.log_down or self.read_only:
            return False
        self._notice(f"Refused: the team's action log does not answer, and an action never "
                     f"runs unlogged ({self.log_down}). Monitoring goes on; actions are "
                     "allowed again as soon as it answers.", title="Refused", severity="error",
                     timeout=15)
        return True

    async def _log_back(self) -> None:
        """What waited for the database: acknowledgements, the team feed, rebuilds, final
        states (an action log opened while the database was down)."""
        log = self.action_log
        assert log is not None
        if self.acks is None and self.runner.mode != "replay":
            try:
                self.acks = await asyncio.to_thread(
                    AckBook.open, log.path, grace=self.findings.config.ack_grace)
            except AckError as exc:
                self.acks_error = str(exc)
            else:
                self.acks_error = ""
                follow(self.findings, self.acks, self.clock, defer=self.book_write)
                self.sync_findings(force=True)
        if self.team_feed is None:
            self._follow_team()
            await self._announce_unfinished_rebuilds()
            await self.load_final_states()
        self.team_rows([])  # watchers (the log screen) read again

    # -- team mode: other consoles' actions on a shared log (state/live.py) -------------
    team_feed: TeamFeed | None = None
    #: Called (on the loop) with every batch of rows the team feed brings, this
    #: console's own included (e.g. the log screen re-reads).
    team_watchers: list[Callable[[list[LogRow]], None]]

    def _follow_team(self) -> None:
        """On a shared log, other consoles' actions reach the task strip as they happen."""
        log = self.action_log
        if log is None or not log.shared or self.runner.mode == "replay":
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # started outside a loop (a script): nobody to hand rows to
            return
        self.team_feed = TeamFeed.start(
            log, lambda rows: loop.call_soon_threadsafe(self.team_rows, rows))

    def team_rows(self, rows: list[LogRow]) -> None:
        """Other consoles' action rows as task rows, through the usual batch (own rows and
        rows that never ran — refused, cancelled, final states — are left out)."""
        mine = self.action_log.console if self.action_log is not None else ""
        for row in rows:
            if row.console == mine or not row.task_id:
                continue
            status = row.status.split(" ", 1)[0]
            state = _TEAM_STATES.get(status, TaskState.UNKNOWN)
            self.pending.append(Upsert(Task(
                f"team-{row.id}", row.action, row.target_object, row.target_name,
                100.0 if state in (TaskState.OK, TaskState.WARNING) else 0.0, state,
                started=_when(row.started), ended=_when(row.ended),
                message=describe(row), error=clean(row.error or ""))))
        for watcher in list(self.team_watchers):
            with contextlib.suppress(Exception):  # a screen must not stop the feed
                watcher(rows)

    def link_targets(self) -> tuple[tuple[str, LinkState, str, bool], ...] | None:
        """Each target's link and whether it is read-only (None: a single target)."""
        backend: Any = self.backend
        if not isinstance(backend, PerTargetModes):
            return None
        return tuple((link.source, link.state, link.reason,
                      bool(backend.read_only_of_link(link.source)))
                     for link in self.store.links.values())

    def read_only_for(self, vm_id: str) -> bool:
        """The session, or the VM's own target when the backend holds several, is read-only."""
        backend: Any = self.backend
        return self.read_only or (isinstance(backend, PerTargetModes)
                                  and bool(backend.read_only_for(vm_id)))

    def recorded_actions(self) -> list[Any] | None:
        """A replay's recorded actions (None: not a replay)."""
        backend: Any = self.backend
        return list(backend.actions_so_far()) if isinstance(backend, RecordedActions) else None

    # -- the event stream -------------------------------------------------------------
    async def pump(self) -> None:
        """Take the backend's events into the pending buffer until its stream ends."""
        try:
            async for event in self.backend.events():
                if self.loading or self.still_loading:
                    if not self._gc_paused and self.loading:
                        self._pause_gc()  # the inventory arrives: see _pause_gc
                    self._last_arrival = _hold_clock()
                    if type(event) is Upsert and event.entity.KIND is Kind.VM:
                        self.vms_received += 1
                self.pending.append(event)
                if isinstance(event, ConnectionChanged) and not self._inventory_done:
                    if event.state is LinkState.CONNECTING:
                        self._connecting.add(event.source)
                    else:
                        self._connecting.discard(event.source)
                        # Checked a few turns of the loop later: a cluster's entry point
                        # says CONNECTED as it starts its nodes, which say CONNECTING
                        # from their own tasks.
                        self._check_later(CHECK_DONE_TURNS)
                if self.recorder is not None:
                    self.recorder.write_event(event)
            self._inventory_done = True  # the stream ended: nothing more comes
        except Exception as exc:  # a backend must never take the console down
            self._inventory_done = True
            reason = clean(f"{type(exc).__name__}: {exc}")
            self.pending.append(
                ConnectionChanged(self.backend.name, LinkState.DISCONNECTED, reason)
            )
            self._notice(f"Backend stopped: {reason}", severity="error")

    def _check_later(self, turns: int) -> None:
        loop = asyncio.get_running_loop()
        if turns > 0:
            loop.call_soon(self._check_later, turns - 1)
        else:
            self._check_inventory_done()

    def _check_inventory_done(self) -> None:
        """The first inventory is complete when no source that said CONNECTING still
        says so (each has said CONNECTED, or why not); then it is applied at once."""
        if self._inventory_done or self._connecting:
            return
        self._inventory_done = True
        if self.loading or self.still_loading:
            self.flush()

    async def follow(self) -> None:
        """The pump and a flush every ``flush_interval`` (a headless front end's loop).

        A Textual front end runs ``pump`` as a worker and ``flush`` on its own
        timer instead. Runs until cancelled (a pump whose stream ended leaves
        the store as it was).
        """
        pump = asyncio.ensure_future(self.pump())
        try:
            while True:
                await asyncio.sleep(self.flush_interval)
                self.flush()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump

    def flush(self) -> None:
        """Apply the pending events in one batch, then a slice of the first findings."""
        self._flush_store()
        self._drain_findings()

    def _drain_findings(self) -> None:
        """A slice of the queued findings; while some are left, the next one runs a slice's
        time later (half the loop for them, half for keys and frames), not at the next
        flush (10,000 VMs' findings took seconds at a slice per flush)."""
        self._drain_queued = False
        if self._closed:
            return
        if not self.loading and not self.inventory_applying and self.findings.pending:
            self.findings.drain(FINDINGS_SLICE_S)
            if self.findings.pending and not self._drain_queued:
                with contextlib.suppress(RuntimeError):  # no loop (a synchronous caller)
                    asyncio.get_running_loop().call_later(FINDINGS_SLICE_S,
                                                          self._drain_findings)
                    self._drain_queued = True
        self.sync_findings()

    def _flush_store(self) -> None:
        if self.recorder is not None and self.recorder.error and not self._recording_lost:
            self._recording_lost = True
            self.listener.header(flags=self._flags())
            self._notice(f"Recording stopped: {clean(str(self.recorder.error))}",
                         severity="error", timeout=30)
        now = _hold_clock()
        if (self.still_loading and self._inventory_done and not self.pending
                and not self.inventory_applying):
            # The last burst went before the source said it was complete: it is now.
            self.still_loading = False
            self._announce()
            return
        if not self.pending or self.inventory_applying:
            if (self.loading and self._gc_paused
                    and now - self._last_arrival >= INITIAL_LOAD_MAX_S):
                self._resume_gc()  # nothing (more) arrives: do not stay without the GC
            return
        if self.loading:
            if not self._inventory_done and not self._show_partial(now):
                self.listener.header(counts=self._progress())
                return
            self.loading = False
            self.still_loading = not self._inventory_done
            self._late_applied = now
            self._start_inventory(final=self._inventory_done)
            return
        if self.still_loading:
            # The rest of a first inventory shown early: held, and placed in bursts.
            if not self._inventory_done and now - self._late_applied < LATE_INVENTORY_EVERY_S:
                return
            self._late_applied = now
            self._start_inventory(final=self._inventory_done)
            return
        if len(self.pending) > BURST_EVENTS:  # e.g. a reconnect's full re-read
            self._start_inventory(final=False)
            return
        batch, self.pending = self.pending, []
        self._apply(batch)

    def _show_partial(self, now: float) -> bool:
        """Show an incomplete first inventory now: nothing arrived for
        ``INITIAL_LOAD_MAX_S`` (a stuck source) or it has been held for
        ``INITIAL_LOAD_HOLD_MAX_S``."""
        return (now - self._last_arrival >= INITIAL_LOAD_MAX_S
                or now - self._load_started >= INITIAL_LOAD_HOLD_MAX_S)

    def _progress(self) -> str:
        """The header's counts while the first inventory is held."""
        if self.vms_received:
            return f"loading {self.vms_received:,} VMs… ({len(self.pending):,} objects)"
        return f"loading… {len(self.pending):,} objects received"

    def _start_inventory(self, *, final: bool) -> None:
        """Apply the pending events in slices (a task of the loop), held and placed once."""
        batch, self.pending = self.pending, []
        self.inventory_applying = True
        self._inventory_task = asyncio.ensure_future(self._apply_inventory(batch, final=final))

    def _pause_gc(self) -> None:
        """No cyclic collections while the first inventory arrives and is applied.

        It is tens of thousands of long-lived, acyclic objects: every collection
        would walk all of them (a pause of 100+ ms at 10,000 VMs) and free nothing.
        ``_resume_gc`` turns it back on when the inventory is applied, or when the
        first load gives up waiting (``INITIAL_LOAD_MAX_S``) with nothing to apply.
        """
        if not self._gc_paused:
            gcpause.pause()  # counted: a backend's own pause in a thread does not end it
            self._gc_paused = True
            self._gc_paused_at = time.monotonic()

    def _resume_gc(self) -> None:
        if self._gc_paused:
            self._gc_paused = False
            gcpause.resume()

    async def _apply_inventory(self, batch: list[Event], *, final: bool = False) -> None:
        """The first inventory (or a burst of more than ``BURST_EVENTS``, or a piece of
        an inventory shown early), ``INVENTORY_SLICE`` events per turn of the loop;
        ``inventory_applying`` meanwhile. ``final``: the inventory's last piece (the
        front end stops saying "still loading")."""
        # The inventory is long-lived and acyclic: no collections while it
        # is built, then it leaves the cyclic GC's generations so that a
        # full collection never pauses a redraw for hundreds of ms.
        self._pause_gc()
        try:
            with self.findings.deferred():  # computed after, in slices (flush)
                start, size = 0, INVENTORY_SLICE
                while start < len(batch):
                    began = time.perf_counter()
                    self._apply(batch[start : start + size])
                    start += size
                    # The next slice aims at INVENTORY_SLICE_S of work (a VM costs the
                    # front end more than a disk does): at most twice this one's size.
                    took = max(time.perf_counter() - began, 1e-5)
                    size = max(16, min(INVENTORY_SLICE, 2 * size,
                                       int(size * INVENTORY_SLICE_S / took)))
                    await let_keys_in()
        finally:
            # Everything allocated while the GC was paused is still in the youngest
            # generation, a remote backend's garbage with it (a vCenter's parsed
            # answers: ~200,000 objects at 10,000 VMs, read for seconds); frozen, it
            # would never be freed (RSS 768 against 209 MB). Collecting that generation
            # walks everything that arrived (0.1 s at 10,000 simulated VMs: a key would
            # wait for it), so a short pause — a local source that leaves no garbage —
            # is frozen as it is.
            if self._gc_paused and time.monotonic() - self._gc_paused_at > GC_COLLECT_AFTER_S:
                gc.collect(0)
            gc.freeze()
            self._resume_gc()
            self.inventory_applying = False
            if final or (self._inventory_done and not self.pending):
                self.still_loading = False
            self._announce()

    def _announce(self) -> None:
        """Tell a listener that has ``inventory_applied`` that what was held is in."""
        applied = getattr(self.listener, "inventory_applied", None)
        if applied is not None:
            applied()

    def _apply(self, batch: list[Event]) -> None:
        try:
            self.store.apply_many(batch)
        except Exception as exc:  # bad data from a source must not stop the console
            # One bad event must not cost the good ones around it (a removal
            # lost with it would leave a deleted checkpoint on screen): the
            # batch again, one event at a time (applying twice changes nothing).
            skipped = 0
            for event in batch:
                try:
                    self.store.apply(event)
                except Exception:
                    skipped += 1
            reason = clean(f"bad data from {self.backend.name}: {type(exc).__name__}: {exc} "
                           f"({skipped} event(s) of {len(batch)} skipped)")
            self.store.apply(ConnectionChanged(self.backend.name, LinkState.STALE, reason))
            self._notice(reason, title="Data error", severity="error", timeout=30)

    async def settle(self) -> None:
        """Apply the backend's events received so far (an outcome reads the store next)."""
        await asyncio.sleep(self.flush_interval)  # the pump takes what the backend sent
        await self._sliced()
        if not self.loading:
            if self.still_loading:  # an outcome does not wait for the next late burst
                self._late_applied = float("-inf")
            self.flush()
            await self._sliced()  # a burst is applied in slices: wait for the last one

    async def _sliced(self) -> None:
        """Until the batch being applied in slices (if any) is in the store."""
        if self._inventory_task is not None and not self._inventory_task.done():
            await asyncio.shield(self._inventory_task)

    # -- findings -----------------------------------------------------------------------
    def tick_findings(self) -> None:
        """Age thresholds and snooze expiry (the front end calls this every ~30 s)."""
        self.findings.tick()
        if self.acks is not None:
            book, now = self.acks, self.clock()

            def expire() -> None:
                with contextlib.suppress(AckError):
                    book.expire(now)

            self.book_write(expire)
        self.sync_findings(force=True)

    def book_write(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run one of the acknowledgement book's writes on the console's writer thread.

        One thread, so writes land in the order they were asked; never on the
        loop, because a shared log's round trip (or a log file another console
        holds locked, up to its busy timeout) must not stall the screen. When
        the write is done the header's counts are redone on the loop.
        """
        if self._book_writer is None:
            self._book_writer = ThreadPoolExecutor(1, thread_name_prefix="ventana-acks")
        future = self._book_writer.submit(fn)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the loop (a headless script): no recount
            return future

        def written(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._book_written)

        future.add_done_callback(written)
        return future

    def _book_written(self) -> None:
        if not self._closed:
            self.sync_findings()

    def sync_findings(self, force: bool = False) -> None:
        """The header's open-finding counts (recounted only when something changed)."""
        seen = (self.findings.version, self.acks.version if self.acks else 0)
        if not force and seen == self._findings_seen and not self.findings.pending:
            return
        self._findings_seen = seen
        counts = open_counts(self.findings, self.acks, self.clock())
        self.listener.header(
            findings=(counts[Severity.CRITICAL] + counts[Severity.BLOCKING],
                      counts[Severity.WARNING], counts[Severity.INFO]),
            findings_pending=self.findings.pending > 0,
        )

    # -- commands → actions -------------------------------------------------------------
    def platform_of(self, vm: VM) -> Platform:
        return platform_of(self.store, vm)

    def resolve(self, command: str, vm_id: str | None) -> Resolved | None:
        """The action ``command`` opens on the VM, or None with a notice saying why."""
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is None:
            self._notice("Select a VM first.", severity="warning")
            return None
        cmd = actionspecs.command(command)
        spec = actionspecs.resolve(command, self.platform_of(vm)) if cmd else None
        if cmd is None or spec is None:
            self._notice(actionspecs.not_for(command, self.platform_of(vm), vm.name),
                         severity="warning")
            return None
        return Resolved(spec, cmd, vm, dict(cmd.params))

    def action_of(self, command: str, vm: VM) -> str | None:
        """The action name ``command`` opens on the VM's platform (None: none)."""
        return actionspecs.action_for(command, self.platform_of(vm))

    def command_of(self, remedy: str) -> str:
        """The console command of a finding's remedy (an action or a command name)."""
        if actionspecs.command(remedy) is not None:
            return remedy
        spec = actionspecs.SPECS.get(remedy)
        return spec.commands[0].name if spec is not None and spec.commands else remedy

    def plan(self, action: str, vm_id: str, **params: Any) -> Plan | None:
        """The plan, or None with a notice (the VM is gone, the action is unknown, the
        team's log does not answer)."""
        if self.refused_while_down():
            return None
        try:
            return self.runner.plan(action, vm_id, **params)
        except (KeyError, ValueError, ActionLogError) as exc:
            self._notice(clean(str(exc)), severity="error")
            return None

    @property
    def shares_log(self) -> bool:
        """The action log is a team's database (plans read its leases first, in a worker)."""
        return self.action_log is not None and self.action_log.shared

    def wants_estimate(self, spec: ActionSpec) -> bool:
        """Ask the server for its storage estimate first (a server task: writable only)."""
        return spec.opens == "estimate" and not self.read_only

    async def fetch_estimate(self, vm_id: str) -> None:
        """vCenter's storage estimate for the VM's snapshots (best-effort), for its plans."""
        self._notice("Asking vCenter for its storage estimate…", timeout=3)
        with contextlib.suppress(Exception):
            executor: Any = self.backend.executor()
            if isinstance(executor, ConsolidationEstimator):  # vSphere only
                snaps = frozenset(c.id for c in self.store.checkpoints_of(vm_id))
                by_lun = await executor.estimate_consolidation(vm_id, timeout=10.0)
                ESTIMATES[vm_id] = ServerEstimate(by_lun, snaps, self.clock())

    async def cancelled(self, plan: Plan) -> None:
        """The operator closed the plan without confirming: log it (in a worker) and say
        so."""
        try:
            await self.runner.cancelled(plan)
        except ActionRefused as exc:
            self._notice(clean(str(exc)), severity="error")
        self._notice(f"{plan.action.capitalize()} of {plan.target_name} cancelled; nothing "
                     "was sent.")

    async def execute(self, plan: Plan, typed: str, *, override: bool = False,
                      overridden: frozenset[str] | None = None,
                      second: bool = False) -> ActionResult | None:
        """Run a confirmed plan through the runner; say how it ended."""
        self.actions_running += 1
        try:
            return await self._execute(plan, typed, override, overridden, second)
        finally:
            self.actions_running -= 1

    async def _execute(self, plan: Plan, typed: str, override: bool,
                       overridden: frozenset[str] | None, second: bool) -> ActionResult | None:
        started = time.monotonic()
        if self.refused_while_down():
            return None
        try:
            result = await self.runner.execute(
                plan, typed, override=override, overridden=overridden, confirmed_twice=second,
            )
        except (ActionRefused, ReadOnlyError) as exc:
            self._notice(f"{plan.action.capitalize()} refused: {exc}", title="Refused",
                         severity="error", timeout=30)
            return None
        except Exception as exc:  # never lose an action silently
            self._notice(
                f"{plan.action.capitalize()} of {plan.target_name}: "
                f"{clean(f'{type(exc).__name__}: {exc}')} — check the action log and verify "
                "on the host",
                title="Action error", severity="error", timeout=60,
            )
            return None
        took = time.monotonic() - started
        sizes = ""
        if result.size_before is not None and result.size_after is not None:
            sizes = f"; disks {human_bytes(result.size_before)} → {human_bytes(result.size_after)}"
        message = (f"{plan.action.capitalize()} of {plan.target_name}: {result.state.value} "
                   f"in {human_duration(took)} (wall clock){sizes}")  # one labelled time base
        if result.error:
            message += f"\n{result.error}"
        severity = {
            TaskState.OK: "information",
            TaskState.WARNING: "warning",
        }.get(result.state, "error")
        self._notice(message, title=f"{plan.action.capitalize()} finished", severity=severity,
                     timeout=15)
        self.last_result = result
        if result.final_state is not None:
            self.set_final_state(plan.target, result.final_state.value)
        return result

    async def cancel_task(self, vm_id: str | None) -> None:
        """Ask the cluster to cancel this console's running action on the VM."""
        ours = [t for t in self.store.running_tasks_for(f"vm:{vm_id}")
                if t.id.startswith(f"{t.kind}-")] if vm_id else []
        if not ours:
            self._notice("No action of this console is running on the selected VM.",
                         severity="warning")
            return
        task = ours[0]
        try:
            done = await self.runner.cancel(task.id)
        except Exception as exc:  # the request may not have gone out
            self._notice(f"Cancel of {task.kind} failed: {clean(str(exc))}", severity="error")
            return
        if done:
            self._notice(f"Cancel requested for {task.kind} of {task.target_name}.")
        else:
            self._notice(f"{task.kind} of {task.target_name} cannot be cancelled at this point "
                         "(e.g. a snapshot removal or a merge in progress); it goes on.",
                         severity="warning")

    # -- rebuilds -----------------------------------------------------------------------
    def _read_rebuilds(self, vm_id: str | None = None) -> tuple[list[Rebuild], Rebuild | None]:
        """The unfinished rebuilds (of ``vm_id``, or all) and ``vm_id``'s latest, read from
        the action log's database. Blocking (a team database's round trip, or its connect
        timeout when it does not answer): callers run it in a worker thread."""
        assert self.action_log is not None
        rs = RebuildStore.open(self.action_log.path)
        try:
            if vm_id is None:
                return rs.unfinished(), None
            return rs.unfinished(vm_id), rs.latest(vm_id)
        finally:
            rs.close()

    def _say_unfinished_rebuilds(self) -> None:
        """At start, in the background: the notice comes when the database has answered."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # started outside a loop (a script): nobody to tell
            return
        task = asyncio.ensure_future(self._announce_unfinished_rebuilds())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce_unfinished_rebuilds(self) -> None:
        """Say which rebuilds wait to be resumed (paused, failed or interrupted)."""
        if self.action_log is None:
            return
        try:
            waiting, _ = await asyncio.to_thread(self._read_rebuilds)
        except ActionLogError as exc:
            self._notice(f"Rebuild state cannot be read: {clean(str(exc))}", severity="warning")
            return
        if waiting:
            names = ", ".join(f"{clean(w.vm_name)} ({w.status})" for w in waiting[:5])
            more = f" and {len(waiting) - 5} more" if len(waiting) > 5 else ""
            self._notice(f"{len(waiting)} rebuild(s) unfinished: {names}{more} — select the VM "
                         "and press b", title="Rebuilds waiting", severity="warning", timeout=30)

    async def rebuild_to_open(self, vm_id: str) -> tuple[bool, Rebuild | None]:
        """(go on, the VM's unfinished or finished-into-it rebuild to show instead of a plan).

        ``go on`` is False (with a notice) when the rebuild state cannot be kept or read.
        The state is read in a worker thread: the UI answers while a team's database does
        (or does not, up to its connect timeout).
        """
        if self.action_log is None:
            self._notice("A rebuild keeps its state in the action log, which is not open: "
                         f"{clean(self.runner.log_error)}", severity="error")
            return False, None
        try:
            waiting, latest = await asyncio.to_thread(self._read_rebuilds, vm_id)
        except ActionLogError as exc:
            self._notice(clean(str(exc)), severity="error")
            return False, None
        if waiting or (latest is not None and latest.new_vm_id == vm_id):
            return True, waiting[-1] if waiting else latest
        return True, None

    def rebuild_params(self, workflow: str | None = None) -> dict[str, object] | None:
        """A rebuild plan's params (the log keeps its state); None without a log."""
        if self.action_log is None:
            return None
        params: dict[str, object] = {"db": str(self.action_log.path)}
        if workflow:
            params["workflow"] = workflow
        return params

    # -- final states -------------------------------------------------------------------
    def final_state_of(self, vm_id: str) -> str | None:
        """The VM's final state as the action log has it (None: never set)."""
        return self.final_states.get(f"{Kind.VM.value}:{vm_id}")

    def set_final_state(self, target: str, state: str) -> None:
        self.final_states[target] = state
        self.listener.final_state_changed(target)

    async def load_final_states(self) -> None:
        if self.action_log is None or self.log_down:  # down: loaded when it answers
            return
        try:
            states = await asyncio.to_thread(self.action_log.final_states)
        except Exception as exc:  # the console works without them
            self._notice(f"Final states could not be read from the action log: "
                         f"{clean(str(exc))}", severity="warning")
            return
        for target, state in states.items():  # an edit made meanwhile stays
            self.final_states.setdefault(target, state)
        self.listener.final_state_changed("")

    def why_no_final_state(self) -> tuple[str, str]:
        """Why a final state cannot be set now, and how bad that is ('' when it can)."""
        if self.runner.mode == "replay":
            return ("A replay shows a recorded session: final states are set on a live "
                    "console.", "warning")
        if self.action_log is None:
            return (f"The action log is unavailable, so the final state cannot be "
                    f"recorded: {clean(self.runner.log_error)}", "error")
        return "", ""

    async def record_final_state(self, vm_id: str, vm_name: str, state: FinalState,
                                 note: str) -> bool:
        """Write an operator's final state to the action log (nothing goes to the cluster)."""
        assert self.action_log is not None
        target = f"{Kind.VM.value}:{vm_id}"
        previous = self.final_state_of(vm_id)
        try:
            await asyncio.to_thread(
                self.action_log.record,
                action="final-state", target_system=self.backend.target, mode=self.runner.mode,
                target_object=target, target_name=vm_name,
                plan={"final_state": state.value, "previous": previous, "note": note},
                findings=[], override=False, confirmed=True, outcome="ok",
                final_state=state,
                detail={"note": note} if note else None,
            )
        except ActionLogError as exc:
            self._notice(f"The final state was not recorded: {clean(str(exc))}",
                         severity="error", timeout=30)
            return False
        self.set_final_state(target, state.value)
        self._notice(f"{vm_name}: final state {state.value}" + (f" ({note})" if note else ""))
        return True

    # -- the maintenance window ---------------------------------------------------------
    @property
    def open_window(self) -> WindowRunner | None:
        """The window runner if one was opened (None: never asked for)."""
        return self._window

    async def window_runner(self) -> WindowRunner | None:
        """The window queue (from the action log's database, read in a worker thread the
        first time); None, with a notice, if unusable. Asked twice while the first read
        is out, both get the one runner."""
        if self._window is not None:
            return self._window
        if self.action_log is None:
            self._notice("The maintenance window is kept in the action log, which is not "
                         f"open: {clean(self.runner.log_error)}", severity="error")
            return None
        if self._window_opening is None:
            path, now = self.action_log.path, self.clock()
            self._window_opening = asyncio.ensure_future(asyncio.to_thread(
                lambda: WindowStore.open(path).load(default_name=f"window {now:%Y-%m-%d}",
                                                    now=now)))
        opening = self._window_opening
        try:
            window = await asyncio.shield(opening)
        except WindowError as exc:
            if self._window_opening is opening:  # the next key asks the database again
                self._window_opening = None
                self._notice(clean(str(exc)), severity="error")
            return None
        if self._window is None:
            wr = WindowRunner(self.runner, window, on_change=self.listener.window_changed)
            loop = asyncio.get_running_loop()
            window.write_behind(lambda error: loop.call_soon_threadsafe(self._window_saved,
                                                                        wr, error))
            self._window = wr
        return self._window

    def _window_saved(self, wr: WindowRunner, error: str) -> None:
        """A write of the queue ended: the first failure is said, and when it works again."""
        if error and not wr.save_error:
            self._notice(f"The window queue could not be saved (it is kept here and written "
                         f"again with the next change): {error}", title="Queue not saved",
                         severity="error", timeout=20)
        elif not error and wr.save_error:
            self._notice("The window queue is saved again.", title="Queue saved", timeout=10)
        wr.saved(error)

    async def queue(self, command: str, vm_id: str | None) -> None:
        """Add the action ``command`` opens on the VM to the window's queue."""
        vm = self.store.vm(vm_id) if vm_id else None
        if vm is None:
            self._notice("Select a VM first.", severity="warning")
            return
        wr = await self.window_runner()
        if wr is None:
            return
        # The platform decides, per VM, as for the key: a vSphere VM's merge is
        # the removal of all its snapshots.
        action = self.action_of(command, vm)
        if action is None:
            self._notice(actionspecs.not_for(command, self.platform_of(vm), vm.name),
                         severity="warning")
            return
        try:
            wr.window.add(vm.id, vm.name, action)
        except WindowError as exc:
            self._notice(clean(str(exc)), severity="error")
            return
        pending = sum(1 for i in wr.window.items if i.pending)
        what = "Removal of all snapshots" if action == REMOVE_ALL else action.capitalize()
        self._notice(f"{what} of {vm.name} queued in {wr.window.name} ({pending} to run). "
                     "w opens the window.")

    def run_window_now(self, typed: str, shown: dict[str, Plan], parallel: int,
                       same_lun: bool) -> WindowRunner | None:
        """Confirm the queue's run; the runner to ``start`` (None, with a notice: refused)."""
        wr = self._window
        if wr is None or self.refused_while_down():
            return None
        try:
            wr.window.set_parallel(parallel, same_lun)
            count = wr.confirm(typed, shown)
        except (ActionRefused, ReadOnlyError, WindowError) as exc:
            self._notice(f"The queue was not run: {clean(str(exc))}", severity="error")
            return None
        self._notice(f"Running {count} item(s) of {wr.window.name}.")
        return wr

    async def run_window(self, wr: WindowRunner) -> None:
        self.actions_running += 1
        try:
            await wr.start()
        finally:
            self.actions_running -= 1
        counts: dict[str, int] = {}
        for item in wr.window.items:
            counts[item.status] = counts.get(item.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        self._notice(f"Window {wr.window.name}: {summary}", title="Queue stopped", timeout=15)

    # -- the end -------------------------------------------------------------------------
    async def close(self) -> None:
        self._closed = True
        self._resume_gc()
        for task in list(self._background):
            task.cancel()
        if self._window is not None:  # what is left of the queue is written first
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._window.window.close)
        if self._log_watch is not None:
            self._log_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._log_watch
        if self.team_feed is not None:
            await asyncio.to_thread(self.team_feed.stop)
        self.findings.detach()
        if self._book_writer is not None:  # what was asked is written before the book closes
            await asyncio.to_thread(self._book_writer.shutdown, wait=True)
        if self.acks is not None:
            self.acks.close()
        await self.backend.close()


#: A shared log row's status (its first word) as a task state; anything else
#: ("interrupted — verify on the host", "unknown — …") is UNKNOWN.
_TEAM_STATES = {"running": TaskState.RUNNING, "ok": TaskState.OK,
                "warning": TaskState.WARNING, "failed": TaskState.FAILED,
                "cancelled": TaskState.CANCELLED}


def _when(stamp: str | None) -> datetime | None:
    """A row's ISO time (untrusted text): None when absent or unreadable."""
    try:
        return datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        return None
