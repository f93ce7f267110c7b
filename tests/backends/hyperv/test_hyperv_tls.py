"""A Hyper-V node whose TLS certificate is refused says why, per node, with its fingerprint.

Real WinRM/PSRP endpoints (tests/peers/winrm), one per node of a discovered
cluster; one node that is not the first presents an expired certificate, one
for another name, a self-signed one or one from a CA the console was not
given (tests/peers/tlsserver.py makes them; the endpoint presents them with
``use_certificate``). The node's link reason and the log say hostcheck's
words: host, port, the problem, the exact SHA-256 fingerprint of the
certificate the endpoint presents, and that no password was sent — and the
endpoint indeed received no request. The same words come when the
certificate changes under a running session (a renewal), and pypsrp's own
words stay when the check cannot say more (the node vanished meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from peers.tlsserver import Pem, issued, self_signed
from peers.winrm.fixture import PeerHandle, generate_password, start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry
from test_hyperv_backend import Feed, config_for

from ventana.backends.hostcheck import fingerprint
from ventana.backends.hyperv import Credential, HyperVBackend
from ventana.backends.hyperv.commands import get_computer_system
from ventana.backends.hyperv.session import WITHHELD, NodeSession, SessionError, TlsRefused
from ventana.backends.sim import SimConfig
from ventana.state.events import LinkState
from ventana.state.model import Kind

CLUSTER = "HVCLUSTER01"


class Cluster:
    """Three nodes, each its own endpoint with its own CA (all given to the console),
    reached by name through ``resolve``; the first also answers as the cluster name."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.model = ClusterModel(SimConfig(vms=6, nodes=3, rate=0))
        self.names = sorted(self.model.nodes)
        self.password = generate_password()
        self.handles: dict[str, PeerHandle] = {}
        for name in self.names:
            also = [CLUSTER] if not self.handles else []
            self.handles[name] = start_winrm_peer(
                registry=build_hyperv_registry(self.model, name), password=self.password,
                cert_names=[name, *also])
        self.bundle = tmp_path / "cas.pem"
        self.bundle.write_text("".join(Path(h.ca_path).read_text()
                                       for h in self.handles.values()))

    def backend(self) -> HyperVBackend:
        first = self.handles[self.names[0]]
        resolve = tuple((n, f"127.0.0.1:{h.port}") for n, h in self.handles.items())
        config = config_for(list(self.handles.values()), str(self.bundle), nodes=(),
                            resolve=(*resolve, (CLUSTER, f"127.0.0.1:{first.port}")))
        return HyperVBackend(config, Credential(first.user, self.password, "test"))

    def present(self, name: str, problem: str) -> Pem:
        """Have node ``name`` present a certificate with ``problem``; returns it."""
        handle = self.handles[name]
        folder = self.tmp_path / problem
        folder.mkdir()
        pem = {
            "expired": lambda: issued(handle.peer.ca, folder, name, expired=True),
            "wrong name": lambda: issued(handle.peer.ca, folder, "hv-elsewhere.example"),
            "self-signed": lambda: self_signed(folder, name),
            "unknown CA": lambda: issued(trustme.CA(organization_name="Elsewhere Corp"),
                                         folder, name),
        }[problem]()
        handle.peer.use_certificate(pem.chain, pem.key)
        assert handle.peer.certificate_der == pem.der
        return pem

    def stop(self) -> None:
        for handle in self.handles.values():
            handle.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        made.stop()


#: What hostcheck says of each problem (the name is the node's, as its certificate lists
#: names: lower-cased by trustme).
SAID = {
    "expired": "the certificate expired on 20",
    "wrong name": "wrong name: the certificate is for hv-elsewhere.example, not {name}",
    "self-signed": "the certificate is self-signed",
    "unknown CA": "the certificate is signed by a CA not trusted here (",
}


def refusal_of(feed: Feed, source: str) -> str:
    return next((e.reason for e in reversed(feed.links(source))
                 if "TLS certificate of" in e.reason), "")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("problem", list(SAID))
