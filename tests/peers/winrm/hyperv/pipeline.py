"""PowerShell's own utility cmdlets as the endpoint serves them: Select-Object, ConvertTo-Json."""

from __future__ import annotations

import enum
import functools
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from psrpcore.types import PSNoteProperty, PSObject

from ..cmdlets import CommandWriter, ErrorCategory, ps_object
from .wire import Row, _as_list, _flat, _properties

_DOTNET_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN = (type(None), bool, str, float, int)
_SELECTED = ["System.Management.Automation.PSCustomObject", "System.Object"]


#: id(member) -> (member, name, number) of the enum members met (never a Flag: a
#: combination is a new object each time). The member is kept, so its id stays its own.
_ENUM_FACTS: dict[int, tuple[Any, str, int]] = {}


def _enum_facts(value: enum.Enum) -> tuple[str, int]:
    """(name, number) of an enum member. psrpcore's enums are PSObjects whose every
    attribute read goes through PSObject.__getattribute__ (~10 µs for ``.name``); a
    member's name and number never change, so they are read once per member."""
    hit = _ENUM_FACTS.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1], hit[2]
    name, number = value.name, int(value.value)
    if not isinstance(value, enum.Flag):
        _ENUM_FACTS[id(value)] = (value, name, number)
    return name, number


def ps_string(value: Any) -> str:
    """``[string]$value`` as PowerShell converts it (LanguagePrimitives.ConvertTo<string>):
    $null → "", an enum → its member name, an object → its ToString, an array → its
    elements joined by $OFS (a space)."""
    if type(value) is str:  # the common case first (the rest is in PowerShell's order)
        return value
    hit = _ENUM_FACTS.get(id(value))  # an enum member met before: no isinstance() on it
    if hit is not None and hit[0] is value:  # (each costs a PSObject attribute read)
        return hit[1]
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, enum.Enum):
        return _enum_facts(value)[0]
    if isinstance(value, Row):
        return value.to_string or value.type_names[0]
    if isinstance(value, list | tuple):
        return " ".join(ps_string(v) for v in value)
    if isinstance(value, int):
        return str(int(value))
    meta = getattr(value, "PSObject", None)
    if meta is not None:
        return str(getattr(meta, "to_string", None) or meta.type_names[0])
    return str(value)


def _json_value(value: Any, depth: int, max_depth: int) -> Any:
    """One value as Windows PowerShell 5.1's ConvertTo-Json writes it at ``depth``.

    PowerShell's JsonObject.ProcessValue (PowerShell/PowerShell,
    src/Microsoft.PowerShell.Commands.Utility/commands/utility/WebCmdlet/JsonObject.cs):
    primitives, strings, DateTime, Guid as themselves; an enum as its number (5.1
    has no -EnumsAsStrings; Int64-based enums as their name); then, for anything
    else, ``if (currentDepth > context.MaxDepth)`` the value's string
    (LanguagePrimitives.ConvertTo<string>), else a dictionary, an array
    (elements at depth + 1) or an object's properties (at depth + 1).
    """
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is uuid.UUID:
        return str(value)
    if kind is datetime:
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"/Date({int((when - _DOTNET_EPOCH).total_seconds() * 1000)})/"
    hit = _ENUM_FACTS.get(id(value))  # an enum member met before (see ps_string)
    if hit is not None and hit[0] is value:
        return hit[2]
    if isinstance(value, enum.Enum):
        return _enum_facts(value)[1]
    if isinstance(value, int):  # psrpcore's sized integers
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if depth > max_depth:
        return ps_string(value)
    if kind is list or kind is tuple:
        return [_json_value(v, depth + 1, max_depth) for v in value]
    found = _properties(value)
    if found is None:
        return ps_string(value)
    return {name: _json_value(v, depth + 1, max_depth) for name, v in found[1].items()}


def to_json(objects: list[Any], *, compress: bool, depth: int = 2) -> str | None:
    """ConvertTo-Json's one string for the objects piped in (None: no input, no output).

    ConvertToJsonCommand.EndProcessing: one object is converted as itself (depth 0);
    several as one array, so each object is at depth 1 and its nested objects one
    level deeper than they would be alone.
    """
    if not objects:
        return None
    data = (_json_value(objects[0], 0, depth) if len(objects) == 1
            else _json_value(list(objects), 0, depth))
    return json.dumps(data, separators=(",", ":") if compress else (", ", ": "),
                      indent=None if compress else 4)


def _convert_to_json(params: dict[str, Any], writer: CommandWriter) -> None:
    """ConvertTo-Json [-Compress] [-Depth N]: every piped object as ONE JSON string."""
    text = to_json(list(writer.input), compress=bool(params.get("Compress")),
                   depth=int(params.get("Depth", 2)))
    if text is not None:
        writer.write_output(text)


