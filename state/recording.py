"""Recordings: a session's event stream on disk (JSON Lines, format version 1).

This module owns the file format, the writer (``Recorder``) and the reader
(``read_recording``). A recording is::

    {"format": "ventana-recording", "version": 1, "started": ISO, "target": …, "meta": {…}}
    {"t": 0.0, "ev": "link", …}                 one line per event (codec.event_to_dict)
    {"t": 1.25, "ev": "upsert", "kind": "vm", "data": {…}}
    {"t": 3.5, "ev": "action", "data": {"action": "merge", "target": "vm:a", …}}

``t`` is seconds since the recording started (3 decimals). Event text is
written as the backend reported it (JSON-escaped, so the file is pure ASCII
and a hostile VM name appears as ``\\u001b``, never as a raw control byte);
the store sanitizes it again on replay. Only ``password=…``/``Authorization:
…``-style fragments are masked in event text (an error message must not carry
a secret into the file). Operator-action lines are sanitized
and stripped of secret-looking keys before they are written.

The writer appends whole lines (one ``write`` per line, file opened
``O_APPEND``), so a crash leaves at most one torn last line; it fsyncs at
action boundaries and on close. A write error (disk full) never interrupts
the console: the recorder stops writing and keeps the reason in ``error``.

The reader never raises on damage after the header: the first torn, non-JSON
or undecodable line ends the items, and ``stopped`` says where and why. A
header that is not ours raises ``RecordingError``; a newer format version
raises ``RecordingVersionError``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .actionlog import redact, scrub
from .codec import CodecError, event_from_dict, event_to_dict
from .events import Event
from .sanitize import clean

FORMAT = "ventana-recording"
VERSION = 1


class RecordingError(ValueError):
    """The file is not a readable Ventana recording."""


class RecordingVersionError(RecordingError):
    """The recording was written by a newer Ventana."""


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    version: int
    started: str
    target: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """An operator action as recorded (action name, target, outcome…)."""

    t: float
    data: dict[str, Any]

    @property
    def action(self) -> str:
        return str(self.data.get("action", ""))

    @property
    def target(self) -> str:
        return str(self.data.get("target", ""))

    @property
    def outcome(self) -> str:
        return str(self.data.get("outcome", ""))


Item = Event | ActionRecord


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    header: RecordingHeader
    items: list[tuple[float, Item]]
    stopped: str | None  # None: read to the end; else "line N: why"

    @property
    def duration(self) -> float:
        return self.items[-1][0] if self.items else 0.0

    @property
    def events(self) -> list[tuple[float, Event]]:
        return [(t, i) for t, i in self.items if not isinstance(i, ActionRecord)]

    @property
    def actions(self) -> list[ActionRecord]:
        return [i for _, i in self.items if isinstance(i, ActionRecord)]


# -- writing --------------------------------------------------------------------

def _scrubbed(value: Any) -> Any:
    """Mask ``password=…``-style fragments in every string (text kept otherwise raw)."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


