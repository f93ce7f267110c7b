"""Acknowledged and snoozed findings, kept in the action-log database.

A table ``finding_acks`` next to ``actions`` (schema: state/schema.py; a
SQLite file or a team's PostgreSQL database), written with the action log's
durability rules (WAL, ``synchronous=FULL``, ``busy_timeout``, every write in
``BEGIN IMMEDIATE``); any failure raises ``AckError``. Each acknowledgement
or snooze is also written to the action log (``ActionLog.record``) by the
caller, so who silenced what, when and why is audited.

The rules:

- Keyed by **(target, code)**: acknowledging "vm:X / CHECKPOINT_OLD" covers
  that problem on that object while it persists, whatever its message says
  as it evolves (the age grows, the count changes).
- An **acknowledgement** ends when the problem goes away: when the finding
  disappears it is marked cleared; if the same (target, code) comes back more
  than ``grace`` later (default 15 min), it is a new problem and shows again.
  Within the grace it is the same problem flapping (free space hovering
  around a threshold) and stays acknowledged.
- A **snooze** ends at its time, by itself, whether or not the finding
  cleared meanwhile.
- Either ends early when the finding becomes **more severe** than it was when
  silenced (a warning acknowledged, then critical: it shows again).
- Acknowledging changes nothing on the cluster, so **read-only sessions can
  acknowledge and snooze** (on-call staff need it); replays cannot (they
  have no log of their own to write to).
- Rows are never deleted: a lift (``unacknowledge``), a clearing or an
  expiry only sets ``ended``/``cleared``, so the table is a history too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .actionlog import ActionLog, ActionLogError, _operator
from .db import DEFAULT_BUSY_TIMEOUT
from .findings import FindingsChange, FindingsEngine, LiveFinding
from .model import Severity
from .sanitize import clean
from .schema import Db, Location, LocationError, is_url, location, open_db

TABLE = "finding_acks"
ACK = "ack"
SNOOZE = "snooze"
DEFAULT_GRACE = timedelta(minutes=15)
MAX_REASON = 500


class AckError(Exception):
    """The acknowledgements cannot be read or written; the message says why."""


@dataclass(frozen=True, slots=True)
class Ack:
    id: int
    target: str
    code: str
    kind: str  # "ack" or "snooze"
    reason: str
    operator: str
    created: datetime
    severity: Severity  # the finding's severity when it was silenced
    until: datetime | None = None  # snoozes only
    cleared: datetime | None = None  # acks: when the finding went away

    def covers(self, finding: LiveFinding, now: datetime, grace: timedelta) -> bool:
        if finding.severity.rank > self.severity.rank:
            return False
        if self.kind == SNOOZE:
            return self.until is not None and now < self.until
        return self.cleared is None or now - self.cleared <= grace

    def describe(self) -> str:
        if self.kind == SNOOZE and self.until is not None:
            return (f"snoozed until {self.until:%Y-%m-%d %H:%M} UTC by {self.operator}: "
                    f"{self.reason}")
        return (f"acknowledged {self.created:%Y-%m-%d %H:%M} UTC by {self.operator}: "
                f"{self.reason}")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$", re.IGNORECASE)
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_until(text: str, now: datetime) -> datetime:
    """``"4h"``, ``"30m"``, ``"2d"``, ``"1w"`` from now, or an ISO time (UTC if naive)."""
    raw = text.strip()
    found = _DURATION.match(raw)
    if found:
        seconds = float(found.group(1)) * _UNITS[found.group(2).lower()]
        if seconds <= 0:
            raise ValueError("a snooze must last longer than zero")
        return now + timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(raw.replace(" ", "T", 1) if "T" not in raw else raw)
    except ValueError:
        raise ValueError(
            f"{clean(raw)!r} is neither a duration (30m, 4h, 2d, 1w) nor an ISO time "
            "(2026-11-24T08:00)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment <= now:
        raise ValueError("that time is already past")
    return moment.astimezone(UTC)


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat(timespec="seconds") if t is not None else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class AckBook:
    """The open acknowledgements; ``AckBook.open(path)``; thread-safe; ``close()`` it."""

    def __init__(self, path: Location, db: Db, timeout: float, grace: timedelta) -> None:
        self.path = path
        self._db = db
        self._conn = db.conn if not db.pg else None
        self._timeout = timeout
        self.grace = grace
        self._lock = threading.RLock()
        self._open: dict[tuple[str, str], Ack] = {}
        self._operator = clean(_operator())
        self.version = 0  # bumped on every change

    @classmethod
    def open(cls, path: Location, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
             grace: timedelta = DEFAULT_GRACE) -> AckBook:
        """The book in the action log's database (a file or a postgresql:// URL)."""
        try:
            loc = location(path)
        except LocationError as exc:
            raise AckError(str(exc)) from None
        assert loc is not None
        db = open_db(loc, error=AckError, busy_timeout=busy_timeout)
        try:
            book = cls(loc if is_url(loc) else Path(loc), db, busy_timeout, grace)
            book._load()
            return book
        except BaseException:
            db.close()
            raise

    @classmethod
    def beside(cls, log: ActionLog, **kwargs: object) -> AckBook:
        return cls.open(log.path, **kwargs)  # type: ignore[arg-type]

    def _write(self) -> AbstractContextManager[Db]:
        return self._db.write()

    def _load(self) -> None:
        with self._lock:
            rows = self._db.query(
                f"SELECT id, target, code, kind, reason, operator, created, severity, until,"
                f" cleared FROM {TABLE} WHERE ended IS NULL ORDER BY id")
        self._open = {}
        for r in rows:
            ack = Ack(int(r["id"]), r["target"], r["code"], r["kind"], r["reason"],
                      r["operator"], _time(r["created"]),  # type: ignore[arg-type]
                      Severity(r["severity"]), _time(r["until"]), _time(r["cleared"]))
            self._open[(ack.target, ack.code)] = ack

    def reload(self) -> None:
        """Read the book again (another console may have acknowledged something)."""
        self._load()
        self.version += 1

    # -- reading ---------------------------------------------------------------
    def get(self, target: str, code: str) -> Ack | None:
        return self._open.get((target, code))

    def covering(self, finding: LiveFinding, now: datetime) -> Ack | None:
        """The acknowledgement or snooze that silences this finding now, if any."""
        ack = self._open.get((finding.target, finding.code))
        if ack is not None and ack.covers(finding, now, self.grace):
            return ack
        return None

    def all_open(self) -> list[Ack]:
        return list(self._open.values())

    # -- writing ---------------------------------------------------------------
    def _add(self, finding: LiveFinding, kind: str, reason: str, now: datetime,
             until: datetime | None) -> Ack:
        reason = clean(reason.strip())[:MAX_REASON]
        if not reason:
            raise ValueError("say why (a reason is required)")
        key = (finding.target, finding.code)
        with self._write() as conn:
            old = self._open.get(key)
            if old is not None:
                conn.execute(f"UPDATE {TABLE} SET ended = ?, ended_why = ? WHERE id = ?",
                             (_iso(now), "replaced", old.id))
            new_id = conn.insert(
                f"INSERT INTO {TABLE} (target, code, kind, reason, operator, created, severity,"
                f" until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (finding.target, finding.code, kind, reason, self._operator, _iso(now),
                 finding.severity.value, _iso(until)))
            ack = Ack(new_id, finding.target, finding.code, kind, reason,
                      self._operator, now, finding.severity, until)
        self._open[key] = ack
        self.version += 1
        return ack

    def acknowledge(self, finding: LiveFinding, reason: str, now: datetime) -> Ack:
        return self._add(finding, ACK, reason, now, None)

    def snooze(self, finding: LiveFinding, until: datetime, reason: str, now: datetime) -> Ack:
        if until <= now:
            raise ValueError("a snooze must end in the future")
        return self._add(finding, SNOOZE, reason, now, until)

    def lift(self, target: str, code: str, now: datetime, why: str = "lifted") -> Ack | None:
        """End an acknowledgement or snooze early; returns it (None if there was none)."""
        ack = self._open.get((target, code))
        if ack is None:
            return None
        with self._write() as conn:
            conn.execute(f"UPDATE {TABLE} SET ended = ?, ended_why = ? WHERE id = ?",
                         (_iso(now), why, ack.id))
        del self._open[(target, code)]
        self.version += 1
        return ack

    def finding_cleared(self, target: str, code: str, now: datetime) -> None:
        """The finding went away: an acknowledgement starts its grace period."""
        ack = self._open.get((target, code))
        if ack is None or ack.kind != ACK or ack.cleared is not None:
            return
        with self._write() as conn:
            conn.execute(f"UPDATE {TABLE} SET cleared = ? WHERE id = ?", (_iso(now), ack.id))
        self._open[(target, code)] = replace(ack, cleared=now)
        self.version += 1

    def finding_present(self, finding: LiveFinding, now: datetime) -> None:
        """The finding is (back): within the grace it stays acknowledged, else the ack ends."""
        ack = self._open.get((finding.target, finding.code))
        if ack is None or ack.kind != ACK or ack.cleared is None:
            return
        if now - ack.cleared <= self.grace:
            with self._write() as conn:
                conn.execute(f"UPDATE {TABLE} SET cleared = NULL WHERE id = ?", (ack.id,))
            self._open[(finding.target, finding.code)] = replace(ack, cleared=None)
        else:
            self.lift(finding.target, finding.code, now, "cleared")
            return
        self.version += 1

    def expire(self, now: datetime) -> int:
        """End snoozes whose time passed and acks cleared longer than the grace ago."""
        done = [a for a in self._open.values()
                if (a.kind == SNOOZE and a.until is not None and now >= a.until)
                or (a.kind == ACK and a.cleared is not None and now - a.cleared > self.grace)]
        for a in done:
            self.lift(a.target, a.code, now, "expired" if a.kind == SNOOZE else "cleared")
        return len(done)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def audit(
    log: ActionLog,
    *,
    action: str,
    finding: LiveFinding,
    reason: str,
    target_system: str,
    mode: str,
    until: datetime | None = None,
) -> int:
    """One action-log row for an acknowledgement, snooze or lift (outcome ok)."""
    plan = {"code": finding.code, "reason": reason, "severity": finding.severity.value,
            "message": finding.message, "until": _iso(until)}
    try:
        return log.record(
            action=action, target_system=target_system, mode=mode,
            target_object=finding.target, target_name=finding.target_name or finding.target,
            plan=plan, findings=[finding.as_dict()], override=False, confirmed=True,
            outcome="ok",
        )
    except ActionLogError as exc:
        raise AckError(str(exc)) from exc