# -- the one script shape the client sends: a projection with calculated properties --------

_PROJECTION = re.compile(
    r"^\$input \| Select-Object -Property (?P<items>.+) \| ConvertTo-Json -Compress$")
_CALCULATED = re.compile(
    r"^@\{n='(?P<name>\w+)';e=\{\[(?P<cast>string|string\[\])\]\$_\.(?P<path>\w+(?:\.\w+)*)\}\}$")
_PLAIN_ITEM = re.compile(r"^'(?P<name>\w+)'$")


@functools.lru_cache(maxsize=256)
def projection_script(text: str) -> Any:
    """A handler for ``$input | Select-Object -Property … | ConvertTo-Json -Compress``
    whose items are names (``'Name'``) or calculated properties casting one property
    path (``@{n='State';e={[string]$_.State}}``, ``[string[]]`` for an array); None for
    any other script (this peer understands no other)."""
    match = _PROJECTION.match(text.strip())
    if match is None:
        return None
    items: list[tuple[str, str, list[str]]] = []  # (name, cast, path)
    for raw in match.group("items").split(","):
        plain = _PLAIN_ITEM.match(raw.strip())
        calc = _CALCULATED.match(raw.strip())
        if plain:
            items.append((plain.group("name"), "", [plain.group("name")]))
        elif calc:
            items.append((calc.group("name"), calc.group("cast"), calc.group("path").split(".")))
        else:
            return None

    def run(params: dict[str, Any], writer: CommandWriter) -> None:
        rows: list[dict[str, Any]] = []  # each object's Selected.<type> properties
        for obj in writer.input:
            found = _properties(obj)
            if found is None:
                continue
            props = found[1]
            values: dict[str, Any] = {}
            for name, cast, path in items:
                value: Any = _member(props, path[0])
                for part in path[1:]:  # a nested property: $_.OwnerNode.Name
                    inner = (_properties(value) or ("", {}))[1]
                    value = {k.casefold(): v for k, v in inner.items()}.get(part.casefold())
                if cast == "string":
                    if type(value) is not str:
                        value = ps_string(value)
                elif cast:
                    value = [ps_string(v) for v in (value if isinstance(value, list | tuple)
                                                    else [] if value is None else [value])]
                values[name] = value
            rows.append(values)
        if not rows:
            return
        # to_json(the Selected objects, compress=True) without making them: one object is
        # converted as itself (its properties at depth 1), several as an array (their
        # properties at depth 2); a string is itself at any depth.
        depth = 1 if len(rows) == 1 else 2
        data = [{n: v if type(v) is str else _json_value(v, depth, 2) for n, v in r.items()}
                for r in rows]
        writer.write_output(json.dumps(data[0] if len(data) == 1 else data,
                                       separators=(",", ":")))

    return run


def _member(props: dict[str, Any], name: str) -> Any:
    """``$_.name``: member names are case-insensitive in PowerShell (a PSObject's members
    are a case-insensitive collection, so no two differ by case only): the exact name
    is looked up first, then the case-folded one — without folding every member of
    every object piped in (a VM has dozens; this is the endpoint's hottest loop)."""
    if name in props:
        return props[name]
    key = name.casefold()
    return next((v for k, v in props.items() if k.casefold() == key), None)


def _select(params: dict[str, Any], writer: CommandWriter) -> None:
    wanted = [str(p) for p in _as_list(params.get("Property"))]
    expand = params.get("ExpandProperty")
    if expand is not None:  # -ExpandProperty NAME: the property's value itself
        for obj in writer.input:
            found = _properties(obj)
            if found is None:
                continue
            folded = {k.casefold(): v for k, v in found[1].items()}
            value = folded.get(str(expand).casefold())
            if value is None:
                writer.write_error(
                    f"Property \"{expand}\" cannot be found.",
                    error_id="ExpandPropertyNotFound,Microsoft.PowerShell.Commands.SelectObjectCommand",
                    category=ErrorCategory.InvalidArgument,
                )
                continue
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Row) and not writer.piped:
                    item = ps_object(item.type_names,
                                     {k: _flat(v) for k, v in item.props.items()},
                                     to_string=item.to_string)
                writer.write_output(item)
        return
    for obj in writer.input:
        found = _properties(obj)
        if found is None:
            writer.write_output(obj)
            continue
        first, props = found
        folded = {name.casefold(): value for name, value in reversed(list(props.items()))}
        values = {name: folded.get(name.casefold()) for name in wanted}
        types = [f"Selected.{first}", *_SELECTED]
        if writer.piped:
            writer.write_output(Row(types, values))
            continue
        out = PSObject()
        out.PSObject.type_names = types
        out.PSObject.extended_properties = [
            PSNoteProperty(n, _flat(v)) for n, v in values.items()
        ]
        writer.write_output(out)
