"""Reach → certificate → password → login: the console never asks for a password
for a host it cannot reach or does not trust (issue 12).

vSphere against vcsim (its own throwaway CA, tests/peers/vcsim.py) and against
a TLS server presenting a self-signed certificate; Hyper-V against the same
server, through ``ventana`` itself with a terminal on stdin. The OS keyring is
the one stand-in: a keyring backend that records what it is asked (no real
Secret Service/D-Bus is reachable in the test environment).
"""

from __future__ import annotations

import asyncio
import getpass
import re
import socket
import sys
from collections.abc import Iterator
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


class RecordingKeyring:
    """A keyring backend (keyring.backend.KeyringBackend) that records every lookup."""

    def __init__(self, stored: dict[tuple[str, str], str] | None = None) -> None:
        from keyring.backend import KeyringBackend

        outer = self
        self.asked: list[tuple[str, str]] = []
        self.stored = dict(stored or {})

        class Backend(KeyringBackend):
            priority = 1  # type: ignore[assignment]

            def get_password(self, service: str, username: str) -> str | None:
                outer.asked.append((service, username))
                return outer.stored.get((service, username))

            def set_password(self, service: str, username: str, password: str) -> None:
                outer.stored[(service, username)] = password

            def delete_password(self, service: str, username: str) -> None:
                outer.stored.pop((service, username), None)

        self.backend = Backend()


@pytest.fixture
def keyring_asked() -> Iterator[RecordingKeyring]:
    import keyring

    before = keyring.get_keyring()
    recording = RecordingKeyring()
    keyring.set_keyring(recording.backend)
    try:
        yield recording
    finally:
        keyring.set_keyring(before)


def test_untrusted_hosts_are_refused_before_the_keyring_is_asked(
    tmp_path: Path, asked: _Prompts, keyring_asked: RecordingKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem = self_signed(tmp_path, "127.0.0.1")
    keyring_asked.stored = {("ventana-vsphere", "u"): "pw", ("ventana-hyperv", "D\\u"): "pw"}
    with serve(pem) as server:
        assert main(["--log", str(tmp_path / "a.db"), "--vsphere", f"127.0.0.1:{server.port}",
                     "--user", "u"]) == 2
        assert main(["--log", str(tmp_path / "a.db"), "--hyperv", "HVCLUSTER01",
                     "--node", f"127.0.0.1:{server.port}", "--user", "D\\u"]) == 2
    err = capsys.readouterr().err
    assert err.count("self-signed") == 2 and "no password was asked for" in err
    assert keyring_asked.asked == [] and asked == []


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
async def test_vsphere_vcsim_certificate_checked_then_keyring_or_prompt_then_login(
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

        # The keyring is asked once the certificate checked out; nothing stored: the prompt.
        import keyring

        before = keyring.get_keyring()
        recording = RecordingKeyring()
        keyring.set_keyring(recording.backend)
        try:
            asked.answer = handle.password
            right = build_parser().parse_args(["--vsphere", where, "--user", handle.user,
                                               "--ca-file", str(handle.ca_path)])
            prompted = _vsphere_backend(right)
            assert recording.asked == [("ventana-vsphere", handle.user)]
            assert asked == [f"Password for {handle.user} on 127.0.0.2: "]
            await prompted.close()
            asked.clear()
            recording.stored[("ventana-vsphere", handle.user)] = handle.password
            backend = _vsphere_backend(right)  # stored: no prompt
            assert asked == [] and len(recording.asked) == 2
        finally:
            keyring.set_keyring(before)
        # ... and that password logs in.
        links: list[ConnectionChanged] = []
        stream = backend.events()
        try:
            async with asyncio.timeout(40):
                async for event in stream:
                    if isinstance(event, ConnectionChanged):
                        assert event.state is not LinkState.DISCONNECTED, event.reason
                        links.append(event)
                        if event.state is LinkState.CONNECTED:
                            break
        finally:
            await backend.close()
            await stream.aclose()
        assert links[0].state is LinkState.CONNECTING
        assert "password from the OS keyring" in links[0].reason
        assert links[-1].state is LinkState.CONNECTED
    finally:
        handle.stop()


def test_probe_checks_the_certificate_before_its_prompt(
    tmp_path: Path, asked: _Prompts, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = self_signed(tmp_path, "127.0.0.1")
    with serve(pem) as server:
        code = main(["probe", "--vsphere", f"127.0.0.1:{server.port}", "--user", "u",
                     "--out", str(tmp_path / "capture.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and asked == [] and "self-signed" in err and fingerprint(pem.der) in err
    assert not (tmp_path / "capture.jsonl").exists()


async def test_insecure_flag_prompts_and_names_the_fingerprint_it_trusts_blindly(
    tmp_path: Path, asked: _Prompts, capsys: pytest.CaptureFixture[str]
) -> None:
    pem = self_signed(tmp_path, "127.0.0.1")
    with serve(pem) as server:
        args = build_parser().parse_args(["--vsphere", f"127.0.0.1:{server.port}",
                                          "--user", "u", "--insecure"])
        backend = _vsphere_backend(args)
    await backend.close()
    err = capsys.readouterr().err
    assert asked == ["Password for u on 127.0.0.1: "]
    assert "TLS verification OFF" in err and fingerprint(pem.der) in err


def test_hyperv_probe_checks_the_certificate_before_keyring_or_prompt(
    tmp_path: Path, asked: _Prompts, keyring_asked: RecordingKeyring,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem = self_signed(tmp_path, "hv01.lab.example")
    keyring_asked.stored = {("ventana-hyperv", "D\\u"): "pw"}
    with serve(pem) as server:
        code = main(["probe", "--hyperv", "hv01.lab.example", "--resolve",
                     f"hv01.lab.example=127.0.0.1:{server.port}", "--user", "D\\u",
                     "--out", str(tmp_path / "capture.json")])
        assert server.received == 0
    err = capsys.readouterr().err
    assert code == 2 and asked == [] and keyring_asked.asked == []
    assert "hv01.lab.example:" in err and "self-signed" in err and fingerprint(pem.der) in err
    assert not (tmp_path / "capture.json").exists()
