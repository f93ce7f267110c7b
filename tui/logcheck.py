"""Start-up and exit checks of the command line (issue 12).

- ``unwritable``: an action log that opens but cannot be written (read-only
  file, immutable file, read-only mount) is found at start, not when the
  first action is refused.
- ``closing_pipe_quietly``: ``ventana log | head`` ends without a traceback.
- ``ConnectionWatch`` / ``exit_code``: a console that never connected exits
  non-zero when quit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ventana.state.events import LinkState
from ventana.state.store import Delta, Store

#: Exit code of a console that quit without ever connecting to its target.
NEVER_CONNECTED = 3


def unwritable(path: Path) -> str:
    """Why the action log file (or its WAL companions) cannot be written; "" if it can.

    Opening for writing (without writing) is the probe: it fails on a
    read-only file, an immutable file and a read-only mount, even for root.
    """
    for candidate in (path, path.with_name(path.name + "-wal"),
                      path.with_name(path.name + "-shm")):
        if candidate != path and not candidate.exists():
            continue
        try:
            with candidate.open("r+b"):
                pass
        except OSError as exc:
            return f"the action log {candidate} cannot be written: {exc.strerror or exc}"
    if not os.access(path.parent, os.W_OK):
        return f"the action log's directory {path.parent} cannot be written"
    return ""


@dataclass
class _Done:
    code: int = 0


@contextmanager
def closing_pipe_quietly() -> Iterator[_Done]:
    """Yield a holder for the exit code; a reader that closed the pipe ends it quietly."""
    done = _Done()
    try:
        yield done
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader (head, less) has gone: point stdout at /dev/null so that the
        # interpreter's final flush does not raise again (Python's documented recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        done.code = done.code or 0


class ConnectionWatch:
    """Remembers whether any of the store's links ever reached CONNECTED."""

    def __init__(self, store: Store) -> None:
        self.ever_connected = False
        self._store = store
        store.subscribe(self._on_delta)

    def _on_delta(self, delta: Delta) -> None:
        if delta.links_changed and not self.ever_connected:
            self.ever_connected = any(link.state is LinkState.CONNECTED
                                      for link in self._store.links.values())


def exit_code(app: object) -> int:
    """0, or NEVER_CONNECTED when the console quit without ever connecting."""
    watch = getattr(app, "connection_watch", None)
    if isinstance(watch, ConnectionWatch) and not watch.ever_connected:
        reason = getattr(getattr(app, "store", None), "link_reason", lambda: "")()
        print(f"ventana: never connected to the target{f': {reason}' if reason else ''}",
              file=sys.stderr)
        return NEVER_CONNECTED
    return 0
