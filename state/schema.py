"""The action-log database: where it is, its one schema, its migrations, one connection.

Owns everything the two engines share and the little that differs:

- **Where**: ``location(value)`` reads a log setting — a file path (SQLite,
  the one-operator default) or a ``postgresql://`` URL (a team's shared log).
  A URL never carries a password (``LocationError``): libpq takes it from
  ``PGPASSWORD``, ``~/.pgpass`` or a service file, and ``Db`` asks the OS
  keyring (service ``ventana-postgresql``) in between, as RELIABILITY.md
  orders credential sources. ``display(location)`` is what screens and errors
  show.
- **The schema**: ``MIGRATIONS`` — every table (actions, finding_acks,
  windows, window_items, rebuilds, rebuild_steps, leases) written once, with
  ``{int}``/``{float}``/``{pk}`` tokens, the only words that differ between
  the engines. The version lives in ``PRAGMA user_version`` (SQLite, as
  before) or in the ``ventana_schema`` table (PostgreSQL). A log newer than
  this code is refused; migrating takes the engine's write lock, so two
  consoles opening a new database at once create it once.
- **The dialect**: SQL is written once with ``?`` placeholders (turned into
  ``%s`` for psycopg), ``insert … returning id`` and ``on conflict … do
  update`` (both engines speak them), ``NOW`` (the database's clock in epoch
  seconds — one clock for every console, so lease expiry does not depend on
  whose watch is right).
- **One connection**: ``Db`` — thread-safe, ``write()`` is one transaction
  (SQLite: ``BEGIN IMMEDIATE`` with the durability pragmas of state/db.py;
  PostgreSQL: a transaction under an advisory lock when asked), every driver
  error becomes the caller's own exception with words an operator can act on,
  and a broken PostgreSQL connection is reopened on the next call (the
  console recovers by itself when the database comes back).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .db import connect as sqlite_connect
from .db import explain as sqlite_explain
from .oskeyring import TIMEOUT_S
from .oskeyring import ask as ask_keyring
from .sanitize import clean

VERSION = 2
URL_SCHEMES = ("postgresql://", "postgres://")
KEYRING_SERVICE = "ventana-postgresql"
CONNECT_TIMEOUT_S = 3
#: libpq's TCP settings for every connection to a team's database (PostgreSQL docs,
#: "Parameter Key Words": keepalives*, tcp_user_timeout; ignored on a Unix socket): an
#: idle connection whose path died is found in ~25 s, and a write the network stops
#: acknowledging fails after 20 s instead of TCP's own minutes.
TCP_SETTINGS: dict[str, int] = {"keepalives": 1, "keepalives_idle": 10,
                                "keepalives_interval": 5, "keepalives_count": 3,
                                "tcp_user_timeout": 20_000}
#: After a failed connection, calls fail at once for this long (no UI stall per call).
RETRY_S = 2.0
#: The key of the advisory lock that serializes lease decisions on PostgreSQL.
LEASE_LOCK_KEY = 0x56454E54  # "VENT"
NOTIFY_CHANNEL = "ventana_actions"


class LocationError(ValueError):
    """The log setting is not usable (e.g. a URL with a password in it)."""


Location = Path | str  # a file (SQLite) or a postgresql:// URL


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.lower().startswith(URL_SCHEMES)


def check_url(url: str) -> str:
    """The URL, if it carries no password; else ``LocationError`` saying where it goes."""
    import psycopg.conninfo

    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except Exception as exc:
        raise LocationError(f"the log URL is not a valid PostgreSQL URL: {exc}") from None
    if params.get("password") or (urlsplit(url).password is not None):
        raise LocationError(
            "the log URL carries a password; remove it — the password comes from PGPASSWORD, "
            "~/.pgpass or the OS keyring (service 'ventana-postgresql'), never the config "
            "file or the command line")
    return url


def location(value: Location | None) -> Location | None:
    """A log setting as the stores take it: a URL (checked) or an expanded path."""
    if value is None:
        return None
    if is_url(value):
        return check_url(str(value))
    return Path(value).expanduser()


def display(loc: Location) -> str:
    """What to show for a location: the URL without its query noise, or the path."""
    if not is_url(loc):
        return str(loc)
    parts = urlsplit(str(loc))
    host = parts.hostname or "local socket"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return clean(f"postgresql://{user}{host}{port}{parts.path}")


# -- the dialect ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    tokens: dict[str, str]
    now: str  # the database's clock, epoch seconds (float)

    def sql(self, text: str) -> str:
        text = text.replace("NOW()", self.now)
        for key, value in self.tokens.items():
            text = text.replace("{" + key + "}", value)
        if self.name == "postgresql":
            text = text.replace("%", "%%").replace("?", "%s")
        return text


SQLITE = Dialect("sqlite", {"pk": "integer primary key", "int": "integer", "float": "real"},
                 "((julianday('now') - 2440587.5) * 86400.0)")
POSTGRES = Dialect("postgresql", {"pk": "bigserial primary key", "int": "bigint",
                                  "float": "double precision"},
                   "extract(epoch from clock_timestamp())::double precision")


# -- the schema ------------------------------------------------------------------------

_ACTIONS = """
create table if not exists actions (
    id {pk}, started text not null, ended text, operator text not null,
    host text not null, pid {int} not null, boot_id text, proc_start {int},
    target_system text not null, mode text not null, action text not null,
    target_object text not null, target_name text not null, plan text not null,
    findings text not null, override {int} not null, confirmed {int} not null,
    outcome text not null, error text not null, duration_s {float},
    size_before {int}, size_after {int}, final_state text, detail text,
    task_id text not null
);
create index if not exists actions_outcome on actions (outcome)
"""

_STORES = """
create table if not exists finding_acks (
    id {pk}, target text not null, code text not null,
    kind text not null, reason text not null, operator text not null,
    created text not null, severity text not null, until text,
    cleared text, ended text, ended_why text
);
create index if not exists finding_acks_open on finding_acks (ended);
create table if not exists windows (
    name text primary key, end_at text, parallel {int} not null default 1,
    same_lun {int} not null default 0, updated text not null
);
create table if not exists window_items (
    id text primary key, "window" text not null, position {int} not null,
    vm_id text not null, vm_name text not null, action text not null,
    params text not null, status text not null, reason text not null default '',
    started text, ended text
);
create table if not exists rebuilds (
    id text primary key, vm_id text not null, vm_name text not null,
    target_system text not null, state text not null, created text not null,
    updated text not null, node text not null default '',
    to_last_parent {int} not null default 0, old_vm_name text not null default '',
    new_vm_id text not null default '', pause_requested {int} not null default 0,
    capture text, result text not null default '{}', host text not null default '',
    boot_id text, pid {int} not null default 0, proc_start {int}
);
create index if not exists rebuilds_vm on rebuilds (vm_id, state);
create table if not exists rebuild_steps (
    rebuild_id text not null references rebuilds (id), idx {int} not null,
    name text not null, state text not null, pct {float} not null default 0,
    message text not null default '', started text, ended text,
    error text not null default '', manual text not null default '',
    log_row {int}, task_id text not null default '',
    primary key (rebuild_id, idx)
);
create table if not exists leases (
    target_object text primary key, row_id {int} not null, action text not null,
    target_name text not null, console text not null, operator text not null,
    host text not null, boot_id text, pid {int} not null, proc_start {int},
    cluster_account text not null default '', lun_space text not null default '{}',
    acquired {float} not null, expires {float} not null
);
create index if not exists leases_row on leases (row_id);
create table if not exists log_imports (
    source text not null, tbl text not null, src_key text not null, dst_key text not null,
    primary key (source, tbl, src_key)
);
alter table actions add column cluster_account text not null default ''
"""

#: (version, statements). Tables use ``if not exists``: files written before the
#: schema had one owner may hold some of them already.
MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _ACTIONS), (2, _STORES))
#: Tables in the order they depend on each other (migrate copies them in it).
TABLES = ("actions", "finding_acks", "windows", "window_items", "rebuilds", "rebuild_steps")


def _statements(text: str) -> list[str]:
    return [s.strip() for s in text.split(";") if s.strip()]


# -- errors ----------------------------------------------------------------------------

def explain_pg(exc: BaseException, where: str) -> str:
    """A PostgreSQL failure in words an operator can act on."""
    import psycopg

    msg = clean(str(exc)).strip() or type(exc).__name__
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return (f"the action-log database {where} refused the write: this console's database "
                f"role may only read (a read-only console): {msg}")
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return (f"the action-log database {where} is locked by another console's write "
                f"(waited past the lock timeout): {msg}")
    if isinstance(exc, psycopg.OperationalError):
        return f"the action-log database {where} is unreachable: {msg}"
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return f"{where} holds no Ventana action log (run a read-write console once): {msg}"
    return f"action-log database {where}: {msg}"


# -- the password ---------------------------------------------------------------------

#: Passwords the keyring gave, by key, for this process: a team database that is down
#: is retried every few seconds by several connections (the log, acknowledgements,
#: the feed…), and a locked keyring would prompt (or wait out its limit) at each try.
#: Only a found password is kept; one the server refused is forgotten (``forget``).
_found: dict[str, str] = {}
_found_lock = threading.Lock()


def _keyring_key(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.username or ''}@{parts.hostname or ''}:{parts.port or ''}{parts.path}"


def keyring_password(url: str, timeout: float = TIMEOUT_S) -> str | None:
    """The password the OS keyring holds for this URL's user@host:port/db, if any.

    Only asked when ``PGPASSWORD`` is not set; a headless machine has no
    backend (``None``, fast); a locked collection may block on a prompt, so the
    lookup has a time limit (state/oskeyring.py; RELIABILITY.md, "Credentials").
    A password found once is not asked for again in this process until the server
    refuses it (``forget_refused_password``).
    """
    if os.environ.get("PGPASSWORD"):
        return None
    key = _keyring_key(url)
    with _found_lock:
        if key in _found:
            return _found[key]
    password = ask_keyring(KEYRING_SERVICE, key, timeout)
    if password:
        with _found_lock:
            _found[key] = password
    return password


def forget_refused_password(url: str, exc: BaseException) -> None:
    """After a failed connect: if the server refused the login (SQLSTATE class 28,
    invalid authorization — PostgreSQL's errcodes appendix; or libpq's "authentication
    failed" when no SQLSTATE came back), the kept password goes and the next try asks
    the keyring again (the operator may have just stored the new one)."""
    state = str(getattr(exc, "sqlstate", None) or "")
    if state.startswith("28") or "authentication failed" in str(exc):
        with _found_lock:
            _found.pop(_keyring_key(url), None)


# -- one connection -------------------------------------------------------------------

class Db:
    """One connection to the log database (either engine); thread-safe.

    ``error`` is the caller's exception class: every failure is raised as it.
    """

    def __init__(self, loc: Location, *, error: type[Exception], busy_timeout: float,
                 app: str = "ventana", lazy: bool = False) -> None:
        self.location: Location = loc
        self.error = error
        self.timeout = busy_timeout
        self.pg = is_url(loc)
        self.dialect = POSTGRES if self.pg else SQLITE
        self.where = display(loc)
        self._app = app
        self._lock = threading.RLock()
        self._closed = False
        self.conn: Any = None
        self.can_write = True
        self._migrated = False
        self._failed = ""  # why the last connection attempt failed ('' : it did not)
        self._failed_at = 0.0
        self._in_tx = False
        try:
            self._connect()
        except error:
            if not (lazy and self.pg):
                raise
            self.conn = None  # out of reach: every call retries, migrating first

    # -- connecting -------------------------------------------------------------------
    def _connect(self) -> None:
        if not self.pg:
            self.conn = sqlite_connect(Path(self.location), busy_timeout=self.timeout,
                                       error=self.error)
            return
        import psycopg
        from psycopg.rows import dict_row

        # lock_timeout: a write waits for another console's transaction at most as
        # long as SQLite's busy_timeout, then says so (never hangs).
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row,
                                  "connect_timeout": CONNECT_TIMEOUT_S, **TCP_SETTINGS,
                                  "application_name": self._app,
                                  "options": f"-c lock_timeout={max(1, int(self.timeout * 1000))}"}
        since = time.monotonic() - self._failed_at
        if self._failed and since < RETRY_S:  # just failed: say so now, retry soon
            raise self.error(self._failed)  # (before the keyring, which may take seconds)
        password = keyring_password(str(self.location))
        if password:
            kwargs["password"] = password
        try:
            self.conn = psycopg.connect(str(self.location), **kwargs)
        except psycopg.Error as exc:
            forget_refused_password(str(self.location), exc)
            self._failed, self._failed_at = explain_pg(exc, self.where), time.monotonic()
            raise self.error(self._failed) from None
        self._failed = ""

    def _ensure(self) -> None:
        if self._closed:
            raise self.error(f"the action log {self.where} is closed")
        if self.pg and (self.conn is None or self.conn.closed or self.conn.broken):
            with contextlib.suppress(Exception):
                if self.conn is not None:
                    self.conn.close()
            self.conn = None
            self._connect()
            if not self._migrated:
                try:
                    self.migrate()
                except BaseException:
                    with contextlib.suppress(Exception):
                        self.conn.close()
                    self.conn = None
                    raise

    def unreachable(self) -> bool:
        """PostgreSQL: the connection is gone (the server is down or out of reach)."""
        return self.pg and (self.conn is None or self.conn.closed or self.conn.broken)

    @property
    def last_failure(self) -> str:
        """Why the last connection attempt failed, while the connection is gone ('' :
        connected, or not known yet). Never blocks (no round trip)."""
        return self._failed if self.unreachable() else ""

    def _fail(self, exc: BaseException) -> Exception:
        if self.pg:
            return self.error(explain_pg(exc, self.where))
        return self.error(sqlite_explain(exc, Path(self.location), self.timeout))

    def _driver_errors(self) -> tuple[type[BaseException], ...]:
        if self.pg:
            import psycopg

            return (psycopg.Error,)
        return (sqlite3.Error, OSError)

    # -- statements ---------------------------------------------------------------------
    @staticmethod
    def _params(params: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(int(p) if isinstance(p, bool) else p for p in params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""
        with self._lock:
            self._ensure()
            try:
                cur = self.conn.execute(self.dialect.sql(sql), self._params(params))
                return int(cur.rowcount or 0)
            except self._driver_errors() as exc:
                raise self._fail(exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        with self._lock:
            self._ensure()
            try:
                if self.pg:
                    with self.conn.cursor() as cur:
                        cur.executemany(self.dialect.sql(sql), [self._params(r) for r in rows])
                else:
                    self.conn.executemany(self.dialect.sql(sql), [self._params(r) for r in rows])
            except self._driver_errors() as exc:
                raise self._fail(exc) from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts. A read outside a transaction on a connection found dead
        (the server restarted since the last call) is retried once on a new one."""
        with self._lock:
            for attempt in (1, 2):
                self._ensure()
                try:
                    cur = self.conn.execute(self.dialect.sql(sql), self._params(params))
                    if self.pg:
                        return list(cur.fetchall())
                    names = [d[0] for d in cur.description or ()]
                    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
                except self._driver_errors() as exc:
                    stale = (self.pg and not self._in_tx and self.conn.broken
                             and sql.lstrip().lower().startswith("select"))
                    if attempt == 1 and stale:
                        continue
                    raise self._fail(exc) from exc
            raise AssertionError("unreachable")

    def insert(self, sql: str, params: Sequence[Any]) -> int:
        """An ``insert … returning id``: the new row's id."""
        rows = self.query(sql + " returning id", params)
        return int(rows[0]["id"])

    def now(self) -> float:
        """The database's clock (epoch seconds)."""
        return float(self.query("select NOW() as now")[0]["now"])

    def notify(self, payload: str) -> None:
        """Tell listening consoles (PostgreSQL; delivered at commit). No-op on SQLite."""
        if self.pg:
            self.query("select pg_notify(?, ?) as n", (NOTIFY_CHANNEL, payload))

    @contextmanager
    def write(self, *, serialize: bool = False) -> Iterator[Db]:
        """One transaction; ``serialize`` also takes the lease lock (PostgreSQL)."""
        with self._lock:
            self._ensure()
            if not self.pg:
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                except (sqlite3.Error, OSError) as exc:
                    raise self._fail(exc) from exc
                try:
                    yield self
                    self.conn.execute("COMMIT")
                except BaseException as exc:
                    if self.conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self.conn.execute("ROLLBACK")
                    if isinstance(exc, sqlite3.Error | OSError):
                        raise self._fail(exc) from exc
                    raise
                return
            import psycopg

            try:
                self._in_tx = True
                with self.conn.transaction():
                    if serialize:
                        self.conn.execute("select pg_advisory_xact_lock(%s)", (LEASE_LOCK_KEY,))
                    yield self
            except psycopg.Error as exc:
                raise self._fail(exc) from exc
            finally:
                self._in_tx = False

    # -- the schema --------------------------------------------------------------------
    def version(self) -> int:
        if not self.pg:
            return int(self.query("PRAGMA user_version")[0]["user_version"])
        rows = self.query("select to_regclass('ventana_schema') is not null as present")
        if not rows[0]["present"]:
            return 0
        found = self.query("select max(version) as v from ventana_schema")
        return int(found[0]["v"] or 0)

    def migrate(self) -> None:
        """Create or upgrade every table; refuse a newer schema.

        SQLite: always inside ``BEGIN IMMEDIATE`` (opening is also the proof
        that the file can be written). PostgreSQL: only when behind, under an
        advisory lock; a current schema needs no write, so a read-only role
        can open the log (``can_write`` tells whether it may write).
        """
        if self.pg:
            self._migrated = True  # (set first: migrating reconnects through _ensure)
            try:
                self._migrate_pg()
            except BaseException:
                self._migrated = False
                raise
            return
        with self.write():
            current = self.version()
            self._check_newer(current)
            if current < VERSION:
                self._apply(current)
                self.execute(f"PRAGMA user_version = {VERSION}")

    def _migrate_pg(self) -> None:
        current = self.version()
        self._check_newer(current)
        if current < VERSION:
            with self.write():
                self.execute("select pg_advisory_xact_lock(?)", (LEASE_LOCK_KEY + 1,))
                self.execute("create table if not exists ventana_schema "
                             "(version integer not null)")
                current = self.version()
                self._apply(current)
                if current < VERSION:
                    self.execute("insert into ventana_schema (version) values (?)",
                                 (VERSION,))
        self.can_write = bool(self.query(
            "select has_table_privilege('actions', 'INSERT') as w")[0]["w"])

    def _check_newer(self, current: int) -> None:
        if current > VERSION:
            raise self.error(
                f"the action log {self.where} has schema version {current}, newer than "
                f"this Ventana supports ({VERSION}); upgrade Ventana")

    def _apply(self, current: int) -> None:
        for version, text in MIGRATIONS:
            if version <= current:
                continue
            for statement in _statements(text):
                if statement.startswith("alter table actions add column") and \
                        self._has_column("actions", statement.split()[5]):
                    continue
                self.execute(statement)

    def _has_column(self, table: str, column: str) -> bool:
        if self.pg:
            return bool(self.query(
                "select 1 as x from information_schema.columns where table_name = ? "
                "and column_name = ? and table_schema = current_schema()", (table, column)))
        return any(r["name"] == column for r in self.query(f"PRAGMA table_info({table})"))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()


def open_db(loc: Location, *, error: type[Exception], busy_timeout: float,
            app: str = "ventana", lazy: bool = False) -> Db:
    """Open and migrate; closes what it opened on failure.

    ``lazy`` (PostgreSQL): a database out of reach is not an error yet — the
    handle connects and migrates on first use, and refuses every call until then.
    """
    db = Db(loc, error=error, busy_timeout=busy_timeout, app=app, lazy=lazy)
    if db.conn is None:
        return db
    try:
        db.migrate()
    except BaseException:
        db.close()
        raise
    return db
