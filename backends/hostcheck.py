"""Reach a host and check its TLS certificate — before any password is asked for.

The order every real backend's connect follows (issue 12): TCP reach → a TLS
handshake that verifies the certificate (the named CA file, else the store
the caller's context loads, or verification explicitly off) → only then the
password is asked for (console prompt, OS keyring) → login. So an operator
never types (and a keyring never hands out) a password for a host that is
down, or that is not the host it claims to be.

:func:`check_host` does the first two steps and says what went wrong in one
line naming host, port and the certificate problem: expired (with the
date), not valid yet, issued for other names (listed), self-signed or from
an unknown CA — always with the SHA-256 fingerprint, so the operator can
compare it with the one the server's console shows — and what to do about
that problem (renew, give the CA, use a name the certificate carries).
Everything taken from the certificate is untrusted text: control characters
are removed and long names are cut.

This module owns the wording; the contexts are the callers' (each backend
verifies as its own client library will: the system store for pyvmomi, the
certifi bundle for pypsrp).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from ventana.state.sanitize import clean

__all__ = [
    "CONNECT_TIMEOUT_S",
    "HostCheckError",
    "HostTrust",
    "Unreachable",
    "Untrusted",
    "check_host",
    "fingerprint",
    "requests_context",
]

CONNECT_TIMEOUT_S = 10.0

# OpenSSL's X509_V_ERR_* codes (include/openssl/x509_vfy.h), as ssl reports them
# in SSLCertVerificationError.verify_code.
_NOT_YET_VALID = 9
_EXPIRED = 10
_SELF_SIGNED = 18  # DEPTH_ZERO_SELF_SIGNED_CERT
_SELF_SIGNED_IN_CHAIN = 19
_UNKNOWN_ISSUER = (20, 21)  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE
_NAME_MISMATCH = (62, 64)  # HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH


class HostCheckError(Exception):
    """The host cannot be used yet; the message names host, port and why (no secret in it)."""


class Unreachable(HostCheckError):
    """No TCP connection or no TLS answer: may pass (retrying is reasonable)."""


class Untrusted(HostCheckError):
    """The certificate is not trusted: retrying does not help, a person must look."""


@dataclass(frozen=True, slots=True)
class HostTrust:
    """What the handshake showed: ``verified`` is False only when verification was off."""

    host: str
    port: int
    verified: bool
    fingerprint: str  # SHA-256 of the server certificate, colon-separated hex


def fingerprint(der: bytes) -> str:
    """``AB:CD:…`` — the SHA-256 of a DER certificate, as browsers and openssl show it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _short(text: str, limit: int = 80) -> str:
    text = clean(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _peer_der(address: tuple[str, int], server_name: str, timeout: float) -> bytes | None:
    """The server's certificate read without verifying it (only to describe it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(address, timeout=timeout) as sock, ctx.wrap_socket(
            sock, server_hostname=server_name
        ) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None


def _describe(der: bytes) -> tuple[list[str], str, datetime | None, datetime | None]:
    """(names the certificate is for, issuer, not before, not after) — untrusted, cleaned."""
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return [], "", None, None
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += [str(n) for n in san.get_values_for_type(x509.DNSName)]
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(
            x509.NameOID.COMMON_NAME)]
    issuer = cert.issuer.rfc4514_string()
    return ([_short(n, 60) for n in names[:6]], _short(issuer),
            cert.not_valid_before_utc, cert.not_valid_after_utc)


def _day(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if when else "an unknown date"


_GIVE_CA = "give the CA that signed it (--ca-file)"
_GIVE_CA_OR_NAME = f"{_GIVE_CA}, or connect by a name the certificate carries"


def _problem(exc: ssl.SSLCertVerificationError, host: str, der: bytes | None
             ) -> tuple[str, str]:
    """(the certificate problem, what the operator can do about it) in the operator's words."""
    code = getattr(exc, "verify_code", None)
    names, issuer, not_before, not_after = _describe(der) if der else ([], "", None, None)
    if code == _EXPIRED:
        return (f"the certificate expired on {_day(not_after)}",
                "renew it on the host (or check this machine's clock)")
    if code == _NOT_YET_VALID:
        return (f"the certificate is not valid before {_day(not_before)}",
                "check this machine's clock and the host's")
    if code in _NAME_MISMATCH:
        listed = ", ".join(names) or "no name"
        more = "" if len(names) < 6 else ", …"
        return (f"wrong name: the certificate is for {listed}{more}, not {_short(host, 60)}",
                "connect by a name the certificate carries (or reissue it for this name)")
    if code == _SELF_SIGNED:
        return "the certificate is self-signed", _GIVE_CA
    if code == _SELF_SIGNED_IN_CHAIN or code in _UNKNOWN_ISSUER:
        return (f"the certificate is signed by a CA not trusted here "
                f"({issuer or 'issuer unknown'})", _GIVE_CA)
    return _short(str(getattr(exc, "verify_message", "") or exc), 120), _GIVE_CA_OR_NAME


#: Contexts built by requests_context, by what they were loaded from (see there).
_CONTEXTS_MAX = 8
_contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def requests_context(ca_file: object = None, *, insecure: bool = False) -> ssl.SSLContext:
    """The trust pypsrp (through requests) applies: certifi's bundle unless a CA
    file is given (a directory of hashed certificates too, as requests accepts
    one: ``REQUESTS_CA_BUNDLE=/etc/ssl/certs``); ``insecure`` verifies nothing.
    For checking a WinRM host the way the session that follows will.

    Kept while the file's content is the same: parsing certifi's bundle costs
    ~17 ms of CPU (reading and hashing it, ~0.3 ms), and a Hyper-V backend
    checks each node's certificate whenever it opens a session (128 at 64
    nodes). A file rewritten (a CA added while the console runs) is loaded
    again; a directory, when its modification time changes. The context is
    shared: use it, do not change it.
    """
    import certifi

    where = str(ca_file) if ca_file else certifi.where()
    key: tuple[object, ...] | None
    try:
        if os.path.isdir(where):
            key = (where, os.stat(where).st_mtime_ns, insecure)
        else:
            with open(where, "rb") as handle:
                key = (where, hashlib.blake2b(handle.read(), digest_size=16).digest(), insecure)
    except OSError:
        key = None  # let ssl say what is wrong with it
    if key is not None:
        with _contexts_lock:
            kept = _contexts.get(key)
        if kept is not None:
            return kept
    if os.path.isdir(where):  # requests.adapters.HTTPAdapter.cert_verify: ca_cert_dir
        context = ssl.create_default_context(capath=where)
    else:
        context = ssl.create_default_context(cafile=where)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if key is not None:
        with _contexts_lock:
            if len(_contexts) >= _CONTEXTS_MAX:
                _contexts.pop(next(iter(_contexts)))
            _contexts[key] = context
    return context


def check_host(
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    connect_to: tuple[str, int] | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
    withheld: str = "no password was asked for",
) -> HostTrust:
    """Open a TCP connection and make a TLS handshake with ``context`` as ``host``.

    ``connect_to``: another address to reach ``host`` at (the certificate is
    still checked against ``host``, as ``curl --resolve`` does). Blocking:
    call it from a worker thread (or before the UI starts). Raises
    :class:`Unreachable` or :class:`Untrusted`; nothing is sent but the
    handshake, and the connection is closed at once. ``withheld``: what the
    refusal spared, as the message says it (the CLI asks for no password; a
    backend that already holds one sends none).
    """
    address = connect_to or (host, port)
    where = f"{_short(host, 60)}:{port}"
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except socket.gaierror:
        raise Unreachable(f"cannot resolve {_short(address[0], 60)}") from None
    except TimeoutError:
        raise Unreachable(f"cannot reach {where}: no answer within {timeout:.0f} s") from None
    except OSError as exc:
        raise Unreachable(f"cannot reach {where}: {exc.strerror or type(exc).__name__}") from None
    with sock:
        sock.settimeout(timeout)
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True) or b""
        except ssl.SSLCertVerificationError as exc:
            seen = _peer_der(address, host, timeout)
            print_ = fingerprint(seen) if seen else "unknown"
            problem, advice = _problem(exc, host, seen)
            raise Untrusted(
                f"TLS certificate of {where} not trusted: {problem} "
                f"(SHA-256 fingerprint {print_}); {withheld} — {advice}"
            ) from None
        except ssl.SSLError as exc:
            raise Unreachable(
                f"TLS handshake with {where} failed: {_short(exc.reason or str(exc), 100)}"
            ) from None
        except TimeoutError:
            raise Unreachable(f"{where} accepted the connection but sent no TLS answer "
                              f"within {timeout:.0f} s") from None
        except OSError as exc:
            raise Unreachable(
                f"TLS handshake with {where} failed: {exc.strerror or type(exc).__name__}"
            ) from None
    return HostTrust(host, port, context.verify_mode != ssl.CERT_NONE, fingerprint(der))
