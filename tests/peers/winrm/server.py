"""HTTPS and authentication of the WinRM test peer; :class:`WinRMPeer` starts and stops it.

This module owns the transport: a threaded stdlib HTTP/1.1 server (one
thread per connection, keep-alive, ``Content-Length`` on every reply
including 401) behind TLS with a certificate from a throwaway trustme CA,
and authentication:

* **Basic** — ``Authorization: Basic`` checked on every request.
* **Negotiate/NTLM** — pyspnego's acceptor, per connection (NTLM
  authenticates the TCP connection, not the request), with the TLS channel
  binding (``tls-server-end-point``) pypsrp sends over HTTPS checked. The
  acceptor reads credentials from a file of ``DOMAIN:USER:PASSWORD`` lines
  named by the ``NTLM_USER_FILE`` environment variable; each peer writes its
  own file (mode 0600, in its private temporary directory) and points the
  variable at it only while its acceptor runs, under a process-wide lock, so
  several peers with different passwords can run in one process.

``use_certificate`` presents another certificate from then on (renewed,
expired, for other names, from another CA: tests/peers/tlsserver.py makes
them), as a listener given a new certificate; ``requests_received`` counts
the HTTP requests that reached it (none from a client that refused the
certificate).

Users are given as ``{"DOMAIN\\\\USER": password}``; the client logs in as
``DOMAIN\\USER``. Passwords, tokens and ``Authorization`` headers are never
logged. WS-Man handling is in ``wsman.py``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import spnego
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from spnego.channel_bindings import GssChannelBindings
from spnego.exceptions import SpnegoError

from .cmdlets import CommandRegistry
from .wsman import WSManService

log = logging.getLogger(__name__)

_NTLM_ENV_LOCK = threading.Lock()

#: Seconds an idle keep-alive connection is kept open.
IDLE_CONNECTION_SECONDS = 120.0
#: Largest request body accepted.
MAX_REQUEST_BYTES = 8 * 1024 * 1024


def split_user(user: str) -> tuple[str, str]:
    """``DOMAIN\\USER`` → (DOMAIN, USER); a user without a domain has ``""``."""
    domain, sep, name = user.partition("\\")
    if not sep:
        return "", user
    if not domain or not name or ":" in user:
        raise ValueError(f"user must look like DOMAIN\\USER, not {user!r}")
    return domain, name


def tls_server_end_point(cert_pem: bytes) -> bytes:
    """RFC 5929 channel binding data for a server certificate (what pypsrp sends)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(Encoding.DER))
    return b"tls-server-end-point:" + digest.finalize()


