"""The maintenance window: a named, ordered plan queue with an end time.

Owns the queue model, its projection and its persistence.

- A **window** has a name (what the operator types to confirm a run), an
  optional end time, and how many items may run at once (``parallel``; two
  items on one LUN never run together unless ``same_lun`` is allowed).
- An **item** is one guarded action on one VM (``vm``, ``action``,
  ``params``) with a status: queued, running, then the outcome (ok, warning,
  failed, unknown, cancelled) or skipped (with the reason).
- The **projection** re-plans every item that has not finished from the live
  store (``project``): its estimate with the uncertainty, when it would start
  and end in the likely and the worst case (a schedule honouring the
  parallelism and the one-per-LUN/one-per-VM rules), the projected free space
  of its LUN after it — cumulative over the queue for items on the same LUN,
  worst and best case, from each plan's space figures — and whether the
  queue fits before the window's end.
- **Persistence**: two tables (``windows``, ``window_items``) in the action
  log's database (a SQLite file or a team's PostgreSQL; schema:
  state/schema.py), written on every change in one transaction, so a queue
  survives a restart. An item found ``running`` when the queue is loaded
  whose VM no console holds (no live lease, state/leases.py) was cut off by a
  restart: it becomes ``unknown`` (verify on the host; its
  action-log row says "interrupted").
- **Written behind, off the UI loop** (``WindowStore.write_behind``, which the
  console turns on): a change is made in memory at once and the whole window
  is written by one writer thread — only the newest state, since each write
  replaces the window's rows — so a team database's round trip (or its connect
  timeout) never holds a key, and a failed write is reported (``on_result``),
  not raised into the screen; the next change writes everything again.
  ``flushed()`` tells when what was changed so far is written: the runner
  waits for it before an item's action is sent, as it did when writes were
  made in place. Without ``write_behind`` every change is written at once
  (scripts, tests of the model).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .db import DEFAULT_BUSY_TIMEOUT
from .plans import Estimate, Plan
from .sanitize import clean
from .schema import Db, Location, LocationError, is_url, location, open_db

QUEUED = "queued"
RUNNING = "running"
SKIPPED = "skipped"
PENDING = (QUEUED, RUNNING)
#: Outcomes after which later items on the same VM are skipped.
NOT_OK = ("failed", "unknown", "cancelled")

#: An action without an estimate of its own (e.g. an upgrade: seconds).
DEFAULT_ESTIMATE = Estimate(60.0, 300.0, 900.0, "no estimate for this action; assumed 5 min")

class WindowError(Exception):
    """The queue cannot be read or written; the message says why."""


@dataclass(frozen=True, slots=True)
class QueueItem:
    id: str
    vm_id: str
    vm_name: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = QUEUED
    reason: str = ""
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def pending(self) -> bool:
        return self.status in PENDING


@dataclass(frozen=True, slots=True)
class ItemProjection:
    item: QueueItem
    plan: Plan | None
    error: str  # why there is no plan (the VM vanished...)
    estimate: Estimate
    lun_id: str
    lun_name: str
    start_likely: datetime | None
    end_likely: datetime | None
    end_worst: datetime | None
    lun_free_after_worst: int | None  # cumulative over the queue's items on this LUN
    lun_free_after_best: int | None
    fits_likely: bool | None  # None: no end time set (or already finished)
    fits_worst: bool | None

    @property
    def blocking(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.plan.blocking) if self.plan else ()


@dataclass(frozen=True, slots=True)
class Projection:
    items: tuple[ItemProjection, ...]
    now: datetime
    end_likely: datetime
    end_worst: datetime
    fits_likely: bool | None
    fits_worst: bool | None


class MaintenanceWindow:
    """One window and its queue; every change is saved at once."""

    def __init__(self, store: WindowStore, name: str, end: datetime | None = None,
                 parallel: int = 1, same_lun: bool = False,
                 items: Iterable[QueueItem] = ()) -> None:
        self._store = store
        self.name = name
        self.end = end
        self.parallel = max(1, parallel)
        self.same_lun = same_lun
        self.items: list[QueueItem] = list(items)

    # -- the queue ---------------------------------------------------------------
    def item(self, item_id: str) -> QueueItem | None:
        return next((i for i in self.items if i.id == item_id), None)

    def add(self, vm_id: str, vm_name: str, action: str, **params: Any) -> QueueItem:
        """Append an item; an identical pending one is not added twice."""
        for existing in self.items:
            if (existing.pending and existing.vm_id == vm_id and existing.action == action
                    and existing.params == params):
                return existing
        item = QueueItem(uuid.uuid4().hex[:10], vm_id, clean(vm_name), action, dict(params))
        self.items.append(item)
        self.save()
        return item

    def remove(self, item_id: str) -> bool:
        item = self.item(item_id)
        if item is None or item.status == RUNNING:
            return False
        self.items.remove(item)
        self.save()
        return True

    def move(self, item_id: str, step: int) -> bool:
        item = self.item(item_id)
        if item is None:
            return False
        i = self.items.index(item)
        j = max(0, min(len(self.items) - 1, i + step))
        if i == j:
            return False
        self.items.insert(j, self.items.pop(i))
        self.save()
        return True

    def update(self, item_id: str, **changes: Any) -> QueueItem:
        item = self.item(item_id)
        if item is None:
            raise KeyError(item_id)
        new = dataclasses.replace(item, **changes)
        self.items[self.items.index(item)] = new
        self.save()
        return new

    def reset(self, item_id: str) -> QueueItem:
        """Put a finished or skipped item back in the queue (to try it again)."""
        return self.update(item_id, status=QUEUED, reason="", started=None, ended=None)

    def set_end(self, end: datetime | None) -> None:
        self.end = end
        self.save()

    def set_parallel(self, parallel: int, same_lun: bool = False) -> None:
        self.parallel, self.same_lun = max(1, parallel), same_lun
        self.save()

    def rename(self, name: str) -> None:
        name = clean(name).strip()
        if not name:
            raise ValueError("a window needs a name")
        old, self.name = self.name, name
        self._store.save(self, old_name=old)

    def save(self) -> None:
        self._store.save(self)

    def write_behind(self, on_result: Callable[[str], None]) -> None:
        """Changes are written by a writer thread from now on (``WindowStore.write_behind``)."""
        self._store.write_behind(on_result)

    def flushed(self) -> concurrent.futures.Future[str]:
        """Done when every change made so far is written: '' or why it could not be."""
        return self._store.flushed()

    def close(self) -> None:
        """Write what is left (waited for, up to the store's limit), then let go of the
        database connection."""
        self._store.close()


# -- projection -------------------------------------------------------------------

def _schedule(
    entries: list[tuple[str, str, str, float, float | None]], parallel: int, same_lun: bool,
) -> dict[str, tuple[float, float]]:
    """Start/end offsets (s) for ``(key, vm, lun, duration, running_remaining)`` in order.

    Greedy and in queue order, like the runner: at most ``parallel`` at once,
    never two on one VM, never two on one LUN unless ``same_lun``; an item
    may start before an earlier one that must wait for its LUN, never before
    an earlier one on its own VM.
    """
    out: dict[str, tuple[float, float]] = {}
    running: list[tuple[float, str, str]] = []  # (end, vm, lun)
    pending = []
    for key, vm, lun, duration, remaining in entries:
        if remaining is not None:
            out[key] = (0.0, remaining)
            running.append((remaining, vm, lun))
        else:
            pending.append((key, vm, lun, duration))
    t = 0.0
    while pending:
        started = True
        while started and len(running) < parallel:
            started = False
            busy_vms = {vm for _, vm, _ in running}
            busy_luns = {lun for _, _, lun in running if lun}
            seen_vms: set[str] = set()
            for n, (key, vm, lun, duration) in enumerate(pending):
                if vm in busy_vms or vm in seen_vms or (lun and not same_lun and lun in busy_luns):
                    seen_vms.add(vm)
                    continue
                out[key] = (t, t + duration)
                running.append((t + duration, vm, lun))
                del pending[n]
                started = True
                break
        if not pending:
            break
        t = min(end for end, _, _ in running)
        running = [r for r in running if r[0] > t]
    return out


PlanFn = Callable[[QueueItem], Plan]


def project(
    window: MaintenanceWindow, plan_fn: PlanFn, now: datetime,
    running_plans: dict[str, Plan] | None = None,
) -> Projection:
    """Re-plan every pending item and project time, space and fit.

    ``plan_fn`` plans one item from the live store (raising KeyError or
    ValueError when it cannot); ``running_plans`` holds the plans running
    items started with (their live re-plan would only say "busy").
    """
    running_plans = running_plans or {}
    planned: list[tuple[QueueItem, Plan | None, str]] = []
    for item in window.items:
        if not item.pending:
            planned.append((item, None, ""))
            continue
        plan = running_plans.get(item.id) if item.status == RUNNING else None
        error = ""
        if plan is None:
            try:
                plan = plan_fn(item)
            except (KeyError, ValueError) as exc:
                error = clean(str(exc.args[0] if exc.args else exc))
        planned.append((item, plan, error))

    entries: list[tuple[str, str, str, float, float | None]] = []
    worst_entries: list[tuple[str, str, str, float, float | None]] = []
    estimates: dict[str, Estimate] = {}
    for item, plan, _error in planned:
        if not item.pending:
            continue
        est = (plan.estimate if plan and plan.estimate else DEFAULT_ESTIMATE)
        if plan is None:
            est = Estimate(0.0, 0.0, 0.0, "no plan")
        estimates[item.id] = est
        lun = plan.lun_id if plan else ""
        if item.status == RUNNING and item.started is not None:
            elapsed = max(0.0, (now - item.started).total_seconds())
            likely_left: float | None = max(0.0, est.likely_s - elapsed)
            worst_left: float | None = max(0.0, est.high_s - elapsed)
        else:
            likely_left = worst_left = None
        entries.append((item.id, item.vm_id, lun, est.likely_s, likely_left))
        worst_entries.append((item.id, item.vm_id, lun, est.high_s, worst_left))
    likely = _schedule(entries, window.parallel, window.same_lun)
    worst = _schedule(worst_entries, window.parallel, window.same_lun)

    free: dict[str, tuple[int, int]] = {}  # lun -> cumulative (worst, best)
    out: list[ItemProjection] = []
    for item, plan, error in planned:
        est = estimates.get(item.id, DEFAULT_ESTIMATE)
        start = end_l = end_w = None
        fits_l = fits_w = None
        after_w = after_b = None
        if item.pending:
            s, e = likely.get(item.id, (0.0, 0.0))
            start, end_l = now + timedelta(seconds=s), now + timedelta(seconds=e)
            end_w = now + timedelta(seconds=worst.get(item.id, (0.0, 0.0))[1])
            if window.end is not None:
                fits_l, fits_w = end_l <= window.end, end_w <= window.end
            if plan is not None and plan.lun_id and plan.free_now is not None:
                w0, b0 = free.get(plan.lun_id, (plan.free_now, plan.free_now))
                dw = (plan.free_after_worst if plan.free_after_worst is not None
                      else plan.free_now) - plan.free_now
                db = (plan.free_after_best if plan.free_after_best is not None
                      else plan.free_now) - plan.free_now
                after_w, after_b = w0 + dw, b0 + db
                free[plan.lun_id] = (after_w, after_b)
        out.append(ItemProjection(
            item=item, plan=plan, error=error, estimate=est,
            lun_id=plan.lun_id if plan else "", lun_name=plan.lun_name if plan else "",
            start_likely=start, end_likely=end_l, end_worst=end_w,
            lun_free_after_worst=after_w, lun_free_after_best=after_b,
            fits_likely=fits_l, fits_worst=fits_w,
        ))
    end_likely = now + timedelta(seconds=max((e for _, e in likely.values()), default=0.0))
    end_worst = now + timedelta(seconds=max((e for _, e in worst.values()), default=0.0))
    fits_likely = fits_worst = None
    if window.end is not None:
        fits_likely, fits_worst = end_likely <= window.end, end_worst <= window.end
    return Projection(tuple(out), now, end_likely, end_worst, fits_likely, fits_worst)


# -- persistence --------------------------------------------------------------------

def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """A window as it was when it changed: what one write puts in the tables."""

    name: str
    end: datetime | None
    parallel: int
    same_lun: bool
    items: tuple[QueueItem, ...]
    gone: frozenset[str] = frozenset()  # names whose rows go too (a rename)

    @classmethod
    def of(cls, window: MaintenanceWindow, old_name: str | None = None) -> _Snapshot:
        gone = frozenset({old_name}) if old_name and old_name != window.name else frozenset()
        return cls(window.name, window.end, window.parallel, window.same_lun,
                   tuple(window.items), gone)


class _WriteBehind:
    """One thread writing a window's newest snapshot (see the module's docstring)."""

    def __init__(self, write: Callable[[_Snapshot], None],
                 on_result: Callable[[str], None]) -> None:
        self._write = write
        self._on_result = on_result
        self._cond = threading.Condition()
        self._pending: _Snapshot | None = None
        self._gone: set[str] = set()  # renamed-from names not yet written away
        self._submitted = 0
        self._done = 0
        self._last = ""  # the last write's error ('' when it worked)
        self._waiters: list[tuple[int, concurrent.futures.Future[str]]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ventana-window-writer",
                                        daemon=True)
        self._thread.start()

    def submit(self, snapshot: _Snapshot) -> None:
        with self._cond:
            self._gone |= snapshot.gone
            self._pending = snapshot
            self._submitted += 1
            self._cond.notify()

    def flushed(self) -> concurrent.futures.Future[str]:
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._cond:
            if self._done >= self._submitted:
                future.set_result(self._last)
            elif self._closed and not self._thread.is_alive():  # nobody will write it
                future.set_result("the queue was changed after its writer closed: not saved")
            else:
                self._waiters.append((self._submitted, future))
        return future

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                snapshot = dataclasses.replace(self._pending,
                                               gone=frozenset(self._gone - {self._pending.name}))
                seq, self._pending, self._gone = self._submitted, None, set()
            error = ""
            try:
                self._write(snapshot)
            except Exception as exc:  # WindowError, or anything: said, never raised here
                error = clean(str(exc)) or type(exc).__name__
            with self._cond:
                if error:  # the rename's old rows are still there: the next write removes them
                    self._gone |= snapshot.gone
                self._done, self._last = seq, error
                ready = [f for s, f in self._waiters if s <= seq]
                self._waiters = [(s, f) for s, f in self._waiters if s > seq]
            for future in ready:
                future.set_result(error)
            with contextlib.suppress(Exception):  # a UI callback must not stop the writer
                self._on_result(error)


#: How long closing waits for the last write (a team database that does not answer).
CLOSE_WAIT_S = 10.0


class WindowStore:
    """The queue's tables in the action log's database (a SQLite file or a team's
    PostgreSQL; schema: state/schema.py), on its own connection."""

    def __init__(self, path: Location, db: Db,
                 timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.path = path
        self._db = db
        self._conn = db.conn if not db.pg else None
        self._timeout = timeout
        self._lock = threading.RLock()
        self._behind: _WriteBehind | None = None

    def write_behind(self, on_result: Callable[[str], None]) -> None:
        """From now on, changes are written by a writer thread; ``on_result`` hears after
        each write ('' or the error), in that thread."""
        if self._behind is None:
            self._behind = _WriteBehind(self._write_snapshot, on_result)

    def flushed(self) -> concurrent.futures.Future[str]:
        """Done when every change saved so far is written ('' or the last error)."""
        if self._behind is None:
            done: concurrent.futures.Future[str] = concurrent.futures.Future()
            done.set_result("")
            return done
        return self._behind.flushed()

    @classmethod
    def open(cls, path: Location, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> WindowStore:
        try:
            loc = location(path)
        except LocationError as exc:
            raise WindowError(str(exc)) from None
        assert loc is not None
        db = open_db(loc, error=WindowError, busy_timeout=busy_timeout)
        return cls(loc if is_url(loc) else Path(loc), db, busy_timeout)

    def _write(self) -> AbstractContextManager[Db]:
        return self._db.write()

    def _held_targets(self) -> set[str]:
        from .actionlog import _lease_alive
        from .leases import live_leases

        return {le.target_object for le in live_leases(self._db, _lease_alive)}

    def close(self) -> None:
        if self._behind is not None:
            self._behind.close(CLOSE_WAIT_S)
        with self._lock:
            self._db.close()

    def load(self, name: str | None = None, *, default_name: str = "maintenance window",
             now: datetime | None = None) -> MaintenanceWindow:
        """The named window, else the most recently changed one, else a new one.

        Items left ``running`` by a console that stopped become ``unknown``.
        """
        try:
            with self._lock:
                if name is None:
                    found = self._db.query(
                        "select name, end_at, parallel, same_lun from windows "
                        "order by updated desc limit 1")
                else:
                    found = self._db.query(
                        "select name, end_at, parallel, same_lun from windows where name = ?",
                        (name,))
                if not found:
                    window = MaintenanceWindow(self, name or default_name)
                    self.save(window)
                    return window
                row = found[0]
                items = [
                    QueueItem(r["id"], r["vm_id"], r["vm_name"], r["action"],
                              json.loads(r["params"]), r["status"], r["reason"],
                              _dt(r["started"]), _dt(r["ended"]))
                    for r in self._db.query(
                        "select id, vm_id, vm_name, action, params, status, reason, started, "
                        "ended from window_items where \"window\" = ? order by position",
                        (row["name"],))
                ]
        except WindowError as exc:
            raise WindowError(f"the window queue in {self._db.where} cannot be read: {exc}"
                              ) from exc
        except ValueError as exc:
            raise WindowError(f"the window queue in {self._db.where} cannot be read: {exc}"
                              ) from exc
        window = MaintenanceWindow(self, row["name"], _dt(row["end_at"]), int(row["parallel"]),
                                   bool(row["same_lun"]), items)
        # A running item another console still holds (a live lease on its VM) is
        # theirs; one nobody holds was cut off by a console that stopped.
        running = [i for i in window.items if i.status == RUNNING]
        held = self._held_targets() if running else set()
        cut = [i for i in running if f"vm:{i.vm_id}" not in held]
        for item in cut:
            window.items[window.items.index(item)] = dataclasses.replace(
                item, status="unknown", ended=now,
                reason="the console stopped while it ran — verify on the host "
                "(its action-log row reads interrupted)")
        if cut:
            self.save(window)
        return window

    def save(self, window: MaintenanceWindow, *, old_name: str | None = None) -> None:
        """Write the window (its rows replace what its name, or ``old_name``, had): at once,
        or handed to the writer thread after ``write_behind``."""
        snapshot = _Snapshot.of(window, old_name)
        if self._behind is not None:
            self._behind.submit(snapshot)
        else:
            self._write_snapshot(snapshot)

    def _write_snapshot(self, window: _Snapshot) -> None:
        with self._lock, self._write() as conn:
            for gone in {window.name, *window.gone}:
                conn.execute("delete from window_items where \"window\" = ?", (gone,))
                conn.execute("delete from windows where name = ?", (gone,))
            conn.execute(
                "insert into windows (name, end_at, parallel, same_lun, updated) "
                "values (?, ?, ?, ?, ?)",
                (window.name, _iso(window.end), window.parallel, int(window.same_lun),
                 datetime.now(UTC).isoformat()))
            conn.executemany(
                "insert into window_items (id, \"window\", position, vm_id, vm_name, "
                "action, params, status, reason, started, ended) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(i.id, window.name, n, i.vm_id, i.vm_name, i.action,
                  json.dumps(i.params, sort_keys=True), i.status, clean(i.reason),
                  _iso(i.started), _iso(i.ended))
                 for n, i in enumerate(window.items)])
