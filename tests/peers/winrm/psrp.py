"""psrpcore glue of the WinRM test peer: one runspace pool per shell, its pipelines, their output.

This module owns the PowerShell Remoting Protocol state behind one WS-Man
shell: a psrpcore ``ServerRunspacePool``, the ``ServerPipeline`` of each
command, the threads that run command handlers, and the per-target buffers
of outgoing PSRP fragments that WS-Man ``Receive`` requests drain. It knows
nothing about HTTP or SOAP (see ``wsman.py``) and nothing about what the
commands do (see ``cmdlets.py``).

Rules kept here (see ../shared/WINRM.md):

* psrpcore is not thread-safe: every touch of the pool or a pipeline happens
  under the pool's one lock, held per write — never for a whole handler.
* psrpcore queues all outgoing messages in one list tagged by pipeline; after
  every change it is drained at once into a buffer per target (``None`` for
  the pool, the pipeline id otherwise), as whole fragments of at most
  ``FRAGMENT_BYTES`` so a Receive reply can end on a whole fragment.
* A pipeline ends only with its PSRP PipelineState message (Completed,
  Stopped or Failed); a terminating error needs psrpcore's private state
  change, wrapped in :func:`fail_pipeline`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

from psrpcore import (
    CreatePipelineEvent,
    EndOfPipelineInputEvent,
    GetAvailableRunspacesEvent,
    PipelineInputEvent,
    PowerShell,
    PSRPCoreError,
    PSRPEvent,
    PSRPPayload,
    ResetRunspaceStateEvent,
    ServerPipeline,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    ProgressRecordType,
    PSInvocationState,
    PSObject,
    PSRPMessageType,
)
from psrpcore.types import deserialize as deserialize_clixml

from .cmdlets import (
    CommandRegistry,
    CommandWriter,
    Parameters,
    PipelineStopped,
    TerminatingError,
)

log = logging.getLogger(__name__)

#: Largest PSRP payload (whole fragments, headers included) put in one buffer
#: entry. Its base64 (~44 KiB) fits the smallest MaxEnvelopeSize pypsrp uses
#: (153,600 bytes) with room for the SOAP envelope.
FRAGMENT_BYTES = 32 * 1024

#: How long a pipeline whose handler ignores Stop may run on before the peer
#: reports it Stopped anyway (further writes are then dropped).
STOP_GRACE_SECONDS = 2.0

Target = uuid.UUID | None

#: CreatePipeline messages already parsed (see :class:`PeerRunspacePool`), at most this many.
PARSED_PIPELINES_MAX = 128


def b64_len(raw: int) -> int:
    """Length of the base64 text of ``raw`` bytes."""
    return 4 * ((raw + 2) // 3)


def make_error_record(
    message: str,
    *,
    command: str,
    error_id: str,
    category: ErrorCategory,
    exception_type: str,
    target: Any = None,
) -> ErrorRecord:
    """An ErrorRecord shaped like PowerShell's (FQID ``id,command``)."""
    exception = NETException(Message=message, HResult=-2146233087)
    names = list(exception.PSObject.type_names)
    if exception_type not in names:
        names.insert(0, exception_type)
    exception.PSObject.type_names = names
    reason = exception_type.rsplit(".", 1)[-1]
    fqid = error_id if "," in error_id else f"{error_id},{command}"
    return ErrorRecord(
        Exception=exception,
        CategoryInfo=ErrorCategoryInfo(
            Category=category,
            Activity=command,
            Reason=reason,
            TargetName="" if target is None else str(target),
        ),
        TargetObject=target,
        FullyQualifiedErrorId=fqid,
    )


def fail_pipeline(pipeline: ServerPipeline, error: ErrorRecord) -> None:
    """Mark ``pipeline`` Failed with ``error`` (queues the PipelineState message).

    psrpcore 0.3.1 has no public way to fail a pipeline: this is the one place
    that uses its private state change.
    """
    pipeline._change_state(PSInvocationState.Failed, error)


def _event_ci(event: PSRPEvent) -> int:
    """The call id of a pool request; pypsrp 0.9.1 names it ``CI``, psrpcore reads ``ci``."""
    obj = event._ps_object  # type: ignore[attr-defined]
    for name in ("ci", "CI"):
        try:
            return int(getattr(obj, name))
        except AttributeError:
            continue
    raise ValueError(f"{type(event).__name__} without a call id")