class Recorder:
    """Append a session to ``path`` (which must not exist yet).

    ``clock`` gives the time offsets (monotonic seconds); ``started`` the
    header's wall-clock start (now, by default). Raises ``OSError`` when the
    file cannot be created (``FileExistsError`` if it exists: recordings are
    never overwritten or appended to by a second session).
    """

    def __init__(
        self,
        path: Path | str,
        target: str,
        meta: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        started: datetime | None = None,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._t0 = self._clock()
        self.error: str | None = None  # set when writing failed; writing stopped
        self.skipped = 0  # events that could not be encoded
        self.lines = 0
        self._fd: int | None = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC, 0o600
        )
        header = {
            "format": FORMAT,
            "version": VERSION,
            "started": (started or datetime.now(UTC)).isoformat(timespec="milliseconds"),
            "target": clean(target),
            "meta": redact(dict(meta or {})),
        }
        try:
            self._write(_dumps(header))
            if self.error:
                raise OSError(self.error)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._fd is None

    def _offset(self) -> float:
        return round(max(0.0, self._clock() - self._t0), 3)

    def _write(self, line: bytes) -> None:
        if self._fd is None or self.error:
            return
        try:
            view = memoryview(line)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self.lines += 1
        except OSError as exc:
            self.error = f"recording {self.path} stopped: {exc.strerror or exc}"

    def _sync(self) -> None:
        if self._fd is None or self.error:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.error = f"recording {self.path} stopped: {exc.strerror or exc}"

    def write_event(self, event: Event) -> None:
        try:
            line = _dumps({"t": self._offset(), **_scrubbed(event_to_dict(event))})
        except (CodecError, TypeError, ValueError):
            self.skipped += 1
            return
        self._write(line)

    def write_action(self, data: Mapping[str, Any]) -> None:
        """Record an operator action (sanitized, no secrets) and fsync."""
        try:
            line = _dumps({"t": self._offset(), "ev": "action", "data": redact(dict(data))})
        except (TypeError, ValueError):
            self.skipped += 1
            return
        self._write(line)
        self._sync()

    def close(self) -> None:
        if self._fd is None:
            return
        self._sync()
        fd, self._fd = self._fd, None
        try:
            os.close(fd)
        except OSError as exc:
            self.error = self.error or f"recording {self.path}: {exc.strerror or exc}"

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# -- reading --------------------------------------------------------------------

def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


def _parse(raw: bytes) -> Any:
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


def _header(first: bytes | None, path: Path) -> RecordingHeader:
    if first is None:
        raise RecordingError(f"{path} is empty: not a Ventana recording")
    try:
        head = _parse(first)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordingError(f"{path} is not a Ventana recording (first line is not JSON)") from exc
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise RecordingError(f"{path} is not a Ventana recording (no '{FORMAT}' header)")
    version = head.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordingError(f"{path}: bad recording format version {version!r}")
    if version > VERSION:
        raise RecordingVersionError(
            f"{path}: recording format version {version} is newer than this Ventana "
            f"supports ({VERSION}); upgrade Ventana"
        )
    meta = head.get("meta") or {}
    return RecordingHeader(
        version=version,
        started=clean(head.get("started", "")),
        target=clean(head.get("target", "")),
        meta=redact(meta) if isinstance(meta, dict) else {},
    )


def _item(raw: bytes) -> tuple[float, Item]:
    """Decode one item line; raises ValueError with the reason (no line number)."""
    try:
        obj = _parse(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    t = obj.pop("t", None)
    if not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        raise ValueError(f"bad time offset {t!r}")
    t = float(t)
    if obj.get("ev") == "action":
        data = obj.get("data")
        if not isinstance(data, dict):
            raise ValueError("bad 'action' line: data is not an object")
        return t, ActionRecord(t, redact(data))
    try:
        return t, event_from_dict(obj)
    except CodecError as exc:
        raise ValueError(clean(str(exc))) from exc


def iter_lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, bytes without newline, complete?) for each line of ``path``."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            complete = raw.endswith(b"\n")
            yield number, raw.rstrip(b"\r\n"), complete


def read_recording(path: Path | str) -> Recording:
    """Read a whole recording; damage ends it (see ``Recording.stopped``).

    Raises ``RecordingVersionError`` for a newer format, ``RecordingError``
    for a file that is not a recording, ``OSError`` if it cannot be read.
    """
    path = Path(path)
    lines = iter_lines(path)
    first = next(lines, None)
    if first is not None and not first[2] and not first[1].strip():
        first = None
    header = _header(first[1] if first else None, path)
    items: list[tuple[float, Item]] = []
    stopped: str | None = None
    last_t = 0.0
    for number, raw, complete in lines:
        if not raw.strip():
            if complete:
                continue  # a blank line carries nothing
            break
        try:
            t, item = _item(raw)
        except ValueError as exc:
            why = "truncated line" if not complete else str(exc)
            stopped = f"line {number}: {why}"
            break
        # Offsets never go backwards in a file we wrote; clamp if one does.
        if t < last_t:
            t = last_t
            if isinstance(item, ActionRecord):
                item = ActionRecord(t, item.data)
        last_t = t
        items.append((t, item))
    return Recording(path, header, items, stopped)
