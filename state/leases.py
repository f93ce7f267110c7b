"""One action per VM across every console sharing a log, and shared LUN space.

Owns the ``leases`` table (schema: state/schema.py). A lease is taken in the
same transaction as an action's intent row (``ActionLog.begin(claim=…)``) and
dropped in the same transaction as its outcome (``ActionLog.finish``), so a
committed intent without a lease, or a lease without its intent, cannot exist.

- **One per VM**: a live lease on the target refuses another console's action
  with who holds it (``ActionBusy``: operator, host, action, since when).
- **Held while it runs**: the console renews its leases every third of the
  time-to-live (``Keeper``); the expiry is on the database's clock, so
  consoles' clocks do not matter.
- **A console that dies** stops renewing; after the time-to-live its lease
  is void and its row reads "interrupted — verify on the host" for everyone
  (``ActionLog`` computes the status from the lease). A lease held by a
  process on *this* host and boot that is provably gone (state/actionlog.py
  ``writer_alive``) is void at once — no point waiting for a dead pid.
- **Shared space**: a claim carries the worst-case bytes the action may need
  on each LUN; the decision counts every live lease's reservation on those
  LUNs (except the ones the console's own view already counts) and refuses
  when the sum would leave less than the 200 MB Hyper-V needs
  (``PAUSE_CRITICAL_MARGIN``) — the pre-flight's rule, made atomic across
  consoles by the engine's lock (``BEGIN IMMEDIATE`` / an advisory lock).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .derived import PAUSE_CRITICAL_MARGIN, human_bytes
from .sanitize import clean
from .schema import Db

DEFAULT_TTL_S = 60.0


class ActionBusy(Exception):
    """Another console holds the VM, or the LUN's shared space is spoken for."""

    def __init__(self, message: str, code: str = "VM_LEASED") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Claim:
    """What an action asks for when its intent row is written."""

    ttl: float = DEFAULT_TTL_S
    cluster_account: str = ""
    #: lun id → worst-case bytes this action may need there
    space: Mapping[str, int] = field(default_factory=dict)
    #: lun id → free bytes as this console sees them now
    free: Mapping[str, int] = field(default_factory=dict)
    #: lun id → bytes this console's own view already reserves (its running merges)
    counted: Mapping[str, int] = field(default_factory=dict)
    #: targets whose running merges this console's own view already counts
    counted_targets: frozenset[str] = frozenset()
    lun_names: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Lease:
    target_object: str
    row_id: int
    action: str
    target_name: str
    console: str
    operator: str
    host: str
    boot_id: str | None
    pid: int
    proc_start: int | None
    cluster_account: str
    lun_space: dict[str, int]
    acquired: float
    expires: float

    def who(self) -> str:
        since = datetime.fromtimestamp(self.acquired, UTC).strftime("%H:%M:%S UTC")
        account = f" as {self.cluster_account}" if self.cluster_account else ""
        return clean(f"{self.operator}@{self.host}{account} ({self.action} since {since})")


def _lease(r: Mapping[str, Any]) -> Lease:
    try:
        space = {str(k): int(v) for k, v in json.loads(r["lun_space"] or "{}").items()}
    except (ValueError, TypeError, AttributeError):
        space = {}
    return Lease(clean(r["target_object"]), int(r["row_id"]), clean(r["action"]),
                 clean(r["target_name"]), clean(r["console"]), clean(r["operator"]),
                 clean(r["host"]), r["boot_id"], int(r["pid"]), r["proc_start"],
                 clean(r["cluster_account"] or ""), space, float(r["acquired"]),
                 float(r["expires"]))


def live_leases(db: Db, alive: Callable[[Lease], bool | None]) -> list[Lease]:
    """Leases not expired (the database's clock) and not held by a provably dead process.

    ``alive(lease)``: True/False when this host can tell, None when it cannot.
    """
    rows = db.query("select *, NOW() as db_now from leases")
    out = []
    for r in rows:
        lease = _lease(r)
        if lease.expires < float(r["db_now"]):
            continue
        if alive(lease) is False:
            continue
        out.append(lease)
    return out


