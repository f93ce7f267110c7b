"""Events: the only way a backend tells the store what happened.

A backend yields these on an async stream; the store applies them in order.
The same stream, written to disk with time offsets, is a recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .model import Entity, Finding, Kind, TaskState


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    STALE = "stale"
    RECONNECTING = "reconnecting"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class Upsert:
    entity: Entity


@dataclass(frozen=True, slots=True)
class Remove:
    kind: Kind
    id: str


@dataclass(frozen=True, slots=True)
class TaskProgress:
    task_id: str
    pct: float
    message: str = ""
    state: TaskState | None = None


@dataclass(frozen=True, slots=True)
class FindingRaised:
    finding: Finding


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    source: str
    state: LinkState
    reason: str = ""
    #: The nodes this source reads (empty: unknown, or the whole target). Lets a
    #: stale node make stale only what it owns (``Store.stale_for``).
    nodes: tuple[str, ...] = ()
    #: The id prefix of everything this source speaks for: a composite's
    #: ``"<label>/"`` (``backends/multi.py``); empty: the whole session. A target's
    #: link down makes stale only what that target owns (``Store.staleness``).
    scope: str = ""


Event = Upsert | Remove | TaskProgress | FindingRaised | ConnectionChanged