class _ParsedPipelines:
    """CreatePipeline CLIXML → (its deserialized object, its PowerShell description); LRU.

    A client polling sends the same pipelines again and again (pypsrp 0.9.1
    serializes each message afresh, RefIds from 0: the same commands and
    parameters are the same bytes), and psrpcore's pure-Python deserializer
    spends ~10 ms on the 16 KB of a five-statement read — most of this
    endpoint's cost per command. Both objects are only read after parsing
    (psrpcore stores the description as ``ServerPipeline.metadata``; this
    module's handlers copy the lists they are given), so one parse serves
    every pool that sends the same bytes. Shared by every pool of the process.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[bytes, str], tuple[Any, PowerShell]] = OrderedDict()

    def get(self, key: tuple[bytes, str]) -> tuple[Any, PowerShell] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: tuple[bytes, str], entry: tuple[Any, PowerShell]) -> None:
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_PARSED = _ParsedPipelines(PARSED_PIPELINES_MAX)


class PeerRunspacePool(ServerRunspacePool):
    """psrpcore's server pool, reading pypsrp's ``CI`` spelling in Set(Max|Min)Runspaces,
    and parsing a CreatePipeline message it has seen before only once.

    PowerShell reads CLIXML property names case-insensitively; psrpcore 0.3.1
    does not, and fails on the SetMaxRunspaces/SetMinRunspaces messages pypsrp
    sends when ``pool.max_runspaces``/``min_runspaces`` is set on an open pool.

    CreatePipeline: what psrpcore 0.3.1's ``_process_message`` and
    ``_process_CreatePipeline`` do (deserialize the CLIXML, make the event, set
    the pipeline's ``metadata`` from it), with the parse looked up in
    :data:`_PARSED` first (see :class:`_ParsedPipelines`). A message with a
    SecureString (``<SS>``, decrypted with this pool's session key) is never
    shared; the key carries the client's protocol version, which the
    deserializer is given.
    """

    def _process_message(self, message: Any) -> PSRPEvent:
        data = message.data
        if message.message_type != PSRPMessageType.CreatePipeline or b"<SS" in data:
            return super()._process_message(message)
        capability = self.their_capability
        key = (bytes(data), str(getattr(capability, "protocol_version", "")))
        entry = _PARSED.get(key)
        if entry is None:
            ps_object = deserialize_clixml(
                ElementTree.fromstring(data), cipher=self._cipher,
                our_capability=self.our_capability, their_capability=capability)
            entry = (ps_object, PowerShell.FromPSObjectForRemoting(ps_object))
            _PARSED.put(key, entry)
        event = PSRPEvent.create(message.message_type, entry[0], message.runspace_pool_id,
                                 message.pipeline_id)
        pipeline = self.pipeline_table.get(message.pipeline_id)
        if pipeline is None:
            raise PSRPCoreError(
                f"Failed to find pipeline for incoming event {message.pipeline_id!s}")
        pipeline.metadata = entry[1]
        return event

    def _process_SetMaxRunspaces(self, event: SetMaxRunspacesEvent) -> None:
        ci = _event_ci(event)
        count = int(event._ps_object.MaxRunspaces)  # type: ignore[attr-defined]
        self._ci_events[ci] = event
        self._ci_handlers[ci] = lambda _e: setattr(self, "_max_runspaces", count)

    def _process_SetMinRunspaces(self, event: SetMinRunspacesEvent) -> None:
        ci = _event_ci(event)
        count = int(event._ps_object.MinRunspaces)  # type: ignore[attr-defined]
        self._ci_events[ci] = event
        self._ci_handlers[ci] = lambda _e: setattr(self, "_min_runspaces", count)


@dataclass(eq=False)
class PipelineRun:
    """One client command (WS-Man CommandId == PSRP pipeline id) and its handler thread."""

    pipeline: ServerPipeline
    metadata: PowerShell | None = None
    input: list[Any] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    finished: bool = False  # the final PipelineState was queued
    terminated: bool = False  # the client sent Terminate: forget it once finished
    thread: threading.Thread | None = None
    stop_timer: threading.Timer | None = None


class _Null(PSObject):
    """Serializes as ``<Nil />`` (psrpcore would send a ``None`` output as an empty message)."""

    @classmethod
    def ToPSObjectForRemoting(cls, instance: Any, **kwargs: Any) -> None:
        return None


_NULL = _Null()


class _Sink:
    """The :class:`~.cmdlets.StreamSink` of one command of a pipeline."""

    def __init__(
        self,
        session: PoolSession,
        run: PipelineRun,
        command: str,
        collected: list[Any] | None,
    ) -> None:
        self._session = session
        self._run = run
        self._command = command
        self._collected = collected  # not None: an intermediate command of a statement
        self.stop_event = run.stop_event

    def _write(self, action: str, *args: Any, **kwargs: Any) -> None:
        with self._session.cond:
            if self._run.finished or self.stop_event.is_set():
                raise PipelineStopped(self._command)
            getattr(self._run.pipeline, action)(*args, **kwargs)
            self._session.drain_locked()

    def output(self, value: Any) -> None:
        if self._collected is not None:
            if self.stop_event.is_set():
                raise PipelineStopped(self._command)
            self._collected.append(value)
            return
        self._write("write_output", _NULL if value is None else value)

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
    ) -> None:
        self._write(
            "write_progress",
            activity,
            activity_id,
            status,
            current_operation=current_operation,
            parent_activity_id=parent_activity_id,
            percent_complete=percent_complete,
            record_type=ProgressRecordType.Completed
            if completed
            else ProgressRecordType.Processing,
            seconds_remaining=seconds_remaining,
        )

    def error(
        self,
        message: str,
        *,
        error_id: str,
        category: ErrorCategory,
        exception_type: str,
        target: Any,
    ) -> None:
        record = make_error_record(
            message,
            command=self._command,
            error_id=error_id,
            category=category,
            exception_type=exception_type,
            target=target,
        )
        self._write(
            "write_error",
            record.Exception,
            category_info=record.CategoryInfo,
            target_object=record.TargetObject,
            fully_qualified_error_id=record.FullyQualifiedErrorId,
        )

    def informational(self, kind: str, message: str) -> None:
        self._write(f"write_{kind}", message)


class PoolSession:
    """The PSRP runspace pool behind one WS-Man shell (ShellId == runspace pool id)."""

    def __init__(
        self,
        shell_id: uuid.UUID,
        registry: CommandRegistry,
        owner: str,
        *,
        thread_prefix: str = "winrm-peer",
    ) -> None:
        self.shell_id = shell_id
        self.thread_prefix = thread_prefix
        self.owner = owner
        self.registry = registry
        self.created = time.monotonic()
        self.cond = threading.Condition(threading.Lock())
        self.closed = False
        self.pool = PeerRunspacePool()
        self.pool.runspace_pool_id = shell_id
        self._buffers: dict[Target, deque[bytes]] = {}
        self._runs: dict[uuid.UUID, PipelineRun] = {}

    # -- incoming ---------------------------------------------------------------
    def receive(self, data: bytes, pipeline_id: uuid.UUID | None = None) -> None:
        """Feed PSRP fragments from creationXml, a Command argument or a Send.

        A ``pipeline_id`` not seen before creates its ServerPipeline (a WS-Man
        Command). Handlers are started once their pipeline is fully described.
        """
        to_start: list[PipelineRun] = []
        with self.cond:
            if self.closed:
                raise KeyError(self.shell_id)
            new_run: PipelineRun | None = None
            if pipeline_id is not None and pipeline_id not in self._runs:
                new_run = PipelineRun(ServerPipeline(self.pool, pipeline_id))
                self._runs[pipeline_id] = new_run
            try:
                self.pool.receive_data(PSRPPayload(data, StreamType.default, pipeline_id))
                while (event := self.pool.next_event()) is not None:
                    run = self._on_event(event)
                    if run is not None:
                        to_start.append(run)
            except Exception:
                # e.g. CLIXML psrpcore refuses (pypsrp sends every Python int as
                # Int32): the command is refused, the pool stays usable.
                if new_run is not None:
                    new_run.finished = True
                    self._forget_locked(new_run)
                raise
            finally:
                self.drain_locked()
        for run in to_start:
            self._start(run)

    def _on_event(self, event: PSRPEvent) -> PipelineRun | None:
        """Handle one event (lock held); returns a run that is ready to start."""
        if isinstance(event, CreatePipelineEvent):
            run = self._runs[event.pipeline_id]
            run.metadata = run.pipeline.metadata  # parsed once, by the pool (not again)
            return run if run.metadata.no_input else None
        if isinstance(event, PipelineInputEvent):
            self._runs[event.pipeline_id].input.append(event.data)
        elif isinstance(event, EndOfPipelineInputEvent):
            run = self._runs[event.pipeline_id]
            return run if run.metadata is not None else None
        elif isinstance(event, GetAvailableRunspacesEvent):
            busy = sum(1 for r in self._runs.values() if r.started and not r.finished)
            self.pool.runspace_availability_response(
                _event_ci(event), max(self.pool.max_runspaces - busy, 0)
            )
        elif isinstance(
            event, SetMaxRunspacesEvent | SetMinRunspacesEvent | ResetRunspaceStateEvent
        ):
            self.pool.runspace_availability_response(_event_ci(event), True)
        else:
            log.debug("pool %s: %s", self.shell_id, type(event).__name__)
        return None

    def _start(self, run: PipelineRun) -> None:
        with self.cond:
            if run.started or run.finished:
                return
            run.started = True
            if self.closed or run.stop_event.is_set():
                self._finish_locked(run, None)
                return
            run.pipeline.start()
            self.drain_locked()
        thread = threading.Thread(
            target=self._run_pipeline,
            args=(run,),
            name=f"{self.thread_prefix}-pipeline-{run.pipeline.pipeline_id}",
            daemon=True,
        )
        thread.start()
        run.thread = thread  # published once started: close() may join it at any moment

    # -- running a pipeline ---------------------------------------------------------
    def _run_pipeline(self, run: PipelineRun) -> None:
        error: ErrorRecord | None = None
        command = "pipeline"
        try:
            assert run.metadata is not None
            statements: list[list[Any]] = [[]]
            for cmd in run.metadata.commands:
                statements[-1].append(cmd)
                if cmd.end_of_statement:
                    statements.append([])
            upstream: list[Any] = list(run.input)
            for statement in (s for s in statements if s):
                for index, cmd in enumerate(statement):
                    command = str(cmd.command_text)
                    last = index == len(statement) - 1
                    if index and not upstream:
                        # A command after another runs once per object it is piped
                        # (ProcessRecord / process {}): none piped, it has nothing to do —
                        # `@() | ForEach-Object { 'x' }` writes nothing. (The cmdlets served
                        # here write nothing from EndProcessing with no input.)
                        continue
                    upstream = self._run_command(run, cmd, upstream, collect=not last)
                upstream = []
        except PipelineStopped:
            pass
        except TerminatingError as exc:
            error = make_error_record(
                exc.message,
                command=command,
                error_id=exc.error_id or "RuntimeException",
                category=exc.category,
                exception_type=exc.exception_type,
                target=exc.target,
            )
        except Exception as exc:
            log.exception("handler of %s failed", command)
            error = make_error_record(
                str(exc) or type(exc).__name__,
                command=command,
                error_id=type(exc).__name__,
                category=ErrorCategory.NotSpecified,
                exception_type="System.Management.Automation.RuntimeException",
            )
        with self.cond:
            self._finish_locked(run, error)

    def _run_command(
        self, run: PipelineRun, cmd: Any, upstream: list[Any], *, collect: bool
    ) -> list[Any]:
        name = str(cmd.command_text)
        if cmd.is_script:
            script = self.registry.scripts(name) if self.registry.scripts else None
            if script is None:
                raise TerminatingError(
                    "The WinRM test peer runs only the scripts its registry understands.",
                    error_id="ScriptsNotSupported",
                    category=ErrorCategory.NotImplemented,
                    exception_type="System.NotSupportedException",
                )
            handler = script
        else:
            handler = self.registry.get(name)
        if handler is None:
            raise TerminatingError(
                f"The term '{name}' is not recognized as the name of a cmdlet, function, "
                "script file, or operable program. Check the spelling of the name, or if a path "
                "was included, verify that the path is correct and try again.",
                error_id="CommandNotFoundException",
                category=ErrorCategory.ObjectNotFound,
                exception_type="System.Management.Automation.CommandNotFoundException",
                target=name,
            )
        params = Parameters()
        arguments: list[Any] = []
        for param_name, value in cmd.parameters:
            if param_name is None:
                arguments.append(value)
            else:
                params[str(param_name)] = True if value is None else value
        collected: list[Any] | None = [] if collect else None
        writer = CommandWriter(
            name, _Sink(self, run, name, collected), arguments=arguments, input=upstream
        )
        log.debug("pool %s runs %s %s", self.shell_id, name, sorted(params))
        handler(params, writer)
        return collected or []

    def _finish_locked(self, run: PipelineRun, error: ErrorRecord | None) -> None:
        """Queue the final PipelineState once (lock held)."""
        if run.stop_timer is not None:
            run.stop_timer.cancel()
        if run.finished:
            return
        run.finished = True
        pipeline = run.pipeline
        state = pipeline.state
        if run.stop_event.is_set() or self.closed:
            if state in (PSInvocationState.Running, PSInvocationState.Stopping):
                pipeline.stop()
        elif error is not None:
            fail_pipeline(pipeline, error)
        elif state == PSInvocationState.Running:
            pipeline.complete()
        if run.terminated:
            self._forget_locked(run)
        self.drain_locked()

    # -- signals ----------------------------------------------------------------
    def stop(self, pipeline_id: uuid.UUID) -> None:
        """Client Stop (ctrl_c): returns at once; the pipeline stops in the background."""
        with self.cond:
            run = self._runs.get(pipeline_id)
            if run is None or run.finished:
                return
            run.stop_event.set()
            if not run.started:
                self._finish_locked(run, None)
                return
            if run.stop_timer is None:
                timer = threading.Timer(STOP_GRACE_SECONDS, self._force_stop, args=(run,))
                timer.name = f"{self.thread_prefix}-stop-{pipeline_id}"
                timer.daemon = True
                run.stop_timer = timer
                timer.start()
            self.cond.notify_all()

    def _force_stop(self, run: PipelineRun) -> None:
        with self.cond:
            if not run.finished:
                log.warning(
                    "handler of pipeline %s ignored Stop; reported Stopped anyway",
                    run.pipeline.pipeline_id,
                )
                self._finish_locked(run, None)

    def terminate(self, pipeline_id: uuid.UUID) -> None:
        """Client Terminate (PowerShell.close()): forget the pipeline once it ended."""
        with self.cond:
            run = self._runs.get(pipeline_id)
            if run is None:
                return
            run.terminated = True
            if run.finished:
                self._forget_locked(run)
            else:
                run.stop_event.set()
                if not run.started:
                    self._finish_locked(run, None)
            self.cond.notify_all()

    def _forget_locked(self, run: PipelineRun) -> None:
        pid = run.pipeline.pipeline_id
        self._runs.pop(pid, None)
        self._buffers.pop(pid, None)
        if pid in self.pool.pipeline_table:
            try:
                run.pipeline.close()
            except Exception:  # a pipeline that never started, for instance
                self.pool.pipeline_table.pop(pid, None)

    def close(self) -> None:
        """WS-Man Delete (or server shutdown): stop everything, wake every waiting Receive."""
        with self.cond:
            if self.closed:
                return
            self.closed = True
            for run in list(self._runs.values()):
                run.stop_event.set()
                if run.stop_timer is not None:
                    run.stop_timer.cancel()
                if not run.started:
                    run.finished = True
            self._buffers.clear()
            self.cond.notify_all()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for run in list(self._runs.values()):
            thread = run.thread
            if thread is not None and thread.ident is not None:  # started
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- outgoing ---------------------------------------------------------------
    def drain_locked(self) -> None:
        """Move everything psrpcore queued into the per-target buffers (lock held)."""
        while (payload := self.pool.data_to_send(FRAGMENT_BYTES)) is not None:
            if self.closed:
                continue
            target = payload.pipeline_id
            if target is not None and target not in self._runs:
                continue  # a forgotten pipeline
            self._buffers.setdefault(target, deque()).append(payload.data)
        self.cond.notify_all()

    def has_command(self, pipeline_id: uuid.UUID) -> bool:
        with self.cond:
            return pipeline_id in self._runs

    def receive_output(
        self,
        target: Target,
        *,
        wait_seconds: float,
        max_b64: int,
        per_chunk_overhead: int,
        is_closing: Any = None,
    ) -> tuple[list[str], bool] | None:
        """Wait up to ``wait_seconds`` for output of ``target`` and take what fits.

        Returns ``(base64 chunks, done)`` — ``done`` when the command ended and
        everything was taken — or ``None`` when nothing came in time (the
        caller answers with the WS-Man timeout fault). Raises KeyError when the
        pool is closed or the command unknown.
        """
        deadline = time.monotonic() + wait_seconds

        def ready() -> bool:
            if self.closed or (is_closing is not None and is_closing()):
                return True
            if self._buffers.get(target):
                return True
            if target is not None:
                run = self._runs.get(target)
                return run is None or run.finished
            return False

        with self.cond:
            while not ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)
            if self.closed:
                raise KeyError(self.shell_id)
            if target is not None and target not in self._runs:
                raise KeyError(target)
            buffer = self._buffers.get(target)
            chunks: list[str] = []
            used = 0
            while buffer:
                size = b64_len(len(buffer[0])) + per_chunk_overhead
                if chunks and used + size > max_b64:
                    break
                chunks.append(base64.b64encode(buffer.popleft()).decode("ascii"))
                used += size
            done = False
            if target is not None:
                run = self._runs[target]
                done = run.finished and not buffer
            if not chunks and not done:
                return None  # woken for shutdown with nothing to send
            return chunks, done