@contextlib.contextmanager
def _ntlm_user_file(path: Path) -> Iterator[None]:
    """Point NTLM_USER_FILE at ``path`` while pyspnego's acceptor reads it."""
    with _NTLM_ENV_LOCK:
        previous = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = str(path)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = previous


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], peer: WinRMPeer) -> None:
        self.peer = peer
        self._conn_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._conn_threads: set[threading.Thread] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{self.peer.thread_prefix}-conn-{client_address[1]}",
            daemon=True,
        )
        with self._conn_lock:  # started before it is recorded: join_threads never sees
            thread.start()     # a thread that has not started
            self._conn_threads = {t for t in self._conn_threads if t.is_alive()}
            self._conn_threads.add(thread)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the connection's thread, then serve its requests."""
        request.settimeout(10.0)
        # A reply is written as two TLS records (headers, then body): with Nagle's
        # algorithm the body waited for the client's delayed ACK of the headers — ~40 ms
        # added to every round trip by this endpoint's way of writing, not by WinRM
        # (measured: one VM's re-read 200 → 25 ms). urllib3 sets TCP_NODELAY on the
        # client's side for the same reason.
        with contextlib.suppress(OSError):
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.peer.ssl_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        tls.settimeout(IDLE_CONNECTION_SECONDS)
        with self._conn_lock:
            self._connections.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (OSError, ssl.SSLError) as exc:
            log.debug("connection from %s ended: %s", client_address[0], exc)
        finally:
            with self._conn_lock:
                self._connections.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error serving %s", client_address[0])

    def drop_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_threads(self, timeout: float) -> list[threading.Thread]:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            threads = list(self._conn_threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t for t in threads if t.is_alive()]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self._principal: str | None = None  # authenticated connection (Negotiate/NTLM)
        self._spnego: Any = None

    def log_message(self, format: str, *args: Any) -> None:  # never logs headers
        log.debug("%s %s", self.address_string(), format % args)

    # -- HTTP -------------------------------------------------------------------
    def do_POST(self) -> None:
        self.server.peer.count_request()
        body = self._read_body()
        if body is None:
            return
        if self.path.split("?", 1)[0].rstrip("/").lower() != "/wsman":
            self._reply(404, b"")
            return
        principal, final_token = self._authenticate()
        if principal is None:
            return
        content_type = self.headers.get("Content-Type", "")
        if "multipart/encrypted" in content_type or "multipart/x-multi-encrypted" in content_type:
            self._reply(415, b"")  # message encryption: use HTTPS instead
            return
        peer = self.server.peer
        status, payload = peer.service.handle(
            body, principal, self.client_address[0], peer.endpoint
        )
        headers = {"Content-Type": "application/soap+xml;charset=UTF-8"}
        if final_token is not None:
            headers["WWW-Authenticate"] = final_token
        self._reply(status, payload, headers)

    def do_GET(self) -> None:
        self.server.peer.count_request()
        if self._read_body() is not None:
            self._reply(405, b"", {"Allow": "POST"})

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._reply(411, b"", close=True)
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BYTES:
            self._reply(413, b"", close=True)
            return None
        return self.rfile.read(length) if length else b""

    def _reply(
        self,
        status: int,
        payload: bytes,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        items = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in items:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if payload:
            self.wfile.write(payload)
        self.wfile.flush()

    # -- authentication -----------------------------------------------------------
    def _challenge(self, token: str | None = None, scheme: str = "Negotiate") -> None:
        if token is not None:
            headers = [("WWW-Authenticate", f"{scheme} {token}")]
        else:
            headers = []
            if "negotiate" in self.server.peer.auth:
                headers.append(("WWW-Authenticate", "Negotiate"))
            if "basic" in self.server.peer.auth:
                headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        self._reply(401, b"", headers)

    def _authenticate(self) -> tuple[str | None, str | None]:
        """(principal, final WWW-Authenticate value) or (None, None) once a 401 went out."""
        peer = self.server.peer
        header = self.headers.get("Authorization")
        if not header:
            if self._principal is not None:
                return self._principal, None
            self._challenge()
            return None, None
        scheme, _, token = header.strip().partition(" ")
        scheme_l = scheme.lower()
        if scheme_l == "basic" and "basic" in peer.auth:
            user = peer.check_basic(token.strip())
            if user is None:
                log.info("Basic authentication from %s refused", self.client_address[0])
                self._challenge()
                return None, None
            return user, None
        if scheme_l in ("negotiate", "ntlm") and "negotiate" in peer.auth:
            return self._step_negotiate(scheme, token.strip())
        self._challenge()
        return None, None

    def _step_negotiate(self, scheme: str, token: str) -> tuple[str | None, str | None]:
        peer = self.server.peer
        try:
            in_token = base64.b64decode(token, validate=True)
        except (binascii.Error, ValueError):
            self._challenge()
            return None, None
        if self._spnego is None or self._spnego.complete:
            self._principal = None
            with _ntlm_user_file(peer.ntlm_user_file):
                self._spnego = spnego.server(
                    protocol="negotiate", channel_bindings=peer.channel_bindings
                )
        try:
            with _ntlm_user_file(peer.ntlm_user_file):
                out_token = self._spnego.step(in_token)
        except (SpnegoError, ValueError, LookupError, struct.error) as exc:  # garbage tokens too
            log.info(
                "%s authentication from %s refused: %s",
                scheme,
                self.client_address[0],
                exc.__class__.__name__,
            )
            self._spnego = None
            self._challenge()
            return None, None
        encoded = base64.b64encode(out_token).decode() if out_token else None
        if not self._spnego.complete:
            self._challenge(encoded, scheme)
            return None, None
        principal = peer.known_user(self._spnego.client_principal or "")
        if principal is None:
            log.info("%s authentication from %s: unknown user", scheme, self.client_address[0])
            self._spnego = None
            self._challenge()
            return None, None
        self._principal = principal
        log.info(
            "%s authenticated %s from %s (%s)",
            scheme,
            principal,
            self.client_address[0],
            self._spnego.negotiated_protocol,
        )
        return principal, (f"{scheme} {encoded}" if encoded else None)


class WinRMPeer:
    """A WinRM/PSRP endpoint on 127.0.0.1 over HTTPS for pypsrp clients.

    Args:
        users: ``{"DOMAIN\\\\USER": password}`` allowed to log in.
        registry: The commands served (see ``cmdlets.py``); default: the demo set.
        host: Address to listen on.
        port: TCP port; 0 picks a free one (see :attr:`port` after start()).
        cert_names: Names (DNS or IP) in the server certificate; default
            ``localhost``, ``127.0.0.1`` and ``host``.
        auth: Accepted schemes: ``"basic"``, ``"negotiate"`` (NTLM, raw or in SPNEGO).
        workdir: Where the CA, the NTLM user file live; default a private
            temporary directory removed by close().

    ``start()`` serves in background threads; ``stop()`` takes it down
    (connections dropped, as when a host's WinRM service dies) and a later
    ``start()`` brings it back on the same port with the same certificate;
    ``close()`` stops it for good and removes its files.
    """

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        registry: CommandRegistry | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cert_names: Iterable[str] | None = None,
        auth: Iterable[str] = ("basic", "negotiate"),
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if not users:
            raise ValueError("at least one user is needed")
        for user, password in users.items():
            split_user(user)
            if not password or "\n" in password:
                raise ValueError(f"unusable password for {user}")
        if registry is None:
            from .demo import build_demo_registry

            registry = build_demo_registry()
        self.registry = registry
        self.host = host
        self._requested_port = port
        self.auth = {a.lower() for a in auth}
        unknown = self.auth - {"basic", "negotiate"}
        if unknown:
            raise ValueError(f"unknown auth schemes: {sorted(unknown)}")
        self._users = dict(users)
        self._count_lock = threading.Lock()
        names = list(cert_names) if cert_names is not None else ["localhost", "127.0.0.1", host]
        self.cert_names = list(dict.fromkeys(names))
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="winrm-peer-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_path = self.workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        server_cert = self.ca.issue_cert(*self.cert_names)
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        server_cert.configure_cert(self.ssl_context)
        leaf = server_cert.cert_chain_pems[0].bytes()
        self.channel_bindings = GssChannelBindings(application_data=tls_server_end_point(leaf))
        #: The certificate presented now (DER), for fingerprints in tests.
        self.certificate_der = x509.load_pem_x509_certificate(leaf).public_bytes(Encoding.DER)
        #: HTTP requests received over a completed handshake (a client that refused the
        #: certificate sends none: no credential reached this endpoint).
        self.requests_received = 0
        self.ntlm_user_file = self.workdir / "ntlm-users"
        fd = os.open(self.ntlm_user_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for user, password in self._users.items():
                domain, name = split_user(user)
                handle.write(f"{domain}:{name}:{password}\n")
        self.service = WSManService(registry)
        self._httpd: _HTTPServer | None = None
        self._closed = False
        self._bound_port = 0
        self._thread: threading.Thread | None = None

    def use_certificate(self, chain: str | os.PathLike[str], key: str | os.PathLike[str]) -> None:
        """Present another certificate (PEM chain, leaf first, and its key) from now on, as
        a host whose WinRM HTTPS listener was given a renewed certificate (the listener's
        ``CertificateThumbprint`` set with ``Set-WSManInstance winrm/config/Listener``, as
        Posh-ACME.Deploy's Set-WinRMCertificate does: powershellgallery.com/packages/
        Posh-ACME.Deploy). Open connections are dropped (new ones meet the new
        certificate; pools and shells stay, as through an idle keep-alive timeout)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(chain), str(key))
        leaf = x509.load_pem_x509_certificate(Path(chain).read_bytes())
        self.ssl_context = context
        self.channel_bindings = GssChannelBindings(
            application_data=tls_server_end_point(leaf.public_bytes(Encoding.PEM)))
        self.certificate_der = leaf.public_bytes(Encoding.DER)
        if self._httpd is not None:
            self._httpd.drop_connections()

    def count_request(self) -> None:
        with self._count_lock:
            self.requests_received += 1

    # -- credentials ----------------------------------------------------------------
    def known_user(self, principal: str) -> str | None:
        """The configured spelling of ``principal`` (case-insensitive), or None."""
        wanted = principal.casefold()
        for user in self._users:
            if user.casefold() == wanted:
                return user
        return None

    def check_basic(self, token: str) -> str | None:
        try:
            decoded = base64.b64decode(token, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        known = self.known_user(user)
        expected = self._users.get(known) if known else None
        # Compare even for an unknown user, so timing does not tell users apart.
        ok = hmac.compare_digest(password.encode(), (expected or "\0").encode())
        return known if ok and expected is not None else None

    # -- lifecycle --------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port once started (it stays readable after stop())."""
        return self._bound_port or self._requested_port

    @property
    def thread_prefix(self) -> str:
        """Every thread of this peer is named ``winrm-peer-<port>-…``."""
        return f"winrm-peer-{self.port}"

    def threads(self) -> list[threading.Thread]:
        """This peer's live threads (none once stop() returned, barring a stuck handler)."""
        prefix = self.thread_prefix + "-"
        return [t for t in threading.enumerate() if t.name.startswith(prefix)]

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}/wsman"

    def start(self) -> WinRMPeer:
        """Serve (again): after stop() it comes back on the same port with the same certificate.

        A restart is like a WinRM service restart on a real host: shells and
        running commands of before are gone.
        """
        if self._closed:
            raise RuntimeError("this WinRM test peer was closed")
        if self._httpd is not None:
            return self
        if self.service.closed:
            self.service = WSManService(self.registry)
        port = self._bound_port or self._requested_port
        self._httpd = _HTTPServer((self.host, port), self)
        self._bound_port = int(self._httpd.server_address[1])
        self.service.thread_prefix = self.thread_prefix
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"{self.thread_prefix}-serve",
            daemon=True,
        )
        self._thread.start()
        log.info("WinRM test peer listening on %s", self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving: pools closed, connections dropped, threads joined. Idempotent.

        Files (CA, NTLM user file) stay so start() can bring the peer back;
        close() also removes them.
        """
        httpd, self._httpd = self._httpd, None
        self.service.close()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            httpd.drop_connections()
            left = httpd.join_threads(5.0)
            if left:
                log.warning("WinRM test peer: %d connection threads still running", len(left))
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def close(self) -> None:
        """stop(), then remove the files this peer wrote. Idempotent; no start() after it."""
        self.stop()
        self._closed = True
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                self.ntlm_user_file.unlink()

    def __enter__(self) -> WinRMPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
