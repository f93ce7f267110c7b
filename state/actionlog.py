"""The action log: one row per operator action, never lost (SQLite or PostgreSQL).

This module owns the ``actions`` table and everything written to it. The
rules (RELIABILITY.md, "The action log must not lose a row"):

- WAL, ``synchronous=FULL`` (a committed row survives kill -9 and power
  loss), ``busy_timeout`` 10 s, and every write inside ``BEGIN IMMEDIATE``
  so two processes appending never get "database is locked".
- ``begin()`` commits the intent row (outcome ``running``) *before* the
  caller talks to the cluster; ``finish()`` appends the outcome. A row still
  ``running`` whose process is gone reads "interrupted — verify on the host";
  nothing is ever replayed automatically.
- Any failure to open or write raises ``ActionLogError``; the caller then
  refuses destructive actions (fail closed). ``open()`` takes the write lock
  once, so an unwritable directory, a read-only file or a lock held past the
  timeout are found before the first action, not during it.
- Every text goes through ``sanitize.clean``; ``redact`` drops secret-looking
  keys from the plan/detail JSON and ``scrub`` masks ``password=…``-style
  fragments in free text, so no secret lands in the log.

The process that wrote a row is identified by host, boot id, pid and the
process start time (Linux ``/proc``), so a reused pid is not mistaken for the
original writer. The schema, its migrations and the connection (either
engine) are state/schema.py's; ``open("postgresql://…")`` puts the log in a
team's database, where ``begin(claim=…)`` also takes the VM's lease
(state/leases.py: one action per VM across consoles, shared LUN space) and
the row's status follows the lease: a console that stops renewing it reads
"interrupted — verify on the host" for everyone. An outcome the database
missed (out of reach) is kept and written when it is back, never resent.
``db`` is a sqlite-utils view of a SQLite log (tests and benches; None on
PostgreSQL).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import getpass
import json
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlite_utils

from .db import DEFAULT_BUSY_TIMEOUT, explain
from .leases import DEFAULT_TTL_S, Claim, Keeper, Lease, acquire, live_leases, release
from .model import FinalState
from .paths import default_log_path, ensure_dir
from .sanitize import clean
from .schema import VERSION, Db, Location, LocationError, is_url, location, open_db

SCHEMA_VERSION = VERSION  # state/schema.py owns the schema and its migrations
TABLE = "actions"

MODES = ("read-write", "read-only", "replay")
OUTCOMES = ("running", "ok", "warning", "failed", "cancelled", "refused", "unknown")
FINISHED_OUTCOMES = OUTCOMES[1:]

INTERRUPTED = "interrupted — verify on the host"
UNKNOWN = "unknown — verify on the host"

# The columns, in order; LogRow mirrors them.
COLUMNS: dict[str, type] = {
    "id": int,
    "started": str,
    "ended": str,
    "operator": str,
    "host": str,
    "pid": int,
    "boot_id": str,
    "proc_start": int,
    "target_system": str,
    "mode": str,
    "action": str,
    "target_object": str,
    "target_name": str,
    "plan": str,
    "findings": str,
    "override": int,
    "confirmed": int,
    "outcome": str,
    "error": str,
    "duration_s": float,
    "size_before": int,
    "size_after": int,
    "final_state": str,
    "detail": str,
    "task_id": str,
    "cluster_account": str,
}
_NOT_NULL = {
    "started", "operator", "host", "pid", "target_system", "mode", "action",
    "target_object", "target_name", "plan", "findings", "override", "confirmed",
    "outcome", "error", "task_id",
}


class ActionLogError(Exception):
    """The action log cannot be opened or written; the message says why."""


# -- secrets ------------------------------------------------------------------

_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|(^|[_.-])pass$|^pwd$|secret|token|authori[sz]ation|credential|api_?key"
    r"|private_?key|cookie|session_?id",
    re.IGNORECASE,
)
_SECRET_TEXT = re.compile(
    r"(?P<key>\b(?:authori[sz]ation|proxy-authorization)\b\s*[:=]\s*)"
    r"(?:(?:basic|bearer|negotiate|ntlm|kerberos|digest)\s+)?[^\s,;'\"]+"
    r"|(?P<key2>\b(?:password|passwd|pwd|secret|token|api_?key)\b\s*[:=]\s*)[^\s,;'\"]+",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def is_secret_key(key: object) -> bool:
    return bool(_SECRET_KEY.search(str(key)))


def scrub(text: str) -> str:
    """Mask ``password=…``, ``token: …`` and ``Authorization: Basic …`` values."""
    return _SECRET_TEXT.sub(
        lambda m: (m.group("key") or m.group("key2")) + REDACTED, text
    )


def redact(value: Any) -> Any:
    """A JSON-able copy of ``value``: secret-named keys dropped, text cleaned.

    Dict keys that look like secrets (password, secret, token, authorization,
    credential, api key, …) are dropped at any depth; every string is
    sanitized (``clean``) and scrubbed of ``password=…`` fragments; values
    JSON cannot hold become their cleaned ``str``.
    """
    if isinstance(value, Mapping):
        return {
            clean(k): redact(v) for k, v in value.items() if not is_secret_key(k)
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return scrub(clean(value))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact(dataclasses.asdict(value))
    return scrub(clean(str(value)))


def _text(value: object) -> str:
    return scrub(clean(value))


def _json(value: Any) -> str:
    return json.dumps(redact(value), ensure_ascii=False, sort_keys=True, allow_nan=False)


# -- who and where ------------------------------------------------------------

def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (containers) or no login name
        return f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot), Linux only."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and ')' — split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    try:
        return rest[0], int(rest[19])
    except (IndexError, ValueError):
        return None


def _proc_start(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return stat[1] if stat else None


_HOST = socket.gethostname()
_BOOT = _boot_id()


def writer_alive(host: str, boot_id: str | None, pid: int, proc_start: int | None) -> bool:
    """Is the process that wrote a row provably still running?

    Only a process on this host, in this boot, with this pid and (where the
    OS tells us) this start time counts as alive. Anything else — another
    host, a reboot, a dead or reused pid, a zombie — is gone: the safe
    reading is "interrupted, verify", never "still running".
    """
    if host != _HOST:
        return False
    if boot_id and _BOOT and boot_id != _BOOT:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    stat = _proc_stat(pid)
    if stat is None:
        # No /proc (macOS, BSD): the pid exists; a start time recorded on
        # another kind of system cannot be checked.
        return proc_start is None
    state, started = stat
    if state in ("Z", "X"):
        return False
    return proc_start is None or started == proc_start


# -- rows -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LogRow:
    id: int
    started: str
    ended: str | None
    operator: str
    host: str
    pid: int
    boot_id: str | None
    proc_start: int | None
    target_system: str
    mode: str
    action: str
    target_object: str
    target_name: str
    plan: str
    findings: str
    override: bool
    confirmed: bool
    outcome: str
    error: str
    duration_s: float | None
    size_before: int | None
    size_after: int | None
    final_state: str | None
    detail: str | None
    task_id: str
    status: str  # computed: what the operator should read
    cluster_account: str = ""  # the account the console used on the cluster

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    @property
    def console(self) -> str:
        """The identity of the console that wrote the row, as ``ActionLog.console``."""
        return _console(self.host, self.pid, self.proc_start)

    def plan_data(self) -> Any:
        return json.loads(self.plan) if self.plan else None

    def findings_data(self) -> Any:
        return json.loads(self.findings) if self.findings else []

    def detail_data(self) -> Any:
        return json.loads(self.detail) if self.detail else None


def _console(host: object, pid: object, proc_start: object) -> str:
    """A console's identity in leases: host, pid and process start time."""
    return f"{host}:{pid}:{proc_start}"


