"""Command handlers of the WinRM/PSRP test peer: the registry and what a handler sees.

This module owns the *command* side of the peer — which commands exist and
what they may emit — and nothing about HTTP, WS-Man or psrpcore state.

Registry API
============

A handler is a plain callable ``handler(params, writer) -> None``, registered
under a command name (matched case-insensitively, like PowerShell)::

    registry = CommandRegistry()

    def get_vm(params: dict[str, Any], writer: CommandWriter) -> None:
        for vm in inventory(params.get("Name")):
            writer.write_output(ps_object(VM_TYPES, {"Name": vm.name, "State": VMState.Running}))

    registry.register("Get-VM", get_vm)

``params`` (:class:`Parameters`, a ``dict``)
    The named parameters sent with ``PowerShell.add_parameter(name, value)``,
    keyed by the name as sent; lookups ignore case, as PowerShell's do. A
    parameter sent without a value (pypsrp's ``add_parameter("Force")``,
    PowerShell's switch) has the value ``True``.
    Values arrive as psrpcore deserialised them: ``str``/``int``/``bool``/
    ``list``/``dict`` subclasses, ``uuid.UUID``, ``datetime``.
    Positional arguments (``add_argument``) are in ``writer.arguments``;
    objects piped from the previous command of the statement, or sent as
    pipeline input, are in ``writer.input``.

``writer`` (:class:`CommandWriter`)
    ``write_output(obj)`` — an output object; build Hyper-V-like objects with
    :func:`ps_object` (plain type names such as
    ``Microsoft.HyperV.PowerShell.VirtualMachine``, no ``Deserialized.``
    prefix, properties sent as adapted properties) and enums with
    :func:`ps_enum`.
    ``write_progress(activity, status, percent=...)`` — a progress record
    (``ps.streams.progress`` on the client).
    ``write_error(message, ...)`` — a non-terminating error
    (``ps.streams.error``; the client's ``had_errors`` stays False).
    ``write_warning`` / ``write_verbose`` / ``write_debug`` — the other streams.
    ``stopping`` / ``wait(seconds)`` / ``check_stop()`` — whether the client
    asked to stop (``PowerShell.stop()``): ``wait`` sleeps but returns True
    at once when a stop arrives. Every ``write_*`` raises
    :class:`PipelineStopped` once a stop was requested, so a handler that
    writes in a loop stops without checking anything (like a cmdlet's
    ``WriteObject`` throwing ``PipelineStoppedException``).

To fail the command (a terminating error: the client's ``had_errors`` is
True and the record is in ``ps.streams.error``) raise
:class:`TerminatingError`. Any other exception escaping a handler is turned
into a terminating error carrying its message (and logged with a traceback).

Handlers run in their own thread, one per pipeline; several pipelines of one
runspace pool and of different pools run concurrently, so handlers that share
state must lock it. The writer may be used from the handler's thread only.

How values arrive at pypsrp 0.9.1
---------------------------------
``str`` → ``str``; ``int`` → ``int`` (Int32, or Int64 above 2**31-1; force
Int64 with ``PSInt64(n)``); ``bool`` → ``bool``; ``float`` → ``float``;
``uuid.UUID`` → ``uuid.UUID``; ``datetime`` → the CLIXML string (e.g.
``2024-05-01T10:00:00Z``); ``datetime.timedelta`` → the ISO-8601 duration
string; a :func:`ps_enum` member → a ``GenericComplexObject`` whose ``str()``
is the member name (``property_sets == [value]``); a :func:`ps_object` →
``GenericComplexObject`` with ``types`` as given and the properties in
``adapted_properties``; ``None`` → ``None``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from psrpcore.types import (
    ErrorCategory,
    PSEnumBase,
    PSInt,
    PSInt64,
    PSNoteProperty,
    PSObject,
    PSType,
)

log = logging.getLogger(__name__)

__all__ = [
    "CommandRegistry",
    "CommandWriter",
    "ErrorCategory",
    "Handler",
    "PSInt",
    "PSInt64",
    "Parameters",
    "PipelineStopped",
    "TerminatingError",
    "ps_enum",
    "ps_object",
]


class PipelineStopped(Exception):
    """Raised by a :class:`CommandWriter` once the client asked the pipeline to stop."""


class TerminatingError(Exception):
    """Raise from a handler to fail the pipeline (PSInvocationState.Failed).

    Args:
        message: The exception message the client sees.
        error_id: FullyQualifiedErrorId prefix (the command name is appended
            after a comma, as PowerShell does).
        category: An :class:`ErrorCategory` member or its name.
        exception_type: The .NET exception type name shown to the client.
        target: The TargetObject of the error record (a string is safest).
    """

    def __init__(
        self,
        message: str,
        *,
        error_id: str = "",
        category: ErrorCategory | str = ErrorCategory.NotSpecified,
        exception_type: str = "System.Management.Automation.RuntimeException",
        target: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = _category(category)
        self.exception_type = exception_type
        self.target = target


def _category(value: ErrorCategory | str) -> ErrorCategory:
    if isinstance(value, ErrorCategory):
        return value
    return ErrorCategory[value]


class Parameters(dict[str, Any]):
    """The named parameters of a command: a dict whose lookups ignore case, as PowerShell's do.

    ``params["name"]``, ``params.get("NAME")`` and ``"Name" in params`` all
    find a parameter sent as ``-Name``; iteration shows names as sent.
    """

    def _key(self, key: object) -> object:
        if isinstance(key, str) and not super().__contains__(key):
            folded = key.casefold()
            for name in self.keys():
                if name.casefold() == folded:
                    return name
        return key

    def __getitem__(self, key: str) -> Any:
        return super().__getitem__(self._key(key))  # type: ignore[index]

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(self._key(key), default)  # type: ignore[call-overload]


class StreamSink(Protocol):
    """What a :class:`CommandWriter` writes into (implemented by the PSRP glue)."""

    stop_event: threading.Event

    def output(self, value: Any) -> None: ...

    def progress(
        self,
        activity: str,
        activity_id: int,
        status: str,
        current_operation: str | None,
        parent_activity_id: int,
        percent_complete: int,
        seconds_remaining: int,
        completed: bool,
    ) -> None: ...

    def error(
        self,
        message: str,
        *,
        error_id: str,
        category: ErrorCategory,
        exception_type: str,
        target: Any,
    ) -> None: ...

    def informational(self, kind: str, message: str) -> None: ...


class CommandWriter:
    """What a handler is given to emit results; see the module docstring."""

    def __init__(
        self,
        command: str,
        sink: StreamSink,
        *,
        arguments: list[Any] | None = None,
        input: list[Any] | None = None,
    ) -> None:
        self.command = command
        self.arguments: list[Any] = list(arguments or [])
        self.input: list[Any] = list(input or [])
        self._sink = sink
        # Whether the sink collects for the next command: fixed for the writer's life,
        # read once (handlers ask it for every object they build).
        self._piped = getattr(sink, "_collected", None) is not None

    @property
    def piped(self) -> bool:
        """True when the output goes to the next command of the statement, not the client.

        A handler may then write lightweight objects (see ``hyperv.Row``) that
        the next command reads, instead of psrpcore objects built for the wire.
        """
        return self._piped

    # -- stop -----------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """True once the client asked this pipeline to stop."""
        return self._sink.stop_event.is_set()

    def check_stop(self) -> None:
        """Raise :class:`PipelineStopped` if the client asked to stop."""
        if self._sink.stop_event.is_set():
            raise PipelineStopped(self.command)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True (at once) if a stop arrives."""
        return self._sink.stop_event.wait(seconds)

    # -- streams ----------------------------------------------------------------
    def write_output(self, value: Any) -> None:
        """Write one object to the output stream."""
        self.check_stop()
        self._sink.output(value)

    def write_outputs(self, values: Iterable[Any]) -> None:
        """Write each object of ``values`` to the output stream."""
        for value in values:
            self.write_output(value)

    def write_progress(
        self,
        activity: str,
        status: str,
        *,
        percent: int = -1,
        activity_id: int = 0,
        current_operation: str | None = None,
        parent_activity_id: int = -1,
        seconds_remaining: int = -1,
        completed: bool = False,
    ) -> None:
        """Write a progress record (``completed=True`` ends the activity)."""
        self.check_stop()
        self._sink.progress(
            activity,
            activity_id,
            status,
            current_operation,
            parent_activity_id,
            percent,
            seconds_remaining,
            completed,
        )

    def write_error(
        self,
        message: str,
        *,
        error_id: str = "",
        category: ErrorCategory | str = ErrorCategory.NotSpecified,
        exception_type: str = "System.Management.Automation.RuntimeException",
        target: Any = None,
    ) -> None:
        """Write a non-terminating error record to the error stream."""
        self.check_stop()
        self._sink.error(
            message,
            error_id=error_id or "NonTerminatingError",
            category=_category(category),
            exception_type=exception_type,
            target=target,
        )

    def write_warning(self, message: str) -> None:
        self.check_stop()
        self._sink.informational("warning", message)

    def write_verbose(self, message: str) -> None:
        self.check_stop()
        self._sink.informational("verbose", message)

    def write_debug(self, message: str) -> None:
        self.check_stop()
        self._sink.informational("debug", message)