async def test_a_discovered_node_refused_says_why_with_its_fingerprint(
    cluster: Cluster, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bad = cluster.names[1]  # not the first node, not the cluster name
    pem = cluster.present(bad, problem)
    backend = cluster.backend()
    feed = Feed(backend)
    source = f"hyperv:{bad}"
    good = [f"hyperv:{n}" for n in cluster.names if n != bad]
    await feed.until(lambda: bool(refusal_of(feed, source)) and all(
        feed.last_state(s) is LinkState.CONNECTED for s in good), 30, "the refusal")
    port = cluster.handles[bad].port
    reason = refusal_of(feed, source)
    assert f"TLS certificate of {bad}:{port} not trusted: " in reason, reason
    assert SAID[problem].format(name=bad) in reason, reason
    assert f"(SHA-256 fingerprint {fingerprint(pem.der)}); {WITHHELD} — " in reason, reason
    if problem == "unknown CA":
        assert "O=Elsewhere Corp" in reason
    # The log says the same, and nothing reached the node: no credential was sent.
    assert any(reason.endswith(r.getMessage()) for r in caplog.records
               if r.levelno >= logging.ERROR)
    assert cluster.handles[bad].peer.requests_received == 0
    assert feed.last_state(source) is not LinkState.CONNECTED
    # The healthy nodes' VMs are in; the refused node's are not.
    vms = feed.of(Kind.VM)
    assert {v.id for v in cluster.model.vms.values() if v.node_id != bad} <= set(vms)
    assert not any(v.node_id == bad for v in vms.values())
    await feed.close()


@pytest.mark.timeout(60)
async def test_a_certificate_renewed_badly_under_a_running_cluster_says_why(
    cluster: Cluster,
) -> None:
    """The node was connected; its listener is given an expired certificate (and drops its
    connections): the node goes stale saying the new certificate's problem and
    fingerprint, and recovers when a good certificate is presented again."""
    backend = cluster.backend()
    feed = Feed(backend)
    await feed.until(lambda: all(feed.last_state(f"hyperv:{n}") is LinkState.CONNECTED
                                 for n in cluster.names), 30, "every node connected")
    bad = cluster.names[2]
    source = f"hyperv:{bad}"
    pem = cluster.present(bad, "expired")
    await feed.until(lambda: bool(refusal_of(feed, source)), 20, "the refusal")
    reason = refusal_of(feed, source)
    assert f"{bad}:{cluster.handles[bad].port} not trusted: the certificate expired on " in reason
    assert fingerprint(pem.der) in reason
    # Stale (by the poll's refusal, or first by the event stream its listener dropped).
    assert LinkState.STALE in {e.state for e in feed.links(source)}
    assert feed.last_state(source) is not LinkState.CONNECTED
    renewed = issued(cluster.handles[bad].peer.ca, cluster.tmp_path, bad)
    cluster.handles[bad].peer.use_certificate(renewed.chain, renewed.key)
    await feed.until(lambda: feed.last_state(source) is LinkState.CONNECTED, 20, "recovered")
    await feed.close()


def session_to(handle: PeerHandle, name: str, bundle: Path) -> NodeSession:
    return NodeSession("127.0.0.1", port=handle.port, username=handle.user,
                       password=handle.password, auth="ntlm", cert_validation=str(bundle),
                       connection_timeout=3.0, command_timeout=10.0, name=name)


@pytest.mark.timeout(30)
async def test_a_refusal_inside_a_running_session_is_checked_in_its_worker(
    cluster: Cluster,
) -> None:
    """The pool is open; the certificate changes and the next command meets it on a new
    connection: the error is hostcheck's (checked in the worker thread that met it), the
    pool is dropped, and no request reached the node over the refused connection."""
    name = cluster.names[1]
    handle = cluster.handles[name]
    session = session_to(handle, name, cluster.bundle)
    try:
        await session.run(get_computer_system())
        pem = cluster.present(name, "wrong name")
        before = handle.peer.requests_received
        with pytest.raises(TlsRefused) as refused:
            await session.run(get_computer_system())
        text = str(refused.value)
        assert f"for hv-elsewhere.example, not {name}" in text
        assert f"SHA-256 fingerprint {fingerprint(pem.der)}" in text
        assert session._pool is None
        assert handle.peer.requests_received == before
        # The pool reopens only through the check, which refuses it before any request.
        with pytest.raises(TlsRefused, match="wrong name"):
            await session.open()
        assert handle.peer.requests_received == before
    finally:
        await session.close()


@pytest.mark.timeout(30)
async def test_when_the_check_cannot_say_more_pypsrps_words_stay(cluster: Cluster) -> None:
    """A refusal pypsrp met, checked again: with the node gone meanwhile (or trusted
    again) the first words stay and nothing raises; another error is left to describe()."""
    from pypsrp.powershell import RunspacePool
    from pypsrp.wsman import WSMan

    name = cluster.names[1]
    handle = cluster.handles[name]
    other = cluster.tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))  # not the endpoint's CA
    session = session_to(handle, name, other)
    wsman = WSMan("127.0.0.1", port=handle.port, username=handle.user,
                  password=handle.password, auth="ntlm", cert_validation=str(other))
    session._check_certificate_as(wsman, name)
    try:
        RunspacePool(wsman).open()
    except Exception as exc:  # the real requests.exceptions.SSLError, through pypsrp
        met = exc
    else:
        pytest.fail("pypsrp trusted a certificate from a CA it was not given")
    said = await asyncio.to_thread(session._refusal, met, wsman)
    assert isinstance(said, TlsRefused) and "signed by a CA not trusted here" in str(said)
    handle.peer.stop()  # the node vanished before the check
    began = time.monotonic()
    said = await asyncio.to_thread(session._refusal, met, wsman)
    assert isinstance(said, TlsRefused) and time.monotonic() - began < 5
    assert str(said) == f"{name}: TLS certificate not trusted — refusing to connect " \
        "(give the cluster's CA bundle; verification stays on)"
    handle.peer.start()
    trusted = session_to(handle, name, cluster.bundle)  # trusted now: the first words stay
    wsman.transport.session.verify = str(cluster.bundle)
    said = await asyncio.to_thread(trusted._refusal, met, wsman)
    assert isinstance(said, TlsRefused) and "refusing to connect" in str(said)
    assert session._refusal(ValueError("not TLS"), wsman) is None


