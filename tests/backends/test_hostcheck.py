"""Reach and certificate are checked before any password is asked for (issue 12).

A real TLS server (tests/peers/tlsserver.py) presents an expired, a
wrong-name, a self-signed and an unknown-CA certificate; each is refused with
host, port, the problem and the SHA-256 fingerprint, and the client sends
nothing after the handshake.
"""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

import pytest
import trustme
from peers.tlsserver import issued, self_signed, serve

from ventana.backends.hostcheck import (
    Unreachable,
    Untrusted,
    check_host,
    fingerprint,
    requests_context,
)

pytestmark = pytest.mark.timeout(30)


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_a_trusted_certificate_passes_with_its_fingerprint(ca: trustme.CA, tmp_path: Path) -> None:
    pem = issued(ca, tmp_path, "127.0.0.1")
    with serve(pem) as server:
        trust = check_host("127.0.0.1", server.port, trusting(ca))
    assert trust.verified and trust.fingerprint == fingerprint(pem.der)
    assert len(trust.fingerprint.split(":")) == 32


def test_expired_certificate_is_refused_with_its_date(ca: trustme.CA, tmp_path: Path) -> None:
    pem = issued(ca, tmp_path, "127.0.0.1", expired=True)
    with serve(pem) as server, pytest.raises(Untrusted) as caught:
        check_host("127.0.0.1", server.port, trusting(ca))
    text = str(caught.value)
    assert f"127.0.0.1:{server.port}" in text and "expired on 20" in text
    assert fingerprint(pem.der) in text and server.received == 0
    assert text.endswith("no password was asked for — renew it on the host (or check this "
                         "machine's clock)")


def test_wrong_name_lists_the_names_the_certificate_carries(ca: trustme.CA,
                                                            tmp_path: Path) -> None:
    pem = issued(ca, tmp_path, "vc-other.example", "alias.example")
    with serve(pem) as server, pytest.raises(Untrusted) as caught:
        check_host("127.0.0.1", server.port, trusting(ca))
    text = str(caught.value)
    assert "wrong name" in text and "vc-other.example, alias.example" in text
    assert "not 127.0.0.1" in text and fingerprint(pem.der) in text
    assert text.endswith("— connect by a name the certificate carries (or reissue it for "
                         "this name)")


def test_self_signed_certificate_shows_its_fingerprint(ca: trustme.CA, tmp_path: Path) -> None:
    pem = self_signed(tmp_path, "127.0.0.1")
    with serve(pem) as server, pytest.raises(Untrusted) as caught:
        check_host("127.0.0.1", server.port, trusting(ca))
    text = str(caught.value)
    assert f"127.0.0.1:{server.port}" in text and "self-signed" in text
    assert f"SHA-256 fingerprint {fingerprint(pem.der)}" in text
    assert text.endswith("no password was asked for — give the CA that signed it (--ca-file)")


def test_unknown_ca_is_named(ca: trustme.CA, tmp_path: Path) -> None:
    other = trustme.CA(organization_name="Other Corp")
    pem = issued(other, tmp_path, "127.0.0.1")
    with serve(pem) as server, pytest.raises(Untrusted) as caught:
        check_host("127.0.0.1", server.port, trusting(ca))
    assert "signed by a CA not trusted here" in str(caught.value)
    assert "Other Corp" in str(caught.value)


def test_verification_off_still_reports_the_fingerprint(tmp_path: Path) -> None:
    pem = self_signed(tmp_path, "127.0.0.1")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with serve(pem) as server:
        trust = check_host("127.0.0.1", server.port, ctx)
    assert not trust.verified and trust.fingerprint == fingerprint(pem.der)


def test_closed_port_and_plain_tcp_are_unreachable_not_untrusted(ca: trustme.CA) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused = re.escape(f"cannot reach 127.0.0.1:{port}: Connection refused")
    with pytest.raises(Unreachable, match=refused):
        check_host("127.0.0.1", port, trusting(ca))
    handshake = re.escape("TLS handshake with 127.0.0.1")
    with serve(None) as plain, pytest.raises(Unreachable, match=handshake):
        check_host("127.0.0.1", plain.port, trusting(ca))
    with pytest.raises(Unreachable, match=re.escape("cannot resolve vc01.invalid")):
        check_host("vc01.invalid", 443, trusting(ca))


def test_name_checked_even_when_reached_at_another_address(ca: trustme.CA,
                                                           tmp_path: Path) -> None:
    pem = issued(ca, tmp_path, "hv01.lab.example")
    with serve(pem) as server:
        trust = check_host("hv01.lab.example", 5986, trusting(ca),
                           connect_to=("127.0.0.1", server.port))
        assert trust.verified
        with pytest.raises(Untrusted, match=re.escape("not hv02.lab.example")):
            check_host("hv02.lab.example", 5986, trusting(ca),
                       connect_to=("127.0.0.1", server.port))


def test_hostile_certificate_names_are_cleaned_and_cut(ca: trustme.CA, tmp_path: Path) -> None:
    hostile = ".".join(["x" * 60] * 3) + ".example"
    pem = issued(ca, tmp_path, hostile)
    with serve(pem) as server, pytest.raises(Untrusted) as caught:
        check_host("127.0.0.1", server.port, trusting(ca))
    text = str(caught.value)
    assert hostile not in text and "…" in text and "\x1b" not in text


def test_a_ca_file_is_loaded_once_and_again_when_it_changes(ca: trustme.CA,
                                                            tmp_path: Path) -> None:
    """requests_context keeps a context while its file is unchanged (certifi's bundle
    costs ~17 ms of CPU to load); a CA file rewritten is loaded again."""
    bundle = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))  # not the server's CA
    pem = issued(ca, tmp_path, "127.0.0.1")
    first = requests_context(bundle)
    assert requests_context(bundle) is first and requests_context(None) is requests_context()
    assert requests_context(bundle, insecure=True) is not first
    with serve(pem) as server:
        with pytest.raises(Untrusted, match="signed by a CA not trusted here"):
            check_host("127.0.0.1", server.port, requests_context(bundle))
        ca.cert_pem.write_to_path(str(bundle))  # the right CA now
        again = requests_context(bundle)
        assert again is not first
        assert check_host("127.0.0.1", server.port, again).verified
