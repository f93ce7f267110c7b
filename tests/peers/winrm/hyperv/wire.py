"""How the endpoint's cmdlets build objects: :class:`Row`, psrpcore objects, errors, filters.

Within a statement, cmdlets pass light :class:`Row` objects to the next one;
only what reaches the client is built as psrpcore objects (``_obj``/``_wire``).
Objects are shaped like a real server's output: plain type names
(``Microsoft.HyperV.PowerShell.VirtualMachine``…), enums by name, sizes as
Int64/UInt64, Guids as Guids, DateTime as DateTime.
"""

from __future__ import annotations

import fnmatch
import functools
import uuid
from collections.abc import Iterator
from typing import Any

from ..cmdlets import CommandWriter, TerminatingError, ps_object
from .enums import HV


def _vz_error(message: str, error_id: str, category: Any) -> TerminatingError:
    """A terminating VirtualizationException, as the Hyper-V cmdlets raise them."""
    return TerminatingError(message, error_id=error_id, category=category,
                            exception_type=HV + "VirtualizationException")




@functools.lru_cache(maxsize=200_000)
def _guid(text: str) -> uuid.UUID:
    return uuid.UUID(text)


def _num(writer: CommandWriter, kind: Any, value: int) -> Any:
    """A sized integer for the wire; a plain int when it only goes to the next command."""
    return value if writer.piped else kind(value)


class Row:
    """An object passed from one command to the next within a statement (never serialized).

    Building psrpcore objects costs ~50 µs each; a cmdlet whose output goes
    to ``Select-Object``/``ConvertTo-Json`` on the same node writes these
    instead. What reaches the client is the same either way.
    """

    __slots__ = ("props", "to_string", "type_names")

    def __init__(self, type_names: list[str], props: dict[str, Any],
                 to_string: str | None = None) -> None:
        self.type_names = type_names
        self.props = props
        self.to_string = to_string


def _obj(writer: CommandWriter, type_names: list[str], props: dict[str, Any], *,
         to_string: str | None = None) -> Any:
    """A :class:`Row` when the output is piped on, else the psrpcore object sent to the client."""
    if writer.piped:
        return Row(type_names, props, to_string)
    return ps_object(type_names, {k: _flat(v) for k, v in props.items()}, to_string=to_string)


def _properties(obj: Any) -> tuple[str, dict[str, Any]] | None:
    """(first type name, properties) of a Row or a psrpcore object; None for a primitive."""
    if isinstance(obj, Row):
        return obj.type_names[0], obj.props
    meta = getattr(obj, "PSObject", None)
    if meta is None:
        return None
    values: dict[str, Any] = {}
    for prop in [*meta.adapted_properties, *meta.extended_properties]:
        values.setdefault(prop.name, prop.get_value(obj))
    return (meta.type_names[0] if meta.type_names else "System.Object"), values



def _wire(row: Row) -> Any:
    """A Row sent to the client: a psrpcore object, nested objects flattened to strings."""
    return ps_object(row.type_names, {k: _flat(v) for k, v in row.props.items()},
                     to_string=row.to_string)


def _piped_vm_ids(writer: CommandWriter) -> Iterator[str]:
    """The Ids of the VM objects piped in (``Get-VM -Id … | <cmdlet>``)."""
    for obj in writer.input:
        found = _properties(obj)
        if found is not None:
            yield str(found[1].get("Id", ""))


def _flat(value: Any) -> Any:
    """A nested object sent at the default depth: its ToString (type name for a Row)."""
    if isinstance(value, Row):
        return value.to_string or value.type_names[0]
    return value




def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _vm_filter(params: dict[str, Any]) -> list[str]:
    return [str(p).casefold() for p in _as_list(params.get("VMName"))] or ["*"]


def _match(name: str, patterns: list[str]) -> bool:
    if "*" in patterns:  # matches every name (the -VMName * every poll sends): no fnmatch
        return True
    return any(fnmatch.fnmatchcase(name.casefold(), p) for p in patterns)

