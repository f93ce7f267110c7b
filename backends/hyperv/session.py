"""The one async wrapper around synchronous pypsrp: a node's PowerShell session.

pypsrp 0.9.1 is synchronous, so every call runs in a daemon worker thread
(a thread stuck in a dead socket never blocks the event loop or the process
exit) and the rest of the backend awaits it. One ``RunspacePool`` per node,
opened on first use and reused; one command at a time per node (pypsrp's
pool and its HTTP session are not meant to be driven from several threads)
and at most ``MAX_THREADS`` calls in flight for the whole process. Every
command has a time limit: when it fires the pipeline is asked to stop, the
pool is discarded (a pool is unusable after a read timeout, pypsrp#21) and
the next command opens a new one.

Errors come out as :class:`SessionError` subclasses whose messages are safe
to show and log: they never carry the password.

Before a pool opens (and so before any credential leaves), the node's TLS
certificate is checked with the trust pypsrp's own session will apply
(``hostcheck``): a refused certificate is :class:`TlsRefused` with hostcheck's
words — host, port, the problem (expired, wrong name, unknown CA…), the SHA-256
fingerprint and what to do. A refusal pypsrp meets later (a new connection of a
running session, after the certificate changed) is checked and said the same
way, in the worker thread that met it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import hashlib
import logging
import os
import sys
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ventana.state.sanitize import clean

from ..base import ReadOnlyError
from ..hostcheck import HostCheckError, Untrusted, check_host, requests_context
from .commands import SWITCH, Command, fix_rows, parse_json

log = logging.getLogger(__name__)

T = TypeVar("T")
# Up to 64 nodes (a failover cluster's maximum), each with a poll and a stream wait in flight.
MAX_THREADS = 160
_threads = threading.BoundedSemaphore(MAX_THREADS)
_slots: asyncio.Semaphore | None = None
_slots_loop: asyncio.AbstractEventLoop | None = None


class SessionError(Exception):
    """A node could not be reached or did not answer; the message is safe to show."""


class AuthFailed(SessionError):
    """The node refused the credentials (not retried: it could lock the account)."""


class TlsRefused(SessionError):
    """The node's certificate is not trusted: nothing was sent over the connection."""


#: What a certificate refusal spared, in hostcheck's message: the session holds the
#: password, and sends it only over a connection whose certificate was verified.
WITHHELD = "no password was sent"


class CommandTimeout(SessionError):
    """A command ran past its time limit; it was stopped and the pool discarded."""


class CommandFailed(SessionError):
    """The pipeline failed (a terminating error) or wrote errors it should not have."""


@dataclass(slots=True)
class Answer:
    output: list[Any] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: A digest of the JSON text this answer was decoded from (b"" when none was):
    #: two answers with the same digest decoded from the same text.
    digest: bytes = b""


#: glibc's ``mallopt`` parameter M_ARENA_MAX (malloc.h).
_M_ARENA_MAX = -8
_arenas_limited = False


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for this process (once; Linux/glibc only).

    glibc gives a thread that allocates while another holds an arena an arena of
    its own, up to 8 per core, and keeps what each arena once held: with a worker
    thread per PowerShell call (128 in flight at 64 nodes, each decoding answers
    of up to megabytes) the client's RSS grew by tens of MB of free but unreturned
    arena memory. The calls hold the GIL while they allocate, so two arenas cost
    no contention. An explicit ``MALLOC_ARENA_MAX`` in the environment wins.
    """
    global _arenas_limited
    if _arenas_limited or not sys.platform.startswith("linux") or os.environ.get(
            "MALLOC_ARENA_MAX"):
        return
    _arenas_limited = True
    try:
        mallopt = ctypes.CDLL(None).mallopt  # absent on musl: left as it is
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt(_M_ARENA_MAX, arenas)


def _global_slots() -> asyncio.Semaphore:
    global _slots, _slots_loop
    loop = asyncio.get_running_loop()
    if _slots is None or _slots_loop is not loop:
        _slots, _slots_loop = asyncio.Semaphore(MAX_THREADS), loop
    return _slots


async def in_thread(fn: Callable[[], T], *, name: str) -> T:
    """Run ``fn`` in a daemon thread and await its result (cancellable; the thread runs on)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = fn()
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop may be gone
                loop.call_soon_threadsafe(settle, None, exc)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, None)
        finally:
            _threads.release()

    async with _global_slots():
        if not _threads.acquire(blocking=False):
            raise SessionError(f"{MAX_THREADS} PowerShell calls are stuck; not sending more")
        threading.Thread(target=work, name=name, daemon=True).start()
        return await future