def _status(row: dict[str, Any], live: set[int] | frozenset[int] = frozenset(),
            consoles: set[str] | frozenset[str] = frozenset()) -> str:
    """``running`` only while its console provably runs it: a live lease on it, or
    its console holding a live lease (a rebuild's step under the rebuild's lease),
    or its process on this host; else interrupted."""
    outcome = row["outcome"]
    if outcome == "running":
        alive = row["id"] in live or _console(
            row["host"], row["pid"], row["proc_start"]) in consoles or writer_alive(
            row["host"], row["boot_id"], row["pid"], row["proc_start"])
        return "running" if alive else INTERRUPTED
    if outcome == "unknown":
        return UNKNOWN
    return str(outcome)


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


_explain = explain  # the one explanation of a failed write (state/db.py)


# -- the log ----------------------------------------------------------------------

def _lease_alive(lease: Lease) -> bool | None:
    """Can this host tell whether a lease's holder still runs? (None: no, ask the clock.)"""
    if lease.host != _HOST or (lease.boot_id and _BOOT and lease.boot_id != _BOOT):
        return None
    return writer_alive(lease.host, lease.boot_id, lease.pid, lease.proc_start)


class ActionLog:
    """An open action log (SQLite file or PostgreSQL URL). Use ``ActionLog.open()``;
    thread-safe; ``close()`` it."""

    def __init__(self, path: Location, store: Db, busy_timeout: float,
                 lease_ttl: float = DEFAULT_TTL_S) -> None:
        self.path = path  # a Path (SQLite) or the URL (PostgreSQL): other stores open it
        self.where = store.where
        self._store = store
        self._conn = store.conn if not store.pg else None
        self.db = (sqlite_utils.Database(store.conn, execute_plugins=False)
                   if not store.pg else None)
        self._timeout = busy_timeout
        self.lease_ttl = lease_ttl
        self._lock = threading.RLock()
        self._mono: dict[int, float] = {}  # row id → monotonic start, this process
        self._pid = os.getpid()
        self._proc_start = _proc_start(self._pid)
        self._operator = _text(_operator())
        self._host = _text(_HOST)
        self._closed = False
        self._pending: dict[int, dict[str, Any]] = {}  # outcomes the database missed
        self._leases_read: tuple[list[Lease], float] | None = None  # recent_leases
        self._keeper = Keeper(self._renew, self.flush)
        #: The cluster account this console acts as (``team.account_of(backend)``),
        #: written on every row it writes unless a claim names another.
        self.account = ""

    @property
    def shared(self) -> bool:
        """A team's log (PostgreSQL): other consoles write to it too."""
        return self._store.pg

    @property
    def console(self) -> str:
        """This console's identity in leases (host, pid, process start)."""
        return _console(self._host, self._pid, self._proc_start)

    @property
    def writable(self) -> bool:
        """False for a read-only database role (the database refuses its writes)."""
        return self._store.can_write

    @property
    def pending_outcomes(self) -> int:
        return len(self._pending)

    @property
    def lost_leases(self) -> set[int]:
        return set(self._keeper.lost)

    # -- opening --------------------------------------------------------------
    @classmethod
    def open(cls, path: Location | None = None, *,
             busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
             lease_ttl: float = DEFAULT_TTL_S, lazy: bool = False) -> ActionLog:
        """Open (creating if needed) the log and prove it is writable.

        ``path`` is a file (SQLite) or a ``postgresql://`` URL (a team's
        shared log; see docs/team-mode.md). Raises ``ActionLogError`` when the
        directory cannot be created or written, the file is not a database or
        has a newer schema, the disk is full, another process holds the write
        lock past ``busy_timeout`` seconds, or the database cannot be reached.

        ``lazy`` (PostgreSQL only): a database out of reach gives a handle
        anyway; it refuses every write (so every action) until the database
        answers, then connects, migrates and works — a console started during
        an outage recovers by itself. ``check()`` says whether it answers now.
        """
        try:
            loc = location(path) if path is not None else default_log_path()
        except LocationError as exc:
            raise ActionLogError(str(exc)) from None
        assert loc is not None
        if not is_url(loc):
            assert isinstance(loc, Path)
            cls._create_file(loc)
        store = open_db(loc, error=ActionLogError, busy_timeout=busy_timeout, lazy=lazy)
        return cls(loc, store, busy_timeout, lease_ttl)

    def check(self) -> str:
        """'' when the log answers now, else why not (for a banner). Blocking on a
        shared log (a round trip, bounded by the connect timeout): call it in a worker."""
        try:
            self._select("select 1 as one")
        except ActionLogError as exc:
            return str(exc)
        return ""

    @property
    def down(self) -> str:
        """Why the shared log was out of reach at the last attempt ('' : it answered, or
        SQLite). Never blocks; ``check()`` asks the database."""
        return self._store.last_failure

    @staticmethod
    def _create_file(path: Path) -> None:
        try:
            ensure_dir(path.parent)
        except OSError as exc:
            raise ActionLogError(
                f"cannot create the action log directory {path.parent}: {exc.strerror or exc}"
            ) from exc
        if path.exists() and not path.is_file():
            raise ActionLogError(f"the action log path {path} is not a regular file")
        try:  # a new log is private (SQLite gives its -wal/-shm files the same mode)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise ActionLogError(
                f"cannot create the action log {path}: {exc.strerror or exc}"
            ) from exc

    @contextmanager
    def _write(self, *, serialize: bool = False) -> Iterator[Db]:
        """One transaction (``BEGIN IMMEDIATE`` on SQLite); any failure → ActionLogError."""
        with self._lock:
            if self._closed:
                raise ActionLogError(f"the action log {self.where} is closed")
            with self._store.write(serialize=serialize) as db:
                yield db

    # -- writing --------------------------------------------------------------
    def _intent(
        self,
        *,
        action: str,
        target_system: str,
        mode: str,
        target_object: str,
        target_name: str,
        plan: Mapping[str, Any],
        findings: list[Mapping[str, Any]],
        override: bool,
        confirmed: bool,
        task_id: str,
        cluster_account: str = "",
    ) -> dict[str, Any]:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        return {
            "operator": self._operator,
            "host": self._host,
            "pid": self._pid,
            "boot_id": _BOOT,
            "proc_start": self._proc_start,
            "target_system": _text(target_system),
            "mode": mode,
            "action": _text(action),
            "target_object": _text(target_object),
            "target_name": _text(target_name),
            "plan": _json(plan),
            "findings": _json(list(findings)),
            "override": bool(override),
            "confirmed": bool(confirmed),
            "error": "",
            "task_id": _text(task_id),
            "cluster_account": _text(cluster_account or self.account),
        }

    def _insert(self, db: Db, row: dict[str, Any]) -> int:
        names = list(row)
        return db.insert(
            f"insert into {TABLE} ({', '.join(names)}) values ({', '.join('?' * len(names))})",
            [row[n] for n in names])

    def _notify(self, db: Db, row_id: int, event: str) -> None:
        db.notify(json.dumps({"id": row_id, "event": event, "operator": self._operator,
                              "host": self._host}))

    def begin(
        self,
        *,
        action: str,
        target_system: str,
        mode: str,
        target_object: str,
        target_name: str,
        plan: Mapping[str, Any],
        findings: list[Mapping[str, Any]],
        override: bool,
        confirmed: bool,
        task_id: str = "",
        claim: Claim | None = None,
    ) -> int:
        """Commit the intent row (outcome ``running``) and return its id.

        Call this before anything is sent to the cluster; if it raises
        ``ActionLogError``, send nothing. With a ``claim`` the row and the
        VM's lease (state/leases.py) are written in one transaction: another
        console holding the VM, or the LUN's shared space, raises
        ``ActionBusy`` and nothing is written.
        """
        row = self._intent(
            action=action, target_system=target_system, mode=mode,
            target_object=target_object, target_name=target_name, plan=plan,
            findings=findings, override=override, confirmed=confirmed, task_id=task_id,
            cluster_account=claim.cluster_account if claim else "",
        )
        row.update(started=_iso(_now()), outcome="running")
        with self._write(serialize=claim is not None) as db:
            row_id = self._insert(db, row)
            if claim is not None:
                acquire(db, row_id=row_id, target_object=row["target_object"],
                        target_name=row["target_name"], action=row["action"],
                        who={"console": self.console,
                             "operator": self._operator, "host": self._host, "boot_id": _BOOT,
                             "pid": self._pid, "proc_start": self._proc_start},
                        claim=claim, alive=_lease_alive)
            self._notify(db, row_id, "begin")
        if claim is not None:
            self._keeper.hold(row_id, claim.ttl)
        self._mono[row_id] = time.monotonic()
        return row_id

    def _renew(self, row_id: int, ttl: float) -> bool:
        with self._write():
            return self._store.execute(
                "update leases set expires = NOW() + ? where row_id = ?", (ttl, row_id)) > 0

    def finish(
        self,
        row_id: int,
        *,
        outcome: str,
        error: str = "",
        size_before: int | None = None,
        size_after: int | None = None,
        final_state: FinalState | str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append the outcome to a row ``begin()`` wrote (sets ended and duration)
        and drop its lease.

        On a shared log whose database is out of reach, the outcome is kept and
        written as soon as it is back (``flush``); the ActionLogError says so.
        """
        if outcome not in FINISHED_OUTCOMES:
            raise ValueError(f"outcome must be one of {FINISHED_OUTCOMES}, not {outcome!r}")
        final = FinalState(final_state).value if final_state is not None else None
        ended = _now()
        mono = self._mono.pop(row_id, None)
        values = {
            "ended": _iso(ended),
            "outcome": outcome,
            "error": _text(error),
            "duration": round(time.monotonic() - mono, 3) if mono is not None else None,
            "size_before": size_before,
            "size_after": size_after,
            "final_state": final,
            "detail": _json(detail) if detail is not None else None,
        }
        self._keeper.drop(row_id)
        try:
            self._finish(row_id, values)
        except ActionLogError as exc:
            if self._store.pg and self._store.unreachable():
                self._pending[row_id] = values
                self._keeper.poke()
                raise ActionLogError(
                    f"{exc} — the outcome is kept by this console and written as soon as the "
                    "database is back") from exc
            raise

    def _finish(self, row_id: int, values: dict[str, Any]) -> None:
        with self._write() as db:
            found = db.query(f"select outcome, started from {TABLE} where id = ?", (row_id,))
            if not found:
                raise ActionLogError(f"no row {row_id} in the action log {self.where}")
            current = found[0]
            if current["outcome"] != "running":
                raise ActionLogError(
                    f"action log row {row_id} already has outcome {current['outcome']!r}"
                )
            duration = values["duration"]
            if duration is None:  # finished by another ActionLog instance: wall clock
                started = datetime.fromisoformat(current["started"])
                ended = datetime.fromisoformat(values["ended"])
                duration = round(max(0.0, (ended - started).total_seconds()), 3)
            db.execute(
                f"update {TABLE} set ended = ?, outcome = ?, error = ?, duration_s = ?, "
                "size_before = ?, size_after = ?, final_state = ?, detail = ? where id = ?",
                (values["ended"], values["outcome"], values["error"], duration,
                 values["size_before"], values["size_after"], values["final_state"],
                 values["detail"], row_id))
            release(db, row_id)
            self._notify(db, row_id, "finish")

    def flush(self) -> int:
        """Write the outcomes the database missed; how many are still waiting."""
        for row_id, values in list(self._pending.items()):
            try:
                self._finish(row_id, values)
            except ActionLogError as exc:
                if self._store.unreachable():
                    break
                if "already has outcome" not in str(exc) and "no row" not in str(exc):
                    break
            self._pending.pop(row_id, None)
        return len(self._pending)

    def record(
        self,
        *,
        action: str,
        target_system: str,
        mode: str,
        target_object: str,
        target_name: str,
        plan: Mapping[str, Any],
        findings: list[Mapping[str, Any]],
        override: bool,
        confirmed: bool,
        outcome: str,
        error: str = "",
        task_id: str = "",
        final_state: FinalState | str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """One finished row at once, for cancelled and refused actions and for
        changes made only in the log (an operator setting a VM's final state)."""
        if outcome not in FINISHED_OUTCOMES:
            raise ValueError(f"outcome must be one of {FINISHED_OUTCOMES}, not {outcome!r}")
        final = FinalState(final_state).value if final_state is not None else None
        row = self._intent(
            action=action, target_system=target_system, mode=mode,
            target_object=target_object, target_name=target_name, plan=plan,
            findings=findings, override=override, confirmed=confirmed, task_id=task_id,
        )
        now = _iso(_now())
        row.update(started=now, ended=now, duration_s=0.0, outcome=outcome, error=_text(error))
        if final is not None:
            row["final_state"] = final
        if detail is not None:
            row["detail"] = _json(detail)
        with self._write() as db:
            row_id = self._insert(db, row)
            self._notify(db, row_id, "record")
            return row_id

    # -- reading --------------------------------------------------------------
    def _select(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            if self._closed:
                raise ActionLogError(f"the action log {self.where} is closed")
            return self._store.query(sql, params)

    def _live(self, rows: list[dict[str, Any]]) -> tuple[set[int], set[str]]:
        """Rows whose lease is live, and consoles holding one (they renew: alive)."""
        if not any(r["outcome"] == "running" for r in rows):
            return set(), set()
        with self._lock:
            leases = live_leases(self._store, _lease_alive)
        return {le.row_id for le in leases}, {le.console for le in leases}

    def _rows(self, found: list[dict[str, Any]]) -> list[LogRow]:
        live, consoles = self._live(found)
        return [self._row(r, live, consoles) for r in found]

    def rows(self, limit: int | None = None, newest_first: bool = True) -> list[LogRow]:
        order = "desc" if newest_first else "asc"
        sql = f"select * from {TABLE} order by id {order}"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " limit ?"
            params = (max(0, int(limit)),)
        return self._rows(self._select(sql, params))

    def rows_after(self, row_id: int) -> list[LogRow]:
        """Rows newer than ``row_id``, oldest first (what another console just wrote)."""
        return self._rows(self._select(f"select * from {TABLE} where id > ? order by id",
                                       (int(row_id),)))

    def newest_id(self) -> int:
        """The id of the newest row (0: empty): a cheap "has anything been written"."""
        return int(self._select(f"select max(id) as m from {TABLE}")[0]["m"] or 0)

    def finished_ok(self, action: str, target_system: str, limit: int) -> list[LogRow]:
        """The newest rows of ``action`` on ``target_system`` that ended ok with a duration."""
        sql = (f"select * from {TABLE} where action = ? and outcome = 'ok' and "
               "target_system = ? and duration_s > 0 order by id desc limit ?")
        return self._rows(self._select(sql, (action, target_system, limit)))

    def get(self, row_id: int) -> LogRow | None:
        found = self._select(f"select * from {TABLE} where id = ?", (row_id,))
        return self._rows(found)[0] if found else None

    def leases(self) -> list[Lease]:
        """Every live lease: what every console is doing right now. Kept as the latest
        reading (``recent_leases``). Blocking on a shared log: call it in a worker."""
        with self._lock:
            found = live_leases(self._store, _lease_alive)
        self._leases_read = (found, time.monotonic())
        return found

    def recent_leases(self) -> tuple[list[Lease], float | None]:
        """The latest ``leases()`` reading and its age in seconds (None: never read).
        Never blocks: what a shared log's pre-flight shows on the UI loop, kept fresh by
        the console's watch (``core/console.py``)."""
        if self._leases_read is None:
            return [], None
        found, at = self._leases_read
        return found, time.monotonic() - at

    def final_states(self) -> dict[str, str]:
        """Each target's latest final state (by when it was set; the last row wins).

        An action's outcome sets it and an operator's ``final-state`` row
        replaces it; a later action replaces that in turn.
        """
        found = self._select(
            f"select target_object, final_state from {TABLE} where final_state is not null "
            "order by coalesce(ended, started), id"
        )
        return {r["target_object"]: r["final_state"] for r in found}

    @staticmethod
    def _row(r: dict[str, Any], live: set[int] | frozenset[int] = frozenset(),
             consoles: set[str] | frozenset[str] = frozenset()) -> LogRow:
        values = {name: r.get(name) for name in COLUMNS}
        values["override"] = bool(values["override"])
        values["confirmed"] = bool(values["confirmed"])
        values["error"] = values["error"] or ""
        values["cluster_account"] = values["cluster_account"] or ""
        return LogRow(**values, status=_status(values, live, consoles))

    def to_csv(self, file: TextIO | Path) -> int:
        """Write every row (oldest first, with a header) as CSV; return the count.

        Text cells starting with ``= + - @`` get a leading ``'`` so a
        spreadsheet does not run a VM name as a formula.
        """
        if isinstance(file, Path):
            with file.open("w", newline="", encoding="utf-8") as fh:
                return self.to_csv(fh)
        rows = self.rows(newest_first=False)
        names = [*COLUMNS, "status"]
        out = csv.writer(file, lineterminator="\n")
        out.writerow(names)
        for row in rows:
            out.writerow([_csv_cell(getattr(row, n)) for n in names])
        return len(rows)

    def close(self) -> None:
        self._keeper.stop()
        with self._lock:
            if self._pending:
                with contextlib.suppress(Exception):
                    self.flush()
            if not self._closed:
                self._closed = True
                self._store.close()

    def __enter__(self) -> ActionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FORMULA = re.compile(r"^[=+\-@\t\r]")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and _FORMULA.match(value) and not _NUMBER.match(value):
        return "'" + value
    return value
