"""Events to and from plain JSON-able dicts (the recording line format).

Encoding is field-by-field from the dataclasses; decoding uses the declared
field types, so an unknown kind, a missing field or a wrong type raises
``CodecError`` with a readable reason instead of building a broken entity.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from .events import (
    ConnectionChanged,
    Event,
    FindingRaised,
    LinkState,
    Remove,
    TaskProgress,
    Upsert,
)
from .model import ENTITY_TYPES, Entity, Finding, Kind, TaskState


class CodecError(ValueError):
    pass


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def entity_to_dict(entity: Entity) -> dict[str, Any]:
    return {f.name: _plain(getattr(entity, f.name)) for f in dataclasses.fields(entity)}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise CodecError(f"{where}: expected a list")
        (inner,) = typing.get_args(tp)[:1]
        return tuple(_convert(inner, v, where) for v in value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError as exc:
            raise CodecError(f"{where}: {value!r} is not a {tp.__name__}") from exc
    if tp is datetime:
        try:
            moment = datetime.fromisoformat(value)
        except (TypeError, ValueError) as exc:
            raise CodecError(f"{where}: bad time {value!r}") from exc
        if moment.tzinfo is None:
            raise CodecError(f"{where}: time {value!r} has no timezone")
        return moment
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise CodecError(f"{where}: expected a number, got {type(value).__name__}")
    if tp in (int, str, bool) and type(value) is not tp:
        raise CodecError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value


def entity_from_dict(kind: str, data: dict[str, Any]) -> Entity:
    try:
        cls = ENTITY_TYPES[Kind(kind)]
    except ValueError as exc:
        raise CodecError(f"unknown entity kind {kind!r}") from exc
    if not isinstance(data, dict):
        raise CodecError(f"{kind}: data is not an object")
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], f"{kind}.{f.name}")
        elif f.default is dataclasses.MISSING:
            raise CodecError(f"{kind}: missing field {f.name!r}")
    return cls(**values)


def event_to_dict(event: Event) -> dict[str, Any]:
    match event:
        case Upsert(entity):
            return {"ev": "upsert", "kind": entity.KIND.value, "data": entity_to_dict(entity)}
        case Remove(kind, id_):
            return {"ev": "remove", "kind": kind.value, "id": id_}
        case TaskProgress(task_id, pct, message, state):
            return {
                "ev": "progress",
                "task": task_id,
                "pct": pct,
                "message": message,
                "state": state.value if state else None,
            }
        case FindingRaised(finding):
            return {"ev": "finding", "data": entity_to_dict(finding)}
        case ConnectionChanged(source, state, reason, nodes, scope):
            out: dict[str, Any] = {"ev": "link", "source": source, "state": state.value,
                                   "reason": reason}
            if nodes:
                out["nodes"] = list(nodes)
            if scope:  # a composite's target (older recordings have none: the whole session)
                out["scope"] = scope
            return out
    raise CodecError(f"cannot encode {event!r}")


def event_from_dict(d: dict[str, Any]) -> Event:
    if not isinstance(d, dict):
        raise CodecError("event is not an object")
    try:
        match d.get("ev"):
            case "upsert":
                return Upsert(entity_from_dict(d["kind"], d["data"]))
            case "remove":
                return Remove(Kind(d["kind"]), str(d["id"]))
            case "progress":
                state = TaskState(d["state"]) if d.get("state") else None
                message = str(d.get("message", ""))
                return TaskProgress(str(d["task"]), float(d["pct"]), message, state)
            case "finding":
                finding = entity_from_dict(Kind.FINDING.value, d["data"])
                assert isinstance(finding, Finding)
                return FindingRaised(finding)
            case "link":
                return ConnectionChanged(
                    str(d["source"]), LinkState(d["state"]), str(d.get("reason", "")),
                    tuple(str(n) for n in d.get("nodes") or ()), str(d.get("scope") or ""),
                )
    except (KeyError, TypeError, ValueError) as exc:
        raise CodecError(f"bad {d.get('ev')!r} event: {exc}") from exc
    raise CodecError(f"unknown event type {d.get('ev')!r}")