def follow(engine: FindingsEngine, book: AckBook, clock: Callable[[], datetime],
           defer: Callable[[Callable[[], None]], object] | None = None) -> Callable[[], None]:
    """Keep the book in step with the engine: a finding going away starts its
    acknowledgement's grace; coming back within it keeps it. Returns unsubscribe.

    Which acknowledgements a change touches is decided when it happens; the
    book's writes are handed to ``defer`` (the console's one writer thread:
    a shared log's round trip, or a file another console holds locked, must
    never stall the screen); without it they run at once.
    """

    def on_change(change: FindingsChange) -> None:
        now = clock()
        gone = [(f.target, f.code) for f in change.removed
                if book.get(f.target, f.code) is not None and engine.get(f.key) is None]
        back = [f for f in change.added if book.get(f.target, f.code) is not None]
        if not gone and not back:
            return

        def write() -> None:
            try:
                for target, code in gone:
                    book.finding_cleared(target, code, now)
                for f in back:
                    book.finding_present(f, now)
            except AckError:
                pass  # the screen reports the book's errors when the operator acts

        if defer is None:
            write()
        else:
            defer(write)

    return engine.subscribe(on_change)


def open_counts(engine: FindingsEngine, book: AckBook | None, now: datetime
                ) -> dict[Severity, int]:
    """Open findings by severity: the engine's counts less the silenced ones (O(acks))."""
    counts = dict(engine.counts)
    if book is None:
        return counts
    for ack in book.all_open():
        for f in engine.for_target(ack.target):
            if f.code == ack.code and ack.covers(f, now, book.grace):
                counts[f.severity] -= 1
    return counts


def open_findings(
    engine: FindingsEngine, book: AckBook | None, now: datetime, *, silenced: bool = False
) -> list[tuple[LiveFinding, Ack | None]]:
    """Every finding with the acknowledgement covering it; silenced ones only if asked."""
    out: list[tuple[LiveFinding, Ack | None]] = []
    for f in engine.findings():
        ack = book.covering(f, now) if book is not None else None
        if ack is None or silenced:
            out.append((f, ack))
    return out
