"""A TLS server that presents a chosen certificate, and the certificates to present.

For the "host keys / TLS" row of RELIABILITY.md: a client must refuse a
certificate that is expired, issued for another name, self-signed, or signed
by a CA it was not given — before it sends anything else. The server only
completes (or fails) handshakes and counts the bytes it receives after one:
a refused client sends none. Certificates are built with ``cryptography``
(self-signed) and ``trustme`` (CA-issued, with chosen names and validity).
The server side is Python's own ``ssl`` server (docs.python.org/3/library/ssl.html,
``SSLContext.wrap_socket(server_side=True)``): a real TLS 1.2/1.3 handshake, so the
client's OpenSSL reports the same X509_V_ERR_* codes a vCenter or WinRM listener
with such a certificate would cause.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Pem:
    """A server certificate chain and key written to files."""

    chain: Path
    key: Path
    der: bytes  # the leaf, for fingerprints


def issued(ca: trustme.CA, tmp: Path, *names: str, expired: bool = False) -> Pem:
    """A leaf for ``names`` signed by ``ca``; ``expired``: valid only in the past."""
    now = dt.datetime.now(dt.UTC)
    kwargs = {}
    if expired:
        kwargs = {"not_before": now - dt.timedelta(days=60),
                  "not_after": now - dt.timedelta(days=30)}
    leaf = ca.issue_cert(*names, **kwargs)
    chain, key = tmp / "chain.pem", tmp / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    der = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(
        serialization.Encoding.DER)
    return Pem(chain, key, der)


def self_signed(tmp: Path, name: str) -> Pem:
    """A certificate for ``name`` signed by its own key (as appliances ship)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    import ipaddress

    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    chain, key_path = tmp / "self.pem", tmp / "self-key.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Pem(chain, key_path, cert.public_bytes(serialization.Encoding.DER))


@dataclass
class TlsServer:
    """Listens on ``host``:``port`` until ``stop()``; counts handshakes and bytes after them."""

    host: str
    port: int
    handshakes: int = 0
    received: int = 0
    _sock: socket.socket | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
            with contextlib.suppress(OSError):
                self._sock.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> TlsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(pem: Pem | None, host: str = "127.0.0.1") -> TlsServer:
    """Start a server presenting ``pem`` (None: a plain TCP server that never speaks TLS)."""
    ctx = None
    if pem is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pem.chain), str(pem.key))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(8)
    server = TlsServer(host, sock.getsockname()[1], _sock=sock)

    def one(conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError, ssl.SSLError), conn:
            if ctx is None:
                conn.sendall(b"HTTP/1.0 400 not TLS\r\n\r\n")
                return
            with ctx.wrap_socket(conn, server_side=True) as tls:
                server.handshakes += 1
                while data := tls.recv(4096):
                    server.received += len(data)

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    server._thread = threading.Thread(target=loop, daemon=True)
    server._thread.start()
    return server