Handler = Callable[[dict[str, Any], CommandWriter], None]


class CommandRegistry:
    """Command name → handler, matched case-insensitively. Thread-safe."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None, *,
                 scripts: Callable[[str], Handler | None] | None = None) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, tuple[str, Handler]] = {}
        #: Script commands (``add_script``): text → a handler, or None (refused). A peer
        #: understands only the scripts it was written for.
        self.scripts = scripts
        for name, handler in (handlers or {}).items():
            self.register(name, handler)

    def register(self, name: str, handler: Handler) -> Handler:
        """Register (or replace) the handler for ``name``; returns the handler."""
        if not name or not callable(handler):
            raise ValueError("register() needs a command name and a callable handler")
        with self._lock:
            self._handlers[name.casefold()] = (name, handler)
        return handler

    def unregister(self, name: str) -> None:
        with self._lock:
            self._handlers.pop(name.casefold(), None)

    def get(self, name: str) -> Handler | None:
        with self._lock:
            entry = self._handlers.get(name.casefold())
        return entry[1] if entry else None

    def names(self) -> list[str]:
        with self._lock:
            return sorted(name for name, _ in self._handlers.values())

    def copy(self) -> CommandRegistry:
        with self._lock:
            return CommandRegistry({name: h for name, h in self._handlers.values()},
                                   scripts=self.scripts)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


def ps_object(
    type_names: Iterable[str],
    properties: Mapping[str, Any],
    *,
    to_string: str | None = None,
) -> PSObject:
    """An output object shaped like a real server's: plain type names, adapted properties.

    ``type_names`` is most-derived first (``System.Object`` is appended if
    missing). Properties keep their order. Nested objects should be flattened
    to strings by the caller, as the default serialization depth does.
    """
    names = list(type_names)
    if not names or names[-1] != "System.Object":
        names.append("System.Object")
    obj = PSObject()
    meta = obj.PSObject
    meta.type_names = names
    meta.adapted_properties = [PSNoteProperty(key, value) for key, value in properties.items()]
    if to_string is not None:
        meta.to_string = to_string
    return obj


def ps_enum(type_name: str, members: Mapping[str, int]) -> type[enum.Enum]:
    """A .NET enum type: members serialize as ``<I32>`` with ToString = the member name.

    Example: ``VMState = ps_enum("Microsoft.HyperV.PowerShell.VMState",
    {"Running": 2, "Off": 3})`` then use ``VMState.Running`` as a value.
    """
    short = type_name.rsplit(".", 1)[-1]
    created = PSEnumBase(short, dict(members), module=__name__)  # type: ignore[call-overload]
    return PSType([type_name], rehydrate=False)(created)  # type: ignore[no-any-return]
