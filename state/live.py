"""Live awareness: what other consoles write to a shared log, as it happens.

``TeamFeed(log, on_rows)`` follows a team's log (PostgreSQL): a daemon thread
``LISTEN``s on the channel every write notifies (state/schema.py
``NOTIFY_CHANNEL``; ``ActionLog`` sends one per intent, outcome and one-shot
row, delivered at commit) and calls ``on_rows(rows)`` with the changed rows
(``LogRow``: operator, host and cluster account included) — from that
thread, so a UI hands them to its loop (Textual: ``app.call_from_thread``).
Within a second of the other console's commit; a notification carries only a
row id, and the row is read back from the log (never trusted from the
payload).

When the database goes away the thread reconnects by itself with backoff
(``state``: "live", "reconnecting: <why>"); rows written meanwhile are
caught up by id on reconnection. On a SQLite log there is nobody else to hear:
the feed polls ``newest_id`` once a second instead (another process on the
same host sharing the file).

The UI hook (tui/app.py, one line after the log opens)::

    self.team_feed = TeamFeed.start(log, lambda rows: self.call_from_thread(
        self.show_team_rows, rows))   # task strip (``describe(row)``) + log screen refresh

"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable

from .actionlog import ActionLog, ActionLogError, LogRow
from .sanitize import clean
from .schema import (
    CONNECT_TIMEOUT_S,
    NOTIFY_CHANNEL,
    TCP_SETTINGS,
    forget_refused_password,
    keyring_password,
)

OnRows = Callable[[list[LogRow]], None]


def describe(row: LogRow) -> str:
    """One line for the task strip or a toast: who, where, what, on what, how it stands.

    ``alice@ws-02 as CORP\\alice: merge app-01 — running`` (plain text, cleaned:
    render it with ``markup=False``/``Text``).
    """
    account = f" as {row.cluster_account}" if row.cluster_account else ""
    return clean(f"{row.operator}@{row.host}{account}: {row.action} {row.target_name} — "
                 f"{row.status}")


class TeamFeed:
    """Follows a log; ``start()`` it, ``stop()`` it. ``state`` says how it is doing."""

    def __init__(self, log: ActionLog, on_rows: OnRows, *, poll_s: float = 1.0) -> None:
        self.log = log
        self.on_rows = on_rows
        self.poll_s = poll_s
        self.state = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="ventana-feed")
        self._seen = 0
        self._pending: set[int] = set()

    @classmethod
    def start(cls, log: ActionLog, on_rows: OnRows, **kwargs: float) -> TeamFeed:
        feed = cls(log, on_rows, **kwargs)
        with contextlib.suppress(ActionLogError):
            feed._seen = log.newest_id()
        feed._thread.start()
        return feed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # -- the thread --------------------------------------------------------------
    def _deliver(self, ids: set[int]) -> None:
        """New rows since the last seen id, plus rows whose outcome just changed."""
        try:
            rows = self.log.rows_after(self._seen)
            known = {r.id for r in rows}
            rows += [r for i in sorted(ids - known) if i <= self._seen
                     and (r := self.log.get(i)) is not None]
        except ActionLogError as exc:
            self.state = f"reconnecting: {clean(str(exc))}"
            return
        if self.log.shared and self.state != "live":
            self.state = "live"
        if rows:
            self._seen = max(self._seen, *(r.id for r in rows))
            with contextlib.suppress(Exception):  # a UI callback must not kill the feed
                self.on_rows(rows)

    def _run(self) -> None:
        if not self.log.shared:
            self.state = "live (polling a local file)"
            while not self._stop.wait(self.poll_s):
                self._deliver(set())
            return
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except Exception as exc:  # the database went away: retry with backoff
                self.state = f"reconnecting: {clean(str(exc))[:200]}"
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _listen(self) -> None:
        import psycopg

        url = str(self.log.path)
        kwargs: dict[str, object] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                                     **TCP_SETTINGS,
                                     "application_name": "ventana-feed"}
        password = keyring_password(url)
        if password:
            kwargs["password"] = password
        try:
            conn = psycopg.connect(url, **kwargs)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            forget_refused_password(url, exc)
            raise
        with conn:
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.state = "live"
            self._deliver(set())  # catch up with what was written while away
            while not self._stop.is_set():
                ids: set[int] = set()
                for note in conn.notifies(timeout=0.25, stop_after=64):
                    try:
                        ids.add(int(json.loads(note.payload)["id"]))
                    except (ValueError, KeyError, TypeError):
                        continue
                if ids:
                    self._deliver(ids)
            time.sleep(0)
