"""Moving a log over: copy a SQLite action log into a team's PostgreSQL database.

``copy_log(source, dest)`` copies every row kind — actions (intent and
outcome), acknowledgements and snoozes, window queues and their items,
rebuild workflows and their steps — and returns what it copied, per table.

Idempotent: each copied row is remembered in ``log_imports`` (source, table,
source key → destination key), so running it again copies only what is new;
an action that was still ``running`` when first copied and has an outcome in
the source now gets that outcome. The source is identified by host and
absolute path. Action ids are the destination's own (other consoles already
write there): a rebuild step's reference to its action row follows the
mapping. Rows are copied as they are stored (already sanitized and redacted
when written); a running action copied over reads "interrupted — verify on
the host" there unless its process is still alive on this host.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .actionlog import COLUMNS, ActionLogError
from .db import DEFAULT_BUSY_TIMEOUT
from .schema import Db, Location, display, open_db

#: What each table is keyed by in the source (and whether the destination keeps that key).
_KEYS: dict[str, tuple[str, ...]] = {
    "actions": ("id",),
    "finding_acks": ("id",),
    "windows": ("name",),
    "window_items": ("id",),
    "rebuilds": ("id",),
    "rebuild_steps": ("rebuild_id", "idx"),
}
_SERIAL = ("actions", "finding_acks")  # the destination gives new ids


@dataclass
class CopyReport:
    source: str
    dest: str
    copied: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"copied {self.source} → {self.dest}"]
        for table in _KEYS:
            out.append(f"  {table}: {self.copied.get(table, 0)} copied, "
                       f"{self.updated.get(table, 0)} updated, "
                       f"{self.skipped.get(table, 0)} already there")
        return out


def _key(table: str, row: Mapping[str, Any]) -> str:
    return "/".join(str(row[k]) for k in _KEYS[table])


def _quote(name: str) -> str:
    return f'"{name}"'


def copy_log(source: Path, dest: Location, *,
             busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> CopyReport:
    """Copy ``source`` (a SQLite log) into ``dest`` (usually a postgresql:// URL)."""
    source = Path(source).expanduser().resolve()
    if not source.is_file():
        raise ActionLogError(f"no action log at {source}")
    src = open_db(source, error=ActionLogError, busy_timeout=busy_timeout)
    try:
        dst = open_db(dest, error=ActionLogError, busy_timeout=busy_timeout)
        try:
            return _copy(src, dst, f"{socket.gethostname()}:{source}")
        finally:
            dst.close()
    finally:
        src.close()


def _copy(src: Db, dst: Db, origin: str) -> CopyReport:
    report = CopyReport(display(src.location), display(dst.location))
    action_ids: dict[str, int] = {}
    with dst.write(serialize=True):
        done = {(r["tbl"], r["src_key"]): r["dst_key"] for r in dst.query(
            "select tbl, src_key, dst_key from log_imports where source = ?", (origin,))}
        for table in _KEYS:
            columns = [c for c in _columns(src, table)]
            rows = src.query(f"select * from {table} order by " + ", ".join(_KEYS[table]))
            copied = updated = skipped = 0
            for row in rows:
                key = _key(table, row)
                values = dict(row)
                if table == "rebuild_steps" and values.get("log_row") is not None:
                    mapped = action_ids.get(str(values["log_row"]))
                    values["log_row"] = mapped
                if (table, key) in done:
                    if table == "actions":
                        action_ids[key] = int(done[(table, key)])
                        updated += _refresh_action(dst, int(done[(table, key)]), values)
                    skipped += 1
                    continue
                names = [c for c in columns if not (table in _SERIAL and c == "id")]
                sql = (f"insert into {table} ({', '.join(_quote(n) for n in names)}) "
                       f"values ({', '.join('?' * len(names))})")
                params = [values.get(n) for n in names]
                if table in _SERIAL:
                    new_key = str(dst.insert(sql, params))
                else:
                    conflict = ", ".join(_quote(k) for k in _KEYS[table])
                    if not dst.execute(sql + f" on conflict ({conflict}) do nothing", params):
                        skipped += 1
                        dst.execute("insert into log_imports (source, tbl, src_key, dst_key) "
                                    "values (?, ?, ?, ?)", (origin, table, key, key))
                        continue
                    new_key = key
                if table == "actions":
                    action_ids[key] = int(new_key)
                dst.execute("insert into log_imports (source, tbl, src_key, dst_key) "
                            "values (?, ?, ?, ?)", (origin, table, key, new_key))
                copied += 1
            report.copied[table] = copied
            report.updated[table] = updated
            report.skipped[table] = skipped - updated
    return report


def _columns(db: Db, table: str) -> list[str]:
    """The source table's columns that the schema knows (an old file may lack some)."""
    found = [r["name"] for r in db.query(f"PRAGMA table_info({table})")]
    if table == "actions":
        return [c for c in COLUMNS if c in found]
    return found


def _refresh_action(dst: Db, dst_id: int, values: Mapping[str, Any]) -> int:
    """A copied action that was running and has its outcome in the source now."""
    if values.get("outcome") == "running":
        return 0
    return dst.execute(
        "update actions set ended = ?, outcome = ?, error = ?, duration_s = ?, "
        "size_before = ?, size_after = ?, final_state = ?, detail = ? "
        "where id = ? and outcome = 'running'",
        (values.get("ended"), values.get("outcome"), values.get("error") or "",
         values.get("duration_s"), values.get("size_before"), values.get("size_after"),
         values.get("final_state"), values.get("detail"), dst_id))