def conflicts(live: list[Lease], target_object: str, target_name: str, claim: Claim,
              mine: str = "") -> list[tuple[str, str]]:
    """What stands in the way of ``claim`` on ``target_object``: (code, message) pairs.

    ``VM_LEASED``: another console holds the VM. ``NO_SPACE``: the LUN's free
    space less every other console's reservation there (not counted by this
    console's own view) and this action's need leaves under 200 MB. Leases held
    by ``mine`` (this console) are this console's own business.
    """
    found: list[tuple[str, str]] = []
    others = [le for le in live if not (mine and le.console == mine)]
    for lease in others:
        if lease.target_object == target_object:
            found.append(("VM_LEASED",
                f"{clean(target_name)} is already being acted on from another console: "
                f"{lease.who()}; one action per VM across all consoles — wait for it, or "
                "verify on the host if that console is gone"))
    for lun, needed in claim.space.items():
        shared = [(le, le.lun_space.get(lun, 0)) for le in others
                  if le.target_object not in claim.counted_targets and le.lun_space.get(lun)
                  and le.target_object != target_object]
        if not shared or lun not in claim.free:
            continue
        reserved = sum(n for _, n in shared)
        left = claim.free[lun] - claim.counted.get(lun, 0) - reserved - needed
        if left < PAUSE_CRITICAL_MARGIN:
            holders = "; ".join(f"{le.target_name} {human_bytes(n)} by {le.who()}"
                                for le, n in shared)
            name = claim.lun_names.get(lun, lun)
            found.append(("NO_SPACE",
                f"{clean(name)} has {human_bytes(claim.free[lun])} free, "
                f"{human_bytes(reserved)} of it reserved by merges running from other consoles "
                f"({holders}); this one may need {human_bytes(needed)} and must leave "
                f"{human_bytes(PAUSE_CRITICAL_MARGIN)} or Hyper-V pauses every VM on the "
                "volume"))
    return found


def acquire(db: Db, *, row_id: int, target_object: str, target_name: str, action: str,
            who: Mapping[str, Any], claim: Claim,
            alive: Callable[[Lease], bool | None]) -> None:
    """Inside ``db.write(serialize=True)``: check, then insert the lease or raise ActionBusy."""
    live = live_leases(db, alive)
    for code, message in conflicts(live, target_object, target_name, claim):
        if code == "NO_SPACE":
            message = f"blocked by pre-flight: NO_SPACE — {message}"
        raise ActionBusy(message, code=code)
    # A dead or expired holder's lease is replaced (its row reads interrupted).
    db.execute("delete from leases where target_object = ?", (target_object,))
    db.execute(
        "insert into leases (target_object, row_id, action, target_name, console, operator, "
        "host, boot_id, pid, proc_start, cluster_account, lun_space, acquired, expires) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NOW(), NOW() + ?)",
        (target_object, row_id, action, target_name, who["console"], who["operator"],
         who["host"], who["boot_id"], who["pid"], who["proc_start"], claim.cluster_account,
         json.dumps({k: int(v) for k, v in claim.space.items()}, sort_keys=True), claim.ttl))


def release(db: Db, row_id: int) -> None:
    db.execute("delete from leases where row_id = ?", (row_id,))


class Keeper:
    """Renews this console's leases and retries outcomes the database missed.

    One daemon thread per log, started on the first lease, woken every
    ``period`` seconds; it stops when the log closes. ``lost`` lists the rows
    whose lease another console took over (expired while the database was
    out of reach).
    """

    def __init__(self, renew: Callable[[int, float], bool], flush: Callable[[], None]) -> None:
        self._renew = renew
        self._flush = flush
        self._held: dict[int, float] = {}  # row id → ttl
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: set[int] = set()
        self.period = DEFAULT_TTL_S / 3

    def hold(self, row_id: int, ttl: float) -> None:
        with self._lock:
            self._held[row_id] = ttl
            self.period = min(self.period, max(0.05, ttl / 3))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="ventana-leases")
                self._thread.start()
        self._wake.set()

    def drop(self, row_id: int) -> None:
        with self._lock:
            self._held.pop(row_id, None)

    def held(self) -> dict[int, float]:
        with self._lock:
            return dict(self._held)

    def poke(self) -> None:
        self._wake.set()
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="ventana-leases")
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.period)
            self._wake.clear()
            if self._stop.is_set():
                return
            for row_id, ttl in self.held().items():
                try:
                    if not self._renew(row_id, ttl):
                        self.lost.add(row_id)
                except Exception:  # the database is away: retry next period
                    pass
            with contextlib.suppress(Exception):  # still away: next period
                self._flush()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
