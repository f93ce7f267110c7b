"""The OS keyring asked with a time limit (state/oskeyring.py): one lookup in flight per entry."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null

from ventana.state import oskeyring, schema
from ventana.state.schema import KEYRING_SERVICE, forget_refused_password, keyring_password


class Gated(KeyringBackend):
    """A desktop collection that answers only once unlocked (``gate`` set)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.asked: list[tuple[str, str]] = []
        self.stored = {(KEYRING_SERVICE, "ventana@db.example:5432/ops"): "pw-1"}

    def get_password(self, service: str, username: str) -> str | None:
        self.asked.append((service, username))
        self.gate.wait(30)
        return self.stored.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.stored[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.stored.pop((service, username), None)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gated]:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    backend = Gated()
    before = keyring.get_keyring()
    keyring.set_keyring(backend)
    schema._found.clear()  # passwords kept by earlier tests' lookups
    try:
        yield backend
    finally:
        backend.gate.set()
        keyring.set_keyring(before)
        schema._found.clear()


def _lookups() -> int:
    return sum(t.name == "ventana-keyring" and t.is_alive() for t in threading.enumerate())


def test_a_blocked_lookup_is_waited_on_never_started_again(gated: Gated) -> None:
    url = "postgresql://ventana@db.example:5432/ops"
    started = time.monotonic()
    for _ in range(3):  # a team log retrying its connection while the collection is locked
        assert keyring_password(url, timeout=0.2) is None
    assert time.monotonic() - started < 2.0
    assert len(gated.asked) == 1 and _lookups() == 1
    gated.gate.set()  # the operator unlocks the collection: the lookup in flight answers
    assert keyring_password(url, timeout=5) == "pw-1"
    gated.stored[(KEYRING_SERVICE, "ventana@db.example:5432/ops")] = "pw-2"
    # Found once, kept: a team log retrying every few seconds does not ask (or prompt) again.
    assert keyring_password(url, timeout=5) == "pw-1"
    assert len(gated.asked) == 1
    forget_refused_password(url, ConnectionError("network is unreachable"))
    assert keyring_password(url, timeout=5) == "pw-1"  # not a refusal: still kept
    refused = ConnectionError("FATAL: password authentication failed for user \"ventana\"")
    forget_refused_password(url, refused)  # the server refused it: ask again
    assert keyring_password(url, timeout=5) == "pw-2"
    assert len(gated.asked) == 2


def test_no_real_keyring_answers_none_without_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    before = keyring.get_keyring()
    try:
        for backend in (fail.Keyring(), null.Keyring()):
            keyring.set_keyring(backend)
            assert not oskeyring.real_keyring()
            assert keyring_password("postgresql://ventana@db:5432/ops") is None
            assert oskeyring.ask("ventana-test", "ops", timeout=5) is None
            assert _lookups() == 0
    finally:
        keyring.set_keyring(before)


def test_pgpassword_set_never_asks_the_keyring(gated: Gated,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert keyring_password("postgresql://ventana@db.example:5432/ops", timeout=0.1) is None
    assert gated.asked == []