def _property_names(obj: Any) -> list[str]:
    names: list[str] = []
    for attr in ("adapted_properties", "extended_properties"):
        value = getattr(obj, attr, None)
        if isinstance(value, dict):
            names.extend(value)
    return names


def _sort_answers(
    commands: list[Command], output: list[Any], errors: list[str], where: str
) -> list[Answer]:
    """Split one round trip's output between its commands, decoding JSON answers.

    A JSON command answers one string (ConvertTo-Json), or nothing when no
    object matched; the decoded rows are told apart by their property names,
    as the CLIXML objects of a non-JSON batch are.
    """
    answers = [Answer(errors=errors) for _ in commands]
    if len(commands) == 1 and not commands[0].json:
        answers[0].output = output
        return answers
    by_shape = {frozenset(c.properties): (c, a) for c, a in zip(commands, answers, strict=True)}
    texts: dict[int, list[str]] = {}
    opaque: set[int] = set()
    for obj in output:
        if isinstance(obj, str):
            try:
                rows = parse_json(obj)
            except ValueError:
                log.debug("%s: an answer that is not JSON was ignored", where)
                continue
            if not rows:
                continue
            target = by_shape.get(frozenset(rows[0]))
            if target is None:
                log.debug("%s: JSON rows of an unexpected shape were ignored", where)
                continue
            target[1].output.extend(fix_rows(target[0], rows))
            texts.setdefault(id(target[1]), []).append(obj)
            continue
        target = by_shape.get(frozenset(_property_names(obj)))
        if target is None:
            log.debug("%s: an object of an unexpected shape was ignored", where)
            continue
        target[1].output.append(obj)
        opaque.add(id(target[1]))  # an object that is not JSON text: no digest stands for it
    for answer in answers:
        found = texts.get(id(answer))
        if found and id(answer) not in opaque:
            digest = hashlib.blake2b(digest_size=16)
            for payload in found:
                digest.update(payload.encode("utf-8", "surrogatepass"))
                digest.update(b"\0")
            answer.digest = digest.digest()
    return answers


def _release(ps: Any) -> None:
    """Terminate a finished pipeline on the node and drop it from the pool's registry.

    pypsrp keeps every PowerShell it ran in ``pool.pipelines`` — with its
    output — until ``close()``: without this a reused pool grows by every
    answer it ever received (megabytes per poll at 2,500 VMs a node).
    """
    try:
        ps.close()  # WS-Man Signal terminate, as PowerShell's own client sends
    except Exception:  # a pipeline the node already forgot: drop it here anyway
        log.debug("closing a finished pipeline failed", exc_info=True)
    with contextlib.suppress(Exception):
        ps.runspace_pool.pipelines.pop(ps.id, None)


def _settle_environment(wsman: Any) -> None:
    """Build the HTTP session now and stop requests re-reading the environment per request.

    pypsrp reads the proxy and CA settings from the environment once, when it
    builds its requests session (``WSMan._build_session``: ``merge_environment_settings``
    for the endpoint, then ``session.proxies``/``verify``); with ``trust_env`` left on,
    requests reads them again for every request (``getproxies_environment``,
    ``proxy_bypass``, a ``stat`` of the CA bundle) — a tenth of the client's CPU at
    64 nodes. The settings in effect stay exactly those pypsrp read.
    """
    transport = wsman.transport
    session = transport.session
    if session is None:
        session = transport._build_session()  # noqa: SLF001 - pypsrp 0.9 has no public hook
        transport.session = session
    session.trust_env = False


