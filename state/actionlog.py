"""The action log: one SQLite row per operator action, never lost.

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
original writer. sqlite-utils does the table work over a connection opened
here (pragmas are ours); the schema version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

import csv
import dataclasses
import getpass
import json
import math
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import sqlite_utils
from sqlite_utils.db import NotFoundError

from .db import DEFAULT_BUSY_TIMEOUT, connect, explain, write
from .model import FinalState
from .paths import default_log_path, ensure_dir
from .sanitize import clean

SCHEMA_VERSION = 1
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

    @property
    def interrupted(self) -> bool:
        return self.status == INTERRUPTED

    def plan_data(self) -> Any:
        return json.loads(self.plan) if self.plan else None

    def findings_data(self) -> Any:
        return json.loads(self.findings) if self.findings else []

    def detail_data(self) -> Any:
        return json.loads(self.detail) if self.detail else None


def _status(row: dict[str, Any]) -> str:
    outcome = row["outcome"]
    if outcome == "running":
        alive = writer_alive(row["host"], row["boot_id"], row["pid"], row["proc_start"])
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

class ActionLog:
    """An open action log. Use ``ActionLog.open()``; thread-safe; ``close()`` it."""

    def __init__(self, path: Path, conn: sqlite3.Connection, busy_timeout: float) -> None:
        self.path = path
        self._conn = conn
        self.db = sqlite_utils.Database(conn, execute_plugins=False)
        self._timeout = busy_timeout
        self._lock = threading.RLock()
        self._mono: dict[int, float] = {}  # row id → monotonic start, this process
        self._pid = os.getpid()
        self._proc_start = _proc_start(self._pid)
        self._operator = _text(_operator())
        self._host = _text(_HOST)
        self._closed = False

    # -- opening --------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | None = None, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT
             ) -> ActionLog:
        """Open (creating if needed) the log and prove it is writable.

        Raises ``ActionLogError`` when the directory cannot be created or
        written, the file is not a database or has a newer schema, the disk
        is full, or another process holds the write lock past
        ``busy_timeout`` seconds.
        """
        path = Path(path) if path is not None else default_log_path()
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
        conn = connect(path, busy_timeout=busy_timeout, error=ActionLogError)
        try:
            log = cls(path, conn, busy_timeout)
            log._migrate()
            return log
        except ActionLogError:
            conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise ActionLogError(_explain(exc, path, busy_timeout)) from exc

    def _migrate(self) -> None:
        """Create or upgrade the schema; takes the write lock (the writability probe)."""
        with self._write():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ActionLogError(
                    f"the action log {self.path} has schema version {version}, newer than "
                    f"this Ventana supports ({SCHEMA_VERSION}); upgrade Ventana"
                )
            if version < 1:
                table = self.db.table(TABLE)
                table.create(COLUMNS, pk="id", not_null=_NOT_NULL, if_not_exists=True)
                table.create_index(["outcome"], index_name="actions_outcome", if_not_exists=True)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction; any failure → ActionLogError."""
        with self._lock:
            if self._closed:
                raise ActionLogError(f"the action log {self.path} is closed")
            with write(self._conn, self._lock, self.path, self._timeout, ActionLogError):
                yield

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
        }

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
    ) -> int:
        """Commit the intent row (outcome ``running``) and return its id.

        Call this before anything is sent to the cluster; if it raises
        ``ActionLogError``, send nothing.
        """
        row = self._intent(
            action=action, target_system=target_system, mode=mode,
            target_object=target_object, target_name=target_name, plan=plan,
            findings=findings, override=override, confirmed=confirmed, task_id=task_id,
        )
        row.update(started=_iso(_now()), outcome="running")
        with self._write():
            table = self.db.table(TABLE)
            table.insert(row)
            row_id = int(table.last_pk)  # type: ignore[arg-type]
        self._mono[row_id] = time.monotonic()
        return row_id

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
        """Append the outcome to a row ``begin()`` wrote (sets ended and duration)."""
        if outcome not in FINISHED_OUTCOMES:
            raise ValueError(f"outcome must be one of {FINISHED_OUTCOMES}, not {outcome!r}")
        final = FinalState(final_state).value if final_state is not None else None
        ended = _now()
        mono = self._mono.pop(row_id, None)
        with self._write():
            table = self.db.table(TABLE)
            try:
                current = table.get(row_id)
            except NotFoundError:
                raise ActionLogError(f"no row {row_id} in the action log {self.path}") from None
            if current["outcome"] != "running":
                raise ActionLogError(
                    f"action log row {row_id} already has outcome {current['outcome']!r}"
                )
            if mono is not None:
                duration = time.monotonic() - mono
            else:  # finished by another ActionLog instance: wall clock
                started = datetime.fromisoformat(current["started"])
                duration = max(0.0, (ended - started).total_seconds())
            table.update(row_id, {
                "ended": _iso(ended),
                "outcome": outcome,
                "error": _text(error),
                "duration_s": round(duration, 3),
                "size_before": size_before,
                "size_after": size_after,
                "final_state": final,
                "detail": _json(detail) if detail is not None else None,
            })

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
        with self._write():
            table = self.db.table(TABLE)
            table.insert(row)
            return int(table.last_pk)  # type: ignore[arg-type]

    # -- reading --------------------------------------------------------------
    def _select(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            if self._closed:
                raise ActionLogError(f"the action log {self.path} is closed")
            try:
                return list(self.db.query(sql, params))
            except sqlite3.Error as exc:
                raise ActionLogError(_explain(exc, self.path, self._timeout)) from exc

    def rows(self, limit: int | None = None, newest_first: bool = True) -> list[LogRow]:
        order = "desc" if newest_first else "asc"
        sql = f"select * from {TABLE} order by id {order}"
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " limit ?"
            params = (max(0, int(limit)),)
        return [self._row(r) for r in self._select(sql, params)]

    def newest_id(self) -> int:
        """The id of the newest row (0: empty): a cheap "has anything been written"."""
        return int(self._select(f"select max(id) as m from {TABLE}")[0]["m"] or 0)

    def finished_ok(self, action: str, target_system: str, limit: int) -> list[LogRow]:
        """The newest rows of ``action`` on ``target_system`` that ended ok with a duration."""
        sql = (f"select * from {TABLE} where action = ? and outcome = 'ok' and "
               "target_system = ? and duration_s > 0 order by id desc limit ?")
        return [self._row(r) for r in self._select(sql, (action, target_system, limit))]

    def get(self, row_id: int) -> LogRow | None:
        found = self._select(f"select * from {TABLE} where id = ?", (row_id,))
        return self._row(found[0]) if found else None

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
    def _row(r: dict[str, Any]) -> LogRow:
        values = {name: r.get(name) for name in COLUMNS}
        values["override"] = bool(values["override"])
        values["confirmed"] = bool(values["confirmed"])
        values["error"] = values["error"] or ""
        return LogRow(**values, status=_status(values))

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
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

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
