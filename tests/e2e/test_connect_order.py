"""Reach → certificate → password → login: the console never asks for a password
for a host it cannot reach or does not trust (issue 12).

vSphere against vcsim (its own throwaway CA, tests/peers/vcsim.py) and against
a TLS server presenting a self-signed certificate; Hyper-V against the same
server, through ``ventana`` itself with a terminal on stdin.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import socket
import sys
from pathlib import Path

import pytest
import trustme
from peers.tlsserver import self_signed, serve
from peers.vcsim import BUILD_HINT, is_built, start_vcsim

from ventana.backends.hostcheck import Untrusted, fingerprint
from ventana.state.events import ConnectionChanged, LinkState
from ventana.tui.cli import _vsphere_backend, build_parser, main

pytestmark = pytest.mark.timeout(90)


class _Tty:
    """stdin as an operator's terminal (the prompt would be shown)."""

    def isatty(self) -> bool:
        return True


class _Prompts(list[str]):
    """Every password prompt shown; each is answered with ``answer``."""

    answer = "typed"


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> _Prompts:
    prompts = _Prompts()

    def fake(prompt: str = "") -> str:
        prompts.append(prompt)
        return prompts.answer

    monkeypatch.setattr(sys, "stdin", _Tty())
    monkeypatch.setattr(getpass, "getpass", fake)
    monkeypatch.delenv("VENTANA_VSPHERE_PASSWORD", raising=False)
    monkeypatch.delenv("VENTANA_HYPERV_PASSWORD", raising=False)
    return prompts


def test_vsphere_self_signed_certificate_is_refused_without_a_prompt(
    tmp_path: Path, asked: _Prompts, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = self_signed(tmp_path, "127.0.0.1")
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    with serve(pem) as server:
        code = main(["--log", str(tmp_path / "a.db"), "--vsphere", f"127.0.0.1:{server.port}",
                     "--user", "u", "--ca-file", str(ca)])
        assert server.received == 0
    err = capsys.readouterr().err
    assert code == 2 and asked == []
    assert f"127.0.0.1:{server.port}" in err and "self-signed" in err
    assert fingerprint(pem.der) in err and "Traceback" not in err


def test_vsphere_unreachable_host_is_said_without_a_prompt(
    tmp_path: Path, asked: _Prompts, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["--log", str(tmp_path / "a.db"), "--vsphere", f"127.0.0.1:{port}",
                 "--user", "u"]) == 2
    assert f"cannot reach 127.0.0.1:{port}" in capsys.readouterr().err and asked == []


def test_hyperv_untrusted_node_is_refused_before_keyring_or_prompt(
    tmp_path: Path, asked: _Prompts, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = self_signed(tmp_path, "hv01.lab.example")
    with serve(pem) as server:
        code = main(["--log", str(tmp_path / "a.db"), "--hyperv", "HVCLUSTER01",
                     "--node", "hv01.lab.example", "--resolve",
                     f"hv01.lab.example=127.0.0.1:{server.port}", "--user", "D\\u"])
    err = capsys.readouterr().err
    assert code == 2 and asked == []
    assert "hv01.lab.example:5986" in err and "self-signed" in err and fingerprint(pem.der) in err


@pytest.mark.skipif(not is_built(), reason=BUILD_HINT)
async def test_vsphere_vcsim_certificate_checked_then_prompt_then_login(
    tmp_path: Path, asked: _Prompts
) -> None:
    # 127.0.0.2: pyvmomi would skip verification for 127.0.0.1 without a context.
    handle = start_vcsim(tmp_path / "vcsim", clusters=0, standalone_hosts=1, vms=1,
                         listen="127.0.0.2:0", quiet=True)
    try:
        other_ca = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other_ca))
        where = f"127.0.0.2:{handle.port}"
        wrong = build_parser().parse_args(["--vsphere", where, "--user", handle.user,
                                           "--ca-file", str(other_ca)])
        with pytest.raises(Untrusted, match=re.escape(
                f"{where} not trusted: the certificate is signed by a CA not trusted here")):
            _vsphere_backend(wrong)
        assert asked == []

        asked.answer = handle.password
        right = build_parser().parse_args(["--vsphere", where, "--user", handle.user,
                                           "--ca-file", str(handle.ca_path)])
        backend = _vsphere_backend(right)
        assert asked == [f"Password for {handle.user} on 127.0.0.2: "]
        stream = backend.events()
        try:
            async with asyncio.timeout(40):
                async for event in stream:
                    if isinstance(event, ConnectionChanged):
                        assert event.state is not LinkState.DISCONNECTED, event.reason
                        if event.state is LinkState.CONNECTED:
                            break
        finally:
            await backend.close()
            await stream.aclose()
    finally:
        handle.stop()
