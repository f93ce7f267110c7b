"""PowerShell's own utility cmdlets as the endpoint serves them: Select-Object, ConvertTo-Json."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from psrpcore.types import PSNoteProperty, PSObject

from ..cmdlets import CommandWriter, ErrorCategory, ps_object
from .wire import Row, _as_list, _flat, _properties

_DOTNET_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_PLAIN = (type(None), bool, str, float, int)


def _json_value(value: Any) -> Any:
    """A value as Windows PowerShell 5.1's ConvertTo-Json writes it."""
    kind = type(value)
    if kind in _PLAIN:
        return value
    if kind is uuid.UUID:
        return str(value)
    if kind is datetime:
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return f"/Date({int((when - _DOTNET_EPOCH).total_seconds() * 1000)})/"
    if kind is list or kind is tuple:
        return [_json_value(v) for v in value]
    if kind is Row:
        return _flat(value)
    number = _ENUM_NUMBERS.get(kind, {}).get(str(value)) if issubclass(kind, enum.Enum) else None
    if number is not None:  # enums as their number (5.1 has no -EnumsAsStrings)
        return number
    if isinstance(value, enum.Enum):
        number = int(value.value)
        _ENUM_NUMBERS.setdefault(kind, {})[str(value)] = number
        return number
    if isinstance(value, int):  # psrpcore's sized integers
        return int(value)
    return str(value)


_ENUM_NUMBERS: dict[type, dict[str, int]] = {}


def _convert_to_json(params: dict[str, Any], writer: CommandWriter) -> None:
    """ConvertTo-Json [-Compress]: every piped object as ONE JSON string (5.1 rules).

    No input: no output. One object: the object, not an array. Properties
    in order; enums as numbers, DateTime as "/Date(ms)/", Guid as a string.
    """
    rows: list[Any] = []
    for obj in writer.input:
        found = _properties(obj)
        if found is None:
            rows.append(_json_value(obj))
        else:
            rows.append({name: _json_value(v) for name, v in found[1].items()})
    if not rows:
        return
    compress = bool(params.get("Compress"))
    writer.write_output(json.dumps(
        rows[0] if len(rows) == 1 else rows,
        separators=(",", ":") if compress else (", ", ": "),
        indent=None if compress else 4,
    ))



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
        types = [f"Selected.{first}", "System.Management.Automation.PSCustomObject",
                 "System.Object"]
        if writer.piped:
            writer.write_output(Row(types, values))
            continue
        out = PSObject()
        out.PSObject.type_names = types
        out.PSObject.extended_properties = [
            PSNoteProperty(n, _flat(v)) for n, v in values.items()
        ]
        writer.write_output(out)
