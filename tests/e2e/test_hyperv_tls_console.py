"""A Hyper-V node whose certificate is refused, in the console (Pilot): the header says why.

Two WinRM/PSRP endpoints, one per node; the second presents an expired
certificate (tests/peers/tlsserver.py). The first node's VMs are in; the
header's reason for the second says hostcheck's words — the node, the
problem and the date, the exact SHA-256 fingerprint the operator compares
with the host's, what to do — when the terminal is wide enough to hold it
(the header cuts a long reason first: at 100 columns only the stale node's
name is left; help, ``?``, shows it whole at 80 columns; see docs/hyperv-tls.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelp import help_text, wait_for
from peers.tlsserver import issued
from peers.winrm.fixture import generate_password, start_winrm_peer
from peers.winrm.hyperv import ClusterModel, build_hyperv_registry

from ventana.backends.hostcheck import fingerprint
from ventana.backends.hyperv import Credential, HyperVBackend, HyperVConfig
from ventana.backends.sim import SimConfig
from ventana.state.actionlog import ActionLog
from ventana.state.model import Kind
from ventana.tui.app import VentanaApp
from ventana.tui.header import StatusHeader
from ventana.tui.help_screen import HelpScreen

pytestmark = pytest.mark.timeout(120)


async def test_an_expired_node_certificate_is_said_on_screen(tmp_path: Path) -> None:
    model = ClusterModel(SimConfig(vms=8, nodes=2, rate=0))
    names = sorted(model.nodes)
    password = generate_password()
    handles = [start_winrm_peer(registry=build_hyperv_registry(model, name), password=password,
                                cert_names=[name]) for name in names]
    try:
        expired = issued(handles[1].peer.ca, tmp_path, names[1], expired=True)
        handles[1].peer.use_certificate(expired.chain, expired.key)
        bundle = tmp_path / "cas.pem"
        bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
        config = HyperVConfig(
            "HVCLUSTER01", handles[0].user, nodes=tuple(names), auth="ntlm",
            ca_bundle=str(bundle), poll_interval=0.3, command_timeout=5.0,
            connection_timeout=3.0, backoff_initial=0.2, backoff_max=1.0,
            resolve=tuple((n, f"127.0.0.1:{h.port}") for n, h in zip(names, handles,
                                                                     strict=True)))
        backend = HyperVBackend(config, Credential(handles[0].user, password, "test"))
        log = ActionLog.open(tmp_path / "a.db")
        app = VentanaApp(backend, log=log)
        print_ = fingerprint(expired.der)
        async with app.run_test(size=(600, 30)) as pilot:
            header = app.query_one(StatusHeader)
            await wait_for(pilot, lambda: print_ in header.reason
                           and app.store.count(Kind.VM) > 0, timeout=60)
            await pilot.pause(0.2)
            shown = str(header.render())
            said = f"TLS certificate of {names[1]}:{handles[1].port} not trusted: " \
                "the certificate expired on 20"
            assert said in shown and f"SHA-256 fingerprint {print_}" in shown, shown
            assert "no password was sent — renew it on the host" in shown, shown
            assert names[0] not in header.reason  # the healthy node says nothing
            await pilot.resize_terminal(100, 24)
            await pilot.pause(0.2)
            shown = str(header.render())  # narrow: the reason is cut, the node still named
            assert f"stale: {names[1]}" in shown, shown
            await pilot.resize_terminal(80, 24)  # …and help (?) shows it whole, even here
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
            text = "".join(help_text(app.screen).split())
            assert "".join(said.split()) in text and print_ in text, text
        log.close()
        assert handles[1].peer.requests_received == 0
    finally:
        for h in handles:
            h.stop()
