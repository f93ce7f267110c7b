"""WS-Management (SOAP 1.2) side of the WinRM test peer: the PowerShell shell resource.

This module owns the translation between WS-Man requests — as pypsrp 0.9.1
sends them — and :class:`~.psrp.PoolSession` calls: Create (with
``creationXml`` handled at once), Command, Send, Receive (long poll), Signal
(PowerShell ctrl_c and Terminate), Delete and Get (``is_alive``), plus a Get
of the WinRM ``config`` resource (``update_max_payload_size``). It knows
nothing about HTTP or authentication (``server.py``): it takes a request
body and the authenticated principal and returns an HTTP status and a body.

Replies carry ``RelatesTo`` = the request's ``MessageID``; a Receive reply
stays under the request's ``MaxEnvelopeSize`` and ends on a whole PSRP
fragment; with nothing to send a Receive answers just before the request's
``OperationTimeout`` with WS-Man fault 2150858793, which pypsrp's
``poll_invoke`` swallows and re-polls.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from .cmdlets import CommandRegistry
from .psrp import PoolSession

log = logging.getLogger(__name__)

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "pwsh": "http://schemas.microsoft.com/powershell",
}

ACTION_BASE_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
ACTION_BASE_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTION_FAULT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
SHELL_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CONFIG_RESOURCE = "http://schemas.microsoft.com/wbem/wsman/1/config"
PWSH_RESOURCE_PREFIX = "http://schemas.microsoft.com/powershell/"
SIGNAL_PS_CTRL_C = "powershell/signal/ctrl_c"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/Terminate"
SIGNAL_CTRL_C = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"
STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"

#: ERROR_WSMAN_OPERATION_TIMEDOUT — pypsrp's poll_invoke re-polls on it.
FAULT_OPERATION_TIMEOUT = 0x80338029
#: Used for an unknown or deleted shell; pypsrp's is_alive() reads it as "closed".
FAULT_SHELL_NOT_FOUND = 0x8033805B
#: E_NOTIMPL: requests this peer does not implement or cannot parse.
FAULT_NOT_SUPPORTED = 0x80004001
#: E_FAIL: the peer failed on a request (e.g. CLIXML psrpcore cannot read).
FAULT_PEER_ERROR = 0x80004005

DEFAULT_MAX_ENVELOPE = 153_600
#: SOAP envelope around the streams of a Receive reply, with room to spare.
ENVELOPE_RESERVE = 4096
DEFAULT_OPERATION_TIMEOUT = 20.0

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str | None, default: float) -> float:
    """Seconds of an xs:duration such as ``PT20S`` or ``PT20.000S``."""
    match = _DURATION.match((text or "").strip())
    if not match or not any(match.groupdict().values()):
        return default
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


class WSManFault(Exception):
    """A WS-Man fault to answer with (HTTP 500)."""

    def __init__(self, code: int, message: str, subcode: str = "w:InternalError") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode


@dataclass
class Request:
    action: str
    message_id: str
    resource_uri: str
    operation_timeout: float
    max_envelope: int
    selectors: dict[str, str]
    options: dict[str, str]
    body: ET.Element


def _text(parent: ET.Element, path: str) -> str | None:
    found = parent.find(path, NS)
    return found.text if found is not None else None


def parse_request(data: bytes) -> Request:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise WSManFault(FAULT_NOT_SUPPORTED, f"malformed SOAP envelope: {exc}") from None
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        raise WSManFault(FAULT_NOT_SUPPORTED, "SOAP envelope without Header or Body")
    selectors = {
        str(sel.get("Name")): sel.text or ""
        for sel in header.findall("wsman:SelectorSet/wsman:Selector", NS)
    }
    options = {
        str(opt.get("Name")): opt.text or ""
        for opt in header.findall("wsman:OptionSet/wsman:Option", NS)
    }
    try:
        max_envelope = int(_text(header, "wsman:MaxEnvelopeSize") or DEFAULT_MAX_ENVELOPE)
    except ValueError:
        max_envelope = DEFAULT_MAX_ENVELOPE
    return Request(
        action=(_text(header, "wsa:Action") or "").strip(),
        message_id=(_text(header, "wsa:MessageID") or "").strip(),
        resource_uri=(_text(header, "wsman:ResourceURI") or "").strip(),
        operation_timeout=parse_duration(
            _text(header, "wsman:OperationTimeout"), DEFAULT_OPERATION_TIMEOUT
        ),
        max_envelope=max_envelope,
        selectors=selectors,
        options=options,
        body=body,
    )


def envelope(action: str, relates_to: str, body: str) -> bytes:
    return (
        '<s:Envelope xml:lang="en-US"'
        f' xmlns:s="{NS["s"]}" xmlns:a="{NS["wsa"]}" xmlns:w="{NS["wsman"]}"'
        f' xmlns:rsp="{NS["rsp"]}" xmlns:x="http://schemas.xmlsoap.org/ws/2004/09/transfer"'
        f' xmlns:p="http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd">'
        "<s:Header>"
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To>"
        f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>"
        "</s:Header>"
        f"<s:Body>{body}</s:Body>"
        "</s:Envelope>"
    ).encode()


def fault_envelope(relates_to: str, fault: WSManFault, machine: str) -> bytes:
    body = (
        "<s:Fault>"
        f"<s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{escape(fault.subcode)}"
        "</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(fault.message)}</s:Text></s:Reason>'
        "<s:Detail>"
        '<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault"'
        f' Code="{fault.code}" Machine={quoteattr(machine)}>'
        f"<f:Message>{escape(fault.message)}</f:Message>"
        "</f:WSManFault>"
        "</s:Detail>"
        "</s:Fault>"
    )
    return envelope(ACTION_FAULT, relates_to, body)


def _shell_not_found(shell_id: str) -> WSManFault:
    return WSManFault(
        FAULT_SHELL_NOT_FOUND,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the "
        "shell was not found on the server. Possible causes are: the specified ShellId is "
        "incorrect or the shell no longer exists on the server. Provide the correct ShellId "
        "or create a new shell and try again.",
        "w:InvalidSelectors",
    )


def _uuid(text: str | None, what: str) -> uuid.UUID:
    try:
        return uuid.UUID((text or "").strip())
    except ValueError:
        raise WSManFault(FAULT_NOT_SUPPORTED, f"{what} is not a GUID: {text!r}") from None


def _b64(text: str | None) -> bytes:
    try:
        return base64.b64decode((text or "").strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WSManFault(FAULT_NOT_SUPPORTED, "stream data is not valid base64") from None


class WSManService:
    """The WS-Man shell resource: a table of PowerShell shells (runspace pools)."""

    def __init__(
        self,
        registry: CommandRegistry,
        *,
        machine: str | None = None,
        thread_prefix: str = "winrm-peer",
    ) -> None:
        self.registry = registry
        #: Name prefix of the handler threads (the server sets it to include its port).
        self.thread_prefix = thread_prefix
        self.machine = machine or socket.gethostname()
        self._lock = threading.Lock()
        self._shells: dict[uuid.UUID, PoolSession] = {}
        self._closing = threading.Event()
        #: Requests answered, by action name (``Create``, ``Receive``, …), plus
        #: ``Receive.timeout`` and ``fault``; for tests that count what a client sent.
        self.stats: Counter[str] = Counter()
        #: Largest Receive reply seen, as a fraction of that request's MaxEnvelopeSize.
        self.max_envelope_use = 0.0
        self._stats_lock = threading.Lock()

    # -- entry point --------------------------------------------------------------
    def handle(
        self, data: bytes, principal: str, client_ip: str, endpoint: str
    ) -> tuple[int, bytes]:
        """Answer one SOAP request from ``principal``; returns (HTTP status, body)."""
        message_id = ""
        try:
            request = parse_request(data)
            message_id = request.message_id
            handler = self._handlers().get(request.action)
            if handler is None:
                raise WSManFault(
                    FAULT_NOT_SUPPORTED,
                    f"The WinRM test peer does not implement the action {request.action}.",
                    "a:ActionNotSupported",
                )
            self._count(request.action.rsplit("/", 1)[-1])
            action, body = handler(request, principal, client_ip, endpoint)
            reply = envelope(action, message_id, body)
            if action.endswith("ReceiveResponse"):
                with self._stats_lock:
                    use = len(reply) / max(request.max_envelope, 1)
                    self.max_envelope_use = max(self.max_envelope_use, use)
            return 200, reply
        except WSManFault as fault:
            if fault.code == FAULT_OPERATION_TIMEOUT:
                self._count("Receive.timeout")
            else:
                self._count("fault")
                log.info("WS-Man fault %#x: %s", fault.code, fault.message)
            return 500, fault_envelope(message_id, fault, self.machine)
        except Exception as exc:
            self._count("fault")
            log.exception("WinRM test peer failed on a request")
            fault = WSManFault(
                FAULT_PEER_ERROR,
                f"The WinRM test peer could not process the request: {type(exc).__name__}: {exc}",
            )
            return 500, fault_envelope(message_id, fault, self.machine)

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def _handlers(
        self,
    ) -> dict[str, Callable[[Request, str, str, str], tuple[str, str]]]:
        return {
            ACTION_BASE_TRANSFER + "Create": self._create,
            ACTION_BASE_TRANSFER + "Delete": self._delete,
            ACTION_BASE_TRANSFER + "Get": self._get,
            ACTION_BASE_SHELL + "Command": self._command,
            ACTION_BASE_SHELL + "Send": self._send,
            ACTION_BASE_SHELL + "Receive": self._receive,
            ACTION_BASE_SHELL + "Signal": self._signal,
        }

    def close(self) -> None:
        """Server shutdown: close every pool and wake every waiting Receive."""
        self._closing.set()
        with self._lock:
            sessions = list(self._shells.values())
            self._shells.clear()
        for session in sessions:
            session.close()
        for session in sessions:
            session.join(2.0)

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def shell_count(self) -> int:
        with self._lock:
            return len(self._shells)

    def _session(self, request: Request, principal: str) -> PoolSession:
        raw = request.selectors.get("ShellId", "")
        try:
            shell_id = uuid.UUID(raw)
        except ValueError:
            raise _shell_not_found(raw) from None
        with self._lock:
            session = self._shells.get(shell_id)
        # A shell belongs to the user who created it, as on a real WinRM service.
        if session is None or session.closed or session.owner.casefold() != principal.casefold():
            raise _shell_not_found(raw)
        return session

    # -- actions ------------------------------------------------------------------------
    def _create(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        if not request.resource_uri.startswith(PWSH_RESOURCE_PREFIX):
            raise WSManFault(
                FAULT_NOT_SUPPORTED,
                f"The WinRM test peer serves PowerShell shells only, not {request.resource_uri}.",
                "w:InvalidResourceURI",
            )
        shell = request.body.find("rsp:Shell", NS)
        if shell is None:
            raise WSManFault(FAULT_NOT_SUPPORTED, "Create without rsp:Shell")
        raw_id = shell.get("ShellId")
        shell_id = _uuid(raw_id, "ShellId") if raw_id else uuid.uuid4()
        creation = shell.find("pwsh:creationXml", NS)
        session = PoolSession(shell_id, self.registry, principal, thread_prefix=self.thread_prefix)
        with self._lock:
            if self._closing.is_set():
                raise WSManFault(FAULT_NOT_SUPPORTED, "The WinRM test peer is shutting down.")
            if shell_id in self._shells:
                raise WSManFault(FAULT_NOT_SUPPORTED, f"A shell with ShellId {shell_id} exists.")
            self._shells[shell_id] = session
        if creation is not None and creation.text:
            # Handled now: the Receive that opens the pool must find the answer at once.
            session.receive(_b64(creation.text))
        input_streams = _text(shell, "rsp:InputStreams") or "stdin pr"
        output_streams = _text(shell, "rsp:OutputStreams") or "stdout"
        sid = str(shell_id).upper()
        log.info("shell %s created for %s from %s", sid, principal, client_ip)
        body = (
            "<x:ResourceCreated>"
            f"<a:Address>{escape(endpoint)}</a:Address>"
            "<a:ReferenceParameters>"
            f"<w:ResourceURI>{escape(request.resource_uri)}</w:ResourceURI>"
            f'<w:SelectorSet><w:Selector Name="ShellId">{sid}</w:Selector></w:SelectorSet>'
            "</a:ReferenceParameters>"
            "</x:ResourceCreated>"
            + self._shell_xml(
                session, request.resource_uri, client_ip, input_streams, output_streams
            )
        )
        return ACTION_BASE_TRANSFER + "CreateResponse", body

    def _shell_xml(
        self,
        session: PoolSession,
        resource_uri: str,
        client_ip: str,
        input_streams: str = "stdin pr",
        output_streams: str = "stdout",
    ) -> str:
        return (
            "<rsp:Shell>"
            f"<rsp:ShellId>{str(session.shell_id).upper()}</rsp:ShellId>"
            f"<rsp:ResourceUri>{escape(resource_uri)}</rsp:ResourceUri>"
            f"<rsp:Owner>{escape(session.owner)}</rsp:Owner>"
            f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
            "<rsp:State>Connected</rsp:State>"
            "<rsp:IdleTimeOut>PT7200.000S</rsp:IdleTimeOut>"
            f"<rsp:InputStreams>{escape(input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{escape(output_streams)}</rsp:OutputStreams>"
            "</rsp:Shell>"
        )

    def _delete(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        session = self._session(request, principal)
        with self._lock:
            self._shells.pop(session.shell_id, None)
        session.close()
        log.info("shell %s deleted", str(session.shell_id).upper())
        return ACTION_BASE_TRANSFER + "DeleteResponse", ""

    def _get(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        if request.resource_uri.startswith(CONFIG_RESOURCE):
            body = (
                '<cfg:Config xmlns:cfg="http://schemas.microsoft.com/wbem/wsman/1/config">'
                "<cfg:MaxEnvelopeSizekb>500</cfg:MaxEnvelopeSizekb>"
                "<cfg:MaxTimeoutms>60000</cfg:MaxTimeoutms>"
                "</cfg:Config>"
            )
            return ACTION_BASE_TRANSFER + "GetResponse", body
        session = self._session(request, principal)
        uri = PWSH_RESOURCE_PREFIX + "Microsoft.PowerShell"
        return ACTION_BASE_TRANSFER + "GetResponse", self._shell_xml(session, uri, client_ip)

    def _command(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        session = self._session(request, principal)
        line = request.body.find("rsp:CommandLine", NS)
        if line is None:
            raise WSManFault(FAULT_NOT_SUPPORTED, "Command without rsp:CommandLine")
        raw_id = line.get("CommandId")
        command_id = _uuid(raw_id, "CommandId") if raw_id else uuid.uuid4()
        data = b"".join(_b64(arg.text) for arg in line.findall("rsp:Arguments", NS))
        try:
            session.receive(data, command_id)
        except KeyError:
            raise _shell_not_found(request.selectors.get("ShellId", "")) from None
        shown = raw_id if raw_id else str(command_id).upper()
        body = (
            "<rsp:CommandResponse>"
            f"<rsp:CommandId>{escape(shown)}</rsp:CommandId>"
            "</rsp:CommandResponse>"
        )
        return ACTION_BASE_SHELL + "CommandResponse", body

    def _send(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        session = self._session(request, principal)
        for stream in request.body.findall("rsp:Send/rsp:Stream", NS):
            if stream.get("Name") not in ("stdin", "pr"):
                continue
            raw_cmd = stream.get("CommandId")
            pipeline_id = _uuid(raw_cmd, "CommandId") if raw_cmd else None
            try:
                session.receive(_b64(stream.text), pipeline_id)
            except KeyError:
                raise _shell_not_found(request.selectors.get("ShellId", "")) from None
        return ACTION_BASE_SHELL + "SendResponse", "<rsp:SendResponse/>"

    def _receive(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        session = self._session(request, principal)
        desired = request.body.find("rsp:Receive/rsp:DesiredStream", NS)
        raw_cmd = desired.get("CommandId") if desired is not None else None
        target = _uuid(raw_cmd, "CommandId") if raw_cmd else None
        if target is not None and not session.has_command(target):
            raise WSManFault(
                FAULT_NOT_SUPPORTED,
                f"The command {raw_cmd} is not running in shell {str(session.shell_id).upper()}.",
                "w:InvalidSelectors",
            )
        timeout = request.operation_timeout
        # Answer a little before the client's OperationTimeout expires.
        wait = max(0.1, timeout - min(1.0, timeout * 0.1))
        cmd_attr = f" CommandId={quoteattr(raw_cmd)}" if raw_cmd else ""
        chunk_overhead = len(f'<rsp:Stream Name="stdout"{cmd_attr}></rsp:Stream>')
        budget = max(request.max_envelope - ENVELOPE_RESERVE, 1024)
        try:
            result = session.receive_output(
                target,
                wait_seconds=wait,
                max_b64=budget,
                per_chunk_overhead=chunk_overhead,
                is_closing=self._closing.is_set,
            )
        except KeyError:
            raise _shell_not_found(request.selectors.get("ShellId", "")) from None
        if result is None:
            raise WSManFault(
                FAULT_OPERATION_TIMEOUT,
                "The WS-Management service cannot complete the operation within the time "
                "specified in OperationTimeout.",
                "w:TimedOut",
            )
        chunks, done = result
        parts = [f'<rsp:Stream Name="stdout"{cmd_attr}>{chunk}</rsp:Stream>' for chunk in chunks]
        if raw_cmd:
            state = STATE_DONE if done else STATE_RUNNING
            parts.append(f'<rsp:CommandState{cmd_attr} State="{state}"/>')
        return ACTION_BASE_SHELL + "ReceiveResponse", (
            "<rsp:ReceiveResponse>" + "".join(parts) + "</rsp:ReceiveResponse>"
        )

    def _signal(
        self, request: Request, principal: str, client_ip: str, endpoint: str
    ) -> tuple[str, str]:
        session = self._session(request, principal)
        signal = request.body.find("rsp:Signal", NS)
        if signal is None:
            raise WSManFault(FAULT_NOT_SUPPORTED, "Signal without rsp:Signal")
        command_id = _uuid(signal.get("CommandId"), "CommandId")
        code = (_text(signal, "rsp:Code") or "").strip()
        if code in (SIGNAL_PS_CTRL_C, SIGNAL_CTRL_C):
            session.stop(command_id)
        elif code == SIGNAL_TERMINATE:
            session.terminate(command_id)
        else:
            raise WSManFault(FAULT_NOT_SUPPORTED, f"Unsupported signal {code}.")
        return ACTION_BASE_SHELL + "SignalResponse", "<rsp:SignalResponse/>"
