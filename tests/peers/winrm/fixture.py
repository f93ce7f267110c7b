"""Starting the WinRM test peer from tests: :func:`start_winrm_peer` and a ``winrm_peer`` fixture.

:func:`start_winrm_peer` starts a :class:`~.server.WinRMPeer` in background
threads on 127.0.0.1 and a free port, with a fresh trustme CA and a
generated password, and returns a :class:`PeerHandle` that unpacks as
``(host, port, ca_path, user, password, stop)`` and also has those as
attributes, plus ``peer`` (the :class:`~.server.WinRMPeer`: its
``registry``, and ``service.stats`` counting WS-Man requests)::

    host, port, ca_path, user, password, stop = start_winrm_peer()
    try:
        wsman = WSMan(host, port=port, username=user, password=password,
                      auth="ntlm", cert_validation=ca_path)
        ...
    finally:
        stop()

``stop()`` is idempotent; it closes every pool, drops connections, joins
the peer's threads and removes its files (it is ``WinRMPeer.close``). To
take the endpoint down and bring it back on the same port with the same
certificate (a reconnect test), use ``handle.peer.stop()`` and
``handle.peer.start()``. Pass ``registry=`` to serve other commands than the
demo set. To use the fixture from a conftest::

    from peers.winrm.fixture import winrm_peer  # noqa: F401

The password lives only in memory, in the peer's private 0600 NTLM user
file (removed by ``stop()``) and in the returned handle; it is never logged.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .cmdlets import CommandRegistry
from .server import WinRMPeer

DEFAULT_USER = "LAB\\operator"


@dataclass(frozen=True, repr=False)
class PeerHandle:
    """Unpacks as ``(host, port, ca_path, user, password, stop)``; ``peer`` is the server."""

    host: str
    port: int
    ca_path: str
    user: str
    password: str
    stop: Callable[[], None]
    peer: WinRMPeer

    def __iter__(self) -> Iterator[Any]:
        return iter((self.host, self.port, self.ca_path, self.user, self.password, self.stop))

    def __repr__(self) -> str:  # keeps the password out of assertion output and logs
        return (
            f"PeerHandle(host={self.host!r}, port={self.port}, ca_path={self.ca_path!r}, "
            f"user={self.user!r}, password='***')"
        )


def generate_password() -> str:
    """A throwaway password for one test peer."""
    return secrets.token_urlsafe(18)


def start_winrm_peer(
    *,
    registry: CommandRegistry | None = None,
    user: str = DEFAULT_USER,
    password: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    cert_names: Iterable[str] | None = None,
    auth: Iterable[str] = ("basic", "negotiate"),
    **kwargs: Any,
) -> PeerHandle:
    """Start a WinRM test peer in background threads; see the module docstring."""
    password = password or generate_password()
    peer = WinRMPeer(
        {user: password},
        registry=registry,
        host=host,
        port=port,
        cert_names=cert_names,
        auth=auth,
        **kwargs,
    ).start()
    return PeerHandle(host, peer.port, str(peer.ca_path), user, password, peer.close, peer)


@pytest.fixture
def winrm_peer() -> Iterator[PeerHandle]:
    """A WinRM test peer serving the demo commands, stopped after the test."""
    handle = start_winrm_peer()
    try:
        yield handle
    finally:
        handle.stop()


@contextmanager
def node_endpoints(model: Any, ca_bundle: Path) -> Iterator[tuple[list[str], list[PeerHandle],
                                                                   str]]:
    """One endpoint per node of a ``hyperv.ClusterModel`` (sorted names), one shared
    password, every endpoint's CA written to ``ca_bundle``; all stopped after the block.
    Yields ``(names, handles, password)``."""
    from .hyperv import build_hyperv_registry

    names = sorted(model.nodes)
    password = generate_password()
    handles: list[PeerHandle] = []
    try:
        for name in names:
            handles.append(start_winrm_peer(registry=build_hyperv_registry(model, name),
                                            password=password))
        ca_bundle.write_text("".join(Path(h.ca_path).read_text() for h in handles))
        yield names, handles, password
    finally:
        for h in handles:
            h.stop()