@pytest.mark.timeout(30)
async def test_the_check_comes_before_the_pool_and_says_an_unreachable_node(
    cluster: Cluster,
) -> None:
    """The handshake is checked before pypsrp opens anything: a node that is down is said
    by hostcheck's reach check (its name, port and why), not by a failed pool."""
    name = cluster.names[2]
    handle = cluster.handles[name]
    handle.peer.stop()
    session = session_to(handle, name, cluster.bundle)
    with pytest.raises(SessionError) as caught:
        await session.open()
    assert not isinstance(caught.value, TlsRefused)
    assert str(caught.value) == f"cannot reach {name}:{handle.port}: Connection refused"


@pytest.mark.timeout(30)
async def test_what_the_certificate_says_is_untrusted_text(cluster: Cluster) -> None:
    """A certificate's names are anyone's: a control sequence in one reaches the reason
    only made visible (never as a terminal command)."""
    name = cluster.names[1]
    handle = cluster.handles[name]
    hostile = self_signed(cluster.tmp_path, "hv\x1b]0;pwned\x07-\x1b[2J.example")
    handle.peer.use_certificate(hostile.chain, hostile.key)
    bundle = cluster.tmp_path / "with-it.pem"  # trusted: only its name is wrong
    bundle.write_bytes(cluster.bundle.read_bytes() + hostile.chain.read_bytes())
    with pytest.raises(TlsRefused) as refused:
        await session_to(handle, name, bundle).open()
    text = str(refused.value)
    assert "wrong name: the certificate is for hv" in text and "pwned" in text
    assert not any(c in text for c in "\x1b\x07"), text
    assert fingerprint(hostile.der) in text and handle.peer.requests_received == 0


@pytest.mark.timeout(30)
async def test_the_check_trusts_what_pypsrp_trusts(cluster: Cluster,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No CA file given: pypsrp verifies with REQUESTS_CA_BUNDLE when it is set (else
    certifi's bundle); the check uses the same, so it never refuses a node pypsrp
    would trust — nor trusts one pypsrp would refuse."""
    name = cluster.names[0]
    handle = cluster.handles[name]
    session = NodeSession("127.0.0.1", port=handle.port, username=handle.user,
                          password=handle.password, auth="ntlm", cert_validation=True,
                          connection_timeout=3.0, name=name)
    with pytest.raises(TlsRefused, match="signed by a CA not trusted here"):
        await session.open()  # certifi's bundle: the test CA is not in it
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cluster.bundle))
    try:
        answer = await session.run(get_computer_system())
        assert answer.output
    finally:
        await session.close()


@pytest.mark.timeout(30)
async def test_the_probe_records_each_refused_nodes_whole_text(cluster: Cluster) -> None:
    """``ventana probe --hyperv`` (what docs/hyperv-tls.md sends the operator to for the
    whole text): a refused node's reads record hostcheck's words, fingerprint included."""
    from ventana.backends.hyperv.probe import READS, ProbeTarget, capture

    bad = cluster.names[1]
    pem = cluster.present(bad, "expired")
    targets = [ProbeTarget(n, "127.0.0.1", cluster.handles[n].port) for n in cluster.names[:2]]
    data = await capture(targets, lambda t: session_to(cluster.handles[t.name], t.name,
                                                       cluster.bundle))
    good, refused = data["nodes"]
    assert not any("failure" in e for e in good["reads"].values())
    failures = {e.get("failure", "") for e in refused["reads"].values()}
    assert len(refused["reads"]) == len(READS) and len(failures) == 1
    [text] = failures
    assert f"TLS certificate of {bad}:{cluster.handles[bad].port} not trusted: the " \
        "certificate expired on " in text and fingerprint(pem.der) in text