class _CheapCopyCommand:
    """Mixed into pypsrp's ``Command`` of a pipeline we build (see :func:`_cheap_copies`)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        clone = copy.copy(self)
        clone.args = list(self.args)  # type: ignore[attr-defined]
        return clone


_cheap_classes: dict[type, type] = {}


def _cheap_copies(command: Any) -> None:
    """Let pypsrp copy a pipeline's command cheaply when it packs the pipeline.

    pypsrp 0.9.1 deep-copies every command twice per CreatePipeline message
    (``complex_objects.Pipeline._get_statements``, for ``Cmds`` and ``ExtraCmds``),
    with all its serialization metadata: half the client's CPU at 64 nodes. The
    copy only has to be a distinct object in the message (its comment: lxml would
    move an element appended to two parents; pypsrp packs with ElementTree from
    these objects, which it reads, never changes): a shallow copy with its own
    argument list packs to the same XML.
    """
    cls = type(command)
    cheap = _cheap_classes.get(cls)
    if cheap is None:
        cheap = _cheap_classes[cls] = type(f"Cheap{cls.__name__}", (_CheapCopyCommand, cls), {})
    command.__class__ = cheap


# -- prepared CreatePipeline messages ----------------------------------------------------

#: Serialized CREATE_PIPELINE messages kept (least recently used dropped first).
PREPARED_MAX = 256
_prepared: OrderedDict[Hashable, bytes] = OrderedDict()
_prepared_lock = threading.Lock()
#: How often a pipeline's message was serialized / re-sent as kept bytes (tests, bench).
prepared_counts = {"serialized": 0, "reused": 0}


def _frozen(value: Any) -> Hashable | None:
    """A parameter value as a hashable key that tells apart what serializes differently
    (``1``, ``True`` and ``"1"``; a list and a single value); None when it has none."""
    if value is SWITCH:
        return ("switch",)
    if isinstance(value, list | tuple):
        items = tuple(_frozen(v) for v in value)
        return None if any(i is None for i in items) else ("list", items)
    if isinstance(value, str | int | float | uuid.UUID) or value is None:
        return (type(value).__name__, value)
    return None


def pipeline_key(commands: list[Command]) -> Hashable | None:
    """What a batch of commands sends, as a key (None: a value with no key; not kept)."""
    key: list[Hashable] = []
    for command in commands:
        for cmdlet in command.pipeline():
            params = tuple((name, _frozen(value)) for name, value in cmdlet.params)
            if any(v is None for _, v in params):
                return None
            key.append((cmdlet.name, cmdlet.script, params))
        key.append("|")  # add_statement()
    return tuple(key)


def _prepared_message(key: Hashable, serialize: Callable[[], bytes]) -> bytes:
    """The kept bytes for ``key``, serialized now if none are kept.

    Serialized under the lock: 64 nodes' first polls send the same batch at
    the same moment, and the others wait for the first one's bytes instead of
    each serializing it (pure Python under the GIL: the wait costs nothing)."""
    with _prepared_lock:
        xml = _prepared.get(key)
        if xml is not None:
            _prepared.move_to_end(key)
            prepared_counts["reused"] += 1
            return xml
        xml = serialize()
        _prepared[key] = xml
        prepared_counts["serialized"] += 1
        while len(_prepared) > PREPARED_MAX:
            _prepared.popitem(last=False)
        return xml


class _Prepared:
    """A CREATE_PIPELINE message already serialized: its CLIXML bytes."""

    __slots__ = ("xml",)

    def __init__(self, xml: bytes) -> None:
        self.xml = xml


class _PreparedSerializer:
    """The pool's serializer, handing back a :class:`_Prepared` message's bytes as they are.

    pypsrp's ``Message.pack`` sends the serializer's answer unchanged when it is
    ``bytes`` (as for PIPELINE_INPUT); everything else (other messages, every answer
    deserialized) goes to pypsrp's own serializer.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def serialize(self, value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, _Prepared):
            return value.xml
        return self._inner.serialize(value, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


_powershell_class: type | None = None


def _powershell() -> type:
    """pypsrp's ``PowerShell`` that sends a batch it sent before as the kept bytes.

    pypsrp 0.9.1 serializes every CREATE_PIPELINE message afresh (``Serializer``
    builds an ElementTree of every command, argument and its metadata, then
    ``ElementTree.tostring``): the largest share of the client's CPU at 64 nodes,
    for batches that are the same every poll and every event wait, and on every
    node. The message's CLIXML depends only on the pipeline and the options below
    (``Serializer.serialize`` clears its reference-id maps per message; the pool
    and pipeline ids travel in the PSRP header, not in it — MS-PSRP 2.2.1 and
    2.2.2.10, pypsrp ``messages.Message.pack``), so the bytes serialized the first
    time are exactly those a second serialization gives (tests/backends/hyperv/
    test_prepared.py compares them).
    """
    global _powershell_class
    if _powershell_class is not None:
        return _powershell_class
    from pypsrp.messages import MessageType
    from pypsrp.powershell import PowerShell

    _Prepared.MESSAGE_TYPE = MessageType.CREATE_PIPELINE  # type: ignore[attr-defined]

    class PreparedPowerShell(PowerShell):  # type: ignore[misc]
        prepared_key: Hashable | None = None

        def _invoke(self, msg: Any) -> None:
            key = self.prepared_key
            host_info = getattr(msg, "host_info", None)
            if key is None or getattr(host_info, "host", None) is not None:
                return super()._invoke(msg)  # a host of our own: serialized as pypsrp does
            pipeline = msg.pipeline
            full = (key, msg.no_input, msg.apartment_state.value,
                    msg.remote_stream_options.value, msg.add_to_history, msg.is_nested,
                    pipeline.is_nested, pipeline.history, pipeline.redirect_err_to_out)
            fragmenter = self.runspace_pool._fragmenter  # noqa: SLF001 - pypsrp 0.9 internals
            serializer = fragmenter.serializer
            if not isinstance(serializer, _PreparedSerializer):
                serializer = fragmenter.serializer = _PreparedSerializer(serializer)
            inner = serializer._inner  # noqa: SLF001

            def serialize() -> bytes:
                return ET.tostring(inner.serialize(msg), encoding="utf-8", method="xml")

            return super()._invoke(_Prepared(_prepared_message(full, serialize)))

    _powershell_class = PreparedPowerShell
    return PreparedPowerShell


def fill(ps: Any, commands: list[Command]) -> None:
    """Add ``commands`` to a pypsrp ``PowerShell``, one statement each (what
    :func:`pipeline_key` describes)."""
    for command in commands:
        for cmdlet in command.pipeline():
            if cmdlet.script:  # fixed text from commands.py: the enum-name projection
                ps.add_script(cmdlet.name)
                _cheap_copies(ps.commands[-1])
                continue
            ps.add_cmdlet(cmdlet.name)
            _cheap_copies(ps.commands[-1])
            for name, value in cmdlet.params:
                if value is SWITCH:
                    ps.add_parameter(name)
                else:
                    ps.add_parameter(name, value)
        ps.add_statement()


def describe(exc: BaseException, where: str, password: str = "") -> SessionError:
    """Turn a pypsrp/requests exception into a safe :class:`SessionError`."""
    from pypsrp.exceptions import AuthenticationError, WinRMTransportError
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import SSLError, Timeout

    chain: list[BaseException] = []
    item: BaseException | None = exc
    while item is not None and len(chain) < 10:
        chain.append(item)
        item = item.__cause__ or item.__context__
    detail = str(exc)
    if password:
        detail = detail.replace(password, "***")
    if isinstance(exc, SessionError):
        return exc
    if any(isinstance(e, AuthenticationError) for e in chain) or (
        isinstance(exc, WinRMTransportError) and getattr(exc, "code", None) == 401
    ):
        return AuthFailed(f"{where}: the user name or password was refused (authentication failed)")
    if any(isinstance(e, SSLError) for e in chain) or "CERTIFICATE_VERIFY_FAILED" in detail:
        return TlsRefused(
            f"{where}: TLS certificate not trusted — refusing to connect "
            "(give the cluster's CA bundle; verification stays on)"
        )
    if any(isinstance(e, Timeout) for e in chain):
        return CommandTimeout(f"{where}: no answer in time (read timeout)")
    if any(isinstance(e, RequestsConnectionError | ConnectionError) for e in chain):
        return SessionError(f"{where}: cannot connect ({type(exc).__name__})")
    return SessionError(f"{where}: {type(exc).__name__}: {detail[:300]}")


class NodeSession:
    """One node's reused runspace pool, driven from asyncio."""

    def __init__(
        self,
        host: str,
        *,
        port: int,
        username: str,
        password: str,
        auth: str = "negotiate",
        ssl: bool = True,
        cert_validation: bool | str = True,
        connection_timeout: float = 10.0,
        operation_timeout: int = 20,
        command_timeout: float = 60.0,
        name: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        #: The node's name: what error texts say, and what its TLS certificate must carry
        #: when it is reached at another address (``--resolve NAME=HOST:PORT``, as curl's).
        self.name = name or host
        self.where = self.name if name else f"{host}:{port}"
        self._username = username
        self._password = password
        self._auth = auth
        self._ssl = ssl
        self._cert_validation = cert_validation
        self._connection_timeout = connection_timeout
        self._operation_timeout = max(1, int(operation_timeout))
        self.command_timeout = command_timeout
        self._pool: Any = None
        self._lock = asyncio.Lock()
        self.allow_mutating = False  # only a writable backend turns this on
        self.sent: list[str] = []  # cmdlet names sent, newest last (tests, audit)
        limit_malloc_arenas()

    def __repr__(self) -> str:  # never shows the password
        return f"NodeSession({self.where!r}, user={self._username!r})"

    # -- pool ------------------------------------------------------------------------
    def _open_sync(self) -> Any:
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        wsman = WSMan(
            self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            auth=self._auth,
            ssl=self._ssl,
            cert_validation=self._cert_validation,
            connection_timeout=int(max(1, self._connection_timeout)),
            operation_timeout=self._operation_timeout,
            read_timeout=self._operation_timeout + 10,
        )
        if self.name.casefold() != self.host.casefold() and self._cert_validation is not False:
            self._check_certificate_as(wsman, self.name)
        _settle_environment(wsman)
        trust = self._trust(wsman)
        if trust is not None:
            self._check_tls(trust)  # before the pool opens: no credential leaves before it
        pool = RunspacePool(wsman)
        try:
            pool.open()
        except Exception as exc:
            with contextlib.suppress(Exception):
                wsman.close()
            refused = self._refusal(exc, wsman)
            if refused is None:
                raise
            raise refused from None
        except BaseException:
            with contextlib.suppress(Exception):
                wsman.close()
            raise
        return pool

    # -- TLS ---------------------------------------------------------------------------
    def _trust(self, wsman: Any) -> Any:
        """The trust pypsrp's session applies, as an ``ssl.SSLContext`` for hostcheck; None
        when there is nothing to check the way pypsrp connects: plain HTTP, verification
        off, or an HTTPS proxy in between (pypsrp reaches the node through it)."""
        if not self._ssl:
            return None
        session = wsman.transport.session
        # pypsrp's WSMan._build_session: session.verify is cert_validation, or with True
        # the environment's REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE; requests' own default
        # (True) is certifi's bundle (requests.utils.DEFAULT_CA_BUNDLE_PATH).
        verify = getattr(session, "verify", self._cert_validation)
        if verify is False or (getattr(session, "proxies", None) or {}).get("https"):
            return None
        return requests_context(verify if isinstance(verify, str) else None)

    def _check_tls(self, trust: Any) -> None:
        """Blocking (a worker thread): a TLS handshake with the node as pypsrp will make
        it (the certificate checked against the node's NAME, the address reached); an
        untrusted certificate raises :class:`TlsRefused` in hostcheck's words, an
        unreachable node :class:`SessionError`."""
        connect_to = (self.host, self.port) if self.name.casefold() != self.host.casefold() \
            else None
        # hostcheck names the name checked; a node reached by its address is named by its
        # computer name once known (the backend sets ``where``): errors name the node.
        node = "" if self.where in (self.name, f"{self.host}:{self.port}") \
            else f"{clean(self.where)}: "  # a name Get-ClusterNode gave: cluster data
        try:
            check_host(self.name, self.port, trust, connect_to=connect_to,
                       timeout=self._connection_timeout, withheld=WITHHELD)
        except Untrusted as exc:
            raise TlsRefused(f"{node}{exc}") from None
        except HostCheckError as exc:
            raise SessionError(f"{node}{exc}") from None

    def _refusal(self, exc: BaseException, wsman: Any) -> SessionError | None:
        """Blocking (the worker thread whose pypsrp call failed): a certificate refusal
        said as hostcheck says it — checked again now, with the session's trust. None
        when ``exc`` is not a certificate refusal; pypsrp's own words (``describe``) when
        the check cannot say more (the node vanished meanwhile, or its certificate
        passes now)."""
        said = describe(exc, self.where, self._password)
        if not isinstance(said, TlsRefused):
            return None
        try:
            trust = self._trust(wsman)
            if trust is not None:
                self._check_tls(trust)
        except TlsRefused as refused:
            return refused
        except Exception as other:  # whatever it is, the first words stay
            log.debug("%s: the certificate could not be checked again: %s", self.where, other)
        return said

    def _explained(self, fn: Callable[[], T], pool: Any) -> Callable[[], T]:
        """``fn`` for a worker thread, a certificate refusal it meets said by ``_refusal``
        (pypsrp opens a new connection within a pool when the old one closed: a host
        whose certificate changed under a running session refuses it there)."""
        def work() -> T:
            try:
                return fn()
            except Exception as exc:
                refused = self._refusal(exc, pool.connection)
                if refused is None:
                    raise
                raise refused from None

        return work

    @staticmethod
    def _check_certificate_as(wsman: Any, name: str) -> None:
        """Connect to the address but check the certificate against ``name`` (SNI and
        hostname), as ``curl --resolve NAME:PORT:ADDR`` does: the contract's certificates
        carry node names, not addresses."""
        transport = wsman.transport
        # pypsrp builds its requests session on the first send; built here so that its
        # HTTPS pools get the name (urllib3's server_hostname / assert_hostname).
        session = transport._build_session()  # noqa: SLF001 - pypsrp 0.9 has no public hook
        adapter = session.get_adapter("https://")
        adapter.poolmanager.connection_pool_kw.update(server_hostname=name,
                                                      assert_hostname=name)
        transport.session = session

    async def _ensure_pool(self) -> Any:
        if self._pool is None:
            try:
                self._pool = await asyncio.wait_for(
                    in_thread(self._open_sync, name=f"psrp-open-{self.where}"),
                    self._connection_timeout + self._operation_timeout + 5,
                )
            except TimeoutError as exc:
                raise CommandTimeout(f"{self.where}: opening the session timed out") from exc
            except Exception as exc:
                raise describe(exc, self.where, self._password) from None
            log.info("opened a PowerShell session on %s as %s", self.where, self._username)
        return self._pool

    async def open(self) -> None:
        async with self._lock:
            await self._ensure_pool()

    def _discard(self) -> None:
        """Drop the pool without waiting on it (it may be stuck)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return

        def close() -> None:
            with contextlib.suppress(Exception):
                pool.close()
            with contextlib.suppress(Exception):
                pool.connection.close()

        threading.Thread(target=close, name=f"psrp-discard-{self.where}", daemon=True).start()

    async def close(self, timeout: float = 5.0) -> None:
        """Close the pool (WS-Man Delete), waiting at most ``timeout`` seconds for it."""
        pool, self._pool = self._pool, None
        if pool is None:
            return

        def close() -> None:
            with contextlib.suppress(Exception):
                pool.close()
            with contextlib.suppress(Exception):
                pool.connection.close()

        with contextlib.suppress(Exception):
            await asyncio.wait_for(in_thread(close, name=f"psrp-close-{self.where}"), timeout)

    # -- commands ----------------------------------------------------------------------
    async def run(self, command: Command, *, timeout: float | None = None) -> Answer:
        """Send one pipeline and return its output; stop it if it runs out of time."""
        return (await self.run_many([command], timeout=timeout))[0]

    async def run_many(
        self, commands: list[Command], *, timeout: float | None = None
    ) -> list[Answer]:
        """Send several read pipelines as statements of one round trip.

        Outputs are told apart by their property set (each command selects
        its own), so with more than one command each must select properties.
        Errors fail the whole batch unless every command tolerates them.
        """
        self._check_mutating(commands)
        if len(commands) > 1 and not all(c.properties or c.quiet for c in commands):
            raise ValueError("batched commands must each select their properties")
        labels = ", ".join(c.label for c in commands)

        def invoke(ps: Any) -> list[Answer]:
            # Decoded here, in the worker thread: a JSON answer can be megabytes.
            output = list(ps.invoke())
            errors = [str(e) for e in ps.streams.error]
            _release(ps)
            return _sort_answers(commands, output, errors, self.where)

        answers, errors = await self._invoke(commands, invoke, labels,
                                             timeout or self.command_timeout, "psrp-run")
        if errors and not all(c.tolerate_errors for c in commands):
            raise CommandFailed(f"{self.where}: {labels}: {'; '.join(errors)[:500]}")
        return answers

    async def run_raw(self, command: Command, *, timeout: float | None = None) -> Answer:
        """One read exactly as sent, its output NOT decoded (``ventana probe``).

        Non-terminating errors are returned in ``errors``; a failed pipeline
        raises :class:`CommandFailed` as :meth:`run` does.
        """
        if command.mutating:
            raise ReadOnlyError(f"{self.where}: the probe sends reads only")

        def invoke(ps: Any) -> list[Any]:
            output = list(ps.invoke())
            _release(ps)
            return output

        output, errors = await self._invoke([command], invoke, command.label,
                                            timeout or self.command_timeout, "psrp-raw")
        return Answer(output, errors)

    async def _invoke(self, commands: list[Command], invoke: Callable[[Any], T], labels: str,
                      limit: float, thread: str) -> tuple[T, list[str]]:
        """Build ``commands`` into one pipeline on the pool and run ``invoke(ps)`` in a
        worker thread within ``limit``. A call the caller gave up on, or that ran out
        of time, is stopped on the node too; a failed pipeline raises
        :class:`CommandFailed`. Returns what ``invoke`` returned and the
        non-terminating errors."""
        async with self._lock:
            pool = await self._ensure_pool()
            ps = self._build(pool, commands)
            try:
                result = await asyncio.wait_for(
                    in_thread(self._explained(lambda: invoke(ps), pool),
                              name=f"{thread}-{self.where}"), limit)
            except asyncio.CancelledError:  # the caller gave up: stop it on the node too
                self._stop(ps)
                self._discard()
                raise
            except TimeoutError:
                self._stop(ps)
                self._discard()
                raise CommandTimeout(
                    f"{self.where}: {labels} took longer than {limit:g} s; stopped"
                ) from None
            except Exception as exc:
                self._discard()
                raise describe(exc, self.where, self._password) from None
        errors = [str(e) for e in ps.streams.error]
        if ps.had_errors:
            reason = "; ".join(errors) or "the pipeline failed"
            raise CommandFailed(f"{self.where}: {labels}: {reason[:500]}")
        return result, errors

    def _check_mutating(self, commands: list[Command]) -> None:
        if any(c.mutating for c in commands) and not self.allow_mutating:
            raise ReadOnlyError(f"{self.where} is read-only: a mutating command was not sent")

    def _build(self, pool: Any, commands: list[Command]) -> Any:
        ps = _powershell()(pool)
        ps.prepared_key = pipeline_key(commands)
        self.sent.extend(n for c in commands for x in c.pipeline() for n in x.commands)
        del self.sent[:-200]
        fill(ps, commands)
        return ps

    async def run_long(
        self,
        command: Command,
        on_progress: Callable[[float, str], None],
        *,
        poll_s: float = 0.25,
    ) -> Answer:
        """Run a long command (a merge) with no time limit, reporting its progress records.

        A dead node still ends it: WinRM's receive times out and the
        connection error comes out as a :class:`SessionError` (the outcome is
        then unknown). A terminating error is :class:`CommandFailed`.
        """
        self._check_mutating([command])
        async with self._lock:
            pool = await self._ensure_pool()
            ps = self._build(pool, [command])
            def invoke_long() -> list[Any]:
                output = list(ps.invoke())
                _release(ps)
                return output

            job = asyncio.ensure_future(in_thread(self._explained(invoke_long, pool),
                                                  name=f"psrp-long-{self.where}"))
            seen = 0
            try:
                while True:
                    done, _ = await asyncio.wait({job}, timeout=poll_s)
                    records = list(ps.streams.progress)
                    for record in records[seen:]:
                        pct = float(getattr(record, "percent_complete", -1) or 0)
                        status = str(getattr(record, "description", "") or "")
                        on_progress(max(0.0, min(100.0, pct)), status)
                    seen = len(records)
                    if done:
                        break
                output = job.result()
            except asyncio.CancelledError:
                job.cancel()
                raise
            except Exception as exc:
                self._discard()
                raise describe(exc, self.where, self._password) from None
        errors = [str(e) for e in ps.streams.error]
        if ps.had_errors:
            reason = "; ".join(errors) or "the pipeline failed"
            raise CommandFailed(f"{self.where}: {command.label}: {reason[:500]}")
        return Answer(output, errors)

    def _stop(self, ps: Any) -> None:
        def stop() -> None:
            with contextlib.suppress(Exception):
                ps.stop()

        threading.Thread(target=stop, name=f"psrp-stop-{self.where}", daemon=True).start()
